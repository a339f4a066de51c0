r"""One Paxgos node as a deterministic state machine: acceptor, learner and (when leading) proposer.

Inputs are method calls, each returning a ``Ready`` (see ``paxgos.core.ready``):

- ``campaign()``: try to lead now (node 0, the distinguished proposer, does this at boot);
- ``propose(request, value)``: a client asks for ``value`` to be committed;
- ``read(request)``: a client asks for a linearizable read (read index: answered with the slot
  the read must see, once a majority has confirmed this node still leads);
- ``flush(now)``: the end of an event-loop turn: cut the queued proposals into one Accept batch
  (a small first batch may linger until ``flush_due`` for more values: ``Config.min_batch``);
- ``step(message, now)``: a peer's message arrived (``now``, optional, times thrifty rounds);
- ``tick(now)``: time passed (retransmissions, heartbeats, catch-up, elections).

Nothing here reads a clock, a socket or a file: time only arrives through ``tick`` and
``flush``, and randomness from a generator seeded by ``Config.seed``, so the same inputs in the
same order always give the same outputs.

Elections (any node may lead; see ``Config.election_timeout``):

- a follower that has not heard from a leader (an Accept or Learn it accepted) for a randomized
  election timeout, between one and two ``election_timeout``\ s, becomes a *pre-candidate*: it
  sends probe Prepares (Raft's PreVote), which change no state anywhere, and runs phase 1 for
  real (a *candidate*) only once a majority says it would promise; a pre-candidate that promises
  another's (real) Prepare gives up its probe, so two nodes that time out together do not both
  win in turn;
- an acceptor that heard from a live leader within ``election_timeout`` refuses to promise (or
  to say it would) to any other proposer: leader stickiness, the lease of Raft's CheckQuorum,
  so a node back from a pause or a partition cannot depose a healthy leader;
- a leader that has not heard from a majority (itself included) within ``election_timeout``
  steps down and turns proposals away, so clients move to the side that has a majority;
- a candidacy that has not won within its randomized timeout starts over with new probes;
  randomized timers keep two would-be leaders from livelocking.

Multi-Paxos as in ``DESIGN.md``: phase 1 once per leadership over every slot from the first one
not known chosen; re-proposal of the highest-ballot accepted value per slot and no-ops in holes;
phase 2 per batch with a bounded window of batches ("rounds") in flight; a round is chosen when a
majority (the fastest one) accepted it; the commit index is piggybacked on the next Accept or
sent as a ``Learn``; a learner behind the commit index fetches chosen entries by catch-up.

Bounds: no message, forged or buggy, makes a node store what SQLite cannot hold, allocate
without limit, or poll without end.  ``decode`` checks what it can alone (``paxgos.core.
messages``: 64-bit integers, rounds at most ``MAX_ROUND``, a request's ballot is its sender's
own); ``step`` checks the rest and drops what fails, changing nothing and answering nothing:

- the sender is a member (``0 <= sender < nodes``) and a request's ballot is its own, with a
  round at most ``MAX_ROUND``: no promise, accepted entry or followed leader ever names a node
  outside the cluster, and ``leader()`` only ever names a member;
- an Accept lies within ``Config.horizon`` of the acceptor's commit index (``Acceptor.
  within_horizon``); beyond it the acceptor refuses it without any change (the refusal does not
  outbid the leader, which sends it again later), and takes from it only what a Learn of the
  same ballot and commit index would give (the lease, the commit index to catch up to), so a
  follower far behind catches up and then accepts.  A leader sends no round past its own
  horizon (it waits for its commit index to move), and a new leader re-proposes or fills holes
  only up to ``MAX_HORIZON`` above its commit index, the farthest any acceptor accepts: a
  Promise entry farther away predates the bound or is forged, and is ignored;
- a node that has seen a ballot at ``MAX_ROUND`` cannot outbid it and stops campaigning, with
  one error line, rather than pick a round past it;
- catch-up toward a commit index nobody serves backs off (``paxgos.core.learner``).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import dataclass, field

from paxgos.core.acceptor import Acceptor
from paxgos.core.ballot import MAX_ROUND, ZERO, Ballot
from paxgos.core.learner import Learner
from paxgos.core.messages import (
    MAX_BATCH,
    MAX_HORIZON,
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    ChosenEntry,
    Learn,
    LearnAck,
    Message,
    Prepare,
    Promise,
    Value,
)
from paxgos.core.proposer import Proposer, Round
from paxgos.core.ready import Committed, Readable, Ready, Rejected

#: Accepts a peer owes answers to that the leader keeps track of (the oldest one's age is
#: what counts): a dead peer's list stops growing there.
OWED_KEPT = 64

log = logging.getLogger("paxgos.core")

FOLLOWER = "follower"
PRECANDIDATE = "precandidate"  # asking whether a majority would promise (probe Prepares)
CANDIDATE = "candidate"  # running phase 1
LEADER = "leader"


@dataclass
class Config:
    """Tunables of the protocol; times are in seconds of whatever clock ``tick`` is fed.  The
    defaults here are a node's (``paxgos.net.server.NodeOptions`` and the command line take
    them from this class)."""

    node_id: int
    nodes: int
    initial_leader: int = 0
    #: Rounds (Accept batches) in flight at once; proposals beyond wait for the next batch.
    window: int = 4
    #: Most values in one Accept.
    max_batch: int = 1024
    #: A round beyond the first in flight goes out once it holds as many values as the rounds
    #: in flight together, or this many: every round costs a message to each peer, so small
    #: batches wait to grow (Nagle's rule), but a few clients still overlap their round with
    #: the one in flight rather than wait for it, and rounds do not split into ever smaller
    #: ones; under heavy load full batches pipeline up to ``window``.
    pipeline_batch: int = 64
    #: With no round in flight, a batch of fewer values than this may wait up to ``linger``
    #: for more (under load, the clients answered by the last round are about to propose
    #: again): fewer, larger rounds cost every node less.  The values it waits for are those
    #: still to come from the clients it answered (``Proposer.returning``, at most ``min_batch``
    #: less the queue): once as many requests arrived as commits were answered, a closed loop
    #: of clients has nothing more to send, and waiting would only add latency.  So a lone
    #: client does not wait: its own request is the one its commit was waiting for (after
    #: other clients left, it may wait once, and then the count starts afresh).  1 never
    #: waits; only a ``flush`` given the time can wait.
    min_batch: int = 32
    linger: float = 0.004
    #: The share of the answered clients still to come that the arrival rate must promise
    #: within ``linger`` for a batch to wait; 0 (the default) waits whatever the rate.  The
    #: answered count alone keeps a lone client from waiting; a share above 0 also spares
    #: clients that think between requests, but under Locust's 64 users it kept batches from
    #: waiting and cost a tenth of the throughput (docs/performance.md).
    linger_fill: float = 0.0
    #: Arrivals are counted over windows at least this long (the rate of the last one is the
    #: estimate; a window that spans an idle time gives a low rate, as it should).
    rate_window: float = 0.02
    #: Most proposals waiting for a batch; beyond it the leader answers "overloaded".
    max_queue: int = 50_000
    #: Resend an unanswered Prepare or Accept after this long.
    retry_interval: float = 0.15
    #: Thrifty phase 2: a round's Accept goes to this node and to the majority-minus-one
    #: peers that answered Accepts fastest lately, not to every peer, so that each commit
    #: costs three fsyncs of five nodes rather than five and the other followers' CPU stays
    #: free; those learn the values from the commit index, by catch-up.  A peer replaces a
    #: target only once it is usually twice as fast (no flapping, which would make every
    #: follower catch up), or once the target has owed an answer for longer than that.  A
    #: round not chosen within ``thrifty_wait`` or twice its slowest target's usual answer
    #: time goes to every other peer too, and at most every ``thrifty_probe`` one goes to
    #: every peer, so that the leader knows every peer's answer time.  A round of more than
    #: ``thrifty_max`` values goes to every peer: under load the leader's core is the limit,
    #: and per value a catch-up costs it more (a read, a check, an encoding) than a place in
    #: an Accept it encodes once for all.  Off, every round goes to every peer.
    thrifty: bool = True
    thrifty_max: int = 16
    thrifty_wait: float = 0.002
    thrifty_probe: float = 0.1
    #: Ask again for a catch-up batch not answered in this long (a big batch takes a while).
    catchup_timeout: float = 1.0
    #: A moved commit index rides on the next Accept; a tick sends it alone (a Learn) only once
    #: it has gone unsent for this long, counted from the first tick that found it unsent.  Under
    #: load the next Accept nearly always comes first, and a Learn costs the leader a request and
    #: its answer and every follower a request and a write; 0 sends it at the first tick, and any
    #: value up to the host's tick interval at the second.  Thrifty rounds leave two followers
    #: without the values, which they fetch only ``catchup_after`` behind, so telling them the
    #: index every 10 ms bought nothing a Learn every 50 ms does not (etcd's followers learn it
    #: from the next append or heartbeat, 100 ms by default), and cost the leader 4% at one
    #: client (docs/performance.md).
    learn_delay: float = 0.05
    #: A learner behind the commit index for this long fetches what it misses.
    catchup_after: float = 0.2
    #: Entries asked for per catch-up request.
    catchup_batch: int = 10_000
    #: Catch-up attempts that bring nothing wait ever longer between them (doubling from
    #: ``catchup_timeout``), but never longer than this: a commit index nobody can serve (a
    #: forged Learn's, a dead node's) costs a request every this many seconds, not 50 a second.
    catchup_backoff_max: float = 5.0
    #: How many full windows of batches an acceptor takes ahead of its commit index: see
    #: ``horizon``.
    horizon_windows: int = 16
    #: The lease and the election timer.  A follower that has heard from no leader for a
    #: random time between one and two of these starts an election; an acceptor that heard
    #: from a live leader within one refuses other proposers; a leader that heard from no
    #: majority within one steps down.  Heartbeats go every fifth of it.
    election_timeout: float = 0.5
    #: Seeds the election timer's randomness (the host draws it; the simulator derives it).
    seed: int = 0
    #: Leader stickiness (the lease above).  Off, an acceptor promises any higher ballot at
    #: any time, and a node back from a partition can depose a healthy leader: only tests of
    #: phase 1 alone, and the simulator's planted bug, turn it off.
    sticky: bool = True

    @property
    def majority(self) -> int:
        return self.nodes // 2 + 1

    @property
    def horizon(self) -> int:
        """How far above its commit index an acceptor takes an Accept, and a leader sends one:
        ``min(MAX_HORIZON, horizon_windows * window * max_batch)``.

        A leader has at most ``window * max_batch`` slots in flight above its commit index,
        and a follower trails it by a round or two, so 16 windows (65,536 slots by default)
        leave plenty of room for honest lag; a follower farther behind refuses, catches up, and
        accepts again.  ``MAX_HORIZON`` caps it, so that an acceptor's Promise always fits on
        the wire.  An Accept of the slot right after the commit index is taken whatever its
        length (``Acceptor.within_horizon``), so a leader whose batches are larger than a
        follower's horizon (nodes configured differently) never wedges it."""
        return min(MAX_HORIZON, self.horizon_windows * self.window * self.max_batch)

    @property
    def heartbeat_interval(self) -> float:
        """A leader with nothing to send for this long sends a Learn (heartbeat and commit
        index): five chances per election timeout to keep its lease."""
        return self.election_timeout / 5


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
        self.acceptor = Acceptor(self.id, stored.promised, dict(stored.accepted), config.horizon)
        self.learner = Learner(self.id, stored.commit)
        self.now = 0.0
        # The host's latest time, from any input that brings one: thrifty rounds go by it (the
        # peers' answer times, when a round widens, when to probe).  Leases and timers go by
        # ``now``, the last tick's, on purpose: an answer handled late (after a pause) must not
        # count as recent word from its sender.
        self.clock = 0.0
        self.role = FOLLOWER
        self.proposer = Proposer(ZERO, self.commit + 1)
        self.seen = ZERO  # the highest ballot that refused or outbid ours
        self.queue: deque[tuple[int, int]] = deque()  # (request, value) awaiting a batch
        self.rng = random.Random(config.seed * 1_000_003 + config.node_id)
        # the leader this node follows, and when it last heard from it (the lease)
        self.leader_ballot = ZERO
        self.leader_seen_at: float | None = None
        self.election_at: float | None = None  # when a follower or candidate tries (again)
        # per peer, as the leader sees it: last answer and the commit index it reported
        self.peer_seen_at: dict[int, float] = {}
        self.peer_commit: dict[int, int] = {}
        self.rounds_sent = 0  # statistics, for /status and /metrics
        self.values_sent = 0
        self.rounds_widened = 0  # thrifty rounds sent on to the peers they skipped
        #: Rounds sent by batch size: entry ``k`` counts rounds of ``2**(k-1)+1 .. 2**k``
        #: values (entry 0: one value), up to ``MAX_BATCH``: a histogram the host exports.
        self.round_sizes = [0] * ((MAX_BATCH - 1).bit_length() + 1)
        self.caught_up = 0  # slots applied thanks to catch-up replies
        self.elections = 0  # candidacies started (real phase 1 runs)
        self.leader_changes = 0  # times this node saw leadership move to another ballot
        self.dropped = 0  # messages that failed the bounds of ``step`` (for /status)
        # Proposals queued since ``rate_since``, and the rate of the last closed window
        # (values per second): what decides whether a small batch lingers.
        self.arrivals = 0
        self.rate_since: float | None = None
        self.arrival_rate = 0.0
        self.ballots_exhausted = False  # a ballot at MAX_ROUND was seen: no more campaigns
        if stored.promised.round > MAX_ROUND:
            log.error(
                "node %d: stored promise %s has a round above %d (written before the bound, by "
                "a forged Prepare): this node can never campaign or answer a Prepare that peers "
                "can read; restore its data from a healthy node",
                self.id, stored.promised, MAX_ROUND,
            )  # fmt: skip

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
        """The node this one knows leads: itself when leading, else the leader it heard from
        within the election timeout, else None (clients get 503, never a stale redirect)."""
        if self.role == LEADER:
            return self.id
        node = self.leader_ballot.node
        if self._lease_live() and node != self.id and 0 <= node < self.config.nodes:
            return node
        return None

    def _lease_live(self) -> bool:
        """Whether this node heard from a live leader within the election timeout."""
        if self.role == LEADER:
            return True
        seen = self.leader_seen_at
        return seen is not None and self.now - seen < self.config.election_timeout

    def status(self, now: float | None = None) -> dict[str, object]:
        """A snapshot for /status (``now``: the host's clock, for the ages it shows)."""
        now = self.now if now is None else now
        timeout = self.config.election_timeout
        peers = {}
        for peer in self.peers:
            seen = self.peer_seen_at.get(peer)
            commit = self.peer_commit.get(peer)
            peers[peer] = {
                "last_contact_s": None if seen is None else round(now - seen, 3),
                "commit_index": commit,
                "lag": None if commit is None else max(0, self.commit - commit),
                "reachable": seen is not None and now - seen < timeout,
                # thrifty rounds (Config.thrifty): whether new rounds go to it, and its usual
                # time to answer an Accept
                "target": peer in self.proposer.targets if self._thrifty() else None,
                "accept_latency_ms": None
                if peer not in self.proposer.latency
                else round(self.proposer.latency[peer] * 1000, 2),
            }
        seen = self.leader_seen_at
        return {
            "id": self.id,
            "role": self.role,
            "ballot": list(self.ballot) if self.role != FOLLOWER else None,
            "promised": list(self.promised),
            "leader": self.leader(),
            "leader_ballot": list(self.leader_ballot) if self.leader_ballot != ZERO else None,
            "since_leader_s": 0.0
            if self.role == LEADER
            else (None if seen is None else round(now - seen, 3)),
            "election_timeout_s": timeout,
            "elections": self.elections,
            "leader_changes": self.leader_changes,
            "commit_index": self.commit,
            "known_commit": self.known_commit,
            "queued": len(self.queue),
            "rounds_in_flight": len(self.rounds),
            "rounds_sent": self.rounds_sent,
            "values_sent": self.values_sent,
            "rounds_widened": self.rounds_widened,
            "refused_messages": self.dropped,
            "arrival_rate": round(self.arrival_rate, 1),
            "returning": self.proposer.returning,
            "peer_state": peers,
        }

    def answer_catchup(self, msg: CatchupRequest, chosen: list[ChosenEntry]) -> CatchupReply:
        """The reply to a catch-up request, given the chosen entries the host read for it
        (from ``msg.from_slot``, at most ``msg.limit``, all at or below ``self.commit``)."""
        return CatchupReply(self.id, tuple(chosen), self.commit)

    # --- inputs -------------------------------------------------------------------------------

    def campaign(self, prevote: bool = True) -> Ready:
        """Try to lead: probe for a majority, then run phase 1 with a ballot above every
        ballot seen.  A live leader elsewhere keeps its post (its followers refuse).  Without
        ``prevote``, phase 1 starts at once (a forced election, as etcd's; tests use it)."""
        ready = Ready()
        if not prevote:
            ballot = self._next_ballot()
            if ballot is None:
                self._exhausted(ready)
            else:
                self._become_candidate(ready, ballot)
        elif self.role in (FOLLOWER, PRECANDIDATE):
            self._become_precandidate(ready)
        return ready

    def propose(self, request: int, value: int) -> Ready:
        """Queue client ``request`` to commit ``value``; it goes out with the next ``flush``,
        or at once when it fills a whole batch (so that acceptors work on one batch while the
        leader is still reading the requests of the next)."""
        ready = Ready()
        if self.role in (FOLLOWER, PRECANDIDATE):
            ready.outcomes.append(Rejected(request, "not_leader", self.leader()))
        elif len(self.queue) >= self.config.max_queue:
            ready.outcomes.append(Rejected(request, "overloaded", self.id))
        else:
            self.queue.append((request, value))
            self.arrivals += 1
            self.proposer.returning = max(0, self.proposer.returning - 1)
            if len(self.queue) >= self.config.max_batch:
                self._flush(ready)
        return ready

    def read(self, request: int) -> Ready:
        """Client ``request`` wants to read the log linearizably (Raft's read index, as etcd's
        default reads).  The leader notes the read index: its commit index, or the last slot
        it re-proposed on taking office if higher (a value chosen before this leadership may
        sit there).  The next ``flush`` sends a Learn that asks the acceptors to echo it; once
        a majority (this node included) has answered it under this ballot, no other leader
        could have chosen anything before the read arrived, and ``Readable(request, slot)``
        says to serve the read once this node has applied ``slot``.  A node that does not
        lead rejects it, as it would a proposal."""
        ready = Ready()
        term = self.proposer
        if self.role != LEADER:
            ready.outcomes.append(Rejected(request, "not_leader", self.leader()))
        elif len(term.reads) + len(term.reads_unsent) >= self.config.max_queue:
            ready.outcomes.append(Rejected(request, "overloaded", self.id))
        else:
            term.reads_unsent.append((request, max(self.commit, term.read_floor)))
            term.returning = max(0, term.returning - 1)  # a client back, if only to read
        return ready

    @property
    def flush_wanted(self) -> bool:
        """Whether a ``flush`` has work: proposals queued, or reads to confirm."""
        return bool(self.queue) or bool(self.proposer.reads_unsent)

    def flush(self, now: float | None = None) -> Ready:
        """End of a turn: send queued proposals as batches, as far as the window permits, and
        one Learn for the reads that arrived since the last.

        ``now`` (the host's clock) lets a small batch linger: with no round in flight and fewer
        than ``min_batch`` values queued, they wait until ``flush_due`` for company; the host
        flushes again then.  Without ``now`` nothing waits."""
        ready = Ready()
        if now is not None:
            self.clock = max(self.clock, now)
            self._fall_back(ready)
        if self.proposer.reads_unsent:
            self._send_reads(ready)
        if now is not None:
            self._measure_arrivals(now)
            if self._linger(now):
                return ready
        self._flush(ready)
        return ready

    @property
    def flush_due(self) -> float | None:
        """When a lingering batch must go, or a thrifty round go to the other peers too (the
        host calls ``flush(now)`` then), or None."""
        term = self.proposer
        due = None if term.lingering_since is None else term.lingering_since + self.config.linger
        for rnd in term.rounds.values():
            if rnd.fallback_at is not None and (due is None or rnd.fallback_at < due):
                due = rnd.fallback_at
        return due

    def tick(self, now: float) -> Ready:
        """Time is now ``now``: resend what went unanswered, heartbeat, catch up, elect."""
        self.now = now
        self.clock = max(self.clock, now)
        ready = Ready()
        cfg = self.config
        term = self.proposer
        if self.role == LEADER and self._majority_lost():
            log.info(
                "node %d: heard from no majority for %gs; stepping down as leader (ballot %s)",
                self.id, cfg.election_timeout, term.ballot,
            )  # fmt: skip
            self._become_follower(ZERO, ready)
        elif self.role == LEADER:
            for rnd in term.rounds.values():
                if now - rnd.sent_at >= cfg.retry_interval:
                    rnd.sent_at = now
                    self._resend(ready, rnd)
            self._fall_back(ready)
            # The commit index rides on the next Accept; when none follows within learn_delay
            # it goes out alone (as a heartbeat does, telling followers the leader is alive),
            # to the peers that lack it (thrifty rounds skip some).
            late = False
            if self._commit_unsent():
                if term.commit_unsent_since is None:
                    term.commit_unsent_since = now
                late = now - term.commit_unsent_since >= cfg.learn_delay
            learn_to = [
                p
                for p in self.peers
                if now - term.peer_sent_at.get(p, term.began_at) >= cfg.heartbeat_interval
                or (late and term.told.get(p, 0) < self.commit)
            ]
            if term.reads and now - term.read_sent_at >= cfg.retry_interval:
                self._send_reads(ready)  # lost Learns or answers: ask again
            elif learn_to:
                self._send_learn(ready, learn_to)
        elif self.election_at is None:
            self._arm_election()
            if self.promised == ZERO and self.id != cfg.initial_leader:
                # A new cluster: the distinguished proposer gets the first chance to lead.
                self.election_at += cfg.election_timeout
        elif now >= self.election_at:
            if self.role == FOLLOWER:
                log.debug(
                    "node %d: election timeout: no word from a leader for %.3fs",
                    self.id, now - (self.leader_seen_at or 0.0),
                )  # fmt: skip
            else:
                log.debug("node %d: %s for %s timed out", self.id, self.role, term.ballot)
            self._become_precandidate(ready)
        elif self.role != FOLLOWER and now - term.prepare_sent_at >= cfg.retry_interval:
            term.prepare_sent_at = now
            prepare = self._prepare()
            ready.messages.extend((p, prepare) for p in self._all() if p not in term.promises)
        self._maybe_catch_up(ready)
        return ready

    def step(self, msg: Message, now: float | None = None) -> Ready:
        """A message from a peer (or from this node to itself) arrived, at ``now`` if the host
        says (thrifty rounds go by it: see ``clock``).  One that fails the bounds of the
        module docstring is dropped: nothing changes and nothing answers it (the host answers a
        request with no response as an empty one)."""
        if now is not None:
            self.clock = max(self.clock, now)
        ready = Ready()
        reason = self._inadmissible(msg)
        if reason is not None:
            self.dropped += 1
            log.debug("node %d: dropped %s: %s", self.id, msg, reason)
            return ready
        if isinstance(msg, Accept):
            ready.response = self._on_accept(msg, ready)
        elif isinstance(msg, Accepted):
            self._on_accepted(msg, ready)
        elif isinstance(msg, Learn):
            if msg.ballot >= self.promised:
                self._heard_leader(msg.ballot, ready)
            self._learn_commit(msg.ballot, msg.commit, msg.sender, ready)
            ready.response = LearnAck(self.id, msg.ballot, self.commit, self.promised, msg.read)
        elif isinstance(msg, LearnAck):
            if msg.promised > msg.ballot:
                self._observe(msg.promised, ready)  # it promised another proposer: outbid
            elif self.role == LEADER and msg.ballot == self.ballot:
                self._heard_peer(msg.sender, msg.commit)
                if msg.read:
                    self._confirm_reads(msg.sender, msg.read, ready)
        elif isinstance(msg, Prepare):
            ready.response = self._on_prepare(msg, ready)
        elif isinstance(msg, Promise):
            self._on_promise(msg, ready)
        elif isinstance(msg, CatchupReply):
            before = self.commit
            self.learner.on_reply(msg, self.now)
            self._apply(ready)
            self.caught_up += self.commit - before
            if self.commit == before:
                self.learner.fruitless_reply()  # it brought nothing: back off
            elif self.known_commit > self.commit:
                self._request_catchup(msg.sender, ready)  # more to fetch: keep going
        return ready

    def _inadmissible(self, msg: Message) -> str | None:
        """Why ``msg`` fails the bounds ``step`` enforces (see the module docstring), or None."""
        if not 0 <= msg.sender < self.config.nodes:
            return f"sender {msg.sender} is not a member"
        if isinstance(msg, (Prepare, Accept, Learn)):
            if msg.ballot.node != msg.sender:
                return f"ballot {msg.ballot} is not its sender's"
            if msg.ballot.round > MAX_ROUND:
                return f"ballot {msg.ballot} has a round above {MAX_ROUND}"
        return None

    def _on_accept(self, msg: Accept, ready: Ready) -> Accepted:
        live = msg.ballot >= self.promised
        if live:  # it is not outbid: its sender leads
            self._heard_leader(msg.ballot, ready)
        response = self.acceptor.on_accept(msg, self.commit, ready.persist)
        if log.isEnabledFor(logging.DEBUG):
            why = "refused (promised higher)" if not live else "refused (beyond the horizon)"
            log.debug(
                "node %d: %s slots %d..%d under ballot %s from node %d",
                self.id, "accepted" if response.ok else why,
                msg.first, msg.first + len(msg.values) - 1, msg.ballot, msg.sender,
            )  # fmt: skip
        if response.ok or live:
            # Beyond the horizon, the commit index is taken as a Learn's would be: a follower
            # far behind learns how far to catch up.
            self._learn_commit(msg.ballot, msg.commit, msg.sender, ready)
        return response

    # --- roles --------------------------------------------------------------------------------

    def _reset(self, role: str, ballot: Ballot, ready: Ready) -> None:
        """The one place a role changes: a fresh ``Proposer`` for ``ballot``; the rounds of the
        old one are abandoned (phase 1 decides their slots afresh, so they must never be resent
        under a new ballot, and their clients learn that their fate is unknown); a role that
        cannot propose turns the queued proposals away; the election timer starts afresh."""
        ready.outcomes.extend(self.proposer.abandon())
        unconfirmed = self.proposer.drop_reads()
        if self.role == LEADER and role != LEADER and self.leader_ballot.node == self.id:
            self.leader_seen_at = None  # our own lease ends with our leadership
        self.role = role
        self.proposer = Proposer(ballot, self.commit + 1, self.now)
        ready.outcomes.extend(
            Rejected(request, "not_leader", self.leader()) for request in unconfirmed
        )
        if role in (FOLLOWER, PRECANDIDATE):
            leader = self.leader()
            while self.queue:
                request, _ = self.queue.popleft()
                ready.outcomes.append(Rejected(request, "not_leader", leader))
        self._arm_election()

    def _arm_election(self) -> None:
        """A random time between one and two election timeouts from now."""
        self.election_at = self.now + self.config.election_timeout * (1 + self.rng.random())

    def _become_follower(self, seen: Ballot, ready: Ready) -> None:
        """Stop proposing: ``seen`` outbid us, or is the ballot a pre-candidate just promised
        (``ZERO``: no majority answers any more)."""
        if self.role == LEADER and seen != ZERO:  # a leader change: one info line
            log.info("node %d: ballot %s outbid by %s", self.id, self.ballot, seen)
        elif self.role != FOLLOWER:  # a candidacy that did not win is the election's detail
            log.debug("node %d: %s for %s gave up (saw %s)", self.id, self.role, self.ballot, seen)
        self._reset(FOLLOWER, ZERO, ready)
        self.seen = max(self.seen, seen)  # to outbid it next time

    def _become_precandidate(self, ready: Ready) -> None:
        """Ask every acceptor whether it would promise a ballot above any seen (no state
        changes anywhere): only a node that could win raises the ballot (Raft's PreVote)."""
        ballot = self._next_ballot()
        if ballot is None:
            self._exhausted(ready)
            return
        self._reset(PRECANDIDATE, ballot, ready)
        log.debug("node %d: probe for ballot %s", self.id, ballot)
        probe = self._prepare()
        ready.messages.extend((p, probe) for p in self._all())

    def _become_candidate(self, ready: Ready, ballot: Ballot) -> None:
        """Run phase 1 with ``ballot`` (the one a majority said it would promise)."""
        self._reset(CANDIDATE, ballot, ready)
        self.elections += 1
        # Promise our own ballot durably before any Prepare leaves: the self-Prepare may still
        # be in flight when we crash, and a restart would then pick this same ballot again and
        # could propose a second value under it (found by paxgos.sim, seed 260).
        self.acceptor.promised = ballot
        ready.persist.promised = ballot
        log.debug("node %d: prepare ballot %s from slot %d", self.id, ballot, self.commit + 1)
        prepare = self._prepare()
        ready.messages.extend((p, prepare) for p in self._all())

    def _next_ballot(self) -> Ballot | None:
        """The smallest ballot of ours above every ballot this node has seen; None when that
        would take a round above ``MAX_ROUND``."""
        top = max(self.promised, self.ballot, self.seen)
        return None if top.exhausted else top.next_for(self.id)

    def _exhausted(self, ready: Ready) -> None:
        """No ballot of ours can outbid the highest seen: a candidacy ends (a leader keeps
        its ballot, a follower keeps following), and the node says so once.  Only a forged
        ballot gets there (see ``MAX_ROUND``)."""
        if not self.ballots_exhausted:
            self.ballots_exhausted = True
            log.error(
                "node %d: ballot %s is at the highest round (%d): this node cannot campaign",
                self.id, max(self.promised, self.ballot, self.seen), MAX_ROUND,
            )  # fmt: skip
        if self.role in (PRECANDIDATE, CANDIDATE):
            self._become_follower(ZERO, ready)
        elif self.role == FOLLOWER:
            self._arm_election()  # no tight loop of attempts: the next one an election later

    def _prepare(self) -> Prepare:
        """The (probe, while a pre-candidate) Prepare of the current ballot."""
        ballot = self.proposer.ballot
        return Prepare(self.id, ballot, self.commit + 1, probe=self.role == PRECANDIDATE)

    def _become_leader(self, ready: Ready) -> None:
        """Phase 1 is complete: re-propose what may have been chosen, fill holes with no-ops."""
        term = self.proposer
        # No acceptor accepts beyond its commit index + MAX_HORIZON, and ours is at least that
        # of every promiser of the majority we waited for: an entry farther away was never
        # accepted under the bound (old data, a forged Promise) and filling every hole up to it
        # is what W2 did with slot 10**12.  The majority's entries alone keep the log safe.
        reach = self.commit + MAX_HORIZON
        highest = term.highest_accepted(self.commit)
        beyond = sorted(slot for slot in highest if slot > reach)
        if beyond:
            log.warning(
                "node %d: ignoring %d accepted entries beyond slot %d (commit %d + %d) that "
                "promises reported, the first at slot %d",
                self.id, len(beyond), reach, self.commit, MAX_HORIZON, beyond[0],
            )  # fmt: skip
            for slot in beyond:
                del highest[slot]
        for slot, value in self.learner.chosen_ahead.items():
            highest[slot] = (term.ballot, value)
        top = max(highest, default=self.commit)
        log.info(
            "node %d: leading with ballot %s (majority %s), %s",
            self.id,
            term.ballot,
            sorted(term.promises),
            f"re-proposing slots {self.commit + 1}..{top}"
            if top > self.commit
            else "nothing to re-propose",
        )
        self._reset(LEADER, term.ballot, ready)
        self.proposer.read_floor = top
        self.election_at = None
        self._heard_leader(term.ballot, ready)
        values = [highest.get(slot, (ZERO, None))[1] for slot in range(self.commit + 1, top + 1)]
        for start in range(0, len(values), self.config.max_batch):
            self._send_round(ready, tuple(values[start : start + self.config.max_batch]))
        self._flush(ready)
        if not self.proposer.rounds:
            self._broadcast_learn(ready)  # tell the followers at once who leads

    def _observe(self, ballot: Ballot, ready: Ready) -> None:
        """A ballot above ours means another proposer is at work: stop proposing."""
        if self.role != FOLLOWER and ballot > self.ballot:
            self._become_follower(ballot, ready)

    def _heard_leader(self, ballot: Ballot, ready: Ready) -> None:
        """An Accept or Learn under ``ballot`` was accepted: its sender leads, and is alive."""
        if ballot.node == self.id and self.role != LEADER:
            return  # our own message from a leadership we no longer hold
        if ballot < self.leader_ballot:
            return  # an older leader's message renews no lease
        if ballot != self.leader_ballot:
            if ballot > self.leader_ballot:
                self.leader_changes += 1
                if ballot.node != self.id:
                    log.info("node %d: following node %d (ballot %s)", self.id, ballot.node, ballot)
            self.leader_ballot = max(self.leader_ballot, ballot)
        self.leader_seen_at = self.now
        if self.role == PRECANDIDATE or (self.role != FOLLOWER and ballot > self.ballot):
            self._become_follower(ballot, ready)  # a live leader: no election of ours
        elif self.role == FOLLOWER:
            self._arm_election()

    def _heard_peer(self, peer: int, commit: int) -> None:
        self.peer_seen_at[peer] = self.now
        self.peer_commit[peer] = commit

    def _majority_lost(self) -> bool:
        """Whether a leader has heard from fewer than a majority (itself included) within the
        election timeout (Raft's CheckQuorum)."""
        cutoff = self.now - self.config.election_timeout
        live = 1 + sum(1 for p in self.peers if self.peer_seen_at.get(p, cutoff) > cutoff)
        return live < self.config.majority

    def _sticky(self, msg: Prepare) -> bool:
        """Whether to refuse ``msg`` because a live leader other than its sender is known:
        leader stickiness, so that a node back from a pause or a partition cannot depose it."""
        return (
            self.config.sticky
            and msg.sender != self.id
            and self._lease_live()
            and msg.sender != self.leader()
        )

    def _on_prepare(self, msg: Prepare, ready: Ready) -> Promise:
        if self._sticky(msg):
            log.debug(
                "node %d: %s for %s from node %d refused: leader %s is live",
                self.id, "probe" if msg.probe else "prepare", msg.ballot, msg.sender,
                self.leader(),
            )  # fmt: skip
            return Promise(self.id, msg.ballot, False, self.promised, self.commit, probe=msg.probe)
        if msg.probe:  # would we promise?  Nothing changes.
            ok = msg.ballot > self.promised
            return Promise(self.id, msg.ballot, ok, self.promised, self.commit, probe=True)
        self._observe(msg.ballot, ready)
        promise = self.acceptor.on_prepare(msg, self.commit, ready.persist)
        if promise.ok and msg.sender != self.id:
            if self.role == PRECANDIDATE:
                # We promised a candidate that a majority said it would promise: our own probe
                # is moot, and going on would outbid that candidate just as it wins (Raft
                # gives one vote per term for the same reason).
                self._become_follower(msg.ballot, ready)
            elif self.role == FOLLOWER:
                self._arm_election()  # give the candidate time to win before trying ourselves
        return promise

    # --- proposer -----------------------------------------------------------------------------

    def _all(self) -> list[int]:
        """Every node, this one included (the leader is an acceptor too)."""
        return list(range(self.config.nodes))

    def _on_promise(self, msg: Promise, ready: Ready) -> None:
        term = self.proposer
        if msg.ballot != term.ballot or msg.probe != (self.role == PRECANDIDATE):
            return
        if self.role not in (PRECANDIDATE, CANDIDATE):
            return
        if not msg.ok:
            if msg.promised > term.ballot:
                self._become_follower(msg.promised, ready)  # outbid
                return
            if msg.sender in term.promises:
                return  # a late answer to an earlier Prepare: it has promised since
            term.refused.add(msg.sender)  # it still hears from a live leader
            if len(term.refused) > self.config.nodes - self.config.majority:
                self._become_follower(ZERO, ready)
            return
        log.debug(
            "node %d: %s for %s from node %d (%d accepted)",
            self.id,
            "would promise" if msg.probe else "promise",
            msg.ballot,
            msg.sender,
            len(msg.accepted),
        )
        if msg.sender in term.promises:
            # A repeat (a retried Prepare, a duplicate): the first answer is the snapshot
            # phase 1 needs.  A later one leaves out what its sender has since committed, and
            # replacing the first with it could lose an accepted value between the two
            # commit indexes that this candidate has not caught up to.
            return
        term.refused.discard(msg.sender)
        term.promises[msg.sender] = msg
        if msg.sender != self.id:
            self._heard_peer(msg.sender, msg.commit)  # a new leader's first proof of a majority
        if len(term.promises) < self.config.majority or term.awaiting_commit:
            return
        if self.role == PRECANDIDATE:
            self._become_candidate(ready, term.ballot)
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

    def _measure_arrivals(self, now: float) -> None:
        """Close the arrival-rate window once it is ``rate_window`` long."""
        if self.rate_since is None:
            self.rate_since, self.arrivals = now, 0
        elif now - self.rate_since >= self.config.rate_window:
            self.arrival_rate = self.arrivals / (now - self.rate_since)
            self.rate_since, self.arrivals = now, 0

    def _linger(self, now: float) -> bool:
        """Whether a small first batch should keep waiting (starting the wait if need be)."""
        cfg = self.config
        term = self.proposer
        if self.role != LEADER or term.rounds or not 0 < len(self.queue) < cfg.min_batch:
            return False
        missing = min(cfg.min_batch - len(self.queue), term.returning)
        if missing == 0:
            return False  # every client answered has proposed again: no more are coming
        if term.lingering_since is None:
            if self.arrival_rate * cfg.linger < cfg.linger_fill * missing:
                return False  # they would not come in time: waiting only adds latency
            term.lingering_since = now
        if now < term.lingering_since + cfg.linger:
            return True
        term.returning = 0  # those not back within the linger are gone: stop waiting for them
        return False

    def _flush(self, ready: Ready) -> None:
        term = self.proposer
        term.lingering_since = None
        if self.role == LEADER:
            cfg = self.config
            while self.queue and len(term.rounds) < cfg.window:
                if term.rounds and len(self.queue) < min(
                    cfg.pipeline_batch, sum(len(r.values) for r in term.rounds.values())
                ):
                    break  # wait for the rounds in flight, or for a fuller batch
                count = min(len(self.queue), cfg.max_batch)
                if term.rounds and term.next_slot + count - 1 > self.commit + cfg.horizon:
                    break  # no acceptor would take it yet: wait for the commit index to move
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
        rnd = term.rounds[first] = Round(first, values, self.now)
        self.rounds_sent += 1
        self.values_sent += len(values)
        self.round_sizes[min((len(values) - 1).bit_length(), len(self.round_sizes) - 1)] += 1
        log.debug(
            "node %d: accept ballot %s slots %d..%d",
            self.id,
            term.ballot,
            first,
            first + len(values) - 1,
        )
        targets = self._targets(len(values))
        self._send_accept(ready, rnd, targets)
        if len(rnd.sent_to) < self.config.nodes:
            slowest = max(term.latency.get(p, 0.0) for p in targets)
            rnd.fallback_at = self.clock + max(self.config.thrifty_wait, 2 * slowest)

    def _thrifty(self) -> bool:
        """Whether this node's small rounds skip peers (it leads, with more than one peer to
        spare)."""
        return (
            self.config.thrifty
            and self.role == LEADER
            and self.config.majority - 1 < len(self.peers)
        )

    def _targets(self, count: int) -> list[int]:
        """The nodes a new round of ``count`` values goes to: every one (a large round, or a
        probe), or (thrifty) the fastest peers of a majority and this node, the current targets
        keeping their place until another peer is usually twice as fast, or they owe an answer
        for longer than that."""
        cfg = self.config
        term = self.proposer
        need = cfg.majority - 1
        probe = self.clock - term.probed_at >= cfg.thrifty_probe
        if not self._thrifty() or count > cfg.thrifty_max or probe:
            term.probed_at = self.clock
            return self._all()
        now = self.clock
        current = term.targets

        def slowness(p: int) -> float:
            usual = term.latency.get(p, 0.0)
            owed = term.owed.get(p)
            return max(usual / 2 if p in current else usual, now - owed[0][1] if owed else 0.0)

        term.targets = sorted(self.peers, key=slowness)[:need]
        return [*term.targets, self.id]

    def _send_accept(self, ready: Ready, rnd: Round, to: list[int]) -> None:
        """Send ``rnd``'s Accept, with the commit index, to the nodes ``to``."""
        term = self.proposer
        msg = Accept(self.id, term.ballot, rnd.first, rnd.values, self.commit)
        ready.messages.extend((p, msg) for p in to)
        rnd.sent_to.update(to)
        for p in to:
            if p != self.id:
                owed = term.owed.setdefault(p, deque())
                if len(owed) < OWED_KEPT:
                    owed.append((rnd.first, self.clock))
        self._sent(to)

    def _resend(self, ready: Ready, rnd: Round) -> None:
        """Send ``rnd`` again to every node that has not accepted it (lost messages or
        answers, or slow targets)."""
        rnd.fallback_at = None
        self._send_accept(ready, rnd, [p for p in self._all() if p not in rnd.acks])

    def _fall_back(self, ready: Ready) -> None:
        """Send every thrifty round whose wait is over to the peers it skipped."""
        for rnd in self.proposer.rounds.values():
            if rnd.fallback_at is not None and self.clock >= rnd.fallback_at:
                rnd.fallback_at = None
                self.rounds_widened += 1
                self._send_accept(ready, rnd, [p for p in self.peers if p not in rnd.sent_to])

    def _sent(self, to: list[int]) -> None:
        """The nodes ``to`` were just sent the commit index (an Accept or a Learn)."""
        term = self.proposer
        for p in to:
            term.peer_sent_at[p] = self.now
            term.told[p] = self.commit
        if not self._commit_unsent():
            term.commit_unsent_since = None

    def _commit_unsent(self) -> bool:
        """Whether some peer has not been sent the commit index yet."""
        told = self.proposer.told
        return any(told.get(p, 0) < self.commit for p in self.peers)

    def _send_learn(self, ready: Ready, to: list[int], read: int = 0) -> None:
        term = self.proposer
        learn = Learn(self.id, term.ballot, self.commit, read)
        ready.messages.extend((p, learn) for p in to)
        self._sent(to)

    def _broadcast_learn(self, ready: Ready, read: int = 0) -> None:
        self._send_learn(ready, self.peers, read)

    def _send_reads(self, ready: Ready) -> None:
        """A Learn numbered ``read_seq`` for every read that arrived before it: an echo of this
        number, or of a later one, from a peer still promised to us confirms them all."""
        term = self.proposer
        if self.role != LEADER:
            return
        term.read_seq += 1
        term.reads.extend((term.read_seq, request, slot) for request, slot in term.reads_unsent)
        term.reads_unsent.clear()
        term.read_sent_at = self.now
        self._broadcast_learn(ready, term.read_seq)
        if self.promised <= term.ballot:  # our own acceptor is still ours
            self._confirm_reads(self.id, term.read_seq, ready)

    def _confirm_reads(self, peer: int, seq: int, ready: Ready) -> None:
        """``peer`` echoed Learn ``seq`` under our ballot: release every read that a majority
        has now confirmed (this node counts itself for every Learn it sent)."""
        term = self.proposer
        if seq > term.read_seq or seq <= term.read_acks.get(peer, 0):
            return  # a number we never sent, or an older echo
        term.read_acks[peer] = seq
        echoed = sorted((term.read_acks.get(p, 0) for p in self._all()), reverse=True)
        confirmed = echoed[self.config.majority - 1]
        while term.reads and term.reads[0][0] <= confirmed:
            _, request, slot = term.reads.popleft()
            ready.outcomes.append(Readable(request, slot))

    def _on_accepted(self, msg: Accepted, ready: Ready) -> None:
        term = self.proposer
        if not msg.ok:
            self._observe(msg.promised, ready)
            if self.role == LEADER and msg.ballot == term.ballot:
                self._heard_peer(msg.sender, msg.commit)  # alive and ours, only behind
            return
        if self.role != LEADER or msg.ballot != term.ballot:
            return
        self._heard_peer(msg.sender, msg.commit)
        self._answered(msg.sender, msg.first)
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

    def _answered(self, peer: int, first: int) -> None:
        """``peer`` accepted the round at slot ``first``: it owes nothing sent before it, and
        the time it took goes into its moving average (a quarter weight), even if the round
        was chosen without it."""
        term = self.proposer
        owed = term.owed.get(peer)
        sent_at = None
        while owed and owed[0][0] <= first:
            slot, at = owed.popleft()
            if slot == first and sent_at is None:
                sent_at = at
        if sent_at is not None:
            seconds = self.clock - sent_at
            before = term.latency.get(peer)
            term.latency[peer] = seconds if before is None else before + (seconds - before) / 4

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
                term.returning += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("node %d: learned slots %d..%d", self.id, applied[0][0], self.commit)
        if self.role == CANDIDATE and 0 < term.awaiting_commit <= self.commit:
            self._become_leader(ready)

    def _learn_commit(self, ballot: Ballot, commit: int, source: int, ready: Ready) -> None:
        self.learner.learn(self.acceptor, ballot, commit, source, self.now)
        self._apply(ready)

    def _maybe_catch_up(self, ready: Ready) -> None:
        cfg = self.config
        source = self.learner.catchup_due(
            self.now, cfg.catchup_after, cfg.catchup_timeout, cfg.catchup_backoff_max
        )
        if source is not None:
            self._request_catchup(source, ready)

    def _request_catchup(self, source: int, ready: Ready) -> None:
        log.debug("node %d: catch-up from node %d at slot %d", self.id, source, self.commit + 1)
        ready.messages.append((source, self.learner.request(self.now, self.config.catchup_batch)))
