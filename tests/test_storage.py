"""Unit tests of the stores: MemoryStore and SQLiteStore through the Store interface, then what
only the durable SQLite store promises (reopen, crashes, refusing bad files, failed writes)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from paxgos.core import ZERO, Ballot, Persist, StoredState
from paxgos.storage import MemoryStore, SQLiteStore, StorageError, Store
from paxgos.storage.sqlite import FORMAT_VERSION

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
REPO = Path(__file__).resolve().parent.parent

B1 = Ballot(1, 0)
B2 = Ballot(2, 1)


def chosen(first: int, last: int, value: Callable[[int], int | None] = lambda s: s * 10) -> Persist:
    """A Persist choosing slots ``first..last``."""
    return Persist(chosen=[(s, value(s)) for s in range(first, last + 1)])


def accepted(first: int, last: int, ballot: Ballot = B1) -> Persist:
    """A Persist accepting slots ``first..last`` under ``ballot``."""
    return Persist(accepted=[(s, ballot, s * 10) for s in range(first, last + 1)])


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store kind, fresh."""
    if request.param == "memory":
        s: Store = MemoryStore()
    else:
        s = SQLiteStore(tmp_path / "node-0" / "paxgos.db", "test-cluster", 0)
    yield s
    s.close()


def open_sqlite(path: Path, cluster: str = "c1", node: int = 0) -> SQLiteStore:
    return SQLiteStore(path, cluster, node)


# -- both stores, through the interface ----------------------------------------------------------


def test_fresh_store_is_empty(store: Store) -> None:
    assert store.load() == StoredState(ZERO, 0, {})
    assert store.read_chosen(1, 10) == []
    assert store.commit_index() == 0


def test_empty_batch_and_empty_persists_change_nothing(store: Store) -> None:
    store.apply([])
    store.apply([Persist(), Persist()])
    assert store.load() == StoredState()


def test_last_promise_in_a_batch_wins(store: Store) -> None:
    store.apply([Persist(promised=B1), Persist(promised=B2), Persist()])
    assert store.load().promised == B2
    store.apply([Persist(accepted=[(1, B2, 5)])])  # no promise: the stored one stays
    assert store.load().promised == B2


def test_accepted_upsert_keeps_the_latest(store: Store) -> None:
    store.apply([accepted(1, 3, B1)])
    store.apply([Persist(accepted=[(2, B2, 99)]), Persist(accepted=[(2, B2, 100)])])
    state = store.load()
    assert state.accepted == {1: (B1, 10), 2: (B2, 100), 3: (B1, 30)}


def test_chosen_prunes_accepted_and_load_returns_only_slots_above_commit(store: Store) -> None:
    store.apply([Persist(promised=B1), accepted(1, 10)])
    store.apply([chosen(1, 4)])
    state = store.load()
    assert state == StoredState(B1, 4, {s: (B1, s * 10) for s in range(5, 11)})
    assert store.commit_index() == 4


def test_one_batch_with_accepted_then_chosen(store: Store) -> None:
    """A Ready's persist may accept and (via a learn) choose the same slots in one batch."""
    store.apply([Persist(promised=B2, accepted=[(1, B2, None), (2, B2, 7)]), chosen(1, 1)])
    assert store.load() == StoredState(B2, 1, {2: (B2, 7)})
    assert store.read_chosen(1, 10) == [(1, 10)]


def test_read_chosen_paging(store: Store) -> None:
    store.apply([chosen(1, 25)])
    pages = []
    slot = 1
    while True:
        page = store.read_chosen(slot, 10)
        if not page:
            break
        pages.append(page)
        slot = page[-1][0] + 1
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [e for p in pages for e in p] == [(s, s * 10) for s in range(1, 26)]
    assert store.read_chosen(0, 2) == [(1, 10), (2, 20)]
    assert store.read_chosen(-5, 1) == [(1, 10)]
    assert store.read_chosen(25, 10) == [(25, 250)]
    assert store.read_chosen(26, 10) == []
    assert store.read_chosen(1, 0) == []
    assert store.read_chosen(1, -1) == []


def test_noop_values_round_trip(store: Store) -> None:
    store.apply([Persist(accepted=[(1, B1, None), (2, B1, None), (3, B1, 0)])])
    store.apply([Persist(chosen=[(1, None)])])
    assert store.load().accepted == {2: (B1, None), 3: (B1, 0)}
    assert store.read_chosen(1, 5) == [(1, None)]


