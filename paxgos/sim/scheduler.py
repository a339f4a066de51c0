"""The simulated clock and the event queue: the only source of time and order in a run.

Events are plain tuples ``(time_us, seq, kind, a, b, c)`` on a heap; ``seq`` breaks ties in
insertion order, so the order of events depends on nothing but the seed.
"""

from __future__ import annotations

import heapq
from typing import Any

# Event kinds.
DELIVER = 0  # a=dst, b=src, c=message
TICK = 1  # a=node, b=incarnation
PROPOSE = 2  # a=node, b=client, c=[(request, value), ...]; value None: a read
CLIENT_WAKE = 3  # a=client
CLIENT_TIMEOUT = 4  # a=client, b=attempt
RESTART = 5  # a=node, b=crash number
HEAL_PARTITION = 6  # a=partition number
FLUSH = 7  # a=node, b=incarnation: a lingering batch is due

Event = tuple[int, int, int, Any, Any, Any]


class Scheduler:
    """A min-heap of timed events and the current simulated time (microseconds)."""

    def __init__(self) -> None:
        self.now = 0
        self._heap: list[Event] = []
        self._seq = 0

    def at(self, time_us: int, kind: int, a: Any = None, b: Any = None, c: Any = None) -> None:
        """Schedule an event at ``time_us`` (never in the past)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(time_us, self.now), self._seq, kind, a, b, c))

    def after(self, delay_us: int, kind: int, a: Any = None, b: Any = None, c: Any = None) -> None:
        self.at(self.now + delay_us, kind, a, b, c)

    def pop(self) -> Event:
        """The next event; the clock moves to its time."""
        event = heapq.heappop(self._heap)
        self.now = event[0]
        return event

    def __len__(self) -> int:
        return len(self._heap)
