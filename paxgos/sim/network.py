"""The simulated network between nodes: delay, loss, duplication, reordering and partitions.

``send`` decides a message's fate when it leaves (lost, delayed, duplicated) and schedules its
delivery; ``reachable`` is asked again when it arrives, so a partition that starts while a
message is in flight still stops it.  A node's messages to itself are local calls: never lost,
cut or duplicated, but they take as long as a message on the wire: a real host handles them in a
later turn, after its disk write, so a crash can come between a leader's Accept to its peers and
its own acceptance.
"""

from __future__ import annotations

import random

from paxgos.core.messages import Message
from paxgos.sim.scheduler import DELIVER, Scheduler


class Network:
    """Message transport with seeded faults; partitions are a group number per node."""

    def __init__(
        self, rng: random.Random, scheduler: Scheduler, drop: float, dup: float, delay: float
    ):
        self.rng = rng
        self.scheduler = scheduler
        self.drop = drop
        self.dup = dup
        self.delay = delay
        self.groups: list[int] | None = None  # partition: node -> side; None when whole
        self.sent = 0
        self.dropped = 0

    def reachable(self, src: int, dst: int) -> bool:
        groups = self.groups
        return groups is None or groups[src] == groups[dst]

    def _latency(self) -> int:
        rng = self.rng
        if self.delay and rng.random() < self.delay:
            return rng.randint(20_000, 600_000)  # a long detour: arrives after later messages
        return rng.randint(200, 5_000)

    def send(self, src: int, dst: int, msg: Message) -> bool:
        """Put ``msg`` on the wire; False when it is lost on the way out."""
        self.sent += 1
        sched = self.scheduler
        if src == dst:
            sched.after(self.rng.randint(1, 5_000), DELIVER, dst, src, msg)
            return True
        rng = self.rng
        if (self.groups is not None and self.groups[src] != self.groups[dst]) or (
            self.drop and rng.random() < self.drop
        ):
            self.dropped += 1
            return False
        sched.after(self._latency(), DELIVER, dst, src, msg)
        if self.dup and rng.random() < self.dup:
            sched.after(self._latency(), DELIVER, dst, src, msg)
        return True

    def heal(self) -> None:
        """No partition, no loss, duplication or detours from now on."""
        self.groups = None
        self.drop = self.dup = self.delay = 0.0
