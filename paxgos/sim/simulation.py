"""One simulated run: N pure ``Node``s, their in-memory disks, the network, nemesis and clients.

``Simulation(seed, options).run()`` returns a ``RunResult``.  The run is a pure function of the
seed and the options: one ``random.Random(seed)`` draws every choice, the clock is simulated, and
events are ordered by ``(time, insertion)``, so the same seed replays the same run, byte for byte.

The simulation is the host of every node, and follows the host contract of
``paxgos.core.ready`` through the same ``paxgos.core.release.Pipeline`` the real host runs:
writes go to the node's ``MemoryStore`` (its disk), and what each write releases (responses to
the sender, messages, outcomes) leaves after it (on half the seeds a write of chosen entries
alone waits for the next write or tick, as rule 4 allows and the real host does, so that a
crash loses it);
call ``flush()`` at the end of every turn, ``tick(now)`` every 10-30 simulated ms, ``campaign()``
on the initial leader at boot and after it restarts; answer ``CatchupRequest`` from the store
(``node.answer_catchup``).  A crash throws away the ``Node`` object; a restart builds a new one
from ``store.load()``: only what was persisted survives.

Phases: for ``options.steps`` events the nemesis crashes nodes and partitions the network while
the network loses, duplicates and delays messages (and, with ``options.hostile``, forges
messages the core's bounds must make harmless: ``paxgos.sim.hostile``); then every fault heals
and the cluster has ``options.heal_time`` simulated seconds to answer every pending proposal,
commit a probe, and bring every node to the same commit index under exactly one leader, with
no node promised to a higher ballot (liveness).  Then stability: one follower is cut off for
0.6-2 s and comes back, and the leader must keep its post throughout (a disruption is a
violation: leader stickiness) while the cluster converges again.  Safety is checked at every
step (``paxgos.sim.invariants``), and so is the lease: a leader that cannot have heard from a
majority for longer than its election timeout (plus two ticks, plus a crashed peer's last
detour) must not take a proposal.
"""

from __future__ import annotations

import hashlib
import math
import random
import traceback
from dataclasses import dataclass
from typing import TextIO

from paxgos.core import LEADER, Ballot, Config, Node, Ready
from paxgos.core.messages import Accept, CatchupRequest, Learn, Message, Prepare
from paxgos.core.ready import Committed, Readable
from paxgos.core.release import Pipeline, Step
from paxgos.sim.clients import Clients
from paxgos.sim.faulty import node_factory
from paxgos.sim.hostile import forge
from paxgos.sim.invariants import InvariantChecker, Violation
from paxgos.sim.network import Network
from paxgos.sim.options import SimOptions
from paxgos.sim.scheduler import (
    CLIENT_TIMEOUT,
    CLIENT_WAKE,
    DELIVER,
    FLUSH,
    HEAL_PARTITION,
    PROPOSE,
    RESTART,
    TICK,
    Scheduler,
)
from paxgos.sim.trace import Trace
from paxgos.storage import MemoryStore

#: Events that a node handles (``a`` is the node): a paused node handles none of them.
NODE_EVENTS = frozenset({DELIVER, TICK, PROPOSE, FLUSH})
#: A node back from a pause runs its timer this long after it handled its backlog.
RESUME_TICK_US = 3_000

#: Messages that are requests: the host owes each one an answer (see ``_apply``).  A
#: ``CatchupRequest`` is answered from the store directly, before the core sees it.
REQUESTS = (Accept, Prepare, Learn)


@dataclass(frozen=True)
class RunResult:
    """What one run did; ``invariant`` is None when every check held."""

    seed: int
    steps: int
    sim_time_us: int
    commit: int
    proposed: int
    committed: int
    reads: int
    crashes: int
    partitions: int
    sent: int
    lost: int
    digest: str
    invariant: str | None = None
    report: str = ""
    forged: int = 0  # messages the hostile nemesis sent

    @property
    def ok(self) -> bool:
        return self.invariant is None

    def summary(self) -> str:
        status = "ok" if self.ok else f"VIOLATION {self.invariant}"
        return (
            f"seed={self.seed} {status} steps={self.steps} t={self.sim_time_us / 1e6:.3f}s "
            f"commit={self.commit} proposed={self.proposed} committed={self.committed} "
            f"reads={self.reads} "
            f"crashes={self.crashes} partitions={self.partitions} sent={self.sent} "
            f"lost={self.lost}{f' forged={self.forged}' if self.forged else ''} "
            f"digest={self.digest}"
        )


