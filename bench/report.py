"""The benchmark's report directory: ``report.md``, ``report.html``, the figures and raw data.

Both documents carry the same content, built once as sections of text and tables: the history
check's verdict first (a run that lost or forked data says so at the top), a short automatic
reading, the setup, a table per phase, CPU per process, the targets, the fault timeline, the
figures and the list of raw files the figures were drawn from.
"""

from __future__ import annotations

import csv
import gzip
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.metrics import MACHINE, Failover, PhaseStats, Window
from bench.phases import FaultEvent
from paxgos.check import Op

SATURATED = 0.85  # cores: a process above this is (close to) saturating one core

# The targets for 5 nodes and 64 users.
HEALTHY_COMMITS = 1500.0
HEALTHY_P99_MS = 60.0
DEGRADED_RATIO = 0.90
DEGRADED_P99_FACTOR = 2.0
#: Host-probe times this far apart between phases get a caution in the reading.
HOST_SPEED_SPREAD = 1.15


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)  # plain text, `code` allowed
    bullets: list[str] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)  # (caption, table)
    images: list[tuple[str, str]] = field(default_factory=list)  # (file, alt)


@dataclass
class RunResult:
    """Everything a report is made of."""

    name: str
    setup: dict[str, str]
    windows: list[Window]
    stats: list[PhaseStats]
    series: dict[str, list[float]]
    events: list[FaultEvent]
    t0: float
    check_ok: bool
    check_summary: str
    notes: list[str] = field(default_factory=list)
    failovers: list[Failover] = field(default_factory=list)


def ms(x: float) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def num(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:,.0f}"


def _healthy(stats: Sequence[PhaseStats]) -> PhaseStats | None:
    return next((s for s in stats if s.name == "healthy"), stats[0] if stats else None)


def _busiest(cpu: dict[str, float]) -> tuple[str, float]:
    procs = {k: v for k, v in cpu.items() if k != MACHINE}
    if not procs:
        return "", 0.0
    name = max(procs, key=lambda k: procs[k])
    return name, procs[name]


def reading(result: RunResult, cpu_count: int) -> list[str]:
    """A few sentences a person reads first: ratios against healthy, who used the CPU."""
    out: list[str] = []
    base = _healthy(result.stats)
    if base is None:
        return ["no phase was measured"]
    out.append(
        f"Healthy: {num(base.commits_per_s)} commits/s, p50 {ms(base.latency_ms['p50'])} ms, "
        f"p99 {ms(base.latency_ms['p99'])} ms."
    )
    if base.windows > 1:
        out.append(
            f"The phases were played {base.windows} times in turn; each phase's figures pool "
            "its windows, so a drift of the host's speed during the run weighs on every phase "
            "alike."
        )
    for f in result.failovers:
        out.append(
            f"Leader node {f.node} killed at {f.t - result.t0:.1f} s: "
            + (
                f"the first proposal sent after it committed {f.seconds * 1000:.0f} ms later "
                "(the failover's unavailability window)."
                if f.seconds is not None
                else "nothing committed after it."
            )
        )
    for s in result.stats:
        if s is base or base.commits_per_s <= 0:
            continue
        ratio = s.commits_per_s / base.commits_per_s
        p99 = s.latency_ms["p99"] / base.latency_ms["p99"] if base.latency_ms["p99"] else math.nan
        out.append(
            f"Throughput {s.name} ({s.description}) was {ratio:.0%} of healthy; p99 "
            f"{ms(s.latency_ms['p99'])} ms, {p99:.2f}× healthy."
            + (f" {s.errors} errors ({s.fail} fail, {s.unknown} unknown)." if s.errors else "")
        )
    if not math.isnan(base.commits_per_core_s):
        out.append(
            "Per CPU-second of this run's own processes (fair between phases when other load "
            "on the host varies): "
            + ", ".join(
                f"{s.name} {num(s.commits_per_core_s)} commits"
                + ("" if s is base else f" ({s.commits_per_core_s / base.commits_per_core_s:.0%})")
                for s in result.stats
            )
            + "."
        )
    speeds = [s for s in result.stats if not math.isnan(s.reference_ms)]
    if speeds:
        fast = min(speeds, key=lambda s: s.reference_ms)
        slow = max(speeds, key=lambda s: s.reference_ms)
        text = (
            "Host speed (a fixed probe, 5,000 lookups in a large dict, timed in CPU ms in the "
            "bench process once a second; higher is slower): "
            + ", ".join(f"{s.name} {s.reference_ms:.2f} ms" for s in speeds)
            + "."
        )
        if slow.reference_ms >= fast.reference_ms * HOST_SPEED_SPREAD:
            text += (
                f" The host's cores ran {slow.reference_ms / fast.reference_ms - 1:.0%} slower "
                f"in {slow.name} than in {fast.name} (other tenants of the machine): that much "
                "of any difference between those phases is the host's, not the cluster's."
            )
        out.append(text)
    for s in result.stats:
        name, cores = _busiest(s.cpu_cores)
        machine = s.cpu_cores.get(MACHINE, math.nan)
        text = f"CPU in {s.name}: busiest process {name} at {cores:.2f} cores"
        text += " (saturates a core)" if cores >= SATURATED else ""
        locust = sum(v for k, v in s.cpu_cores.items() if k.startswith("locust"))
        text += f"; Locust {locust:.2f} cores"
        if not math.isnan(machine):
            ours = sum(v for k, v in s.cpu_cores.items() if k != MACHINE)
            text += f"; the whole machine {machine:.2f} of {cpu_count} cores"
            text += " (CPU-bound)" if machine >= cpu_count * 0.9 else ""
            if machine - ours >= 0.25:
                text += f", {machine - ours:.2f} of them by processes outside this run"
        out.append(text + ".")
    return out


