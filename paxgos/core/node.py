"""One Paxgos node as a deterministic state machine: acceptor, learner and (when leading) proposer.

Inputs are method calls, each returning a ``Ready`` (see ``paxgos.core.ready``):

- ``campaign()``: start phase 1 with a ballot above any seen (node 0 does this at boot);
- ``propose(request, value)``: a client asks for ``value`` to be committed;
- ``flush(now)``: the end of an event-loop turn: cut the queued proposals into one Accept batch
  (a small first batch may linger until ``flush_due`` for more values: ``Config.min_batch``);
- ``step(message)``: a peer's message arrived;
- ``tick(now)``: time passed (retransmissions, heartbeats, catch-up, re-campaigning).

Nothing here reads a clock, a socket or a file: time only arrives through ``tick`` and
``flush``, so the same inputs in the same order always give the same outputs.

Multi-Paxos as in ``DESIGN.md``: phase 1 once per leadership over every slot from the first one
not known chosen; re-proposal of the highest-ballot accepted value per slot and no-ops in holes;
phase 2 per batch with a bounded window of batches ("rounds") in flight; a round is chosen when a
majority (the fastest one) accepted it; the commit index is piggybacked on the next Accept or
sent as a ``Learn``; a learner behind the commit index fetches chosen entries by catch-up.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from paxgos.core.acceptor import Acceptor
from paxgos.core.ballot import ZERO, Ballot
from paxgos.core.learner import Learner
from paxgos.core.messages import (
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    ChosenEntry,
    Learn,
    Message,
    Prepare,
    Promise,
    Value,
)
from paxgos.core.proposer import Proposer, Round
from paxgos.core.ready import Committed, Ready, Rejected

log = logging.getLogger("paxgos.core")

FOLLOWER = "follower"
CANDIDATE = "candidate"  # running phase 1
LEADER = "leader"


@dataclass
class Config:
    """Tunables of the protocol; times are in seconds of whatever clock ``tick`` is fed."""

    node_id: int
    nodes: int
    initial_leader: int = 0
    #: Rounds (Accept batches) in flight at once; proposals beyond wait for the next batch.
    window: int = 4
    #: Most values in one Accept.
    max_batch: int = 1024
    #: A round beyond the first in flight goes out only with at least this many values: every
    #: round costs a message to each peer, so while one is in flight, small batches wait to
    #: grow (Nagle's rule); under heavy load full batches still pipeline up to ``window``.
    pipeline_batch: int = 64
    #: With no round in flight, a batch of fewer values than this waits up to ``linger`` for
    #: more (the clients answered by the last round are about to propose again): fewer, larger
    #: rounds cost every node less.  1 (the default here) never waits; only a ``flush`` given
    #: the time can wait.
    min_batch: int = 1
    linger: float = 0.0
    #: Most proposals waiting for a batch; beyond it the leader answers "overloaded".
    max_queue: int = 50_000
    #: Resend an unanswered Prepare or Accept after this long.
    retry_interval: float = 0.15
    #: Ask again for a catch-up batch not answered in this long (a big batch takes a while).
    catchup_timeout: float = 1.0
    #: A leader with nothing to send for this long sends a Learn (heartbeat and commit index).
    heartbeat_interval: float = 0.1
    #: A moved commit index rides on the next Accept; a tick sends it alone (a Learn) only once
    #: it has gone unsent for this long, counted from the first tick that found it unsent.  Under
    #: load the next Accept nearly always comes first, and a Learn costs every follower a
    #: request and a write; 0 sends it at the first tick, and any value up to the host's tick
    #: interval at the second.
    learn_delay: float = 0.01
    #: A learner behind the commit index for this long fetches what it misses.
    catchup_after: float = 0.2
    #: Entries asked for per catch-up request.
    catchup_batch: int = 10_000
    #: A node that lost a leadership it is meant to hold campaigns again after this long.
    recampaign_after: float = 0.3

    @property
    def majority(self) -> int:
        return self.nodes // 2 + 1


@dataclass
class StoredState:
    """What a node restarts from: exactly what it persisted."""

    promised: Ballot = ZERO
    commit: int = 0
    accepted: dict[int, tuple[Ballot, Value]] = field(default_factory=dict)


class Node:
    """The protocol state of one node; see the module docstring for its inputs.

    Roles change in exactly one place each (``_become_follower``, ``_become_candidate``,
    ``_become_leader``), and each goes through ``_reset``, which gives the new role a fresh
    ``Proposer``: the model is etcd raft's ``becomeFollower``/``becomeCandidate``/
    ``becomeLeader`` with one ``reset``.
    """

    def __init__(self, config: Config, stored: StoredState | None = None):
        stored = stored or StoredState()
        self.config = config
        self.id = config.node_id
        self.peers = [n for n in range(config.nodes) if n != config.node_id]
        self.acceptor = Acceptor(self.id, stored.promised, dict(stored.accepted))
        self.learner = Learner(self.id, stored.commit)
        self.now = 0.0
        self.role = FOLLOWER
        self.proposer = Proposer(ZERO, self.commit + 1)
        self.seen = ZERO  # the highest ballot that refused or outbid ours
        self.queue: deque[tuple[int, int]] = deque()  # (request, value) awaiting a batch
        self.recampaign_at: float | None = None
        self.rounds_sent = 0  # statistics, for /status
        self.values_sent = 0

    # --- queries ------------------------------------------------------------------------------

    @property
    def promised(self) -> Ballot:
        return self.acceptor.promised

    @property
    def commit(self) -> int:
        """Every slot up to this one is chosen and applied here."""
        return self.learner.commit

    @property
    def known_commit(self) -> int:
        return self.learner.known_commit

    @property
    def ballot(self) -> Ballot:
        """Our own ballot while candidate or leader (``ZERO`` while following)."""
        return self.proposer.ballot

    @property
    def rounds(self) -> dict[int, Round]:
        return self.proposer.rounds

    def leader(self) -> int | None:
        """The node this one believes leads (itself while running phase 1)."""
        if self.role != FOLLOWER:
            return self.id
        # The highest ballot seen: the promised one, or one that refused us (which our acceptor
        # never promised).  Our own ballot, now that we follow, names no leader.
        top = max(self.promised, self.seen)
        if top != ZERO:
            return top.node if top.node != self.id else None
        return self.config.initial_leader

    def status(self) -> dict[str, object]:
        """A snapshot for /status."""
        return {
            "id": self.id,
            "role": self.role,
            "ballot": list(self.ballot) if self.role != FOLLOWER else None,
            "promised": list(self.promised),
            "leader": self.leader(),
            "commit_index": self.commit,
            "known_commit": self.known_commit,
            "queued": len(self.queue),
            "rounds_in_flight": len(self.rounds),
            "rounds_sent": self.rounds_sent,
            "values_sent": self.values_sent,
        }

    def answer_catchup(self, msg: CatchupRequest, chosen: list[ChosenEntry]) -> CatchupReply:
        """The reply to a catch-up request, given the chosen entries the host read for it
        (from ``msg.from_slot``, at most ``msg.limit``, all at or below ``self.commit``)."""
        return CatchupReply(self.id, tuple(chosen), self.commit)

    # --- inputs -------------------------------------------------------------------------------

    def campaign(self) -> Ready:
        """Run phase 1 with a ballot above every ballot seen."""
        ready = Ready()
        self._become_candidate(ready)
        return ready

    def propose(self, request: int, value: int) -> Ready:
        """Queue client ``request`` to commit ``value``; it goes out with the next ``flush``,
        or at once when it fills a whole batch (so that acceptors work on one batch while the
        leader is still reading the requests of the next)."""
        ready = Ready()
        if self.role == FOLLOWER:
            ready.outcomes.append(Rejected(request, "not_leader", self.leader()))
        elif len(self.queue) >= self.config.max_queue:
            ready.outcomes.append(Rejected(request, "overloaded", self.id))
        else:
            self.queue.append((request, value))
            if len(self.queue) >= self.config.max_batch:
                self._flush(ready)
        return ready

    def flush(self, now: float | None = None) -> Ready:
        """End of a turn: send queued proposals as batches, as far as the window permits.

        ``now`` (the host's clock) lets a small batch linger: with no round in flight and fewer
        than ``min_batch`` values queued, they wait until ``flush_due`` for company; the host
        flushes again then.  Without ``now`` nothing waits."""
        ready = Ready()
        if now is not None and self._linger(now):
            return ready
        self._flush(ready)
        return ready

    @property
    def flush_due(self) -> float | None:
        """When a lingering batch must go (the host calls ``flush(now)`` then), or None."""
        since = self.proposer.lingering_since
        return None if since is None else since + self.config.linger

    def tick(self, now: float) -> Ready:
        """Time is now ``now``: resend what went unanswered, heartbeat, catch up, re-campaign."""
        self.now = now
        ready = Ready()
        cfg = self.config
        term = self.proposer
        if self.role == LEADER:
            for rnd in term.rounds.values():
                if now - rnd.sent_at >= cfg.retry_interval:
                    rnd.sent_at = now
                    msg = Accept(self.id, term.ballot, rnd.first, rnd.values, self.commit)
                    ready.messages.extend((p, msg) for p in self._all() if p not in rnd.acks)
            # The commit index rides on the next Accept; when none follows within learn_delay
            # it goes out alone (as a heartbeat does, telling followers the leader is alive).
            learn = now - term.sent_at >= cfg.heartbeat_interval
            if term.commit_unsent:
                if term.commit_unsent_since is None:
                    term.commit_unsent_since = now
                learn = learn or now - term.commit_unsent_since >= cfg.learn_delay
            if learn:
                self._broadcast_learn(ready)
        elif self.role == CANDIDATE:
            if now - term.prepare_sent_at >= cfg.retry_interval:
                term.prepare_sent_at = now
                prepare = Prepare(self.id, term.ballot, self.commit + 1)
                ready.messages.extend((p, prepare) for p in self._all() if p not in term.promises)
        elif self.recampaign_at is not None and now >= self.recampaign_at:
            self._become_candidate(ready)
        self._maybe_catch_up(ready)
        return ready

    def step(self, msg: Message) -> Ready:
        """A message from a peer (or from this node to itself) arrived."""
        ready = Ready()
        if isinstance(msg, Accept):
            self._observe(msg.ballot, ready)
            ready.response = self.acceptor.on_accept(msg, self.commit, ready.persist)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "node %d: %s slots %d..%d under ballot %s from node %d",
                    self.id, "accepted" if ready.response.ok else "refused (promised higher)",
                    msg.first, msg.first + len(msg.values) - 1, msg.ballot, msg.sender,
                )  # fmt: skip
            if ready.response.ok:
                self._learn_commit(msg.ballot, msg.commit, msg.sender, ready)
        elif isinstance(msg, Accepted):
            self._on_accepted(msg, ready)
        elif isinstance(msg, Learn):
            self._learn_commit(msg.ballot, msg.commit, msg.sender, ready)
        elif isinstance(msg, Prepare):
            self._observe(msg.ballot, ready)
            ready.response = self.acceptor.on_prepare(msg, self.commit, ready.persist)
        elif isinstance(msg, Promise):
            self._on_promise(msg, ready)
        elif isinstance(msg, CatchupReply):
            self.learner.on_reply(msg, self.now)
            self._apply(ready)
            if self.known_commit > self.commit and msg.entries:
                self._request_catchup(msg.sender, ready)  # more to fetch: keep going
        return ready

    # --- roles --------------------------------------------------------------------------------

    def _reset(self, role: str, ballot: Ballot, ready: Ready) -> None:
        """The one place a role changes: a fresh ``Proposer`` for ``ballot``; the rounds of the
        old one are abandoned (phase 1 decides their slots afresh, so they must never be resent
        under a new ballot, and their clients learn that their fate is unknown)."""
        ready.outcomes.extend(self.proposer.abandon())
        self.role = role
        self.proposer = Proposer(ballot, self.commit + 1, self.now)
        self.recampaign_at = None

    def _become_follower(self, seen: Ballot, ready: Ready) -> None:
        log.info("node %d: ballot %s outbid by %s; stepping down", self.id, self.ballot, seen)
        self._reset(FOLLOWER, ZERO, ready)
        leader = seen.node if seen.node != self.id else None
        while self.queue:
            request, _ = self.queue.popleft()
            ready.outcomes.append(Rejected(request, "not_leader", leader))
        self.seen = max(self.seen, seen)  # for leader(), and to outbid it next time
        if self.id == self.config.initial_leader:
            # The distinguished proposer keeps its post: outbid (say, by its own pre-restart
            # ballot), it tries again above what it saw, after a pause.
            self.recampaign_at = self.now + self.config.recampaign_after

    def _become_candidate(self, ready: Ready) -> None:
        """Run phase 1 with a ballot above every ballot seen."""
        ballot = max(self.promised, self.ballot, self.seen).next_for(self.id)
        self._reset(CANDIDATE, ballot, ready)
        # Promise our own ballot durably before any Prepare leaves: the self-Prepare may still
        # be in flight when we crash, and a restart would then pick this same ballot again and
        # could propose a second value under it (found by paxgos.sim, seed 260).
        self.acceptor.promised = ballot
        ready.persist.promised = ballot
        log.debug("node %d: prepare ballot %s from slot %d", self.id, ballot, self.commit + 1)
        prepare = Prepare(self.id, ballot, self.commit + 1)
        ready.messages.extend((p, prepare) for p in self._all())

    def _become_leader(self, ready: Ready) -> None:
        """Phase 1 is complete: re-propose what may have been chosen, fill holes with no-ops."""
        term = self.proposer
        highest = term.highest_accepted(self.commit)
        for slot, value in self.learner.chosen_ahead.items():
            highest[slot] = (term.ballot, value)
        top = max(highest, default=self.commit)
        log.info(
            "node %d: leading with ballot %s (majority %s), re-proposing slots %d..%d",
            self.id,
            term.ballot,
            sorted(term.promises),
            self.commit + 1,
            top,
        )
        self._reset(LEADER, term.ballot, ready)
        values = [highest.get(slot, (ZERO, None))[1] for slot in range(self.commit + 1, top + 1)]
        for start in range(0, len(values), self.config.max_batch):
            self._send_round(ready, tuple(values[start : start + self.config.max_batch]))
        self._flush(ready)

    def _observe(self, ballot: Ballot, ready: Ready) -> None:
        """A ballot above ours means another proposer is at work: stop proposing."""
        if self.role != FOLLOWER and ballot > self.ballot:
            self._become_follower(ballot, ready)

    # --- proposer -----------------------------------------------------------------------------

    def _all(self) -> list[int]:
        """Every node, this one included (the leader is an acceptor too)."""
        return list(range(self.config.nodes))

    def _on_promise(self, msg: Promise, ready: Ready) -> None:
        term = self.proposer
        if self.role != CANDIDATE or msg.ballot != term.ballot:
            return
        if not msg.ok:
            self._become_follower(msg.promised, ready)
            return
        log.debug(
            "node %d: promise for %s from node %d (%d accepted)",
            self.id,
            msg.ballot,
            msg.sender,
            len(msg.accepted),
        )
        term.promises[msg.sender] = msg
        if len(term.promises) < self.config.majority or term.awaiting_commit:
            return
        # Slots at or below a promiser's commit index are chosen there: fetch them rather than
        # trust the other promisers' accepted values, which may be older.
        top = max(p.commit for p in term.promises.values())
        if top > self.commit:
            term.awaiting_commit = top
            best = max(term.promises.values(), key=lambda p: p.commit)
            self.learner.note_commit(top, best.sender, self.now)
            self._request_catchup(best.sender, ready)
            return
        self._become_leader(ready)

    def _linger(self, now: float) -> bool:
        """Whether a small first batch should keep waiting (starting the wait if need be)."""
        cfg = self.config
        term = self.proposer
        if self.role != LEADER or term.rounds or not 0 < len(self.queue) < cfg.min_batch:
            return False
        if term.lingering_since is None:
            term.lingering_since = now
        return now < term.lingering_since + cfg.linger

    def _flush(self, ready: Ready) -> None:
        term = self.proposer
        term.lingering_since = None
        if self.role == LEADER:
            while self.queue and len(term.rounds) < self.config.window:
                if term.rounds and len(self.queue) < self.config.pipeline_batch:
                    break  # wait for the round in flight, or for a fuller batch
                count = min(len(self.queue), self.config.max_batch)
                values = []
                for _ in range(count):
                    request, value = self.queue.popleft()
                    term.requests[term.next_slot + len(values)] = request
                    values.append(value)
                self._send_round(ready, tuple(values))

    def _send_round(self, ready: Ready, values: tuple[Value, ...]) -> None:
        term = self.proposer
        first = term.next_slot
        term.next_slot += len(values)
        term.rounds[first] = Round(first, values, self.now)
        self.rounds_sent += 1
        self.values_sent += len(values)
        log.debug(
            "node %d: accept ballot %s slots %d..%d",
            self.id,
            term.ballot,
            first,
            first + len(values) - 1,
        )
        msg = Accept(self.id, term.ballot, first, values, self.commit)
        ready.messages.extend((p, msg) for p in self._all())
        term.commit_unsent = False
        term.commit_unsent_since = None
        term.sent_at = self.now

    def _broadcast_learn(self, ready: Ready) -> None:
        term = self.proposer
        learn = Learn(self.id, term.ballot, self.commit)
        ready.messages.extend((p, learn) for p in self.peers)
        term.commit_unsent = False
        term.commit_unsent_since = None
        term.sent_at = self.now

    def _on_accepted(self, msg: Accepted, ready: Ready) -> None:
        if not msg.ok:
            self._observe(msg.promised, ready)
            return
        term = self.proposer
        if self.role != LEADER or msg.ballot != term.ballot:
            return
        rnd = term.rounds.get(msg.first)
        if rnd is None or len(rnd.values) != msg.count:
            return
        rnd.acks.add(msg.sender)
        if len(rnd.acks) < self.config.majority:
            return
        del term.rounds[msg.first]
        log.debug(
            "node %d: slots %d..%d chosen under %s (majority %s)",
            self.id,
            rnd.first,
            rnd.first + len(rnd.values) - 1,
            term.ballot,
            sorted(rnd.acks),
        )
        for offset, value in enumerate(rnd.values):
            self.learner.chosen(rnd.first + offset, value)
        self._apply(ready)

    # --- learner ------------------------------------------------------------------------------

    def _apply(self, ready: Ready) -> None:
        """Apply what the learner can, persist it, and answer the clients whose slots it holds."""
        applied = self.learner.apply(self.acceptor, self.now)
        if not applied:
            return
        ready.persist.chosen.extend(applied)
        term = self.proposer
        for slot, value in applied:
            request = term.requests.pop(slot, None)
            if request is not None and value is not None:
                ready.outcomes.append(Committed(request, slot, value))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("node %d: learned slots %d..%d", self.id, applied[0][0], self.commit)
        if self.role == LEADER:
            term.commit_unsent = True
        elif self.role == CANDIDATE and 0 < term.awaiting_commit <= self.commit:
            self._become_leader(ready)

    def _learn_commit(self, ballot: Ballot, commit: int, source: int, ready: Ready) -> None:
        self.learner.learn(self.acceptor, ballot, commit, source, self.now)
        self._apply(ready)

    def _maybe_catch_up(self, ready: Ready) -> None:
        cfg = self.config
        source = self.learner.catchup_due(self.now, cfg.catchup_after, cfg.catchup_timeout)
        if source is not None:
            self._request_catchup(source, ready)

    def _request_catchup(self, source: int, ready: Ready) -> None:
        log.debug("node %d: catch-up from node %d at slot %d", self.id, source, self.commit + 1)
        ready.messages.append((source, self.learner.request(self.now, self.config.catchup_batch)))