class Simulation:
    """A cluster of pure nodes under a seeded scheduler; see the module docstring."""

    def __init__(self, seed: int, options: SimOptions | None = None, out: TextIO | None = None):
        self.seed = seed
        self.options = opts = options or SimOptions()
        self.rng = rng = random.Random(seed)
        self.scheduler = Scheduler()
        self.network = Network(rng, self.scheduler, opts.drop, opts.dup, opts.delay)
        self.checker = InvariantChecker(opts.nodes)
        self.trace = Trace(opts.trace_lines, out)
        self.factory = node_factory(opts.faulty)
        n = opts.nodes
        # Vary the protocol's shape per seed so small windows, batch splits and multi-round
        # catch-up all get exercised.
        window = rng.choice((1, 2, 4))
        max_batch = rng.choice((1, 3, 1024))
        catchup_batch = rng.choice((3, 10_000))
        # Small batches pipeline freely (many rounds in flight); large ones wait to match the
        # rounds in flight, up to a cap of 4 or of the nodes' 64 (a generator of its own keeps
        # the seed's other choices).
        pipelining = random.Random(seed ^ 0x70697065)
        pipeline_batch = 1 if max_batch < 1024 else pipelining.choice((4, 64))
        # Half the seeds let a small first batch linger (as the real nodes do); drawn from a
        # generator of its own so that the other choices of a seed stay what they were.
        lingering = random.Random(seed ^ 0x6C696E67)
        min_batch = lingering.choice((1, 4))
        # The adaptive linger's threshold: 0 waits whatever the rate, 0.5 the nodes'
        # default, 1 waits only for a batch the rate fills completely.
        linger_fill = lingering.choice((0.0, 0.5, 1.0))
        # Half the seeds defer chosen-only writes to the next write or tick, as the real host
        # does (paxgos.core.ready, rule 4): a crash then loses chosen entries it had learned.
        self.defer_chosen = random.Random(seed ^ 0x64656665).random() < 0.5
        # Two seeds in three send each round to the fastest majority only (Config.thrifty, the
        # nodes' default), with a fallback wait and a probe interval of their own.
        thrifty_rng = random.Random(seed ^ 0x74687269)
        thrifty = thrifty_rng.random() < 2 / 3
        thrifty_wait = thrifty_rng.choice((0.002, 0.02))
        thrifty_probe = thrifty_rng.choice((0.1, 1.0))
        thrifty_max = thrifty_rng.choice((1, 2, 1024))
        # Each node's writes and releases follow the host's own rules (paxgos.core.release);
        # a token is the peer a response goes to.
        self.pipelines = [Pipeline[int](self.defer_chosen) for _ in range(n)]
        timers = random.Random(seed ^ 0x656C6563)  # the nodes' election timers
        self.configs = [
            Config(
                i,
                n,
                window=window,
                max_batch=max_batch,
                pipeline_batch=pipeline_batch,
                catchup_batch=catchup_batch,
                min_batch=min_batch,
                linger=0.005,
                linger_fill=linger_fill,
                thrifty=thrifty,
                thrifty_wait=thrifty_wait,
                thrifty_probe=thrifty_probe,
                thrifty_max=thrifty_max,
                seed=timers.randrange(2**32),
            )
            for i in range(n)
        ]
        self.initial_leader = self.configs[0].initial_leader
        # How long a leader cut off from a majority may still take proposals: its lease plus
        # two ticks, plus the longest detour (0.6 s) of a reply a crashed peer sent before dying
        # (a cut stops the messages in flight; a crash does not).
        self.lease_bound = int((self.configs[0].election_timeout + 0.06) * 1e6)
        self.last_crash = -(10**9)
        self.cut_since: list[int | None] = [None] * n  # when node i lost its majority
        self.stores = [MemoryStore() for _ in range(n)]
        self.nodes: list[Node | None] = [None] * n
        self.incarnation = [0] * n
        # Per node, when its pending FLUSH event fires (as the host's one timer: an earlier due
        # time moves it, and the event it replaces is ignored).
        self.flush_at: dict[int, int] = {}
        self.requests: list[dict[int, int]] = [{} for _ in range(n)]  # request -> client
        self.clients = Clients(
            opts.clients,
            rng,
            self.scheduler,
            self.checker,
            self.initial_leader,
            n,
            int(opts.client_timeout * 1e6),
        )
        self.max_down = n - 1 if opts.max_down is None else opts.max_down
        self.down = 0
        self.last_node = 0  # the node that handled the latest event
        self.crashes = 0
        self.partitions = 0
        self.step = 0
        # The forger draws from a generator of its own: without it, a seed runs as it always did.
        self.forger = random.Random(seed ^ 0x686F7374)
        self.forged = 0
        # So does the pauser; a paused node handles nothing before paused_until[i].
        self.pauser = random.Random(seed ^ 0x7061757365)
        self.paused_until = [0] * n
        self.pauses = 0

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run the faults phase, heal, run the liveness phase; stop at the first violation."""
        invariant = None
        report = ""
        try:
            for i in range(self.options.nodes):
                self._start(i)
            self.clients.start()
            self._faults_phase()
            self._liveness_phase()
        except Violation as violation:
            invariant = violation.invariant
            report = self._report(violation.invariant, violation.detail)
        except Exception:  # a crash of the core (or the store) is a bug report too
            invariant = "exception"
            report = self._report(invariant, traceback.format_exc().rstrip())
        return self._result(invariant, report)

    def _faults_phase(self) -> None:
        opts = self.options
        crash = opts.crash
        split = crash + opts.partition
        hostile = opts.hostile
        rng = self.rng
        step_once = self._step_once
        while self.step < opts.steps:
            step_once()
            if hostile and self.forger.random() < hostile:
                self._forge()
            if opts.pause and self.pauser.random() < opts.pause:
                self._pause_some()
            if split:
                r = rng.random()
                if r < crash:
                    self._crash_some()
                elif r < split and self.network.groups is None:
                    self._partition()

    def _liveness_phase(self) -> None:
        self.trace.add((self.step, self.scheduler.now, "heal", None, None, None))
        self.network.heal()
        for i in range(self.options.nodes):
            if self.nodes[i] is None:
                self._restart(i)
        count = self._lost()
        lost = self.rng.sample(range(self.options.nodes), count) if count else []
        for i in lost:
            self._crash(i, restart=False)
        self._update_cuts()
        self.clients.heal()
        self._run_until_converged()
        if not lost:  # cutting one more node off could leave no majority
            self._stability_phase()
        for i in range(self.options.nodes):
            pending = self.pipelines[i].pending()
            if pending:  # writes a tick would make next (and a clean stop makes)
                self.stores[i].apply(pending)
        logs = {i: store.chosen for i, store in enumerate(self.stores) if i not in lost}
        self.checker.final_logs(logs)

    def _lost(self) -> int:
        """How many nodes fail for good: ``options.lost``, but never a majority."""
        n = self.options.nodes
        return max(0, min(self.options.lost, n - (n // 2 + 1)))

    def _run_until_converged(self) -> None:
        deadline = self.scheduler.now + int(self.options.heal_time * 1e6)
        while not self._converged():
            if self.scheduler.now > deadline:
                raise Violation("liveness", self._stuck())
            self._step_once()

    def _stability_phase(self) -> None:
        """A follower is cut off for a while and comes back: the leader must stay the leader
        (its followers' lease refuses the returning node), and the cluster converge again."""
        rng = self.rng
        n = self.options.nodes
        leader = self._leader()
        assert leader is not None  # converged
        ballot = self.nodes[leader].ballot  # type: ignore[union-attr]
        away = rng.choice([i for i in range(n) if i != leader])
        self.partitions += 1  # a heal the faults phase scheduled must not end this cut early
        self.network.groups = [int(i == away) for i in range(n)]
        self._update_cuts()
        self.trace.add((self.step, self.scheduler.now, "isolate", away, None, None))
        back = self.scheduler.now + rng.randint(600_000, 2_000_000)
        while self.scheduler.now < back:
            self._step_once()
            self._check_stable(leader, ballot)
        self.network.groups = None
        self._update_cuts()
        self.trace.add((self.step, self.scheduler.now, "rejoin", away, None, None))
        settle = self.scheduler.now + 1_500_000
        deadline = self.scheduler.now + int(self.options.heal_time * 1e6)
        while self.scheduler.now < settle or not self._converged():
            if self.scheduler.now > deadline:
                raise Violation("liveness", self._stuck())
            self._step_once()
            self._check_stable(leader, ballot)

    def _check_stable(self, leader: int, ballot: Ballot) -> None:
        node = self.nodes[leader]
        if node is None or node.role != LEADER or node.ballot != ballot:
            raise Violation(
                "disruption",
                f"leader {leader} (ballot {ballot}) lost its post while a majority stood by it: "
                f"now {'down' if node is None else (node.role, node.ballot)}; "
                f"promised: {[None if m is None else str(m.promised) for m in self.nodes]}",
            )

    def _leader(self) -> int | None:
        """The one live leader, or None when there is none or more than one."""
        found = [i for i, node in enumerate(self.nodes) if node is not None and node.role == LEADER]
        return found[0] if len(found) == 1 else None

    def _converged(self) -> bool:
        if not self.clients.probe_done or any(self.requests):
            return False
        i = self._leader()
        leader = None if i is None else self.nodes[i]
        if leader is None or leader.rounds or leader.queue:
            return False
        # Every live node (the lost ones excepted: every other is up by now) has its commit
        # index and has promised no higher ballot: one that has (a candidacy that lost) would
        # outbid the leader at its next answer, which is no stable state to test stickiness on.
        return all(
            node.commit == leader.commit and node.promised <= leader.ballot
            for node in self.nodes
            if node is not None
        )

    def _update_cuts(self) -> None:
        """Note which nodes cannot reach a majority (themselves included) from now on."""
        n = self.options.nodes
        majority = n // 2 + 1
        now = self.scheduler.now
        for i in range(n):
            reach = sum(
                1 for j in range(n) if self.nodes[j] is not None and self.network.reachable(i, j)
            )
            if self.nodes[i] is not None and reach < majority:
                if self.cut_since[i] is None:
                    self.cut_since[i] = now
            else:
                self.cut_since[i] = None

    def _stuck(self) -> str:
        parts = [
            f"not converged {self.options.heal_time}s after healing: probe committed: "
            f"{self.clients.probe_done}"
        ]
        for i, node in enumerate(self.nodes):
            if node is None:
                parts.append(f"node {i}: down")
                continue
            parts.append(
                f"node {i}: role={node.role} ballot={node.ballot} promised={node.promised} "
                f"commit={node.commit} known_commit={node.known_commit} "
                f"rounds={sorted(node.rounds)} queued={len(node.queue)} "
                f"pending requests={sorted(self.requests[i])[:10]}"
            )
        return "\n  ".join(parts)

    # --- events -------------------------------------------------------------------------------

    def _step_once(self) -> None:
        _, _, kind, a, b, c = self.scheduler.pop()
        self.step += 1
        if kind in NODE_EVENTS and self.scheduler.now < self.paused_until[a]:
            # Paused: handled on resume, in arrival order (a queue's ties keep insertion
            # order), and its timers after what reached its sockets.
            later = self.paused_until[a] + (RESUME_TICK_US if kind == TICK else 0)
            self.scheduler.at(later, kind, a, b, c)
            return
        if kind == DELIVER:
            self._deliver(a, b, c)
        elif kind == TICK:
            self._tick(a, b)
        elif kind == PROPOSE:
            self._propose(a, b, c)
        elif kind == CLIENT_WAKE:
            self.clients.wake(a)
        elif kind == CLIENT_TIMEOUT:
            self.clients.timeout(a, b)
        elif kind == RESTART:
            if self.nodes[a] is None and self.incarnation[a] == b:
                self._restart(a)
        elif kind == FLUSH:
            # One replaced by an earlier one that has fired is ignored (a pause delays both).
            due = self.flush_at.get(a)
            if due is not None and self.scheduler.now >= due:
                del self.flush_at[a]
                if self.nodes[a] is not None and self.incarnation[a] == b:
                    self.last_node = a
                    self._flush(a)
        elif kind == HEAL_PARTITION:
            if self.partitions == a and self.network.groups is not None:
                self.network.groups = None
                self._update_cuts()
                self.trace.add((self.step, self.scheduler.now, "rejoin", None, None, None))

    def _deliver(self, dst: int, src: int, msg: Message) -> None:
        node = self.nodes[dst]
        trace = self.trace
        self.last_node = dst
        if node is None:
            trace.add((self.step, self.scheduler.now, "down", dst, src, msg))
            return
        if src != dst and not self.network.reachable(src, dst):
            trace.add((self.step, self.scheduler.now, "cut", dst, src, msg))
            return
        trace.add((self.step, self.scheduler.now, "deliver", dst, src, msg))
        if type(msg) is CatchupRequest:
            store = self.stores[dst]
            reply = node.answer_catchup(msg, store.read_chosen(msg.from_slot, msg.limit))
            self._send(dst, src, reply)
            return
        commit = node.commit
        ready = node.step(msg, self.scheduler.now / 1e6)
        if type(msg) is Accept and ready.response is not None and ready.response.ok:
            self.checker.accepted(dst, msg.ballot, msg.first, msg.values, commit)
        # A request is owed an answer (an HTTP response, even an empty one), as on the host.
        self._apply(dst, ready, src, answering=type(msg) in REQUESTS)
        self._flush(dst)
        self.checker.promised(dst, node.acceptor.promised)

    def _tick(self, i: int, incarnation: int) -> None:
        node = self.nodes[i]
        if node is None or self.incarnation[i] != incarnation:
            return  # a dead incarnation's timer
        self.last_node = i
        self._apply(i, node.tick(self.scheduler.now / 1e6), i)
        self._carry(i, self.pipelines[i].tick())
        self._flush(i)
        self.checker.promised(i, node.acceptor.promised)
        self.scheduler.after(self.rng.randint(10_000, 30_000), TICK, i, incarnation)

    def _propose(self, i: int, cid: int, batch: list[tuple[int, int]]) -> None:
        node = self.nodes[i]
        self.last_node = i
        self.trace.add((self.step, self.scheduler.now, "propose", i, cid, batch))
        if node is None:
            self.clients.failed(cid, [request for request, _ in batch])
            return
        pending = self.requests[i]
        for request, value in batch:
            pending[request] = cid
            ready = node.read(request) if value is None else node.propose(request, value)
            if node.role == LEADER and not ready.outcomes:
                self._check_lease(i)
            self._apply(i, ready, i)
        self._flush(i)

    # --- the host contract --------------------------------------------------------------------

    def _flush(self, i: int) -> None:
        """The end of node ``i``'s turn; a lingering batch gets a FLUSH event when it is due."""
        node = self.nodes[i]
        assert node is not None
        self._apply(i, node.flush(self.scheduler.now / 1e6), i)
        due = node.flush_due
        if due is None:
            return
        # Strictly after the due time, whatever the float rounding: at it, it still waits.
        delay = max(1, math.ceil(due * 1e6) - self.scheduler.now + 1)
        at = self.scheduler.now + delay
        if at < self.flush_at.get(i, at + 1):
            self.flush_at[i] = at
            self.scheduler.after(delay, FLUSH, i, self.incarnation[i])

    def _apply(self, i: int, ready: Ready, reply_to: int, answering: bool = False) -> None:
        """Hand ``ready`` to node ``i``'s pipeline (``paxgos.core.release``, as the host does);
        a request is owed an answer (an HTTP response, even an empty one), sent to
        ``reply_to``."""
        if ready.persist.chosen:
            self.checker.learned(i, ready.persist.chosen)
        owed = answering or ready.response is not None
        self._carry(i, self.pipelines[i].submit(ready, reply_to if owed else None))

    def _carry(self, i: int, step: Step[int]) -> None:
        """Release, then write; a simulated disk is durable at once, so the write's releases
        follow in the same turn."""
        while True:
            for ready, reply_to in step.release:
                self._release(i, ready, reply_to)
            if step.write is None:
                return
            self.stores[i].apply(step.write)
            step = self.pipelines[i].written()

    def _release(self, i: int, ready: Ready, reply_to: int | None) -> None:
        if reply_to is not None and ready.response is not None:
            self._send(i, reply_to, ready.response)
        for to, msg in ready.messages:
            if type(msg) is Prepare and not msg.probe:  # a probe uses no ballot
                self.checker.prepared(i, self.incarnation[i], msg.ballot)
            self._send(i, to, msg)
        for outcome in ready.outcomes:
            self.trace.add((self.step, self.scheduler.now, "outcome", i, None, outcome))
            self.requests[i].pop(outcome.request, None)
            if type(outcome) is Committed:
                self.checker.committed(i, outcome.request, outcome.slot, outcome.value)
            elif type(outcome) is Readable:
                self.checker.readable(i, outcome.request, outcome.slot)
            self.clients.answered(outcome)

    def _check_lease(self, i: int) -> None:
        """Node ``i`` took a proposal as leader: it must have heard from a majority lately."""
        since = self.cut_since[i]
        now = self.scheduler.now
        if now < self.paused_until[i] + RESUME_TICK_US:
            return  # a node back from a pause handles its backlog before its timer tells it
        # A crashed peer's replies may arrive up to 600 ms after the crash, each renewing the
        # lease in full: the bound stretches by that much until such a renewal has run out.
        late = now - self.last_crash < 600_000 + self.lease_bound
        bound = self.lease_bound + (600_000 if late else 0)
        if since is not None and now - since > bound:
            raise Violation(
                "leader-without-majority",
                f"node {i} took a proposal as leader {(self.scheduler.now - since) / 1e6:.3f}s "
                f"after it lost every way to a majority (bound {bound / 1e6}s)",
            )

    def _send(self, src: int, dst: int, msg: Message) -> None:
        if not self.network.send(src, dst, msg):
            self.trace.add((self.step, self.scheduler.now, "lost", dst, src, msg))

    # --- crashes, restarts, partitions, pauses ------------------------------------------------

    def _pause_some(self) -> None:
        """Pause a node for 0.3-2 s (the leader seven times in ten), as SIGSTOP would."""
        rng = self.pauser
        n = self.options.nodes
        leaders = [
            i for i, node in enumerate(self.nodes) if node is not None and node.role == LEADER
        ]
        i = leaders[0] if leaders and rng.random() < 0.7 else rng.randrange(n)
        now = self.scheduler.now
        if self.paused_until[i] <= now:
            self.paused_until[i] = now + rng.randint(300_000, 2_000_000)
            self.pauses += 1
            self.trace.add((self.step, now, "pause", i, None, self.paused_until[i] - now))

    def _start(self, i: int) -> None:
        node = self.factory(self.configs[i], self.stores[i].load())
        self.checker.promised(i, node.acceptor.promised)
        self.nodes[i] = node
        self.incarnation[i] += 1
        self.trace.add((self.step, self.scheduler.now, "start", i, None, None))
        self._apply(i, node.tick(self.scheduler.now / 1e6), i)
        if i == self.initial_leader:  # as the real host does at boot
            self._apply(i, node.campaign(), i)
        self.flush_at.pop(i, None)
        self._flush(i)
        self.scheduler.after(self.rng.randint(0, 10_000), TICK, i, self.incarnation[i])

    def _restart(self, i: int) -> None:
        self.down -= 1
        self._start(i)
        self._update_cuts()

    def _crash_some(self) -> None:
        if self.down >= self.max_down:
            return
        # Half the crashes hit the node that just acted: right after it sent something and
        # before the rest of its work lands is where lost-state bugs live.
        rng = self.rng
        i = self.last_node
        if self.nodes[i] is None or rng.random() < 0.5:
            i = rng.choice([i for i, node in enumerate(self.nodes) if node is not None])
        self._crash(i)

    def _crash(self, i: int, restart: bool = True) -> None:
        """Node ``i`` dies, and (``restart``) comes back after a while."""
        rng = self.rng
        self.nodes[i] = None
        self.pipelines[i] = Pipeline[int](self.defer_chosen)  # writes it never made
        self.incarnation[i] += 1
        self.down += 1
        self.crashes += 1
        self.last_crash = self.scheduler.now
        self._update_cuts()
        self.trace.add((self.step, self.scheduler.now, "crash", i, None, None))
        # Client connections to the dead process break: those requests' fate is unknown.
        by_client: dict[int, list[int]] = {}
        for request, cid in self.requests[i].items():
            by_client.setdefault(cid, []).append(request)
        self.requests[i] = {}
        for cid, requests in by_client.items():
            self.clients.failed(cid, requests)
        # Quick restarts (a supervisor bringing the process straight back) meet the messages the
        # dead incarnation left in flight; slow ones leave the cluster a minority short.
        if not restart:
            return
        quick = rng.random() < 0.5
        downtime = rng.randint(1_000, 30_000) if quick else rng.randint(30_000, 800_000)
        self.scheduler.after(downtime, RESTART, i, self.incarnation[i])

    def _forge(self) -> None:
        """Send one forged message (``paxgos.sim.hostile``) to a node other than the one it
        names as its sender (a host refuses a message naming itself from outside)."""
        n = self.options.nodes
        if n < 2:
            return
        top = max((node.promised.round for node in self.nodes if node is not None), default=0)
        leaders = frozenset(
            i for i, node in enumerate(self.nodes) if node is not None and node.role == LEADER
        )
        kind, sender, msg = forge(self.forger, n, top, leaders)
        dst = self.forger.choice([i for i in range(n) if i != sender])
        self.forged += 1
        self.trace.add((self.step, self.scheduler.now, "forge", dst, sender, kind))
        self._send(sender, dst, msg)

    def _partition(self) -> None:
        n = self.options.nodes
        rng = self.rng
        if rng.random() < 0.5:
            groups = [0] * n
            groups[rng.randrange(n)] = 1  # isolate one node
        else:
            groups = [rng.randint(0, 1) for _ in range(n)]
        if len(set(groups)) == 1:
            return
        self.partitions += 1
        self.network.groups = groups
        self._update_cuts()
        self.trace.add((self.step, self.scheduler.now, "partition", None, None, groups))
        self.scheduler.after(rng.randint(50_000, 1_500_000), HEAL_PARTITION, self.partitions)

    # --- results ------------------------------------------------------------------------------

    def replay_command(self) -> str:
        args = " ".join(["--seed", str(self.seed), *self.options.args()])
        return f"python -m paxgos.sim {args}"

    def _report(self, invariant: str, detail: str) -> str:
        lines = [
            f"VIOLATION seed={self.seed} step={self.step} "
            f"t={self.scheduler.now / 1000:.3f}ms invariant={invariant}",
            f"  {detail}",
            f"  replay: {self.replay_command()}",
            f"  last {len(self.trace.entries)} events (step, time, what, from->to, message):",
        ]
        lines += [f"    {line}" for line in self.trace.lines()]
        return "\n".join(lines)

    def _result(self, invariant: str | None, report: str) -> RunResult:
        log = self.stores[self.initial_leader].chosen
        digest = hashlib.sha256(repr((log, self.step, self.scheduler.now)).encode()).hexdigest()
        return RunResult(
            seed=self.seed,
            steps=self.step,
            sim_time_us=self.scheduler.now,
            commit=len(log),
            proposed=self.clients.proposed,
            committed=self.clients.committed,
            reads=self.clients.reads,
            crashes=self.crashes,
            partitions=self.partitions,
            sent=self.network.sent,
            lost=self.network.dropped,
            digest=digest[:12],
            invariant=invariant,
            report=report,
            forged=self.forged,
        )


def run_seed(seed: int, options: SimOptions | None = None, out: TextIO | None = None) -> RunResult:
    """Run one seed; ``out`` receives the full trace as it happens."""
    return Simulation(seed, options, out).run()
