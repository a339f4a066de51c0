"""The storage interface every store implements: what a node must keep across a crash.

A store holds three things: the acceptor's promised ballot, the values it accepted at slots not
yet applied, and the chosen log (applied slots, in order).  ``write`` stores a group of
``Persist`` records (several Readys' worth: group commit) as one atomic step, and ``sync`` makes
every write so far durable; ``apply`` is the two in a row: when it returns, all of it survives a
crash.  ``load`` returns what a restarting node resumes from.

A durable store's work is split in two so that its caller can run the CPU part (``write``) on
its own thread and the wait for the disk (``sync``) on another when the disk is slow:
``paxgos.net`` writes on the event loop thread and syncs there or in its writer thread (see
``paxgos.net.host.FsyncPlacement``), one call at a time, never both at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from paxgos.core import Persist, StoredState
from paxgos.core.messages import ChosenEntry


class StorageError(Exception):
    """The store cannot be used (unreadable, corrupt, foreign, failed write); one-line reason."""


class Store(ABC):
    """Durable (or, for ``MemoryStore``, not) node state."""

    #: Whether ``apply`` survives a process crash.
    durable: bool = False

    @abstractmethod
    def load(self) -> StoredState:
        """The state to restart from (promise, commit index, accepted values above it)."""

    @abstractmethod
    def write(self, batch: Sequence[Persist]) -> None:
        """Store every record of ``batch``, in order, as one atomic step (durable once
        ``sync`` returns)."""

    def sync(self) -> None:  # noqa: B027 - a store that is not durable has nothing to wait for
        """Wait until every ``write`` so far is on stable storage."""

    def apply(self, batch: Sequence[Persist]) -> None:
        """Store every record of ``batch``, in order, as one atomic and durable step."""
        self.write(batch)
        self.sync()

    @abstractmethod
    def read_chosen(self, from_slot: int, limit: int) -> list[ChosenEntry]:
        """Up to ``limit`` chosen entries from ``from_slot`` on, in slot order."""

    def commit_index(self) -> int:
        """The highest chosen slot stored (slots 1..it are the log); for ``/status``."""
        return self.load().commit

    def checkpoint(self) -> None:  # noqa: B027 - optional hook
        """Housekeeping that must not delay ``apply`` (e.g. folding a write-ahead log into the
        main file); the host calls it now and then from a thread other than the writer's."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores need it
        """Release files and connections."""