def targets(result: RunResult) -> Table:
    """The issue's targets, measured and met or not."""
    rows: list[list[str]] = []
    base = _healthy(result.stats)
    if base is None:
        return Table(["target", "measured", "met"], rows)

    def row(target: str, measured: str, met: bool) -> None:
        rows.append([target, measured, "yes" if met else "**no**"])

    row(
        f"healthy ≥ {HEALTHY_COMMITS:,.0f} commits/s",
        num(base.commits_per_s),
        base.commits_per_s >= HEALTHY_COMMITS,
    )
    row(
        f"healthy p99 < {HEALTHY_P99_MS:.0f} ms",
        ms(base.latency_ms["p99"]),
        base.latency_ms["p99"] < HEALTHY_P99_MS,
    )
    for s in result.stats:
        if s is base or not s.fault:
            continue
        ratio = s.commits_per_s / base.commits_per_s if base.commits_per_s else math.nan
        row(f"{s.name} ≥ {DEGRADED_RATIO:.0%} of healthy", f"{ratio:.0%}", ratio >= DEGRADED_RATIO)
        factor = s.latency_ms["p99"] / base.latency_ms["p99"]
        row(
            f"{s.name} p99 ≤ {DEGRADED_P99_FACTOR:g}× healthy",
            f"{factor:.2f}×",
            factor <= DEGRADED_P99_FACTOR,
        )
    return Table(["target", "measured", "met"], rows)


def phase_table(s: PhaseStats) -> Table:
    lat = s.latency_ms
    rows = [
        [
            "duration",
            f"{s.duration_s:.1f} s" + (f" in {s.windows} windows" if s.windows > 1 else ""),
        ],
        ["commits", f"{s.commits:,}"],
        ["commits/s", num(s.commits_per_s)],
        ["worst / best second (commits)", f"{num(s.per_second_min)} / {num(s.per_second_max)}"],
        ["commits per core-second of the run", num(s.commits_per_core_s)],
        ["host speed: probe CPU ms (median; higher is slower)", f"{s.reference_ms:.2f}"],
        ["latency p50 / p90", f"{ms(lat['p50'])} / {ms(lat['p90'])} ms"],
        ["latency p99 / p99.9", f"{ms(lat['p99'])} / {ms(lat['p99.9'])} ms"],
        ["latency max / mean", f"{ms(lat['max'])} / {ms(lat['mean'])} ms"],
        ["errors (fail / unknown)", f"{s.errors} ({s.fail} / {s.unknown})"],
    ]
    rows += [[f"CPU {name}", f"{cores:.2f} cores"] for name, cores in s.cpu_cores.items()]
    return Table(["metric", "value"], rows)


