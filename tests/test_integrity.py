"""Storage integrity (issue 11, finding S4 and item 7): a damaged, truncated, misplaced or
unwritable database file is refused with one line naming the file, and a changed stored record
is never served, because every record carries a crc32 checked on read.

Damage is made the way it happens: with ``sqlite3`` (an UPDATE that leaves the checksum as it
was) and by flipping a byte of the file itself, which SQLite's own ``quick_check`` cannot see.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from paxgos.core import Ballot, Persist, StoredState
from paxgos.storage import SQLiteStore, StorageError
from paxgos.storage.sqlite import FORMAT_VERSION

B1 = Ballot(1, 0)
B7 = Ballot(7, 2)

#: A value whose 8 big-endian bytes (SQLite's integer encoding) occur nowhere else in the file.
MARK = 0x5A17_C0DE_F00D_1234

REPO = Path(__file__).resolve().parent.parent


def refused(path: Path, match: str, **kwargs: object) -> str:
    """Opening ``path`` raises StorageError matching ``match``; its one-line message."""
    with pytest.raises(StorageError, match=match) as info:
        SQLiteStore(path, "c1", 0, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def one_line(exc: pytest.ExceptionInfo[StorageError], path: Path) -> str:
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def make_node_file(path: Path) -> StoredState:
    """A node's file with a promise, 6 chosen entries and 3 accepted ones; its state."""
    with SQLiteStore(path, "c1", 0) as s:
        s.apply([Persist(promised=B7, accepted=[(s_, B1, s_ * 10) for s_ in range(1, 10)])])
        s.apply([Persist(chosen=[(s_, s_ * 10) for s_ in range(1, 7)])])
        return s.load()


def raw(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Run one statement on the file behind the store's back (as an editor or a bug would)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def flip_byte_of(path: Path, value: int) -> None:
    """Flip the last byte of the one stored copy of ``value`` in the (checkpointed) file."""
    data = bytearray(path.read_bytes())
    needle = value.to_bytes(8, "big", signed=True)
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "the value must be stored exactly once"
    data[at + 7] ^= 0x01
    path.write_bytes(bytes(data))


def quick_check_ok(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("PRAGMA quick_check")] == ["ok"]
    finally:
        conn.close()


# -- S4: only a missing file is a new node ---------------------------------------------------


def test_zero_length_file_is_refused_not_started_empty(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    state = make_node_file(path)
    assert state.promised == B7 and state.commit == 6
    path.write_bytes(b"")  # truncated: the promise and 6 entries are gone
    message = refused(path, "is empty")
    assert "delete it to start this node empty" in message, message
    assert path.stat().st_size == 0  # left as found, not turned into a new node's file


def test_missing_file_is_a_new_node(tmp_path: Path) -> None:
    path = tmp_path / "node-0" / "paxgos.db"
    with SQLiteStore(path, "c1", 0) as s:
        assert s.load() == StoredState()
    with SQLiteStore(path, "c1", 0) as s:  # and once created it opens again
        assert s.load() == StoredState()


_DIE_AT_FIRST_COMMIT = """
import os, sqlite3, sys

real_connect = sqlite3.connect

class DieAtCommit:
    # Passes everything to the real connection, but the process dies instead of COMMIT.
    def __init__(self, conn):
        self.conn = conn
    def __getattr__(self, name):
        return getattr(self.conn, name)
    def execute(self, sql, *args):
        if sql.strip().upper() == "COMMIT":
            os._exit(9)  # like kill -9: no cleanup
        return self.conn.execute(sql, *args)

sqlite3.connect = lambda *args, **kwargs: DieAtCommit(real_connect(*args, **kwargs))
from paxgos.storage import SQLiteStore
SQLiteStore(sys.argv[1], "c1", 0)
sys.exit("the store was created: the crash was not injected")
"""


def test_crash_while_creating_a_new_file_leaves_no_file(tmp_path: Path) -> None:
    """A new node's file is built under another name and renamed into place once complete, so
    a crash during its creation cannot leave the empty (or schema-less) file that is refused
    above: the next start is a new node again."""
    path = tmp_path / "node-0" / "paxgos.db"
    pythonpath = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _DIE_AT_FIRST_COMMIT, str(path)],
        env=dict(os.environ, PYTHONPATH=pythonpath),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr
    assert not path.exists()
    with SQLiteStore(path, "c1", 0) as s:
        assert s.load() == StoredState()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["paxgos.db", "paxgos.db.lock"], names  # nothing half-made left behind


def test_write_ahead_log_without_its_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    make_node_file(path)
    wal = Path(f"{path}-wal")
    wal.write_bytes(b"\x37\x7f\x06\x82" + b"\x00" * 28)  # a WAL left behind ...
    path.unlink()  # ... by someone who deleted only the database
    message = refused(path, "write-ahead log")
    assert str(wal) in message, message


def test_directory_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    path.mkdir()
    refused(path, "is a directory")


def open_without_hanging(path: Path, pipe: Path) -> str:
    """Open a store on ``path`` in a thread; fail (after unblocking it) if opening ``pipe``, a
    named pipe, blocks it.  The message of the StorageError it raised."""
    outcome: list[BaseException | None] = []

    def open_it() -> None:
        try:
            SQLiteStore(path, "c1", 0).close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=open_it, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # blocked opening the pipe: a writer lets it go on
        with contextlib.suppress(OSError):
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"opening a store with a named pipe at {pipe} hung")
    assert len(outcome) == 1 and isinstance(outcome[0], StorageError), outcome
    message = str(outcome[0])
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)  # untouched
    return message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_named_pipe_in_place_of_the_file_is_refused_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    os.mkfifo(path)
    message = open_without_hanging(path, path)
    assert "not a regular file" in message and "named pipe" in message, message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_named_pipe_in_place_of_the_wal_is_refused_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    make_node_file(path)
    wal = Path(f"{path}-wal")
    os.mkfifo(wal)
    message = open_without_hanging(path, wal)
    assert f"{wal} is not a regular file" in message, message


