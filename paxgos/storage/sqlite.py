"""A durable store in one SQLite file (standard library ``sqlite3``): the default for real nodes.

Owns the on-disk format of a node's state::

    meta      (format_version, cluster_id, node_id)        one row: whose file this is
    promise   (round, node)                                 one row: the promised ballot
    accepted  (slot PRIMARY KEY, ballot_round, ballot_node, value NULL = no-op)
    chosen    (slot PRIMARY KEY, value NULL = no-op)        always exactly slots 1..commit

Durability: the file runs in WAL mode.  ``write`` stores a whole batch of ``Persist`` records
(many Readys: group commit) as one transaction, and ``sync`` fsyncs the write-ahead log file
(``fdatasync``; ``F_FULLFSYNC`` on macOS), hence one fsync per batch however many records it
holds; ``apply`` is both.  The connection runs ``synchronous=NORMAL``, which in WAL mode keeps
the file consistent across any crash (SQLite syncs the WAL before each checkpoint and the
database after it) but does not sync at ``COMMIT``: a committed transaction's frames are
written to the WAL file, and ``sync`` is what makes them durable.  Together they give what
``synchronous=FULL`` gives, with the fsync callable on its own: the node runs the transaction on
its event loop and the fsync there too while the disk is fast, or in a thread when it is slow
(a transaction run in a thread gives up and retakes Python's GIL at every SQLite step, and on a
busy event loop each retake waits).
After a chosen slot is written, accepted rows at or below it are deleted: the accepted table
only holds the (bounded) in-flight window, and the chosen table is the log.

Refusal: a file that is not SQLite, fails ``PRAGMA quick_check``, belongs to another cluster or
node, or has an unknown format version raises ``StorageError`` naming the file and the reason;
a store never silently starts empty in place of a file it cannot use.  A second ``SQLiteStore``
on the same file (another process, or the same one) is refused while the first is open, via an
advisory ``flock`` on ``<file>.lock`` (POSIX only), because two acceptors sharing one promise
would break Paxos.

Write failures (disk full, I/O error) raise ``StorageError`` after rolling the transaction
back; the store then refuses every later write.  The caller must treat that as fatal and
restart the node from ``load()``: the core has already moved its in-memory state past what is on
disk, and after a failed fsync the only trustworthy state is the one re-read from the file.

Threads: the connections are opened with ``check_same_thread=False``, so a store may be created
in one thread (the main thread, so that a bad file stops start-up) and used in others.
``write``, ``sync``, ``apply`` and ``load`` are meant to be called one at a time (``paxgos.net``
writes on its event loop and syncs there or in its writer thread, never both at once); a lock
makes an accidental second caller wait rather than corrupt anything.  ``read_chosen`` uses its
own read connection, so any thread may call it: it sees only committed transactions and never
waits for the writer (WAL readers do not block the writer, nor it them).  ``checkpoint`` uses a
connection of its own too.  ``commit_index()`` is a cached integer, free to read from any thread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from paxgos.core import ZERO, Persist, StoredState
from paxgos.core.ballot import Ballot
from paxgos.core.messages import AcceptedEntry, ChosenEntry
from paxgos.storage.base import StorageError, Store

try:  # POSIX: an advisory lock keeps two stores off one file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: macOS's "flush to the medium" fcntl, else None (``os.fdatasync`` does it elsewhere).
_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None)

#: On-disk format written by this code; files of any other version are refused.
FORMAT_VERSION = 1

#: ``PRAGMA application_id`` of a Paxgos file ("Paxg"), so ``file(1)`` can tell what it is.
APPLICATION_ID = 0x50617867

_SQLITE_MAGIC = b"SQLite format 3\x00"

# CHECK(typeof(...)) instead of STRICT tables: STRICT needs SQLite 3.37, older than some Pythons
# 3.10 ship with.  The checks stop a non-integer from ever being stored as TEXT or REAL.
_SCHEMA = """
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    format_version INTEGER NOT NULL,
    cluster_id TEXT NOT NULL,
    node_id INTEGER NOT NULL
);
CREATE TABLE promise (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    round INTEGER NOT NULL CHECK (typeof(round) = 'integer'),
    node INTEGER NOT NULL CHECK (typeof(node) = 'integer')
);
CREATE TABLE accepted (
    slot INTEGER PRIMARY KEY,
    ballot_round INTEGER NOT NULL CHECK (typeof(ballot_round) = 'integer'),
    ballot_node INTEGER NOT NULL CHECK (typeof(ballot_node) = 'integer'),
    value INTEGER CHECK (value IS NULL OR typeof(value) = 'integer')
);
CREATE TABLE chosen (
    slot INTEGER PRIMARY KEY,
    value INTEGER CHECK (value IS NULL OR typeof(value) = 'integer')
);
"""


#: Rows per multi-row INSERT (4 columns each stays far below SQLite's 32766 variables).
_ROWS_PER_INSERT = 500


def _insert_rows(conn: sqlite3.Connection, insert: str, rows: Sequence[tuple[object, ...]]) -> None:
    """``insert`` (``INSERT ... INTO t (cols)``) of ``rows`` with one statement per chunk.

    ``executemany`` steps SQLite once per row, and the sqlite3 module releases and re-takes the
    GIL around every step: from the writer thread that means hundreds of GIL hand-offs per batch
    with the event loop thread.  A multi-row ``VALUES`` list takes one step per chunk.
    """
    if not rows:
        return
    width = len(rows[0])
    row = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        sql = f"{insert} VALUES {','.join([row] * len(chunk))}"
        conn.execute(sql, [field for entry in chunk for field in entry])


class SQLiteStore(Store):
    """Durable node state in the SQLite file ``path`` (created, with its directory, if missing).

    ``cluster_id`` and ``node_id`` are written into a new file and checked against an existing
    one.  ``quick_check`` runs ``PRAGMA quick_check`` at open (reads the whole file once; pass
    ``False`` to skip it on very large logs).  Raises ``StorageError`` if the file cannot be used.
    """

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        cluster_id: str,
        node_id: int,
        *,
        quick_check: bool = True,
        max_pages: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.cluster_id = cluster_id
        self.node_id = node_id
        self._name = str(path)  # as the caller spelled it, for error messages
        self._lock = threading.Lock()  # serializes the write connection
        self._read_lock = threading.Lock()  # serializes the read connection
        self._failed: str | None = None  # why writes are refused after a failed one
        self._lock_file: int | None = None
        self._wal_fd: int | None = None  # the write-ahead log file, for ``sync``
        self._unsynced = False  # a transaction committed since the last sync
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        self._commit = 0
        self._max_pages = max_pages  # fault injection: a tiny "disk" that fills up
        try:
            self._open(quick_check)
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------------

    def _error(self, reason: str) -> StorageError:
        return StorageError(f"{self._name}: {reason}")

    def _open(self, quick_check: bool) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(f"cannot create directory: {exc.strerror or exc}") from exc
        if self.path.is_dir():
            raise self._error("is a directory, not a database file")
        self._check_header()
        self._take_file_lock()
        try:
            self._conn = self._connect()
            self._configure(self._conn)
            if quick_check:
                self._quick_check()
            self._init_or_verify()
            self._commit = self._scan_commit()
            self._reader = self._connect()
            self._reader.execute("PRAGMA query_only = ON")
            self.sync()  # a new file's schema
        except sqlite3.DatabaseError as exc:
            # "file is not a database", "database disk image is malformed", I/O errors, ...
            raise self._error(f"cannot open database: {exc}") from exc

    def _check_header(self) -> None:
        """Refuse a non-empty file that does not start with SQLite's magic string, before
        SQLite gets a chance to treat it (or a truncated header) in some other way."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(f"cannot read: {exc.strerror or exc}") from exc
        if head and head != _SQLITE_MAGIC:
            raise self._error("not a SQLite database (bad header)")

    def _take_file_lock(self) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            return
        lock_path = f"{self.path}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._error(f"cannot create lock file {lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            reason = "in use by another store (is another node using this directory?)"
            raise self._error(reason) from exc
        self._lock_file = fd

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; write issues BEGIN/COMMIT itself.
        try:
            conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.Error as exc:
            raise self._error(f"cannot open database: {exc}") from exc
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise self._error(f"cannot use WAL journal mode (got {mode!r})")
        # NORMAL in WAL mode: consistent after any crash, and COMMIT only writes the WAL;
        # ``sync`` fsyncs it (see the module docstring).
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA fullfsync = ON")  # macOS: F_FULLFSYNC, a real flush; else no-op
        conn.execute("PRAGMA checkpoint_fullfsync = ON")
        # No checkpoint inside write: copying the WAL into the database (and its fsync) would
        # stall the commit that triggers it; ``checkpoint()`` does it from another thread.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        if self._max_pages is not None:
            conn.execute(f"PRAGMA max_page_count = {int(self._max_pages)}")

    def _quick_check(self) -> None:
        assert self._conn is not None
        rows = self._conn.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            first = str(rows[0][0]).splitlines()[0] if rows else "no result"
            raise self._error(f"failed integrity check: {first}")

    def _init_or_verify(self) -> None:
        """Create the schema in an empty file, or check that an existing one is ours."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if not tables:
                # One statement at a time: executescript would COMMIT the open transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (id, format_version, cluster_id, node_id) "
                    "VALUES (0, ?, ?, ?)",
                    (FORMAT_VERSION, self.cluster_id, self.node_id),
                )
                conn.execute(
                    "INSERT INTO promise (id, round, node) VALUES (0, ?, ?)",
                    (ZERO.round, ZERO.node),
                )
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("COMMIT")
                self._unsynced = True
                return
            if "meta" not in tables:
                raise self._error("not a paxgos database (no meta table)")
            row = conn.execute(
                "SELECT format_version, cluster_id, node_id FROM meta WHERE id = 0"
            ).fetchone()
            if row is None:
                raise self._error("not a paxgos database (empty meta table)")
            version, cluster_id, node_id = row
            if version != FORMAT_VERSION:
                raise self._error(
                    f"format version {version} is not supported "
                    f"(this build reads version {FORMAT_VERSION})"
                )
            if cluster_id != self.cluster_id:
                raise self._error(
                    f"was made by cluster {cluster_id}, not {self.cluster_id}; "
                    f"pass --cluster-id {cluster_id}"
                )
            if node_id != self.node_id:
                raise self._error(f"belongs to node {node_id}, not node {self.node_id}")
            missing = {"promise", "accepted", "chosen"} - tables
            if missing:
                raise self._error(f"damaged: missing tables {', '.join(sorted(missing))}")
            if conn.execute("SELECT 1 FROM promise WHERE id = 0").fetchone() is None:
                raise self._error("damaged: no promise row")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _scan_commit(self) -> int:
        """The commit index: the chosen table must hold exactly slots 1..n."""
        assert self._conn is not None
        low, high, count = self._conn.execute(
            "SELECT MIN(slot), MAX(slot), COUNT(*) FROM chosen"
        ).fetchone()
        if count == 0:
            return 0
        if low != 1 or high != count:
            raise self._error(f"chosen log is not a prefix: {count} slots between {low} and {high}")
        return int(high)

    # -- the Store interface -------------------------------------------------------------------

    def load(self) -> StoredState:
        """Promise, commit index and accepted values above it, read (and verified) from disk."""
        with self._lock:
            conn = self._live(self._conn)
            try:
                conn.execute("BEGIN")  # one snapshot for all three reads
                try:
                    round_, node = conn.execute(
                        "SELECT round, node FROM promise WHERE id = 0"
                    ).fetchone()
                    commit = self._scan_commit()
                    accepted = {
                        slot: (Ballot(b_round, b_node), value)
                        for slot, b_round, b_node, value in conn.execute(
                            "SELECT slot, ballot_round, ballot_node, value FROM accepted "
                            "WHERE slot > ? ORDER BY slot",
                            (commit,),
                        )
                    }
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(f"read failed: {exc}") from exc
        return StoredState(Ballot(round_, node), commit, accepted)

    def write(self, batch: Sequence[Persist]) -> None:
        """Write every record of ``batch`` in one transaction; ``sync`` makes it durable.

        The last non-None promise wins; accepted entries are upserted in order (a later entry
        for a slot replaces an earlier one); chosen entries must continue the log at
        ``commit_index() + 1`` without gaps, else ``StorageError`` and nothing is written.
        Accepted rows at or below the new commit index are dropped.  On a write failure the
        transaction is rolled back, ``StorageError`` is raised, and every later write is
        refused (restart from ``load()``).
        """
        promised: Ballot | None = None
        accepted: list[AcceptedEntry] = []
        chosen: list[ChosenEntry] = []
        for persist in batch:
            if persist.promised is not None:
                promised = persist.promised
            accepted.extend(persist.accepted)
            chosen.extend(persist.chosen)
        if promised is None and not accepted and not chosen:
            return
        with self._lock:
            conn = self._live(self._conn)
            if self._failed is not None:
                raise self._error(
                    f"refusing to write after an earlier failure ({self._failed}); "
                    "restart the node to reload its state from disk"
                )
            commit = self._commit
            for slot, _ in chosen:
                if slot != commit + 1:
                    raise self._error(
                        f"chosen slot {slot} does not follow commit index {commit} "
                        "(the log must grow in slot order)"
                    )
                commit = slot
            try:
                conn.execute("BEGIN IMMEDIATE")
                if promised is not None:
                    conn.execute(
                        "UPDATE promise SET round = ?, node = ? WHERE id = 0",
                        (promised.round, promised.node),
                    )
                if accepted:
                    _insert_rows(
                        conn,
                        "INSERT OR REPLACE INTO accepted (slot, ballot_round, ballot_node, value)",
                        [(s, b[0], b[1], v) for s, b, v in accepted if s > commit],
                    )
                if chosen:
                    _insert_rows(conn, "INSERT INTO chosen (slot, value)", chosen)
                    conn.execute("DELETE FROM accepted WHERE slot <= ?", (commit,))
                conn.execute("COMMIT")
                self._unsynced = True
            except (sqlite3.Error, OverflowError, TypeError, ValueError) as exc:
                self._failed = f"{type(exc).__name__}: {exc}"
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite may already have rolled back (e.g. SQLITE_FULL, I/O error)
                raise self._error(f"write failed, batch rolled back: {exc}") from exc
            self._commit = commit

    def read_chosen(self, from_slot: int, limit: int) -> list[ChosenEntry]:
        """Up to ``limit`` committed chosen entries from ``from_slot`` on (an indexed range
        query on the read connection; callable from any thread)."""
        if limit <= 0:
            return []  # SQLite reads a negative LIMIT as "no limit"
        with self._read_lock:
            reader = self._live(self._reader)
            try:
                rows = reader.execute(
                    "SELECT slot, value FROM chosen WHERE slot >= ? ORDER BY slot LIMIT ?",
                    (max(from_slot, 1), limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error(f"read failed: {exc}") from exc
        return rows

    def sync(self) -> None:
        """Fsync the write-ahead log file: every ``write`` so far is then durable.  A failed
        fsync raises ``StorageError`` and, like a failed write, refuses every later one."""
        with self._lock:
            self._live(self._conn)
            if not self._unsynced:
                return
            try:
                fd = self._wal_file()
                if _FULLFSYNC is not None:
                    fcntl.fcntl(fd, _FULLFSYNC)  # macOS: fsync alone stops at the drive's cache
                else:
                    os.fdatasync(fd)
            except OSError as exc:
                self._failed = f"fsync failed: {exc.strerror or exc}"
                raise self._error(f"fsync of the write-ahead log failed: {exc}") from exc
            self._unsynced = False

    def _wal_file(self) -> int:
        """A descriptor of the WAL file (SQLite's own is out of Python's reach; an fsync on any
        descriptor of a file flushes that file).  Reopened should SQLite ever have replaced the
        file, so that ``sync`` never flushes a stale one."""
        wal = f"{self.path}-wal"
        current = os.stat(wal).st_ino
        if self._wal_fd is not None and os.fstat(self._wal_fd).st_ino != current:
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._wal_fd is None:
            self._wal_fd = os.open(wal, os.O_RDWR)
        return self._wal_fd

    def checkpoint(self) -> None:
        """Copy the WAL into the database file without blocking ``write`` (a PASSIVE
        checkpoint on a connection of its own); SQLite then reuses the WAL from its start.
        Callable from any thread but the writer's."""
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = self._connect()
                self._configure(self._checkpointer)
            try:
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                raise self._error(f"checkpoint failed: {exc}") from exc

    def commit_index(self) -> int:
        """The highest chosen slot written (every slot 1..it is in the log); no I/O."""
        return self._commit

    def chosen_count(self) -> int:
        """How many chosen entries the log holds (the same as ``commit_index()``)."""
        return self._commit

    def close(self) -> None:
        """Close both connections and release the file lock; safe to call twice."""
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        with self._lock:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self._lock_file is not None:
            os.close(self._lock_file)  # releases the flock
            self._lock_file = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self._name!r}, cluster={self.cluster_id!r}, node={self.node_id})"

    def _live(self, conn: sqlite3.Connection | None) -> sqlite3.Connection:
        if conn is None:
            raise self._error("store is closed")
        return conn


__all__ = ["APPLICATION_ID", "FORMAT_VERSION", "SQLiteStore"]