def summary_table(stats: Sequence[PhaseStats]) -> Table:
    base = _healthy(stats)
    rows = []
    for s in stats:
        ratio = s.commits_per_s / base.commits_per_s if base and base.commits_per_s else math.nan
        rows.append(
            [
                s.name,
                f"{s.duration_s:.0f} s" + (f" ({s.windows}×)" if s.windows > 1 else ""),
                num(s.commits_per_s),
                f"{ratio:.0%}",
                ms(s.latency_ms["p50"]),
                ms(s.latency_ms["p90"]),
                ms(s.latency_ms["p99"]),
                ms(s.latency_ms["p99.9"]),
                ms(s.latency_ms["max"]),
                str(s.errors),
                f"{s.run_cores:.2f}",
                num(s.commits_per_core_s),
            ]
        )
    headers = ["phase", "length", "commits/s", "vs healthy", "p50 ms", "p90 ms", "p99 ms"]
    headers += ["p99.9 ms", "max ms", "errors", "run cores", "commits/core-s"]
    return Table(headers, rows)


def cpu_table(stats: Sequence[PhaseStats]) -> Table:
    names: list[str] = []
    for s in stats:
        names += [n for n in s.cpu_cores if n not in names]
    rows = [[n] + [f"{s.cpu_cores.get(n, math.nan):.2f}" for s in stats] for n in names]
    return Table(["process (cores used)"] + [s.name for s in stats], rows)


def timeline_table(result: RunResult) -> Table:
    rows = []
    for w in result.windows:
        rows.append([f"{w.start - result.t0:7.1f}", f"phase {w.name} begins", w.description])
    for e in result.events:
        nodes = ", ".join(map(str, e.nodes))
        rows.append([f"{e.t - result.t0:7.1f}", f"{e.action} node(s) {nodes}", e.detail])
    rows.sort(key=lambda r: float(r[0]))
    return Table(["t (s)", "event", "detail"], rows)


def sections(result: RunResult, cpu_count: int, raw_files: list[str]) -> list[Section]:
    verdict = Section("History check")
    if result.check_ok:
        verdict.paragraphs.append(
            "OK: every acknowledged proposal is in every node's log at the slot its client was "
            "told, exactly once, and no two nodes disagree on any slot "
            "(`check(ops, logs, require_complete=True)` after the nodes converged)."
        )
    else:
        verdict.title = "HISTORY CHECK FAILED: DATA LOST OR FORKED"
        verdict.paragraphs.append("The checker found violations; this run's figures are moot.")
    verdict.paragraphs.append(result.check_summary.splitlines()[0])
    verdict.bullets = result.check_summary.splitlines()[1:21]

    out = [verdict, Section("Reading", bullets=reading(result, cpu_count) + result.notes)]
    out.append(
        Section(
            "Setup",
            tables=[("", Table(["", ""], [[k, v] for k, v in result.setup.items()]))],
        )
    )
    out.append(Section("Phases", tables=[("all phases", summary_table(result.stats))]))
    for s in result.stats:
        out.append(
            Section(f"Phase: {s.name}", paragraphs=[s.description], tables=[("", phase_table(s))])
        )
    out.append(
        Section(
            "CPU per process",
            paragraphs=[
                "Cores used by each process in each phase (1.00 = one core busy all the time); "
                "'machine' is every process on the host, including any other load on it."
            ],
            tables=[("", cpu_table(result.stats))],
        )
    )
    out.append(Section("Targets", tables=[("", targets(result))]))
    out.append(Section("Fault timeline", tables=[("", timeline_table(result))]))
    out.append(
        Section(
            "Figures",
            images=[
                ("throughput.png", "commits per second over time, fault windows shaded"),
                ("latency_percentiles.png", "latency percentiles per phase"),
                ("latency_cdf.png", "latency CDF per phase"),
            ],
        )
    )
    out.append(Section("Raw data", bullets=[f"`{f}`" for f in raw_files]))
    return out


