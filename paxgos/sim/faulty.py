"""Deliberately broken nodes, to show the simulator catches the bugs it exists to catch.

Each variant subclasses the real ``paxgos.core.Node`` (or its acceptor) and breaks one rule:

- ``reply-before-persist``: answers before its state is durable: everything it persists is held
  back until its next timer tick, so a crash loses promises and acceptances it already answered;
- ``accept-below-promise``: accepts under a ballot lower than the one it promised;
- ``forget-promise``: restarts with its promise forgotten (its accepted values survive);
- ``noop-fill-leader``: a leader that ignores the accepted values reported in phase 1 and
  re-proposes nothing (new proposals and no-ops overwrite what may have been chosen);
- ``ballot-unpersisted``: a candidate that campaigns without persisting its own promise (a
  restart may reuse the ballot);
- ``no-step-down``: a leader that keeps taking proposals after losing its majority;
- ``thrifty-narrow``: a leader that sends each thrifty round only to the peers it first chose,
  never widening it to the others when one of them is late;
- ``no-stickiness``: acceptors promise any higher ballot although a live leader is known, so a
  node back from a partition deposes a healthy leader;
- ``read-unconfirmed``: a leader that serves a read at its commit index at once, without a
  majority's confirmation and without covering the slots it re-proposed on taking office;
- ``read-no-floor``: a read index that forgets the slots a new leader re-proposed;
- ``read-no-confirm``: the right read index, served at once, asking no majority;
- ``read-stale-echo``: a read numbered with the Learn sent before it arrived.

Never use these outside tests and demonstrations: ``python -m paxgos.sim --faulty NAME``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from paxgos.core import LEADER, ZERO, Ballot, Config, Node, Persist, Readable, Ready, StoredState
from paxgos.core.acceptor import Acceptor
from paxgos.core.messages import Accept, Accepted, Message
from paxgos.core.proposer import Round

NodeFactory = Callable[[Config, "StoredState | None"], Node]


class ReplyBeforePersistNode(Node):
    """Answers at once but writes its state only at the next tick (a lost group commit)."""

    def __init__(self, config: Config, stored: StoredState | None = None):
        super().__init__(config, stored)
        self._unsynced: list[Persist] = []

    def _defer(self, ready: Ready) -> Ready:
        if ready.persist:
            self._unsynced.append(ready.persist)
            ready.persist = Persist()
        return ready

    def step(self, msg: Message, now: float | None = None) -> Ready:
        return self._defer(super().step(msg, now))

    def propose(self, request: int, value: int) -> Ready:
        return self._defer(super().propose(request, value))

    def flush(self, now: float | None = None) -> Ready:
        return self._defer(super().flush(now))

    def campaign(self) -> Ready:
        return self._defer(super().campaign())

    def tick(self, now: float) -> Ready:
        ready = super().tick(now)
        batch = [*self._unsynced, ready.persist]
        self._unsynced = []
        merged = Persist()
        for persist in batch:
            if persist.promised is not None:
                merged.promised = persist.promised
            merged.accepted.extend(persist.accepted)
            merged.chosen.extend(persist.chosen)
        ready.persist = merged
        return ready


class _LaxAcceptor(Acceptor):
    def on_accept(self, msg: Accept, commit: int, persist: Persist) -> Accepted:
        promised = self.promised
        if msg.ballot >= promised:
            return super().on_accept(msg, commit, persist)
        # The bug: accept anyway, as if the promise did not exist.
        self.promised = msg.ballot
        try:
            return super().on_accept(msg, commit, persist)
        finally:
            self.promised = promised


class AcceptBelowPromiseNode(Node):
    """Its acceptor accepts under ballots below its promise."""

    def __init__(self, config: Config, stored: StoredState | None = None):
        super().__init__(config, stored)
        old = self.acceptor
        self.acceptor = _LaxAcceptor(self.id, old.promised, old.accepted, old.horizon)


class ForgetPromiseNode(Node):
    """Restarts as if it had never promised anything."""

    def __init__(self, config: Config, stored: StoredState | None = None):
        if stored is not None:
            stored = StoredState(ZERO, stored.commit, dict(stored.accepted))
        super().__init__(config, stored)


class NoopFillLeaderNode(Node):
    """Leads without re-proposing the values its promisers accepted."""

    def _become_leader(self, ready: Ready) -> None:
        term = self.proposer
        term.promises = {n: replace(p, accepted=()) for n, p in term.promises.items()}
        super()._become_leader(ready)


class BallotUnpersistedNode(Node):
    """Campaigns without persisting its own promise (the core before the seed-260 fix)."""

    def _become_candidate(self, ready: Ready, ballot: Ballot) -> None:
        promised, persisted = self.acceptor.promised, ready.persist.promised
        super()._become_candidate(ready, ballot)
        self.acceptor.promised, ready.persist.promised = promised, persisted


class NoStepDownNode(Node):
    """A leader that never notices it lost its majority."""

    def _majority_lost(self) -> bool:
        return False


class ThriftyNarrowNode(Node):
    """Sends each thrifty round only ever to its first targets: never to the other peers when
    one is late, nor on retries, so one crashed target stalls the log."""

    def _fall_back(self, ready: Ready) -> None:
        for rnd in self.proposer.rounds.values():
            if rnd.fallback_at is not None and self.clock >= rnd.fallback_at:
                rnd.fallback_at = None  # its wait is over, and it goes nowhere else

    def _resend(self, ready: Ready, rnd: Round) -> None:
        self._send_accept(ready, rnd, [p for p in rnd.sent_to if p not in rnd.acks])


class ReadUnconfirmedNode(Node):
    """Serves reads at its commit index without asking anyone (a lease read with no lease)."""

    def read(self, request: int) -> Ready:
        if self.role != LEADER:
            return super().read(request)
        return Ready(outcomes=[Readable(request, self.commit)])


class ReadNoFloorNode(Node):
    """Forgets the slots it re-proposed on taking office: the read index is the commit index."""

    def read(self, request: int) -> Ready:
        self.proposer.read_floor = 0
        return super().read(request)


class ReadNoConfirmNode(Node):
    """Serves a read at once at the right read index (floor included), asking no majority."""

    def read(self, request: int) -> Ready:
        if self.role != LEADER:
            return super().read(request)
        return Ready(outcomes=[Readable(request, max(self.commit, self.proposer.read_floor))])


class ReadStaleEchoNode(Node):
    """Numbers reads with the Learn sent last, before they arrived: an echo of a Learn that
    left before the read then confirms it."""

    def _send_reads(self, ready: Ready) -> None:
        term = self.proposer
        if self.role != LEADER:
            return
        term.reads.extend((term.read_seq, r, s) for r, s in term.reads_unsent)
        term.reads_unsent.clear()
        term.read_seq += 1
        term.read_sent_at = self.now
        self._broadcast_learn(ready, term.read_seq)
        if self.promised <= term.ballot:
            self._confirm_reads(self.id, term.read_seq, ready)


def no_stickiness(config: Config, stored: StoredState | None = None) -> Node:
    """A node whose acceptor ignores the lease."""
    return Node(replace(config, sticky=False), stored)


VARIANTS: dict[str, NodeFactory] = {
    "reply-before-persist": ReplyBeforePersistNode,
    "accept-below-promise": AcceptBelowPromiseNode,
    "forget-promise": ForgetPromiseNode,
    "noop-fill-leader": NoopFillLeaderNode,
    "ballot-unpersisted": BallotUnpersistedNode,
    "no-step-down": NoStepDownNode,
    "thrifty-narrow": ThriftyNarrowNode,
    "no-stickiness": no_stickiness,
    "read-unconfirmed": ReadUnconfirmedNode,
    "read-no-floor": ReadNoFloorNode,
    "read-no-confirm": ReadNoConfirmNode,
    "read-stale-echo": ReadStaleEchoNode,
}


def node_factory(name: str | None) -> NodeFactory:
    """The node class to run: the real ``Node``, or the broken variant called ``name``."""
    if name is None:
        return Node
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown faulty variant {name!r}; known: {sorted(VARIANTS)}") from None