def test_64_bit_extremes_round_trip(store: Store) -> None:
    big = Ballot(INT64_MAX, 2**31 - 1)
    store.apply(
        [
            Persist(promised=big),
            Persist(accepted=[(3, big, INT64_MIN), (4, Ballot(1, 0), INT64_MAX)]),
            Persist(chosen=[(1, INT64_MIN), (2, INT64_MAX)]),
        ]
    )
    assert store.load() == StoredState(big, 2, {3: (big, INT64_MIN), 4: (B1, INT64_MAX)})
    assert store.read_chosen(1, 2) == [(1, INT64_MIN), (2, INT64_MAX)]


@pytest.mark.parametrize("bad", [[(2, 1)], [(1, 1), (3, 3)], [(1, 1), (1, 1)]])
def test_chosen_out_of_order_is_refused_and_changes_nothing(
    store: Store, bad: list[tuple[int, int]]
) -> None:
    store.apply([Persist(promised=B1)])
    with pytest.raises(StorageError, match="does not follow commit index"):
        store.apply([Persist(promised=B2, accepted=[(9, B2, 9)]), Persist(chosen=bad)])
    assert store.load() == StoredState(B1, 0, {})


# -- SQLiteStore only ----------------------------------------------------------------------------


def test_sqlite_is_durable_and_creates_the_file_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "paxgos.db"
    with open_sqlite(path) as s:
        assert s.durable
    assert path.read_bytes().startswith(b"SQLite format 3\x00")


def test_sqlite_reopen_after_close_gives_the_same_state(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with open_sqlite(path) as s:
        s.apply([Persist(promised=B2), accepted(1, 1200, B2)])
        for first in range(1, 1001, 100):
            s.apply([chosen(first, first + 99, lambda x: None if x % 7 == 0 else -x)])
        before = s.load()
        log = s.read_chosen(1, 5000)
    with open_sqlite(path) as s:
        assert s.load() == before
        assert before.commit == 1000 and sorted(before.accepted) == list(range(1001, 1201))
        assert s.read_chosen(1, 5000) == log
        assert s.commit_index() == len(log) == 1000


def test_sqlite_accepted_table_is_pruned(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with open_sqlite(path) as s:
        s.apply([accepted(1, 100)])
        s.apply([chosen(1, 60), accepted(50, 55, B2)])  # late accepts below commit: dropped
        assert s.load().accepted == {x: (B1, x * 10) for x in range(61, 101)}
    with sqlite3.connect(path) as raw:
        slots = [r[0] for r in raw.execute("SELECT slot FROM accepted ORDER BY slot")]
    raw.close()
    assert slots == list(range(61, 101))


def test_sqlite_writes_raise_no_warning(tmp_path: Path) -> None:
    # Python 3.12 and 3.13 warn (at a cost per parameter) about numbered placeholders bound
    # from a sequence, and 3.14 refuses them: a write, a batch past one INSERT's rows, and a
    # migration-sized one go through without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_sqlite(tmp_path / "paxgos.db") as s:
            s.apply([accepted(1, 1)])
            s.apply([accepted(2, 1200), chosen(1, 700)])
            assert s.load().accepted == {x: (B1, x * 10) for x in range(701, 1201)}
            assert s.read_chosen(699, 3) == [(699, 6990), (700, 7000)]


def test_sqlite_read_chosen_is_an_indexed_range_query(tmp_path: Path) -> None:
    with open_sqlite(tmp_path / "paxgos.db") as s:
        assert s._reader is not None
        plan = " ".join(
            str(row[-1])
            for row in s._reader.execute(
                "EXPLAIN QUERY PLAN SELECT slot, value FROM chosen WHERE slot >= ? "
                "ORDER BY slot LIMIT ?",
                (5, 10),
            )
        )
    assert "SEARCH" in plan and "PRIMARY KEY" in plan, plan


def test_sqlite_read_chosen_from_another_thread(tmp_path: Path) -> None:
    with open_sqlite(tmp_path / "paxgos.db") as s:
        s.apply([chosen(1, 50)])
        out: list[object] = []
        t = threading.Thread(target=lambda: out.append(s.read_chosen(40, 100)))
        t.start()
        t.join(10)
        assert out == [[(x, x * 10) for x in range(40, 51)]]


def test_sqlite_uncommitted_transaction_is_gone_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with open_sqlite(path) as s:
        s.apply([Persist(promised=B1), accepted(1, 5), chosen(1, 2)])
        before = s.load()
        conn = s._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE promise SET round = 99")
        conn.executemany("INSERT INTO chosen VALUES (?, ?, 0)", [(3, 1), (4, 2)])
    with open_sqlite(path) as s:  # close() without COMMIT rolled it back
        assert s.load() == before


_CRASH_CHILD = """
import os, sys
from paxgos.core import Ballot, Persist
from paxgos.storage import SQLiteStore

class DieAtCommit:
    '''Passes everything to the real connection, but the process dies instead of COMMIT.'''
    def __init__(self, conn):
        self.conn = conn
    def __getattr__(self, name):
        return getattr(self.conn, name)
    def execute(self, sql, *args):
        if sql == "COMMIT":
            os._exit(9)  # like kill -9: no cleanup, no rollback
        return self.conn.execute(sql, *args)

s = SQLiteStore(sys.argv[1], "c1", 0)
s.apply([Persist(promised=Ballot(1, 0), accepted=[(i, Ballot(1, 0), i) for i in range(1, 11)])])
s.apply([Persist(chosen=[(1, 1), (2, 2)])])
s._conn.execute("PRAGMA cache_size = 5")  # spill the big transaction into the WAL before COMMIT
s._conn = DieAtCommit(s._conn)
s.apply([
    Persist(promised=Ballot(7, 1)),
    Persist(accepted=[(i, Ballot(7, 1), -i) for i in range(3, 20003)]),
    Persist(chosen=[(i, i) for i in range(3, 20001)]),
])
sys.exit("apply returned: the crash was not injected")
"""


def test_sqlite_crash_mid_batch_leaves_the_state_before_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CRASH_CHILD), str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr
    assert path.with_name("paxgos.db-wal").stat().st_size > 100_000  # frames of the lost batch
    with open_sqlite(path) as s:
        assert s.load() == StoredState(Ballot(1, 0), 2, {i: (B1, i) for i in range(3, 11)})
        assert s.read_chosen(1, 10) == [(1, 1), (2, 2)]
        s.apply([chosen(3, 3)])  # and the log goes on from there
        assert s.commit_index() == 3


def test_sqlite_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with open_sqlite(path):
        with pytest.raises(StorageError, match="in use by another store") as info:
            open_sqlite(path)
        assert str(path) in str(info.value)
    open_sqlite(path).close()  # free again once closed


def _refused(path: Path, match: str, cluster: str = "c1", node: int = 0) -> str:
    with pytest.raises(StorageError, match=match) as info:
        SQLiteStore(path, cluster, node)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def test_sqlite_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    _refused(path, "not a SQLite database")
    assert path.read_bytes() == garbage  # never replaced by an empty store


def test_sqlite_garbage_after_a_valid_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8000)
    _refused(path, "cannot open database|integrity")