# -- every record carries a checksum, verified on read -----------------------------------------


def test_checksums_are_crc32_of_the_packed_fields(tmp_path: Path) -> None:
    """The on-disk definition (sqlite.py's docstring): a no-op (NULL value) packs one integer
    fewer, so it cannot look like any integer value."""
    path = tmp_path / "paxgos.db"
    with SQLiteStore(path, "c1", 0) as s:
        s.apply([Persist(promised=B7, accepted=[(1, B1, 5), (2, B1, None), (3, B7, -3)])])
        s.apply([Persist(chosen=[(1, 5), (2, None)])])
    conn = sqlite3.connect(path)
    try:
        ((round_, node, crc),) = conn.execute("SELECT round, node, crc FROM promise")
        assert crc == zlib.crc32(struct.pack("<qq", round_, node))
        for slot, value, crc in conn.execute("SELECT slot, value, crc FROM chosen"):
            packed = struct.pack("<q", slot) if value is None else struct.pack("<qq", slot, value)
            assert crc == zlib.crc32(packed), slot
        rows = conn.execute("SELECT slot, ballot_round, ballot_node, value FROM accepted")
        assert rows.fetchall() == [(3, 7, 2, -3)]  # slots 1 and 2 are chosen: pruned
        (crc,) = conn.execute("SELECT crc FROM accepted").fetchone()
        assert crc == zlib.crc32(struct.pack("<qqqq", 3, 7, 2, -3))
        (fmt,) = conn.execute("SELECT format_version FROM meta").fetchone()
        assert fmt == FORMAT_VERSION == 2
    finally:
        conn.close()


