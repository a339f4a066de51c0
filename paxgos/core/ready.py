"""What one input to the core produces: state to persist, messages to send, answers to give.

``Node`` methods each take one input and return a ``Ready``.  The host (``paxgos.net`` or the
simulator) writes ``persist`` to stable storage and releases the rest under these rules; doing
everything in order (persist, response, messages, outcomes) satisfies them all:

1. ``response``, the answer to the input message (the HTTP response body), leaves only once this
   Ready's ``persist`` and that of every earlier Ready are durable: an acceptor's answer may
   reveal state an earlier input changed (a duplicate Prepare is answered from the promise a
   previous one made).
2. ``messages`` (``(to, message)`` pairs; ``to`` may be the node itself) leave once this Ready's
   own ``persist`` is durable (a new ballot is promised to oneself before its Prepare goes out).
   They are requests from the proposer or learner and never carry acceptor state, so they need
   not wait for earlier Readys' writes.
3. ``outcomes`` (client requests completed) may be released at once: a ``Committed`` value is
   chosen, i.e. already durable on a majority of acceptors; a ``Readable`` read index rests on
   chosen slots only; the rest promise nothing.
4. A ``persist`` that only records chosen entries (``Persist.chosen_only``) gates nothing by
   itself: when its Ready has no messages and its input was not a request (a tick, a flush, a
   proposal, or a reply such as ``Accepted``: no answer is owed, not even an empty one), its
   write may wait for the next write (or a timer), as long as writes stay in order.  A chosen
   entry lost in a crash is not a lost value: a majority of acceptors still holds it (accepted,
   or chosen in their own logs), and phase 1 or catch-up learns it again.

``paxgos.core.release.Pipeline`` is these rules as code; the host and the simulator both run it.
This is the contract that keeps ``core`` free of I/O, after etcd's raft ``Ready``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paxgos.core.ballot import Ballot
from paxgos.core.messages import AcceptedEntry, ChosenEntry, Message


@dataclass
class Persist:
    """State changes that must be on stable storage before the Ready's outputs leave."""

    promised: Ballot | None = None
    accepted: list[AcceptedEntry] = field(default_factory=list)
    chosen: list[ChosenEntry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.promised is not None or bool(self.accepted) or bool(self.chosen)

    @property
    def chosen_only(self) -> bool:
        """Whether it records chosen entries and nothing else (rule 4 of the module)."""
        return self.promised is None and not self.accepted and bool(self.chosen)


@dataclass(frozen=True)
class Committed:
    """Client request ``request`` is chosen at ``slot`` (and applied on this node)."""

    request: int
    slot: int
    value: int


@dataclass(frozen=True)
class Rejected:
    """Client request ``request`` was never proposed; retrying is safe.

    ``reason`` is ``"not_leader"`` (``leader`` names the node to ask, if known) or
    ``"overloaded"``.
    """

    request: int
    reason: str
    leader: int | None = None


@dataclass(frozen=True)
class Abandoned:
    """Client request ``request`` was proposed but this node lost leadership before it was
    chosen: the value may or may not end up in the log."""

    request: int
    slot: int


@dataclass(frozen=True)
class Readable:
    """Client read ``request`` may be served once this node has applied every slot up to
    ``slot``: a majority confirmed this node's leadership after the read arrived, and ``slot``
    covers every value chosen before it (the read index of Raft's thesis, section 6.4)."""

    request: int
    slot: int


Outcome = Committed | Rejected | Abandoned | Readable


@dataclass
class Ready:
    """The outputs of one input; see the module docstring for the order to apply them in."""

    persist: Persist = field(default_factory=Persist)
    response: Message | None = None
    messages: list[tuple[int, Message]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