def _md_inline(text: str) -> str:
    return text


def _html_inline(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def write_markdown(path: Path, title: str, secs: Sequence[Section]) -> None:
    lines = [f"# {title}", ""]
    for sec in secs:
        lines += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            lines += [_md_inline(p), ""]
        if sec.bullets:
            lines += [f"- {_md_inline(b)}" for b in sec.bullets] + [""]
        for caption, table in sec.tables:
            if caption:
                lines += [f"*{caption}*", ""]
            lines += [table.markdown(), ""]
        for file, alt in sec.images:
            lines += [f"![{alt}]({file})", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}td{text-align:right}td:first-child{text-align:left}
h2.bad{color:#b00}img{max-width:100%}code{background:#f3f3f3;padding:0 .2em}
"""


def write_html(path: Path, title: str, secs: Sequence[Section]) -> None:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for sec in secs:
        bad = " class='bad'" if sec.title.startswith("HISTORY CHECK FAILED") else ""
        parts.append(f"<h2{bad}>{html.escape(sec.title)}</h2>")
        parts += [f"<p>{_html_inline(p)}</p>" for p in sec.paragraphs]
        if sec.bullets:
            parts.append("<ul>" + "".join(f"<li>{_html_inline(b)}</li>" for b in sec.bullets))
            parts.append("</ul>")
        for caption, table in sec.tables:
            if caption:
                parts.append(f"<p><em>{html.escape(caption)}</em></p>")
            parts.append(table.html().replace("<td>**no**</td>", "<td><b>no</b></td>"))
        for file, alt in sec.images:
            parts.append(f"<p><img src='{html.escape(file)}' alt='{html.escape(alt)}'></p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_raw(
    out: Path,
    result: RunResult,
    ops: Sequence[Op],
    full_history: bool,
) -> list[str]:
    """The data the figures were drawn from; returns the file names written."""
    files: list[str] = []
    with open(out / "series.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        keys = list(result.series)
        writer.writerow(keys)
        for row in zip(*(result.series[k] for k in keys), strict=True):
            writer.writerow([f"{x:.3f}" if isinstance(x, float) else x for x in row])
    files.append("series.csv")

    def phase_of(t: float) -> str:
        for w in result.windows:
            if w.start <= t < w.end:
                return w.name
        return "warmup" if t < result.windows[0].start else "tail"

    with gzip.open(out / "latency.csv.gz", "wt", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["start_s", "latency_ms", "outcome", "slot", "phase"])
        for op in sorted(ops, key=lambda o: o.start):
            writer.writerow(
                [
                    f"{op.start - result.t0:.4f}",
                    f"{(op.end - op.start) * 1000:.2f}",
                    op.outcome,
                    "" if op.slot is None else op.slot,
                    phase_of(op.start),
                ]
            )
    files.append("latency.csv.gz")
    if full_history:
        with gzip.open(out / "ops.jsonl.gz", "wt", encoding="utf-8") as f:
            for op in ops:
                f.write(json.dumps(op.to_dict(), separators=(",", ":")) + "\n")
        files.append("ops.jsonl.gz")
    summary: dict[str, Any] = {
        "name": result.name,
        "setup": result.setup,
        "t0": result.t0,
        "check": {"ok": result.check_ok, "summary": result.check_summary},
        "phases": [s.to_dict() for s in result.stats],
        "windows": [vars(w) for w in result.windows],
        "events": [vars(e) for e in result.events],
        "failovers": [vars(f) for f in result.failovers],
        "notes": result.notes,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str), "utf-8")
    files.append("summary.json")
    return files