def test_changed_chosen_value_is_never_served(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    make_node_file(path)
    raw(path, "UPDATE chosen SET value = 666 WHERE slot = 4")  # the checksum left as it was
    assert quick_check_ok(path)  # SQLite sees nothing wrong
    with SQLiteStore(path, "c1", 0, quick_check=False) as s:
        assert s.read_chosen(1, 3) == [(1, 10), (2, 20), (3, 30)]  # undamaged slots still read
        with pytest.raises(StorageError, match="checksum mismatch at chosen slot 4") as info:
            s.read_chosen(1, 10)
        message = one_line(info, path)
        assert "666" not in message
        with pytest.raises(StorageError, match="chosen slot 4"):
            s.read_chosen(4, 1)
    # The full check at open (the default) finds it before the node serves anything.
    refused(path, "checksum mismatch at chosen slot 4")


def test_changed_chosen_noop_flag_is_never_served(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with SQLiteStore(path, "c1", 0) as s:
        s.apply([Persist(chosen=[(1, 0), (2, None)])])
    raw(path, "UPDATE chosen SET value = NULL WHERE slot = 1")  # value 0 becomes a no-op
    raw(path, "UPDATE chosen SET value = 0 WHERE slot = 2")  # and the no-op becomes value 0
    with SQLiteStore(path, "c1", 0, quick_check=False) as s:
        with pytest.raises(StorageError, match="chosen slot 1"):
            s.read_chosen(1, 1)
        with pytest.raises(StorageError, match="chosen slot 2"):
            s.read_chosen(2, 1)


def test_moved_chosen_row_is_never_served(tmp_path: Path) -> None:
    """The slot is in the checksum: a record that moved to another slot is damage too."""
    path = tmp_path / "paxgos.db"
    make_node_file(path)
    raw(path, "UPDATE chosen SET value = (SELECT value FROM chosen WHERE slot = 5), "
              "crc = (SELECT crc FROM chosen WHERE slot = 5) WHERE slot = 2")  # fmt: skip
    with SQLiteStore(path, "c1", 0, quick_check=False) as s:
        with pytest.raises(StorageError, match="chosen slot 2"):
            s.read_chosen(1, 10)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE accepted SET value = 666 WHERE slot = 8",
        "UPDATE accepted SET ballot_round = 9 WHERE slot = 8",
        "UPDATE accepted SET ballot_node = 1 WHERE slot = 8",
        "UPDATE accepted SET value = NULL WHERE slot = 8",
    ],
)
def test_changed_accepted_record_is_never_loaded(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "paxgos.db"
    make_node_file(path)
    raw(path, sql)
    with SQLiteStore(path, "c1", 0, quick_check=False) as s:
        with pytest.raises(StorageError, match="checksum mismatch at accepted slot 8") as info:
            s.load()
        one_line(info, path)
    refused(path, "checksum mismatch at accepted slot 8")


@pytest.mark.parametrize("sql", ["UPDATE promise SET round = 1", "UPDATE promise SET node = 0"])
def test_changed_promise_is_never_loaded(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "paxgos.db"
    make_node_file(path)
    raw(path, sql)
    with SQLiteStore(path, "c1", 0, quick_check=False) as s:
        with pytest.raises(StorageError, match="checksum mismatch in the promise") as info:
            s.load()
        one_line(info, path)
    refused(path, "checksum mismatch in the promise")


def test_flipped_byte_in_a_chosen_value_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with SQLiteStore(path, "c1", 0) as s:
        s.apply([Persist(chosen=[(1, 1), (2, 2), (3, MARK), (4, 4)])])
        s.checkpoint()
    assert not Path(f"{path}-wal").exists()  # the last close folded the WAL into the file
    flip_byte_of(path, MARK)
    assert quick_check_ok(path)  # invisible to SQLite
    with SQLiteStore(path, "c1", 0, quick_check=False) as s:
        with pytest.raises(StorageError, match="checksum mismatch at chosen slot 3") as info:
            s.read_chosen(1, 10)
        one_line(info, path)
        assert s.read_chosen(4, 10) == [(4, 4)]
    refused(path, "checksum mismatch at chosen slot 3")


def test_flipped_byte_in_an_accepted_value_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    with SQLiteStore(path, "c1", 0) as s:
        s.apply([Persist(accepted=[(1, B1, 1), (2, B1, MARK), (3, B1, 3)])])
    flip_byte_of(path, MARK)
    assert quick_check_ok(path)
    with SQLiteStore(path, "c1", 0, quick_check=False) as s:
        with pytest.raises(StorageError, match="checksum mismatch at accepted slot 2"):
            s.load()
    refused(path, "checksum mismatch at accepted slot 2")


def test_changed_identity_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    make_node_file(path)
    raw(path, "UPDATE meta SET node_id = 1")  # edited so that node 1 would take it
    with pytest.raises(StorageError, match="checksum mismatch in the meta row"):
        SQLiteStore(path, "c1", 1)


# -- format 1 (no checksums) files are migrated once -------------------------------------------

_V1_SCHEMA = [
    "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), format_version INTEGER NOT NULL, "
    "cluster_id TEXT NOT NULL, node_id INTEGER NOT NULL)",
    "CREATE TABLE promise (id INTEGER PRIMARY KEY CHECK (id = 0), "
    "round INTEGER NOT NULL CHECK (typeof(round) = 'integer'), "
    "node INTEGER NOT NULL CHECK (typeof(node) = 'integer'))",
    "CREATE TABLE accepted (slot INTEGER PRIMARY KEY, "
    "ballot_round INTEGER NOT NULL CHECK (typeof(ballot_round) = 'integer'), "
    "ballot_node INTEGER NOT NULL CHECK (typeof(ballot_node) = 'integer'), "
    "value INTEGER CHECK (value IS NULL OR typeof(value) = 'integer'))",
    "CREATE TABLE chosen (slot INTEGER PRIMARY KEY, "
    "value INTEGER CHECK (value IS NULL OR typeof(value) = 'integer'))",
]


def make_v1_file(path: Path, chosen: int = 1200) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    for statement in _V1_SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES (0, 1, 'c1', 0)")
    conn.execute("INSERT INTO promise VALUES (0, 7, 2)")
    conn.executemany(
        "INSERT INTO chosen VALUES (?, ?)",
        [(s, None if s % 7 == 0 else -s) for s in range(1, chosen + 1)],
    )
    conn.executemany(
        "INSERT INTO accepted VALUES (?, 7, 2, ?)",
        [(s, None if s % 5 == 0 else s) for s in range(chosen + 1, chosen + 31)],
    )
    conn.execute("PRAGMA application_id = 1348565095")
    conn.execute("COMMIT")
    conn.close()


def test_format_1_file_is_migrated_once_with_checksums(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    make_v1_file(path)
    expected = StoredState(
        B7, 1200, {s: (B7, None if s % 5 == 0 else s) for s in range(1201, 1231)}
    )
    log = [(s, None if s % 7 == 0 else -s) for s in range(1, 1201)]
    with SQLiteStore(path, "c1", 0) as s:
        assert s.load() == expected
        assert s.read_chosen(1, 5000) == log
        s.apply([Persist(chosen=[(1201, 1201)])])  # and it goes on as a format 2 file
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT format_version FROM meta").fetchone() == (FORMAT_VERSION,)
        assert conn.execute("SELECT COUNT(*) FROM chosen WHERE crc IS NULL").fetchone() == (0,)
    finally:
        conn.close()
    with SQLiteStore(path, "c1", 0) as s:  # the full check at open passes on migrated records
        assert s.read_chosen(1, 5000) == [*log, (1201, 1201)]
    raw(path, "UPDATE chosen SET value = 3 WHERE slot = 9")  # and they are checked from now on
    refused(path, "checksum mismatch at chosen slot 9")


def test_format_1_file_of_another_cluster_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    make_v1_file(path, chosen=3)
    with pytest.raises(StorageError, match="was made by cluster c1, not c2"):
        SQLiteStore(path, "c2", 0)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT format_version FROM meta").fetchone() == (1,)
    finally:
        conn.close()


# -- --db-max-pages ----------------------------------------------------------------------------


@pytest.mark.parametrize("pages", [0, -1, -(2**40)])
def test_max_pages_below_one_is_refused(tmp_path: Path, pages: int) -> None:
    path = tmp_path / "paxgos.db"
    message = refused(path, "max_pages must be at least 1", max_pages=pages)
    assert str(pages) in message
    assert not path.exists()


def test_max_pages_too_small_for_the_schema_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "paxgos.db"
    refused(path, "full", max_pages=1)
    assert not path.exists()  # no half-made file left where the database goes
    with SQLiteStore(path, "c1", 0, max_pages=16) as s:  # a tiny "disk" that fits works
        s.apply([Persist(chosen=[(1, 1)])])


@pytest.mark.parametrize("pages", ["0", "-3"])
def test_cli_refuses_db_max_pages_below_one(pages: str, capsys: pytest.CaptureFixture[str]) -> None:
    from paxgos.cli import node_parser

    argv = ["--id", "0", "--peers", "http://127.0.0.1:1", "--db-max-pages", pages]
    with pytest.raises(SystemExit) as info:
        node_parser().parse_args(argv)
    assert info.value.code == 2
    assert "--db-max-pages" in capsys.readouterr().err


# -- an unwritable file or directory -----------------------------------------------------------


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make ``path`` (file or directory) unwritable, for root too: root ignores permission bits,
    so as root the file is made immutable (``chattr +i``, ext4/xfs/btrfs); skipped where that is
    not possible."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    try:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot make a file unwritable for root: {exc}")
    if done.returncode != 0:
        pytest.skip(f"chattr +i failed: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, timeout=10)


def test_unwritable_database_file_is_refused_at_open(tmp_path: Path) -> None:
    """SQLite opens a file it cannot write read-only without a word, and the node would then
    fail at its first write; the store refuses it at start instead."""
    path = tmp_path / "paxgos.db"
    make_node_file(path)
    with unwritable(path):
        message = refused(path, "not writable")
        assert "permission" in message.lower() or "not permitted" in message.lower(), message


def test_unwritable_directory_of_an_existing_file_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "node-0" / "paxgos.db"
    make_node_file(path)  # the lock file exists already; SQLite still needs its -wal and -shm
    with unwritable(path.parent):
        refused(path, "directory .* is not writable")


def test_unwritable_directory_for_a_new_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "node-0"
    directory.mkdir()
    with unwritable(directory):
        refused(directory / "paxgos.db", "not writable|cannot create")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")
def test_database_under_proc_is_a_one_line_error(tmp_path: Path) -> None:
    refused(Path("/proc/self/paxgos.db"), "not writable|cannot create")


# -- a symbolic link in place of the file ------------------------------------------------------


def test_symlinked_database_keeps_working(tmp_path: Path) -> None:
    """SQLite follows a symbolic link and keeps the -wal next to the file it points to; the
    store fsyncs that WAL, and creates a missing target where the link points."""
    (tmp_path / "disk").mkdir()
    (tmp_path / "node-0").mkdir()
    target = tmp_path / "disk" / "paxgos.db"
    link = tmp_path / "node-0" / "paxgos.db"
    link.symlink_to(target)  # dangling until the store creates the file
    with SQLiteStore(link, "c1", 0) as s:
        s.apply([Persist(promised=B7, accepted=[(1, B1, 5)])])
        s.apply([Persist(chosen=[(1, 5)])])
    assert link.is_symlink() and target.is_file()
    with SQLiteStore(link, "c1", 0) as s:
        assert s.load() == StoredState(B7, 1, {})
        assert s.read_chosen(1, 5) == [(1, 5)]
