"""The report's figures, drawn with matplotlib (Agg backend: no display needed) into PNG files.

- ``throughput.png``: commits/s and errors/s over time, p50/p99 commit latency per second, and
  the CPU used by the leader, Locust, the whole run and the whole machine, with the fault phases
  shaded and labelled and each injected fault marked;
- ``latency_percentiles.png``: p50, p90, p99 and p99.9 commit latency per phase;
- ``latency_cdf.png``: the commit-latency CDF of each phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from bench.metrics import PERCENTILES, Failover, PhaseStats, Window
from bench.phases import FaultEvent

SHADES = ["#f6c85f", "#e8747c", "#9dd866", "#8dd3c7", "#bebada"]


def _shade(ax: plt.Axes, windows: Sequence[Window], t0: float, label: bool) -> None:
    faults = list(dict.fromkeys(w.name for w in windows if w.fault))  # one colour per phase
    for w in windows:
        if not w.fault:
            continue
        color = SHADES[faults.index(w.name) % len(SHADES)]
        ax.axvspan(w.start - t0, w.end - t0, color=color, alpha=0.25, lw=0)
        if label:
            ax.text(
                (w.start + w.end) / 2 - t0, 0.98, w.name, transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=9, weight="bold",
            )  # fmt: skip
    for w in windows:
        ax.axvline(w.start - t0, color="grey", lw=0.6, ls=":")


def throughput_plot(
    path: Path,
    series: dict[str, list[float]],
    windows: Sequence[Window],
    events: Sequence[FaultEvent],
    t0: float,
    cpu_count: int = 2,
    failovers: Sequence[Failover] = (),
) -> None:
    """Commits/s (and errors/s) over time above p50/p99 latency and CPU use per second."""
    fig, (top, bottom, cpu) = plt.subplots(
        3, 1, figsize=(11, 8.5), sharex=True, height_ratios=[3, 2, 2]
    )
    t = [x + 0.5 for x in series["t"]]
    top.plot(t, series["commits"], color="#1f77b4", lw=1.4, label="commits/s")
    if any(series["errors"]):
        top.plot(t, series["errors"], color="#d62728", lw=1.0, label="errors/s")
    top.set_ylabel("per second")
    top.set_ylim(bottom=0)
    top.set_title("Commit throughput (ok answers per second, by answer time)")
    _shade(top, windows, t0, label=True)
    for e in events:
        if e.action in ("slow", "pause", "kill"):
            top.annotate(
                ",".join(map(str, e.nodes)), (e.t - t0, 0), xytext=(2, 4),
                textcoords="offset points", fontsize=7, color="#555",
            )  # fmt: skip
    for f in failovers:  # each leader kill's unavailability window, kill to first commit
        if f.first_commit is not None:
            top.axvspan(f.t - t0, f.first_commit - t0, color="#d62728", alpha=0.35, lw=0)
            top.annotate(
                f"failover {f.seconds * 1000:.0f} ms", (f.first_commit - t0, 0.9),
                xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
                fontsize=7, color="#d62728",
            )  # fmt: skip
    # Name the non-fault phases too, just under the top edge.
    for w in windows:
        if not w.fault:
            top.text(
                (w.start + w.end) / 2 - t0, 0.98, w.name, transform=top.get_xaxis_transform(),
                ha="center", va="top", fontsize=9, color="#444",
            )  # fmt: skip
    top.legend(loc="lower left", fontsize=8)
    bottom.plot(t, series["p50_ms"], color="#2ca02c", lw=1.0, label="p50")
    bottom.plot(t, series["p99_ms"], color="#ff7f0e", lw=1.0, label="p99")
    bottom.set_yscale("log")
    bottom.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    bottom.yaxis.set_major_formatter(ScalarFormatter())
    bottom.yaxis.set_minor_formatter(NullFormatter())
    bottom.set_ylabel("commit latency (ms)")
    bottom.legend(loc="upper left", fontsize=8)
    _shade(bottom, windows, t0, label=False)
    if "cpu_machine" in series:
        cpu.plot(t, series["cpu_machine"], color="#7f7f7f", lw=1.2, label="whole machine")
        cpu.plot(t, series["cpu_run"], color="#1f77b4", lw=1.0, label="this run (nodes + Locust)")
        cpu.plot(t, series["cpu_leader"], color="#9467bd", lw=1.0, label="the leader")
        cpu.plot(t, series["cpu_locust"], color="#8c564b", lw=1.0, label="Locust")
        cpu.axhline(cpu_count, color="black", lw=0.6, ls="--")
        cpu.set_ylim(0, cpu_count * 1.1)
        cpu.legend(loc="lower left", fontsize=7, ncol=4)
    cpu.set_ylabel("CPU (cores)")
    cpu.set_xlabel("seconds since the first phase began (numbers: the nodes faulted)")
    _shade(cpu, windows, t0, label=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def percentiles_plot(path: Path, stats: Sequence[PhaseStats]) -> None:
    """Grouped bars: p50, p90, p99, p99.9 of commit latency for each phase."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    keys = [f"p{p:g}" for p in PERCENTILES]
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(stats))]
        ys = [s.latency_ms.get(key, math.nan) for s in stats]
        bars = ax.bar(xs, ys, width, label=key)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(stats)), [s.name for s in stats])
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("commit latency (ms)")
    ax.set_title("Commit latency percentiles per phase")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def cdf_plot(path: Path, latencies: dict[str, list[float]]) -> None:
    """The CDF of commit latency in each phase (log x)."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for name, values in latencies.items():
        if not values:
            continue
        xs = sorted(values)
        n = len(xs)
        step = max(1, n // 4000)  # at most a few thousand points per curve
        pts = list(range(0, n, step))
        if pts[-1] != n - 1:
            pts.append(n - 1)
        ax.plot([xs[i] for i in pts], [(i + 1) / n for i in pts], lw=1.3, label=f"{name} ({n})")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("commit latency (ms)")
    ax.set_ylabel("fraction of commits")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Commit latency CDF per phase")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
