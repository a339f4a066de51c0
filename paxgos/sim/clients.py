"""Simulated clients: they propose fresh values, wait for answers, and retry elsewhere.

Each client has at most one attempt in flight: one value, or now and then a burst of several
(like ``/autopropose``), sent to the node it believes leads.  It follows ``Rejected`` leader hints
(a node that names no leader sends it to a random node), gives up on an attempt when the node
crashes under it or after a timeout, and then tries again, at a random node, with new values:
every proposal in a run carries a value never proposed before, which is what
lets the checker say "in the log exactly once".

Once faults stop, clients stop too, except for one *probe* (client 0) that proposes until a value
is committed: the liveness phase requires it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from paxgos.core.ready import Committed, Outcome, Readable, Rejected
from paxgos.sim.invariants import InvariantChecker
from paxgos.sim.scheduler import CLIENT_TIMEOUT, CLIENT_WAKE, PROPOSE, Scheduler

VALUE_BASE = 100_000
#: Share of attempts (while faults run) that are a linearizable read instead of a proposal: a
#: ``(request, None)`` batch of one, answered by ``Readable``.
READ_SHARE = 0.1


@dataclass
class Client:
    id: int
    target: int
    attempt: int = 0
    waiting: set[int] = field(default_factory=set)


class Clients:
    """Every client of a run, driven by scheduler events."""

    def __init__(
        self,
        count: int,
        rng: random.Random,
        scheduler: Scheduler,
        checker: InvariantChecker,
        leader: int,
        nodes: int,
        timeout_us: int = 2_000_000,
    ):
        self.rng = rng
        self.scheduler = scheduler
        self.checker = checker
        self.nodes = nodes
        self.timeout_us = timeout_us
        self.clients = [Client(i, leader) for i in range(count)]
        self.owner: dict[int, int] = {}  # request -> client
        self.last_request = 0
        self.active = True  # faults phase: everyone proposes
        self.probe_done = False
        self.proposed = 0
        self.committed = 0
        self.reads = 0

    def start(self) -> None:
        for client in self.clients:
            self.scheduler.after(self.rng.randint(0, 20_000), CLIENT_WAKE, client.id)

    def _may_propose(self, client: Client) -> bool:
        return self.active or (client.id == 0 and not self.probe_done)

    def wake(self, cid: int) -> None:
        """Client ``cid`` sends its next attempt, if it is free to."""
        client = self.clients[cid]
        if client.waiting or not self._may_propose(client):
            return
        rng = self.rng
        if self.active and rng.random() < READ_SHARE:
            self.last_request += 1
            self.checker.read_invoked(self.last_request)
            self.owner[self.last_request] = cid
            self._send(client, [(self.last_request, None)])
            return
        count = 1 if not self.active or rng.random() < 0.85 else rng.randint(2, 20)
        batch: list[tuple[int, int | None]] = []
        for _ in range(count):
            self.last_request += 1
            request = self.last_request
            value = VALUE_BASE + request
            self.checker.proposed[request] = value
            self.owner[request] = cid
            batch.append((request, value))
        self.proposed += count
        self._send(client, batch)

    def _send(self, client: Client, batch: list[tuple[int, int | None]]) -> None:
        """Send ``batch`` to the node the client believes leads (a value of None: a read)."""
        client.waiting = {request for request, _ in batch}
        client.attempt += 1
        delay = self.rng.randint(100, 2_000)
        self.scheduler.after(delay, PROPOSE, client.target, client.id, batch)
        self.scheduler.after(self.timeout_us, CLIENT_TIMEOUT, client.id, client.attempt)

    def _next(self, client: Client, low: int, high: int) -> None:
        if not client.waiting:
            self.scheduler.after(self.rng.randint(low, high), CLIENT_WAKE, client.id)

    def answered(self, outcome: Outcome) -> None:
        """A node completed ``outcome.request``."""
        cid = self.owner.pop(outcome.request, None)
        if cid is None:
            return
        client = self.clients[cid]
        if isinstance(outcome, Readable):
            self.reads += 1
        elif isinstance(outcome, Committed):
            self.committed += 1
            if not self.active and cid == 0:
                self.probe_done = True
        if outcome.request not in client.waiting:
            return  # the client gave up on it already
        client.waiting.discard(outcome.request)
        if isinstance(outcome, Rejected):
            client.target = self._anyone() if outcome.leader is None else outcome.leader
            self._next(client, 5_000, 50_000)
        else:
            self._next(client, 0, 30_000)

    def failed(self, cid: int, requests: list[int]) -> None:
        """The connection to the node broke (it was down, or crashed): the requests' fate is
        unknown; the client tries a random node next, after a back-off."""
        client = self.clients[cid]
        mine = False
        for request in requests:
            self.owner.pop(request, None)
            if request in client.waiting:
                client.waiting.discard(request)
                mine = True
        if mine:
            client.target = self._anyone()
            self._next(client, 20_000, 150_000)

    def timeout(self, cid: int, attempt: int) -> None:
        client = self.clients[cid]
        if client.attempt != attempt or not client.waiting or not self.active:
            return  # answered already, or healed: then every request must be answered
        client.waiting.clear()
        client.target = self._anyone()
        self._next(client, 0, 10_000)

    def _anyone(self) -> int:
        return self.rng.randrange(self.nodes)

    def heal(self) -> None:
        """Faults are over: stop proposing, except for the probe."""
        self.active = False
        probe = self.clients[0]
        self._next(probe, 0, 10_000)