def test_sqlite_corrupt_pages_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with open_sqlite(path) as s:
        s.apply([chosen(1, 5000)])
    size = path.stat().st_size
    with open(path, "r+b") as f:  # smash pages in the middle of the chosen table's b-tree
        f.seek(size // 2)
        f.write(b"\xa5" * 8192)
    _refused(path, "integrity|cannot open database|malformed")


def test_sqlite_foreign_cluster_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node-2" / "paxgos.db"
    with SQLiteStore(path, "abc", 2) as s:
        s.apply([chosen(1, 3)])
    msg = _refused(path, "was made by cluster abc, not xyz", cluster="xyz", node=2)
    assert msg == f"{path}: was made by cluster abc, not xyz; pass --cluster-id abc"
    with SQLiteStore(path, "abc", 2) as s:  # and left untouched
        assert s.commit_index() == 3


def test_sqlite_other_node_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    SQLiteStore(path, "abc", 2).close()
    _refused(path, "belongs to node 2, not node 1", cluster="abc", node=1)


def test_sqlite_unknown_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    open_sqlite(path).close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET format_version = ?", (FORMAT_VERSION + 1,))
    raw.commit()
    raw.close()
    _refused(path, f"format version {FORMAT_VERSION + 1} is not supported")


def test_sqlite_other_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE users (name TEXT)")
    raw.commit()
    raw.close()
    _refused(path, "not a paxgos database")


def test_sqlite_chosen_gap_on_disk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with open_sqlite(path) as s:
        s.apply([chosen(1, 5)])
    raw = sqlite3.connect(path)
    raw.execute("DELETE FROM chosen WHERE slot = 3")
    raw.commit()
    raw.close()
    _refused(path, "chosen log is not a prefix")


def test_sqlite_write_failure_rolls_back_and_poisons(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    s = open_sqlite(path)
    s.apply([Persist(promised=B1), accepted(1, 10), chosen(1, 3)])
    before = s.load()
    assert s._conn is not None
    pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
    s._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # "disk" full after two more pages
    with pytest.raises(StorageError, match="write failed, batch rolled back") as info:
        s.apply([Persist(promised=B2), accepted(11, 5000, B2), chosen(4, 4000)])
    assert "full" in str(info.value)
    assert s.load() == before and s.commit_index() == 3
    assert s.read_chosen(1, 10) == [(1, 10), (2, 20), (3, 30)]
    with pytest.raises(StorageError, match="earlier failure"):
        s.apply([chosen(4, 4)])  # the node must restart, not carry on
    s.close()
    with open_sqlite(path) as s:
        assert s.load() == before
        s.apply([chosen(4, 4)])
        assert s.commit_index() == 4


def test_sqlite_failure_late_in_a_batch_rolls_back_all_of_it(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with open_sqlite(path) as s:
        s.apply([Persist(promised=B1), accepted(1, 3)])
        before = s.load()
        bad = Persist(chosen=[(1, 1), (2, 2**64)])  # not a 64-bit integer: fails mid-executemany
        with pytest.raises(StorageError, match="write failed"):
            s.apply([Persist(promised=B2), accepted(4, 8, B2), bad])
        assert s.load() == before
    with open_sqlite(path) as s:
        assert s.load() == before


@pytest.mark.parametrize("value", ["abc", 1.5, b"\x01"])
def test_sqlite_non_integer_values_are_refused(tmp_path: Path, value: object) -> None:
    """The CHECK constraints keep anything but an integer or NULL out of the value columns."""
    with open_sqlite(tmp_path / "paxgos.db") as s:
        with pytest.raises(StorageError, match="write failed"):
            s.apply([Persist(accepted=[(1, B1, value)])])  # type: ignore[list-item]
        assert s.load() == StoredState()


def test_sqlite_closed_store_raises(tmp_path: Path) -> None:
    s = open_sqlite(tmp_path / "paxgos.db")
    s.close()
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.load()
    with pytest.raises(StorageError, match="closed"):
        s.read_chosen(1, 1)


def test_checkpoints_alongside_writes_keep_the_state(tmp_path: Path) -> None:
    """``checkpoint`` runs in another thread while ``apply`` writes; nothing is lost."""
    path = tmp_path / "node.db"
    store = SQLiteStore(path, "c", 0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def checkpoints() -> None:
        for _ in range(10_000):
            if stop.is_set():
                return
            try:
                store.checkpoint()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=checkpoints)
    thread.start()
    try:
        for slot in range(1, 301):
            store.apply(
                [Persist(accepted=[(slot, Ballot(1, 0), slot)]), Persist(chosen=[(slot, slot)])]
            )
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    store.checkpoint()
    store.close()
    reopened = SQLiteStore(path, "c", 0)
    try:
        assert reopened.load().commit == 300
        assert reopened.read_chosen(1, 1000) == [(s, s) for s in range(1, 301)]
    finally:
        reopened.close()


# -- write + sync: the transaction and the fsync, callable apart --------------------------------


def _synced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the file behind every ``os.fdatasync`` (and still do it)."""
    synced: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return synced


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_sqlite_sync_fsyncs_the_wal_once_per_written_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "paxgos.db"
    with open_sqlite(path) as s:
        synced = _synced_paths(monkeypatch)
        s.write([Persist(promised=B1), accepted(1, 5)])
        assert synced == []  # the transaction alone does not wait for the disk
        s.sync()
        assert synced == [f"{path}-wal"]
        s.sync()  # nothing written since: nothing to wait for
        assert synced == [f"{path}-wal"]
        s.apply([chosen(1, 2)])  # apply is write + sync
        assert synced == [f"{path}-wal"] * 2
        s.apply([])  # an empty batch writes nothing
        assert len(synced) == 2
    with open_sqlite(path) as s:
        assert s.load() == StoredState(B1, 2, {s: (B1, s * 10) for s in range(3, 6)})


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS syncs with F_FULLFSYNC")
def test_sqlite_failed_fsync_poisons_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "paxgos.db"
    with open_sqlite(path) as s:
        s.apply([accepted(1, 3)])

        def broken(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", broken)
        s.write([chosen(1, 1)])
        with pytest.raises(StorageError, match="fsync of the write-ahead log failed"):
            s.sync()
        monkeypatch.undo()
        with pytest.raises(StorageError, match="earlier failure"):
            s.write([chosen(2, 2)])  # after a failed fsync only a reload is trustworthy
