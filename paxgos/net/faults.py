"""Fault injection on a node's acceptor side: the demo's flags plus a runtime control.

A "failing" node in Paxgos, as in the original demo, is one that answers very late (or not at
all).  Every protocol message a node handles (from peers, and from itself when it leads) first
passes ``FaultInjector.delay()``:

- ``--failure-rate P`` delays P percent of messages by ``--timeout`` seconds;
- ``--endpoint-random-cap D`` delays every message by a uniform random time in ``[0, D]``;
- the runtime control (``POST /fault/slow?ms=N``, ``/fault/stall``, ``/fault/heal``) adds a
  fixed delay to every message, holds every message until healed, or removes both.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass


@dataclass
class FaultFlags:
    """The demo's command-line fault flags (seconds and percent)."""

    failure_rate: float = 0.0
    timeout: float = 3.0
    random_cap: float = 0.0


class FaultInjector:
    """Decides how late each protocol message is handled; see the module docstring."""

    def __init__(self, flags: FaultFlags, rng: random.Random | None = None):
        self.flags = flags
        self.rng = rng or random.Random()
        self.slow = 0.0  # seconds added by the runtime control
        self._healed = asyncio.Event()
        self._healed.set()
        self._heal_signal = asyncio.Event()

    @property
    def stalled(self) -> bool:
        return not self._healed.is_set()

    def set_slow(self, seconds: float) -> None:
        self.slow = seconds

    def stall(self) -> None:
        self._healed.clear()

    def heal(self) -> None:
        self.slow = 0.0
        self._healed.set()
        self._heal_signal.set()  # cut short the delays under way ...
        self._heal_signal = asyncio.Event()  # ... but not those of faults injected later

    def state(self) -> dict[str, object]:
        return {
            "stalled": self.stalled,
            "slow_ms": round(self.slow * 1000),
            "failure_rate": self.flags.failure_rate,
            "timeout_ms": round(self.flags.timeout * 1000),
            "endpoint_random_cap_ms": round(self.flags.random_cap * 1000),
        }

    def _planned(self) -> float:
        delay = self.slow
        if self.flags.random_cap > 0:
            delay += self.rng.uniform(0, self.flags.random_cap)
        if self.flags.failure_rate > 0 and self.rng.uniform(0, 100) < self.flags.failure_rate:
            delay += self.flags.timeout
        return delay

    def active(self) -> bool:
        """Whether any message may be held back (lets the hot path skip ``delay``)."""
        f = self.flags
        return self.stalled or self.slow > 0 or f.random_cap > 0 or f.failure_rate > 0

    async def delay(self) -> None:
        """Wait as long as the faults say this message is held back; a heal ends every wait
        at once (a healed node answers what it held, as a resumed process would)."""
        seconds = self._planned()
        heal = self._heal_signal
        if seconds > 0 and not heal.is_set():
            try:
                await asyncio.wait_for(heal.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        await self._healed.wait()
