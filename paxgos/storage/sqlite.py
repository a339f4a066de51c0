"""A durable store in one SQLite file (standard library ``sqlite3``): the default for real nodes.

Owns the on-disk format of a node's state (format version 2)::

    meta      (format_version, cluster_id, node_id, crc)    one row: whose file this is
    promise   (round, node, crc)                            one row: the promised ballot
    accepted  (slot PRIMARY KEY, ballot_round, ballot_node, value NULL = no-op, crc)
    chosen    (slot PRIMARY KEY, value NULL = no-op, crc)   always exactly slots 1..commit

Checksums: every row carries ``crc``, the ``zlib.crc32`` of its fields packed as little-endian
signed 64-bit integers (``struct`` ``<q``), in this order:

    accepted  slot, ballot_round, ballot_node, value        (no-op: slot, round, node)
    chosen    slot, value                                   (no-op: slot)
    promise   round, node
    meta      format_version, node_id, then cluster_id as UTF-8

A no-op packs one integer fewer, which is its flag: no integer value packs the same way.  The
slot is in the checksum, so a record that moved to another slot is damaged too.  SQLite has no
row checksums of its own (``quick_check`` checks the b-tree, not what a cell holds): one changed
byte in a stored value passes it, and without ``crc`` the node would serve the changed value.
``load`` verifies the promise and every accepted row it returns, ``read_chosen`` every entry it
returns, and opening verifies the meta row, and with ``quick_check`` (the default) every row of
every table; a mismatch raises ``StorageError`` naming the file and the slot, and the value is
never returned.  A checksum finds damage (a disk, a bad copy, a stray edit), not a forger: anyone
who can write the file can recompute it.  Writes compute the checksums in C (``struct`` and
``zlib`` called through ``map``), a fraction of a microsecond per row; see
``bench/storage_bench.py``.

Format 1 (the same tables without ``crc``) is migrated when opened: in one transaction, after
``quick_check`` and the identity checks, every row gets its checksum and the version becomes 2
(logged as a warning).  A migrated file's checksums vouch for what the file held then.

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

New files: only a missing file is a new node.  Its file is built complete (schema, identity,
zero promise) as ``<file>.new``, fsynced, and renamed into place, so no crash can leave an empty
or half-made file where the database goes; a stale ``<file>.new`` is discarded.

Refusal: ``StorageError``, one line naming the file and the reason, for a file that is empty
(zero bytes: it was truncated, and a promise and a log may be lost with it), not a regular file
(a directory, a named pipe: checked with ``os.stat`` before anything opens it, since opening a
pipe blocks), missing while its write-ahead log exists, not writable (SQLite would quietly open
it read-only and fail at the first write), in a directory that is not writable, not SQLite,
failing ``PRAGMA quick_check`` or a checksum, of another cluster or node, or of an unknown format
version; a store never silently starts empty in place of a file it cannot use.  A second
``SQLiteStore`` on the same file (another process, or the same one) is refused while the first is
open, via an advisory ``flock`` on ``<file>.lock`` (POSIX only), because two acceptors sharing
one promise would break Paxos.  ``max_pages`` (``--db-max-pages``) below 1 is refused too.

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

import functools
import logging
import os
import sqlite3
import stat
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from itertools import starmap
from operator import itemgetter
from pathlib import Path
from types import TracebackType

from paxgos.core import ZERO, Persist, StoredState
from paxgos.core.ballot import Ballot
from paxgos.core.messages import AcceptedEntry, ChosenEntry, Value
from paxgos.storage.base import StorageError, Store

try:  # POSIX: an advisory lock keeps two stores off one file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("paxgos.storage")

#: macOS's "flush to the medium" fcntl, else None (``os.fdatasync`` does it elsewhere).
_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None)

#: On-disk format written by this code: 2 has checksums.  Format 1 files are migrated to it;
#: files of any other version are refused.
FORMAT_VERSION = 2

#: ``PRAGMA application_id`` of a Paxgos file ("Paxg"), so ``file(1)`` can tell what it is.
APPLICATION_ID = 0x50617867

_SQLITE_MAGIC = b"SQLite format 3\x00"

#: How to put a damaged file right, at the end of every message about one.
_RECOVER = "restore it, or delete it to start this node empty — it will catch up from the others"

# CHECK(typeof(...)) instead of STRICT tables: STRICT needs SQLite 3.37, older than some Pythons
# 3.10 ship with.  The checks stop a non-integer from ever being stored as TEXT or REAL.
_TABLES = {
    "meta": """CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    format_version INTEGER NOT NULL,
    cluster_id TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    crc INTEGER NOT NULL CHECK (typeof(crc) = 'integer')
)""",
    "promise": """CREATE TABLE promise (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    round INTEGER NOT NULL CHECK (typeof(round) = 'integer'),
    node INTEGER NOT NULL CHECK (typeof(node) = 'integer'),
    crc INTEGER NOT NULL CHECK (typeof(crc) = 'integer')
)""",
    "accepted": """CREATE TABLE accepted (
    slot INTEGER PRIMARY KEY,
    ballot_round INTEGER NOT NULL CHECK (typeof(ballot_round) = 'integer'),
    ballot_node INTEGER NOT NULL CHECK (typeof(ballot_node) = 'integer'),
    value INTEGER CHECK (value IS NULL OR typeof(value) = 'integer'),
    crc INTEGER NOT NULL CHECK (typeof(crc) = 'integer')
)""",
    "chosen": """CREATE TABLE chosen (
    slot INTEGER PRIMARY KEY,
    value INTEGER CHECK (value IS NULL OR typeof(value) = 'integer'),
    crc INTEGER NOT NULL CHECK (typeof(crc) = 'integer')
)""",
}

# -- checksums (the definitions are in the module docstring) ------------------------------------

_crc32 = zlib.crc32
_pack_accepted = struct.Struct("<qqqq").pack
_pack_accepted_noop = struct.Struct("<qqq").pack
_pack_chosen = struct.Struct("<qq").pack
_pack_chosen_noop = struct.Struct("<q").pack
_pack_promise = struct.Struct("<qq").pack
_pack_meta = struct.Struct("<qq").pack

AcceptedRow = tuple[int, int, int, Value]  # slot, ballot round, ballot node, value


def accepted_crc(slot: int, round_: int, node: int, value: Value) -> int:
    """The checksum of an accepted row; ``struct.error`` if a field is no 64-bit integer."""
    if value is None:
        return _crc32(_pack_accepted_noop(slot, round_, node))
    return _crc32(_pack_accepted(slot, round_, node, value))


def chosen_crc(slot: int, value: Value) -> int:
    """The checksum of a chosen row; ``struct.error`` if a field is no 64-bit integer."""
    if value is None:
        return _crc32(_pack_chosen_noop(slot))
    return _crc32(_pack_chosen(slot, value))


def promise_crc(round_: int, node: int) -> int:
    """The checksum of the promise row."""
    return _crc32(_pack_promise(round_, node))


def meta_crc(format_version: int, cluster_id: str, node_id: int) -> int:
    """The checksum of the meta row."""
    return _crc32(_pack_meta(format_version, node_id) + cluster_id.encode())


def _accepted_crcs(rows: Sequence[AcceptedRow]) -> list[int]:
    """Checksums of ``rows``.  The hot path: every field is an integer, and ``map`` runs the
    packing and the crc in C without a Python frame per row; a no-op (rare: a new leader's
    hole-filling) makes ``struct`` refuse the batch, which then goes row by row."""
    try:
        return list(map(_crc32, starmap(_pack_accepted, rows)))
    except struct.error:
        return [accepted_crc(*row) for row in rows]  # raises for a value that is no integer


def _chosen_crcs(rows: Sequence[ChosenEntry]) -> list[int]:
    """Checksums of chosen ``rows``, as ``_accepted_crcs``."""
    try:
        return list(map(_crc32, starmap(_pack_chosen, rows)))
    except struct.error:
        return [chosen_crc(*row) for row in rows]


def _matches(crc: Callable[..., int], fields: Sequence[object], stored: object) -> bool:
    """Whether a row read back has the checksum stored with it.  A damaged file may hold a
    field that is not an integer at all (a flipped type byte): that is a mismatch too."""
    try:
        return crc(*fields) == stored
    except (struct.error, TypeError, AttributeError, ValueError):
        return False


_first, _second, _third = itemgetter(0), itemgetter(1), itemgetter(2)
_entry = itemgetter(0, 1)  # (slot, value) of a chosen row read with its crc

#: Rows per multi-row INSERT (5 columns each stays far below SQLite's 32766 variables).
_ROWS_PER_INSERT = 500


@functools.lru_cache(maxsize=64)
def _values_sql(insert: str, width: int, count: int) -> str:
    """``insert VALUES (?,...), ...`` for ``count`` rows of ``width`` fields and a checksum.
    Plain ``?`` placeholders: Python 3.12 and 3.13 warn about every numbered one (``?1``)
    bound from a sequence, which tripled the cost of a small write there, and 3.14 refuses
    them."""
    row = "(" + ",".join("?" * (width + 1)) + ")"
    return f"{insert} VALUES {','.join([row] * count)}"


def _insert_rows(
    conn: sqlite3.Connection, insert: str, rows: Sequence[Sequence[object]], crcs: list[int]
) -> None:
    """``insert`` (``INSERT ... INTO t (cols..., crc)``) of ``rows``, each with its checksum
    from ``crcs``, with one statement per chunk.

    ``executemany`` steps SQLite once per row, and the sqlite3 module releases and re-takes the
    GIL around every step: from the writer thread that means hundreds of GIL hand-offs per batch
    with the event loop thread.  A multi-row ``VALUES`` list takes one step per chunk.
    """
    if not rows:
        return
    width = len(rows[0])
    stride = width + 1
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        # Each row's fields, then its checksum: one column at a time into every stride-th
        # place (a pass in C per column, no tuple per row).
        params: list[object] = [None] * (len(chunk) * stride)
        for column in range(width):
            params[column::stride] = map(itemgetter(column), chunk)
        params[width::stride] = crcs[start : start + _ROWS_PER_INSERT]
        conn.execute(_values_sql(insert, width, len(chunk)), params)


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, for a message."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


class SQLiteStore(Store):
    """Durable node state in the SQLite file ``path`` (created, with its directory, if missing).

    ``cluster_id`` and ``node_id`` are written into a new file and checked against an existing
    one.  ``quick_check`` runs ``PRAGMA quick_check`` at open and verifies every record's
    checksum (reads the whole file twice; pass ``False`` to skip both on very large logs: the
    records are then verified as they are read).  ``max_pages`` (at least 1) caps the file to
    simulate a full disk.  Raises ``StorageError`` if the file cannot be used.
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
        # The file itself: SQLite follows a symbolic link and keeps the -wal and -shm files
        # next to the file it points to (resolved once its directory exists).
        self._file = self.path
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

    def _insert_meta(self, conn: sqlite3.Connection) -> None:
        """Write the row that says whose file this is, in this code's format."""
        conn.execute(
            "INSERT INTO meta (id, format_version, cluster_id, node_id, crc) "
            "VALUES (0, ?, ?, ?, ?)",
            (
                FORMAT_VERSION,
                self.cluster_id,
                self.node_id,
                meta_crc(FORMAT_VERSION, self.cluster_id, self.node_id),
            ),
        )

    def _error(self, reason: str) -> StorageError:
        return StorageError(f"{self._name}: {reason}")

    def _damaged(self, where: str) -> StorageError:
        return self._error(f"checksum mismatch {where}: the stored record is damaged; {_RECOVER}")

    def _open(self, quick_check: bool) -> None:
        pages = self._max_pages
        if pages is not None and (
            isinstance(pages, bool) or not isinstance(pages, int) or pages < 1
        ):
            raise self._error(f"max_pages must be at least 1, got {pages!r}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(f"cannot create directory: {exc.strerror or exc}") from exc
        self._file = Path(os.path.realpath(self.path))
        self._check_files()  # before anything opens them: a named pipe would block the open
        self._take_file_lock()
        self._check_directory()
        if self._check_files():
            self._check_header()
        else:
            self._create()
        try:
            self._conn = self._connect()
            self._configure(self._conn)
            if quick_check:
                self._quick_check()
            self._init_or_verify()
            self._commit = self._scan_commit()
            if quick_check:
                self._verify_all()
            self._reader = self._connect()
            self._reader.execute("PRAGMA query_only = ON")
            self.sync()  # a migration's writes
        except sqlite3.DatabaseError as exc:
            # "file is not a database", "database disk image is malformed", I/O errors, ...
            raise self._error(f"cannot open database: {exc}") from exc

    def _check_files(self) -> bool:
        """Whether the database exists; ``StorageError`` if it, or its write-ahead log or
        shared-memory file, is not a regular file, or if it is empty (only a missing file is
        a new node), or if it is missing but its write-ahead log is not."""
        for suffix in ("-wal", "-shm"):
            other = f"{self._file}{suffix}"
            try:
                mode = os.stat(other).st_mode
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._error(f"cannot stat {other}: {exc.strerror or exc}") from exc
            if not stat.S_ISREG(mode):
                raise self._error(f"{other} is not a regular file ({_kind(mode)})")
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            wal = f"{self._file}-wal"
            if os.path.exists(wal):
                raise self._error(
                    f"missing, but its write-ahead log {wal} is there (the database was deleted "
                    f"without it): restore the database, or delete {wal} too to start this node "
                    "empty — it will catch up from the others"
                ) from None
            return False
        except OSError as exc:
            raise self._error(f"cannot stat: {exc.strerror or exc}") from exc
        if stat.S_ISDIR(info.st_mode):
            raise self._error("is a directory, not a database file")
        if not stat.S_ISREG(info.st_mode):
            raise self._error(f"is not a regular file ({_kind(info.st_mode)})")
        if info.st_size == 0:
            raise self._error(
                "is empty (0 bytes), but a node's database never is: it was truncated, and the "
                f"node's promises and log with it; {_RECOVER}"
            )
        return True

    def _check_directory(self) -> None:
        """SQLite creates the ``-wal`` and ``-shm`` files next to the database (and this store
        its new file): refuse a directory it cannot write to now, not at the first write."""
        directory = self._file.parent
        if os.access(directory, os.W_OK | os.X_OK):
            return
        try:
            read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
            read_only = False
        why = "read-only file system" if read_only else "no permission"
        raise self._error(f"directory {directory} is not writable ({why})")

    def _check_header(self) -> None:
        """Refuse a file this process cannot write (SQLite would open it read-only without a
        word, and the node fail at its first write), and a non-empty file that does not start
        with SQLite's magic string, before SQLite gets a chance to treat it (or a truncated
        header) in some other way."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise self._error(f"not writable: {exc.strerror or exc}") from exc
        try:
            head = os.read(fd, len(_SQLITE_MAGIC))
        except OSError as exc:
            raise self._error(f"cannot read: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        if head != _SQLITE_MAGIC:
            raise self._error("not a SQLite database (bad header)")

    def _create(self) -> None:
        """Build a new node's file under a temporary name and rename it into place."""
        temp = Path(f"{self._file}.new")
        leftovers = [Path(f"{temp}{suffix}") for suffix in ("", "-journal", "-wal", "-shm")]
        try:
            for leftover in leftovers:  # of a crash while creating: never renamed, never used
                leftover.unlink(missing_ok=True)
            # The default rollback journal: COMMIT leaves everything in ``temp`` itself (no WAL
            # to carry along); ``_configure`` then switches the renamed file to WAL.
            conn = sqlite3.connect(str(temp), isolation_level=None)
            try:
                if self._max_pages is not None:
                    conn.execute(f"PRAGMA max_page_count = {int(self._max_pages)}")
                conn.execute("BEGIN IMMEDIATE")
                for create in _TABLES.values():
                    conn.execute(create)
                self._insert_meta(conn)
                conn.execute(
                    "INSERT INTO promise (id, round, node, crc) VALUES (0, ?, ?, ?)",
                    (ZERO.round, ZERO.node, promise_crc(ZERO.round, ZERO.node)),
                )
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("COMMIT")
            finally:
                conn.close()
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, self._file)
            self._fsync_directory()
        except (OSError, sqlite3.Error) as exc:
            for leftover in leftovers:
                try:
                    leftover.unlink(missing_ok=True)
                except OSError:
                    pass
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise self._error(f"cannot create database: {reason}") from exc

    def _fsync_directory(self) -> None:
        """Make the rename of a new file durable (POSIX; Windows cannot open a directory)."""
        if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows
            return
        fd = os.open(self._file.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

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
        """Check that the file is ours (format, checksum, cluster, node, tables); migrate a
        format 1 file."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if "meta" not in tables:
                raise self._error("not a paxgos database (no meta table)")
            row = conn.execute(
                "SELECT format_version, cluster_id, node_id FROM meta WHERE id = 0"
            ).fetchone()
            if row is None:
                raise self._error("not a paxgos database (empty meta table)")
            version, cluster_id, node_id = row
            if version not in (1, FORMAT_VERSION):
                raise self._error(
                    f"format version {version} is not supported "
                    f"(this build reads version {FORMAT_VERSION}, and migrates version 1)"
                )
            if version == FORMAT_VERSION:
                (crc,) = conn.execute("SELECT crc FROM meta WHERE id = 0").fetchone()
                if not _matches(meta_crc, row, crc):
                    raise self._damaged("in the meta row (format version, cluster id, node id)")
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
            if version == 1:
                self._migrate_from_1(conn)
                self._unsynced = True
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if version == 1:
            log.warning(
                "%s: migrated from format version 1 to %d (a checksum on every record)",
                self._name,
                FORMAT_VERSION,
            )

    def _migrate_from_1(self, conn: sqlite3.Connection) -> None:
        """Rebuild each table of a format 1 file (no ``crc`` columns) with its checksums, in
        the caller's transaction, so that the result is exactly what a new file holds."""
        for table in _TABLES:
            conn.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
            conn.execute(_TABLES[table])
        try:
            self._insert_meta(conn)
            round_, node = conn.execute("SELECT round, node FROM old_promise").fetchone()
            conn.execute(
                "INSERT INTO promise (id, round, node, crc) VALUES (0, ?, ?, ?)",
                (round_, node, promise_crc(round_, node)),
            )
            copies = (
                ("accepted", "slot, ballot_round, ballot_node, value", accepted_crc),
                ("chosen", "slot, value", chosen_crc),
            )
            for table, columns, crc in copies:
                cursor = conn.execute(f"SELECT {columns} FROM old_{table} ORDER BY slot")
                while rows := cursor.fetchmany(50_000):
                    crcs = [crc(*r) for r in rows]
                    _insert_rows(conn, f"INSERT INTO {table} ({columns}, crc)", rows, crcs)
        except (struct.error, TypeError) as exc:
            reason = f"cannot migrate from format version 1: a damaged record ({exc}); {_RECOVER}"
            raise self._error(reason) from exc
        for table in _TABLES:
            conn.execute(f"DROP TABLE old_{table}")

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

    def _verify_all(self) -> None:
        """Verify the checksum of every record (``quick_check`` at open): damage is found when
        the node starts, not when a client or a peer first reads the slot."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN")  # one snapshot
        try:
            self._read_promise(conn)
            self._read_accepted(conn, 0)
            cursor = conn.execute("SELECT slot, value, crc FROM chosen ORDER BY slot")
            while rows := cursor.fetchmany(10_000):
                self._check_chosen(rows)
        finally:
            conn.execute("COMMIT")

    # -- reading, verified ---------------------------------------------------------------------

    def _read_promise(self, conn: sqlite3.Connection) -> Ballot:
        round_, node, crc = conn.execute(
            "SELECT round, node, crc FROM promise WHERE id = 0"
        ).fetchone()
        if not _matches(promise_crc, (round_, node), crc):
            raise self._damaged("in the promise row")
        return Ballot(round_, node)

    def _read_accepted(
        self, conn: sqlite3.Connection, above: int
    ) -> dict[int, tuple[Ballot, Value]]:
        accepted: dict[int, tuple[Ballot, Value]] = {}
        for slot, b_round, b_node, value, crc in conn.execute(
            "SELECT slot, ballot_round, ballot_node, value, crc FROM accepted "
            "WHERE slot > ? ORDER BY slot",
            (above,),
        ):
            if not _matches(accepted_crc, (slot, b_round, b_node, value), crc):
                raise self._damaged(f"at accepted slot {slot}")
            accepted[slot] = (Ballot(b_round, b_node), value)
        return accepted

    def _check_chosen(self, rows: Sequence[tuple[int, Value, int]]) -> None:
        """Verify chosen ``rows`` (slot, value, crc): in C for a page of integers (``map`` over
        ``itemgetter``: no Python frame per row), row by row if that fails (a no-op, or damage)
        to name the damaged slot."""
        try:
            computed = map(_crc32, map(_pack_chosen, map(_first, rows), map(_second, rows)))
            if list(computed) == list(map(_third, rows)):
                return
        except struct.error:
            pass
        for slot, value, crc in rows:
            if not _matches(chosen_crc, (slot, value), crc):
                raise self._damaged(f"at chosen slot {slot}")

    # -- the Store interface -------------------------------------------------------------------

    def load(self) -> StoredState:
        """Promise, commit index and accepted values above it, read and verified (checksums)
        from disk; ``StorageError`` naming the slot of a damaged record."""
        with self._lock:
            conn = self._live(self._conn)
            try:
                conn.execute("BEGIN")  # one snapshot for all three reads
                try:
                    promised = self._read_promise(conn)
                    commit = self._scan_commit()
                    accepted = self._read_accepted(conn, commit)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(f"read failed: {exc}") from exc
        return StoredState(promised, commit, accepted)

    def write(self, batch: Sequence[Persist]) -> None:
        """Write every record of ``batch`` in one transaction; ``sync`` makes it durable.

        The last non-None promise wins; accepted entries are upserted in order (a later entry
        for a slot replaces an earlier one); chosen entries must continue the log at
        ``commit_index() + 1`` without gaps, else ``StorageError`` and nothing is written.
        Accepted rows at or below the new commit index are dropped.  Every row is written with
        its checksum.  On a write failure the transaction is rolled back, ``StorageError`` is
        raised, and every later write is refused (restart from ``load()``).
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
                # Checksums first, outside the transaction: a value that is no 64-bit integer
                # fails here (struct.error) before anything is written.
                rows = [(s, b[0], b[1], v) for s, b, v in accepted if s > commit]
                accepted_crcs = _accepted_crcs(rows)
                chosen_crcs = _chosen_crcs(chosen)
                conn.execute("BEGIN IMMEDIATE")
                if promised is not None:
                    conn.execute(
                        "UPDATE promise SET round = ?, node = ?, crc = ? WHERE id = 0",
                        (promised.round, promised.node, promise_crc(promised.round, promised.node)),
                    )
                if rows:
                    _insert_rows(
                        conn,
                        "INSERT OR REPLACE INTO accepted "
                        "(slot, ballot_round, ballot_node, value, crc)",
                        rows,
                        accepted_crcs,
                    )
                if chosen:
                    _insert_rows(conn, "INSERT INTO chosen (slot, value, crc)", chosen, chosen_crcs)
                    conn.execute("DELETE FROM accepted WHERE slot <= ?", (commit,))
                conn.execute("COMMIT")
                self._unsynced = True
            except (sqlite3.Error, struct.error, OverflowError, TypeError, ValueError) as exc:
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
        query on the read connection; callable from any thread), each verified against its
        checksum: ``StorageError`` naming the first damaged slot, and nothing returned."""
        if limit <= 0:
            return []  # SQLite reads a negative LIMIT as "no limit"
        with self._read_lock:
            reader = self._live(self._reader)
            try:
                rows = reader.execute(
                    "SELECT slot, value, crc FROM chosen WHERE slot >= ? ORDER BY slot LIMIT ?",
                    (max(from_slot, 1), limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error(f"read failed: {exc}") from exc
        self._check_chosen(rows)
        return list(map(_entry, rows))

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
        wal = f"{self._file}-wal"
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
