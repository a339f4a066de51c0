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
from paxgos.core.ready import Abandoned, Committed, Ready, Rejected

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


@dataclass
class Round:
    """One Accept batch in flight: slots ``first .. first+len(values)-1``."""

    first: int
    values: tuple[Value, ...]
    sent_at: float
    acks: set[int] = field(default_factory=set)


class Node:
    """The protocol state of one node; see the module docstring for its inputs."""

    def __init__(self, config: Config, stored: StoredState | None = None):
        stored = stored or StoredState()
        self.config = config
        self.id = config.node_id
        self.peers = [n for n in range(config.nodes) if n != config.node_id]
        self.acceptor = Acceptor(self.id, stored.promised, dict(stored.accepted))
        self.now = 0.0
        # learner
        self.commit = stored.commit
        self.chosen_ahead: dict[int, Value] = {}  # chosen slots above a gap
        self.known_commit = stored.commit  # highest commit index heard of
        self.commit_source: int | None = None  # who told us about known_commit
        self.progress_at = 0.0  # last time commit moved or we were told nothing new
        self.catchup_sent_at: float | None = None
        # proposer
        self.role = FOLLOWER
        self.ballot = ZERO  # our own ballot while candidate or leader (always ours)
        self.seen = ZERO  # the highest ballot that refused or outbid ours
        self.promises: dict[int, Promise] = {}
        self.prepare_sent_at = 0.0
        self.awaiting_commit = 0  # candidate: catch up to this before leading
        self.queue: deque[tuple[int, int]] = deque()  # (request, value) awaiting a batch
        self.lingering_since: float | None = None  # a small first batch waits since then
        self.rounds: dict[int, Round] = {}
        self.requests: dict[int, int] = {}  # slot -> client request proposed there
        self.next_slot = self.commit + 1
        self.commit_unsent = False  # commit index moved since the last Accept/Learn
        self.commit_unsent_since: float | None = None  # the first tick that found it so
        self.sent_at = 0.0  # last Accept or Learn broadcast
        self.recampaign_at: float | None = None
        self.rounds_sent = 0  # statistics, for /status
        self.values_sent = 0

    # --- queries ------------------------------------------------------------------------------

    @property
    def promised(self) -> Ballot:
        return self.acceptor.promised

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
        self._campaign(ready)
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
        if self.lingering_since is None:
            return None
        return self.lingering_since + self.config.linger

    def _linger(self, now: float) -> bool:
        """Whether a small first batch should keep waiting (starting the wait if need be)."""
        cfg = self.config
        if self.role != LEADER or self.rounds or not 0 < len(self.queue) < cfg.min_batch:
            return False
        if self.lingering_since is None:
            self.lingering_since = now
        return now < self.lingering_since + cfg.linger

    def _flush(self, ready: Ready) -> None:
        self.lingering_since = None
        if self.role == LEADER:
            while self.queue and len(self.rounds) < self.config.window:
                if self.rounds and len(self.queue) < self.config.pipeline_batch:
                    break  # wait for the round in flight, or for a fuller batch
                count = min(len(self.queue), self.config.max_batch)
                values = []
                for _ in range(count):
                    request, value = self.queue.popleft()
                    self.requests[self.next_slot + len(values)] = request
                    values.append(value)
                self._send_round(ready, tuple(values))

    def tick(self, now: float) -> Ready:
        """Time is now ``now``: resend what went unanswered, heartbeat, catch up, re-campaign."""
        self.now = now
        ready = Ready()
        cfg = self.config
        if self.role == LEADER:
            for rnd in self.rounds.values():
                if now - rnd.sent_at >= cfg.retry_interval:
                    rnd.sent_at = now
                    msg = Accept(self.id, self.ballot, rnd.first, rnd.values, self.commit)
                    ready.messages.extend((p, msg) for p in self._all() if p not in rnd.acks)
            # The commit index rides on the next Accept; when none follows within learn_delay
            # it goes out alone (as a heartbeat does, telling followers the leader is alive).
            learn = now - self.sent_at >= cfg.heartbeat_interval
            if self.commit_unsent:
                if self.commit_unsent_since is None:
                    self.commit_unsent_since = now
                learn = learn or now - self.commit_unsent_since >= cfg.learn_delay
            if learn:
                self._broadcast_learn(ready)
        elif self.role == CANDIDATE:
            if now - self.prepare_sent_at >= cfg.retry_interval:
                self.prepare_sent_at = now
                prepare = Prepare(self.id, self.ballot, self.commit + 1)
                ready.messages.extend((p, prepare) for p in self._all() if p not in self.promises)
        elif self.recampaign_at is not None and now >= self.recampaign_at:
            self._campaign(ready)
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
            self._on_catchup_reply(msg, ready)
        return ready

    # --- proposer -----------------------------------------------------------------------------

    def _all(self) -> list[int]:
        """Every node, this one included (the leader is an acceptor too)."""
        return list(range(self.config.nodes))

    def _campaign(self, ready: Ready) -> None:
        self.recampaign_at = None
        self.role = CANDIDATE
        self.ballot = max(self.promised, self.ballot, self.seen).next_for(self.id)
        # Promise our own ballot durably before any Prepare leaves: the self-Prepare may still
        # be in flight when we crash, and a restart would then pick this same ballot again and
        # could propose a second value under it (found by paxgos.sim, seed 260).
        self.acceptor.promised = self.ballot
        ready.persist.promised = self.ballot
        self.promises = {}
        self.awaiting_commit = 0
        self.prepare_sent_at = self.now
        # Campaigning again while leading: phase 1 decides the in-flight slots afresh, so the old
        # rounds must never be resent under the new ballot (a slot could get two values under
        # it), and their clients learn their fate is unknown.
        self.rounds.clear()
        for slot, request in sorted(self.requests.items()):
            ready.outcomes.append(Abandoned(request, slot))
        self.requests.clear()
        log.debug("node %d: prepare ballot %s from slot %d", self.id, self.ballot, self.commit + 1)
        prepare = Prepare(self.id, self.ballot, self.commit + 1)
        ready.messages.extend((p, prepare) for p in self._all())

    def _observe(self, ballot: Ballot, ready: Ready) -> None:
        """A ballot above ours means another proposer is at work: stop proposing."""
        if self.role != FOLLOWER and ballot > self.ballot:
            self._step_down(ballot, ready)

    def _step_down(self, seen: Ballot, ready: Ready) -> None:
        log.info("node %d: ballot %s outbid by %s; stepping down", self.id, self.ballot, seen)
        self.role = FOLLOWER
        self.rounds.clear()
        for slot, request in sorted(self.requests.items()):
            ready.outcomes.append(Abandoned(request, slot))
        self.requests.clear()
        leader = seen.node if seen.node != self.id else None
        while self.queue:
            request, _ = self.queue.popleft()
            ready.outcomes.append(Rejected(request, "not_leader", leader))
        self.seen = max(self.seen, seen)  # for leader(), and to outbid it next time
        # A candidate waiting to catch up must not finish phase 1 after losing it.
        self.promises = {}
        self.awaiting_commit = 0
        if self.id == self.config.initial_leader:
            # The distinguished proposer keeps its post: outbid (say, by its own pre-restart
            # ballot), it tries again above what it saw, after a pause.
            self.recampaign_at = self.now + self.config.recampaign_after

    def _on_promise(self, msg: Promise, ready: Ready) -> None:
        if self.role != CANDIDATE or msg.ballot != self.ballot:
            return
        if not msg.ok:
            self._step_down(msg.promised, ready)
            return
        log.debug(
            "node %d: promise for %s from node %d (%d accepted)",
            self.id,
            msg.ballot,
            msg.sender,
            len(msg.accepted),
        )
        self.promises[msg.sender] = msg
        if len(self.promises) < self.config.majority or self.awaiting_commit:
            return
        # Slots at or below a promiser's commit index are chosen there: fetch them rather than
        # trust the other promisers' accepted values, which may be older.
        top = max(p.commit for p in self.promises.values())
        if top > self.commit:
            self.awaiting_commit = top
            best = max(self.promises.values(), key=lambda p: p.commit)
            self._note_commit(top, best.sender)
            self._request_catchup(best.sender, ready)
            return
        self._lead(ready)

    def _lead(self, ready: Ready) -> None:
        """Phase 1 is complete: re-propose what may have been chosen, fill holes with no-ops."""
        highest: dict[int, tuple[Ballot, Value]] = {}
        for promise in self.promises.values():
            for slot, ballot, value in promise.accepted:
                if slot > self.commit and (slot not in highest or ballot > highest[slot][0]):
                    highest[slot] = (ballot, value)
        for slot, value in self.chosen_ahead.items():
            highest[slot] = (self.ballot, value)
        top = max(highest, default=self.commit)
        log.info(
            "node %d: leading with ballot %s (majority %s), re-proposing slots %d..%d",
            self.id,
            self.ballot,
            sorted(self.promises),
            self.commit + 1,
            top,
        )
        self.role = LEADER
        self.awaiting_commit = 0
        self.promises = {}
        self.next_slot = self.commit + 1
        values = [highest.get(slot, (ZERO, None))[1] for slot in range(self.commit + 1, top + 1)]
        for start in range(0, len(values), self.config.max_batch):
            self._send_round(ready, tuple(values[start : start + self.config.max_batch]))
        self._flush(ready)

    def _send_round(self, ready: Ready, values: tuple[Value, ...]) -> None:
        first = self.next_slot
        self.next_slot += len(values)
        self.rounds[first] = Round(first, values, self.now)
        self.rounds_sent += 1
        self.values_sent += len(values)
        log.debug(
            "node %d: accept ballot %s slots %d..%d",
            self.id,
            self.ballot,
            first,
            first + len(values) - 1,
        )
        msg = Accept(self.id, self.ballot, first, values, self.commit)
        ready.messages.extend((p, msg) for p in self._all())
        self.commit_unsent = False
        self.commit_unsent_since = None
        self.sent_at = self.now

    def _broadcast_learn(self, ready: Ready) -> None:
        learn = Learn(self.id, self.ballot, self.commit)
        ready.messages.extend((p, learn) for p in self.peers)
        self.commit_unsent = False
        self.commit_unsent_since = None
        self.sent_at = self.now

    def _on_accepted(self, msg: Accepted, ready: Ready) -> None:
        if not msg.ok:
            self._observe(msg.promised, ready)
            return
        if self.role != LEADER or msg.ballot != self.ballot:
            return
        rnd = self.rounds.get(msg.first)
        if rnd is None or len(rnd.values) != msg.count:
            return
        rnd.acks.add(msg.sender)
        if len(rnd.acks) < self.config.majority:
            return
        del self.rounds[msg.first]
        log.debug(
            "node %d: slots %d..%d chosen under %s (majority %s)",
            self.id,
            rnd.first,
            rnd.first + len(rnd.values) - 1,
            self.ballot,
            sorted(rnd.acks),
        )
        for offset, value in enumerate(rnd.values):
            slot = rnd.first + offset
            if slot > self.commit:
                self.chosen_ahead[slot] = value
        self._apply(ready)

    # --- learner ------------------------------------------------------------------------------

    def _apply(self, ready: Ready) -> None:
        """Move the commit index over every contiguous chosen slot, in slot order."""
        moved = False
        while self.commit + 1 in self.chosen_ahead:
            slot = self.commit + 1
            value = self.chosen_ahead.pop(slot)
            self.commit = slot
            self.acceptor.forget_through(slot)
            ready.persist.chosen.append((slot, value))
            request = self.requests.pop(slot, None)
            if request is not None and value is not None:
                ready.outcomes.append(Committed(request, slot, value))
            moved = True
        if moved:
            if log.isEnabledFor(logging.DEBUG):
                first = ready.persist.chosen[0][0]
                log.debug("node %d: learned slots %d..%d", self.id, first, self.commit)
            self.progress_at = self.now
            if self.role == LEADER:
                self.commit_unsent = True
            else:
                self.commit_unsent, self.commit_unsent_since = False, None
            if self.commit > self.known_commit:
                self.known_commit = self.commit
            if (
                self.role == CANDIDATE
                and self.awaiting_commit
                and self.commit >= self.awaiting_commit
            ):
                self._lead(ready)

    def _note_commit(self, commit: int, source: int) -> None:
        if commit > self.known_commit:
            if self.known_commit <= self.commit:
                self.progress_at = self.now  # newly behind: start the catch-up clock now
            self.known_commit = commit
            self.commit_source = source

    def _learn_commit(self, ballot: Ballot, commit: int, source: int, ready: Ready) -> None:
        """The sender says every slot up to ``commit`` is chosen; what we accepted under the
        sender's ballot is therefore the chosen value."""
        self._note_commit(commit, source)
        slot = self.commit + 1
        while slot <= commit:
            if slot not in self.chosen_ahead:
                known, value = self.acceptor.accepted_under(slot, ballot)
                if not known:
                    break  # a gap: catch-up will fill it
                self.chosen_ahead[slot] = value
            slot += 1
        self._apply(ready)

    def _maybe_catch_up(self, ready: Ready) -> None:
        if self.known_commit <= self.commit or self.commit_source is None:
            return
        if self.catchup_sent_at is not None:
            if self.now - self.catchup_sent_at < self.config.catchup_timeout:
                return  # one in flight
        elif self.now - self.progress_at < self.config.catchup_after:
            return  # give in-flight Accepts a moment to fill the gap
        self._request_catchup(self.commit_source, ready)

    def _request_catchup(self, source: int, ready: Ready) -> None:
        self.catchup_sent_at = self.now
        log.debug("node %d: catch-up from node %d at slot %d", self.id, source, self.commit + 1)
        request = CatchupRequest(self.id, self.commit + 1, self.config.catchup_batch)
        ready.messages.append((source, request))

    def _on_catchup_reply(self, msg: CatchupReply, ready: Ready) -> None:
        self.catchup_sent_at = None
        self._note_commit(msg.commit, msg.sender)
        for slot, value in msg.entries:
            if slot > self.commit:
                self.chosen_ahead[slot] = value
        self._apply(ready)
        if self.known_commit > self.commit and msg.entries:
            self._request_catchup(msg.sender, ready)  # more to fetch: keep going
