"""Figures of a benchmark run, computed from the recorded ops and the phase windows.

- Throughput: ``ok`` answers per second, binned by the time the answer arrived (``end``).
- Commit latency: ``end - start`` of ``ok`` ops (request sent to ``CommandID`` answer), for the
  ops that *started* in a phase; percentiles by nearest rank.
- Errors: ``fail`` and ``unknown`` answers, binned by ``end`` like throughput.
- CPU: cores used by each process in each phase, from ``/proc/<pid>/stat`` samples.

A phase may be played more than once (``--cycles``): its figures pool all its windows (commits
over their total time, latencies of the ops started in any of them, CPU over their total span),
so that a host whose speed drifts during the run weighs on every phase alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from paxgos.check import OK, Op

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
MACHINE = "machine (all processes)"  # the CPU entry for the whole host


@dataclass
class Window:
    """A phase as it was played: its name and wall-clock bounds."""

    name: str
    start: float
    end: float
    description: str = ""
    fault: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class PhaseStats:
    """What one phase measured."""

    name: str
    description: str
    duration_s: float
    commits: int
    commits_per_s: float
    errors: int
    fail: int
    unknown: int
    latency_ms: dict[str, float]  # p50, p90, p99, p99.9, max, mean
    cpu_cores: dict[str, float] = field(default_factory=dict)  # process name -> cores used
    per_second_min: float = 0.0  # the worst full second of throughput
    per_second_max: float = 0.0  # the best full second
    fault: bool = False
    #: Median CPU ms of ``bench.common.HostProbe`` during the phase: the host's speed.
    reference_ms: float = math.nan
    #: How many windows (one per cycle) the figures pool.
    windows: int = 1

    @property
    def run_cores(self) -> float:
        """Cores used by this run's own processes (nodes and Locust)."""
        return sum(v for k, v in self.cpu_cores.items() if k.startswith(("node", "locust")))

    @property
    def commits_per_core_s(self) -> float:
        """Commits per CPU-second of this run's processes: comparable between phases even when
        other load on the host takes a varying share of the CPUs."""
        cores = self.run_cores
        return self.commits_per_s / cores if cores > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_cores"] = self.run_cores
        out["commits_per_core_s"] = self.commits_per_core_s
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhaseStats:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(pct / 100.0 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, p99.9, max and mean of a list of latencies (ms)."""
    values = sorted(latencies_ms)
    out = {f"p{pct:g}": percentile(values, pct) for pct in PERCENTILES}
    out["max"] = values[-1] if values else math.nan
    out["mean"] = sum(values) / len(values) if values else math.nan
    return out


def per_second(ops: Sequence[Op], t0: float, t1: float) -> dict[str, list[float]]:
    """Per-second series from ``t0`` to ``t1``: commits, errors, p50 and p99 latency (ms) of the
    commits answered in each second."""
    n = max(0, int(t1 - t0))  # full seconds only: a partial last bin would read as a drop
    commits = [0.0] * n
    errors = [0.0] * n
    lat: list[list[float]] = [[] for _ in range(n)]
    for op in ops:
        i = math.floor(op.end - t0)  # not int(): that would put the second before t0 in bin 0
        if not 0 <= i < n:
            continue
        if op.outcome == OK:
            commits[i] += 1
            lat[i].append((op.end - op.start) * 1000)
        else:
            errors[i] += 1
    p50, p99 = [], []
    for values in lat:
        values.sort()
        p50.append(percentile(values, 50))
        p99.append(percentile(values, 99))
    return {
        "t": [float(i) for i in range(n)],
        "commits": commits,
        "errors": errors,
        "p50_ms": p50,
        "p99_ms": p99,
    }


def by_phase(windows: Sequence[Window]) -> dict[str, list[Window]]:
    """The windows of each phase, phases in the order they were first played."""
    out: dict[str, list[Window]] = {}
    for w in windows:
        out.setdefault(w.name, []).append(w)
    return out


def in_any(t: float, windows: Sequence[Window]) -> bool:
    """Whether time ``t`` falls in one of ``windows``."""
    return any(w.start <= t < w.end for w in windows)


def phase_latencies(ops: Sequence[Op], windows: Sequence[Window]) -> list[float]:
    """Commit latencies (ms) of the ok ops that started in any of ``windows``."""
    return [
        (op.end - op.start) * 1000 for op in ops if op.outcome == OK and in_any(op.start, windows)
    ]


def phase_stats(ops: Sequence[Op], windows: Sequence[Window], cpu: dict[str, float]) -> PhaseStats:
    """Throughput, latency and errors of one phase, pooled over its ``windows``."""
    ended = [op for op in ops if in_any(op.end, windows)]
    commits = sum(1 for op in ended if op.outcome == OK)
    fail = sum(1 for op in ended if op.outcome == "fail")
    unknown = sum(1 for op in ended if op.outcome == "unknown")
    full: list[float] = []
    for w in windows:
        full += per_second(ended, w.start, w.end)["commits"]  # whole seconds only
    duration = sum(w.duration for w in windows)
    first = windows[0]
    return PhaseStats(
        name=first.name,
        description=first.description,
        duration_s=duration,
        commits=commits,
        commits_per_s=commits / duration if duration > 0 else math.nan,
        errors=fail + unknown,
        fail=fail,
        unknown=unknown,
        latency_ms=latency_summary(phase_latencies(ops, windows)),
        cpu_cores=cpu,
        per_second_min=min(full) if full else math.nan,
        per_second_max=max(full) if full else math.nan,
        fault=first.fault,
        windows=len(windows),
    )


def cpu_per_phase(
    samples: list[tuple[float, dict[str, float]]], phases: Sequence[Sequence[Window]]
) -> list[dict[str, float]]:
    """Cores each process used in each phase (CPU seconds over the total span of its windows),
    from (time, {process: cpu seconds}) samples taken at the window bounds (the sample nearest
    each bound is used)."""
    out: list[dict[str, float]] = []
    for windows in phases:
        used: dict[str, float] = {}
        spans: dict[str, float] = {}
        for w in windows:
            first = min(samples, key=lambda s: abs(s[0] - w.start))
            last = min(samples, key=lambda s: abs(s[0] - w.end))
            span = last[0] - first[0]
            if span <= 0:
                continue
            for name, seconds in last[1].items():
                if name in first[1]:
                    used[name] = used.get(name, 0.0) + max(0.0, seconds - first[1][name])
                    spans[name] = spans.get(name, 0.0) + span
        out.append({name: used[name] / spans[name] for name in used})
    return out


def cpu_series(
    samples: list[tuple[float, dict[str, float]]],
    t0: float,
    n: int,
    leaders: list[int | None] | None = None,
) -> dict[str, list[float]]:
    """Per-second cores used from ``t0`` on (``n`` seconds): the leader (``leaders[k]`` names
    the node that led at sample ``k``), Locust, every process of the run, and the whole
    machine, from the rates between consecutive samples."""
    keys = ("cpu_leader", "cpu_locust", "cpu_run", "cpu_machine")
    out: dict[str, list[float]] = {k: [math.nan] * n for k in keys}
    for k, ((ta, a), (tb, b)) in enumerate(zip(samples, samples[1:], strict=False)):
        span = tb - ta
        if span <= 0:
            continue
        rate = {k: (b[k] - a[k]) / span for k in b if k in a}
        run = [v for k, v in rate.items() if k.startswith(("node", "locust"))]
        values = {
            "cpu_leader": rate.get(f"node {leader}", math.nan)
            if (leader := leaders[k] if leaders and k < len(leaders) else None) is not None
            else math.nan,
            "cpu_locust": sum(v for k, v in rate.items() if k.startswith("locust")),
            "cpu_run": sum(run),
            "cpu_machine": rate.get(MACHINE, math.nan),
        }
        for i in range(max(0, int(ta - t0)), min(n, math.ceil(tb - t0))):
            for k in keys:
                out[k][i] = values[k]
    return out


@dataclass
class Failover:
    """One leader kill: when it happened, and the first commit of a proposal sent after it."""

    t: float
    node: int
    first_commit: float | None  # None: nothing committed after it in the run

    @property
    def seconds(self) -> float | None:
        return None if self.first_commit is None else self.first_commit - self.t


def failovers(ops: Sequence[Op], kills: Sequence[tuple[float, int]]) -> list[Failover]:
    """The unavailability window of each leader kill ``(time, node)``: from the kill to the
    answer of the first ``ok`` proposal sent after it (that one was chosen under the new
    leader)."""
    done = sorted((op.start, op.end) for op in ops if op.outcome == OK)
    out = []
    for t, node in kills:
        after = [end for start, end in done if start >= t]
        out.append(Failover(t, node, min(after) if after else None))
    return out
