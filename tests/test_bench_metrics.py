"""Unit tests of the benchmark's figures (``bench.metrics``): a phase played in several windows
(``--cycles``) is measured over all of them and nothing else."""

from __future__ import annotations

import pytest

from bench.metrics import Window, by_phase, cpu_per_phase, per_second, phase_stats
from paxgos.check import OK, Op

# Two cycles: healthy [0, 10), slowed [10, 20), healthy [20, 30), slowed [30, 40).
WINDOWS = [
    Window("healthy", 0.0, 10.0),
    Window("slowed", 10.0, 20.0, fault=True),
    Window("healthy", 20.0, 30.0),
    Window("slowed", 30.0, 40.0, fault=True),
]


def ops_at(start: float, count: int, latency: float) -> list[Op]:
    """``count`` ok proposals started ``start`` .. ``start + 1``, each taking ``latency`` s."""
    return [
        Op("c", int(start * 1000) + k, start + k / count, start + k / count + latency, OK, k + 1)
        for k in range(count)
    ]


def test_by_phase_keeps_the_order_phases_were_first_played() -> None:
    phases = by_phase(WINDOWS)
    assert list(phases) == ["healthy", "slowed"]
    assert [(w.start, w.end) for w in phases["healthy"]] == [(0.0, 10.0), (20.0, 30.0)]


def test_a_phase_pools_its_windows_and_only_them() -> None:
    # 100 commits in each healthy window (5 ms each), 400 in the slowed window between them
    # (1 s each): none of those may count for healthy.
    ops = ops_at(2.0, 100, 0.005) + ops_at(12.0, 400, 1.0) + ops_at(25.0, 100, 0.005)
    stats = phase_stats(ops, by_phase(WINDOWS)["healthy"], {})
    assert stats.windows == 2
    assert stats.duration_s == pytest.approx(20.0)
    assert stats.commits == 200
    assert stats.commits_per_s == pytest.approx(10.0)
    assert stats.latency_ms["max"] == pytest.approx(5.0)
    assert stats.per_second_max == 100 and stats.per_second_min == 0
    slowed = phase_stats(ops, by_phase(WINDOWS)["slowed"], {})
    assert slowed.commits == 400 and slowed.fault
    assert slowed.latency_ms["p50"] == pytest.approx(1000.0)


def test_cpu_is_pooled_over_the_span_of_every_window() -> None:
    # The leader burns 1 core in the first healthy window and 0.5 in the second: 0.75 pooled,
    # whatever it did in between.
    samples = [
        (0.0, {"leader": 0.0}),
        (10.0, {"leader": 10.0}),
        (20.0, {"leader": 30.0}),
        (30.0, {"leader": 35.0}),
        (40.0, {"leader": 35.0}),
    ]
    phases = list(by_phase(WINDOWS).values())
    healthy, slowed = cpu_per_phase(samples, phases)
    assert healthy["leader"] == pytest.approx(0.75)
    assert slowed["leader"] == pytest.approx(1.0)


def test_the_per_second_series_starts_at_its_first_second() -> None:
    # Answers in the second before t0 (the warm-up) are not the first second's: once they were,
    # and the plot opened on a burst of twice the real throughput.
    ops = ops_at(-1.0, 100, 0.005) + ops_at(0.0, 50, 0.005)
    assert per_second(ops, 0.0, 3.0)["commits"] == [50.0, 0.0, 0.0]
