"""What one input to the core produces: state to persist, messages to send, answers to give.

``Node`` methods each take one input and return a ``Ready``.  The host (``paxgos.net`` or the
simulator) must apply it in this order:

1. write ``persist`` to stable storage (durably, before anything below leaves the node);
2. deliver ``response`` to whoever sent the input message (the HTTP response body);
3. send ``messages`` (``(to, message)`` pairs; ``to`` may be the node itself);
4. complete the client requests named in ``outcomes``.

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


Outcome = Committed | Rejected | Abandoned


@dataclass
class Ready:
    """The outputs of one input; see the module docstring for the order to apply them in."""

    persist: Persist = field(default_factory=Persist)
    response: Message | None = None
    messages: list[tuple[int, Message]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
