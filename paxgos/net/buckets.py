"""Histogram counts kept the cheapest way, for the hot path: the host's proposal and fsync
durations and the transport's round trips go into ``Buckets``, which ``paxgos.net.metrics``
turns into Prometheus histograms when a scrape asks.  Standard library only, so that what
counts imports neither ``prometheus_client`` nor the module that reads the host.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

#: Upper bounds (seconds) of the duration histograms: 100 us to 10 s in 1-2-5 steps, which
#: covers an fsync on tmpfs and a proposal waiting out a 5 s request timeout alike.
DURATION_BOUNDS = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


class Buckets:
    """A histogram's counts, kept the cheapest way: ``counts[i]`` holds the observations
    above ``bounds[i-1]`` and at most ``bounds[i]`` (the last one: above every bound)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = DURATION_BOUNDS):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus's buckets: ``(le, observations <= le)``, ending with ``+Inf``."""
        return cumulative(self.bounds, self.counts)


def cumulative(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """``(le, running total)`` pairs for per-bucket ``counts`` (one more than ``bounds``)."""
    out = []
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        out.append((repr(float(bound)), running))
    out.append(("+Inf", running + sum(counts[len(bounds) :])))
    return out
