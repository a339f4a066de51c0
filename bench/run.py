"""The benchmark runner behind ``python -m bench``: cluster, load, phases, check, report.

One command starts a fresh cluster of real node processes (``LocalNodes``: durable SQLite by
default, a temporary data directory, free ports), drives its leader with
``loadtest/locustfile.py`` in a Locust subprocess (Locust patches the standard library with
gevent, so it never runs in this process), plays the phases of ``bench.phases`` ``--cycles``
times in turn while printing a progress line, stops Locust, waits for the nodes to converge,
checks the history with ``paxgos.check`` (``require_complete=True``) and writes the report
directory (``bench.report``). It exits 1 when the check finds lost or forked data, 2 when the
run itself failed.
"""

from __future__ import annotations

import argparse
import csv
import glob
import gzip
import json
import math
import os
import platform
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import paxgos
from bench import plots, report
from bench.common import HostProbe, cpu_seconds
from bench.metrics import (
    MACHINE,
    Failover,
    PhaseStats,
    Window,
    by_phase,
    cpu_per_phase,
    cpu_series,
    failovers,
    in_any,
    per_second,
    phase_latencies,
    phase_stats,
)
from bench.phases import FaultEvent, Faults, Phase, default_phases
from paxgos.check import Op, check, fetch_logs, load_ops
from paxgos.testing.procs import LocalNodes

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark a fresh local Paxgos cluster under Locust load through phases "
        "(healthy, random minority slowed, minority stopped, healed) and write a report.",
    )
    add = parser.add_argument
    add("--out", type=Path, help="report directory (default: ./bench-report-<date-time>)")
    add("--name", default="", help="the report's name (default: the directory's name)")
    add("--quick", action="store_true", help="short phases and 16 users: a smoke test < 60 s")
    add("--nodes", type=int, default=5, help="cluster size (default 5)")
    add("--users", type=int, help="Locust users (default 64; --quick: 16)")
    add("--spawn-rate", type=float, help="users started per second (default: all at once)")
    add("--locust-processes", type=int, default=0, help="Locust --processes (default 0: one)")
    add("--warmup", type=float, help="seconds of load before the first phase (default 5)")
    add("--healthy", type=float, help="seconds of each healthy window (default 10)")
    add("--slowed", type=float, help="seconds of each slowed-minority window (default 10)")
    add("--stopped", type=float, help="seconds of each stopped-minority window (default 10)")
    add("--healed", type=float, help="seconds of each healed window (default 7)")
    add("--killed", type=float, help="seconds of each leader-killed window (default 8)")
    add(
        "--cycles", type=int,
        help="times the phases are played in turn, each phase's figures pooled over its "
        "windows, so a drift of the host's speed weighs on every phase alike (default 3; "
        "--quick: 1)",
    )  # fmt: skip
    add("--rotate-every", type=float, help="seconds between slowed-set changes (default 5)")
    add("--slow-ms", type=int, default=2000, help="delay of a slowed node (default 2000 ms)")
    add("--most-slowed", type=int, default=2, help="most followers slowed at once (default 2)")
    add("--stop-count", type=int, default=2, help="followers SIGSTOPped (default 2)")
    add("--seed", type=int, default=1, help="seed of every random fault choice (default 1)")
    add("--storage", default="sqlite", choices=["sqlite", "memory"], help="node storage")
    add("--node-args", default="", help="extra node options, space-separated")
    add("--no-history", action="store_true", help="leave ops.jsonl.gz out of the report")
    add("--note", action="append", default=[], help="a sentence for the report's reading")
    add(
        "--render", type=Path, metavar="DIR",
        help="redraw the report in DIR from its own data (summary.json, series.csv, "
        "latency.csv.gz) without running anything; --note adds to its notes",
    )  # fmt: skip
    args = parser.parse_args(argv)
    quick = {"users": 16, "warmup": 2, "healthy": 6, "slowed": 8, "stopped": 6, "healed": 4}
    quick.update(killed=5)
    quick.update(rotate_every=3, cycles=1)
    full = {"users": 64, "warmup": 5, "healthy": 10, "slowed": 10, "stopped": 10, "healed": 7}
    full.update(killed=8)
    full.update(rotate_every=5, cycles=3)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.cycles < 1:
        parser.error(f"--cycles must be at least 1, not {args.cycles}")
    if args.spawn_rate is None:
        args.spawn_rate = float(args.users)
    if args.out is None:
        args.out = Path(f"bench-report-{datetime.now():%Y%m%d-%H%M%S}")
    return args


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for module in ("tornado", "locust", "matplotlib"):
        try:
            out[module] = __import__("importlib.metadata").metadata.version(module)
        except Exception:  # noqa: BLE001 - a missing version is not worth failing a run for
            out[module] = "?"
    return out


def git_revision() -> str:
    """The checkout's commit (with "+ local changes" when the tree is dirty), or "?"."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "?"
    return rev + (" + local changes" if dirty else "")


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (``/proc/stat``, all but idle)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(x) for i, x in enumerate(fields[:8]) if i not in (3, 4))  # not idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


class Sampler:
    """CPU seconds of the nodes, Locust (and its workers) and the machine, at chosen times."""

    def __init__(self, nodes: LocalNodes, locust_pid: int):
        self.nodes = nodes
        self.locust_pid = locust_pid
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.leaders: list[int | None] = []  # the node leading at each sample
        self.probe = HostProbe()
        self.reference: list[tuple[float, float]] = []  # (time, host probe CPU ms)

    def sample(self) -> None:
        now = time.time()
        self.reference.append((now, self.probe()))
        values: dict[str, float] = {}
        leader = None
        for i, proc in enumerate(self.nodes.procs):
            if proc is not None:
                try:
                    values[f"node {i}"] = cpu_seconds(proc.pid)
                except (OSError, IndexError):
                    pass
                if leader is None:
                    leader = self.leader_named_by(i)
        self.leaders.append(leader)
        pids = [("locust", self.locust_pid)]
        pids += [(f"locust worker {k + 1}", p) for k, p in enumerate(children(self.locust_pid))]
        for name, pid in pids:
            try:
                values[name] = cpu_seconds(pid)
            except (OSError, IndexError):
                pass
        values[MACHINE] = machine_cpu_seconds()
        self.samples.append((now, values))

    def leader_named_by(self, i: int) -> int | None:
        try:
            leader = self.nodes.status(i, timeout=0.3)["leader"]
        except (OSError, ValueError, KeyError):
            return None
        return leader if isinstance(leader, int) else None


class Progress:
    """One status line in the terminal: phase, elapsed, commits/s (from the commit index of the
    first node that answers)."""

    def __init__(self, nodes: LocalNodes, total: float):
        self.nodes = nodes
        self.total = total
        self.tty = sys.stderr.isatty()
        self.last: tuple[float, int] | None = None
        self.first: tuple[float, int] | None = None
        self.rate = 0.0
        self.printed = 0.0

    def update(self, phase: str, index: int, count: int, elapsed: float, run: float) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last[0] < 1.0:
            return
        commit = None
        for i, proc in enumerate(self.nodes.procs):
            if proc is None:
                continue
            try:
                commit = int(self.nodes.status(i, timeout=0.5)["commit_index"])
                break
            except (OSError, ValueError, KeyError):
                continue
        if commit is None:
            return
        if self.last is not None:
            self.rate = (commit - self.last[1]) / (now - self.last[0])
        if self.first is None:
            self.first = (now, commit)
        average = (commit - self.first[1]) / max(now - self.first[0], 1e-9)
        self.last = (now, commit)
        line = (
            f"[{index}/{count} {phase}] {elapsed:5.1f}s  run {run:5.1f}/{self.total:.0f}s  "
            f"commits/s {self.rate:6.0f} (avg {average:6.0f})  commit index {commit}"
        )
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100))
            sys.stderr.flush()
        elif now - self.printed >= 5.0:
            print(line, file=sys.stderr, flush=True)
            self.printed = now

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


#: Seconds a Locust user waits for an answer before it gives up and asks the next node: a
#: SIGSTOPped node (the leader, say) never answers, and the users that were talking to it must
#: move on to the side that commits, as a real client with a deadline would.
CLIENT_TIMEOUT = 1.0


def start_locust(
    args: argparse.Namespace, urls: list[str], ops: Path, raw: Path, total: float
) -> subprocess.Popen[bytes]:
    """Locust headless against the nodes at ``urls`` (users spread over them, following
    redirects to the leader and moving on from a dead node) for at most ``total`` seconds,
    recording to ``ops``."""
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{math.ceil(total)}s",
        "--stop-timeout", "15", "--host", urls[0], "--cluster", ",".join(urls),
        "--record-ops", str(ops), "--request-timeout", str(CLIENT_TIMEOUT),
        "--csv", str(raw / "locust"), "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    if args.locust_processes:
        command += ["--processes", str(args.locust_processes)]
    log = open(raw / "locust.log", "wb")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    finally:
        log.close()


def stop_locust(proc: subprocess.Popen[bytes], timeout: float = 40.0) -> None:
    """SIGTERM Locust (users finish their request, in-flight ones are recorded), then wait;
    SIGKILL it and its workers by PID if it does not exit."""
    if proc.poll() is None:
        workers = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in [*workers, proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)


def play(phases: list[Phase], faults: Faults, sampler: Sampler, progress: Progress,
         locust: subprocess.Popen[bytes]) -> list[Window]:  # fmt: skip
    """Play the phases in order; their windows as played."""
    windows: list[Window] = []
    run_start = time.time()
    for index, phase in enumerate(phases, 1):
        start = time.time()
        sampler.sample()
        phase.start(faults)
        next_tick = start + phase.every if phase.tick and phase.every > 0 else math.inf
        while (now := time.time()) < start + phase.duration:
            if locust.poll() is not None:
                raise RuntimeError(f"locust exited early (code {locust.returncode})")
            if now >= next_tick and phase.tick is not None:
                phase.tick(faults)
                next_tick += phase.every
            progress.update(phase.name, index, len(phases), now - start, now - run_start)
            if now - sampler.samples[-1][0] >= 1.0:
                sampler.sample()
            time.sleep(min(0.2, max(0.0, start + phase.duration - now)))
        end = time.time()
        phase.stop(faults)
        sampler.sample()
        windows.append(Window(phase.name, start, end, phase.description, phase.fault))
    progress.done()
    return windows


def leadership(nodes: LocalNodes) -> str:
    """Who leads at the end, under which ballot, and how many elections (real phase-1 runs)
    the nodes ran beyond the first one: with no node killed, a stable leader makes it 0."""
    statuses = [nodes.status(i) for i in range(nodes.count)]
    leader = next(s for s in statuses if s["role"] == "leader")
    ran = sum(s["elections"] for s in statuses) - 1
    return (
        f"node {leader['id']} at the end, ballot {leader['ballot']}; "
        f"elections beyond the first: {ran}"
    )


def load_recorded(ops_path: Path) -> list[Op]:
    ops: list[Op] = []
    pattern = str(ops_path.with_name(f"{ops_path.stem}*{ops_path.suffix}"))
    for name in sorted(glob.glob(pattern)):
        ops += load_ops(name)
    return ops


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render(args.render, args.note)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "raw"
    raw.mkdir(exist_ok=True)
    cycle = default_phases(
        args.healthy, args.slowed, args.stopped, args.healed, args.killed, args.rotate_every,
        args.most_slowed, args.stop_count, args.slow_ms,
    )  # fmt: skip
    phases = cycle * args.cycles
    total = args.warmup + sum(p.duration for p in phases)
    node_args = ["--storage", args.storage, *args.node_args.split()]
    started = datetime.now()
    print(
        f"bench: {args.nodes} nodes ({args.storage}), {args.users} Locust users, "
        + f"{args.cycles} × ("
        + ", ".join(f"{p.name} {p.duration:g}s" for p in cycle)
        + ")"
        + f", seed {args.seed}; report in {out}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="paxgos-bench-") as tmp:
        ops_path = Path(tmp) / "ops.jsonl"
        with LocalNodes(args.nodes, Path(tmp) / "cluster", node_args) as nodes:
            nodes.start()
            faults = Faults(nodes, random.Random(args.seed), slow_ms=args.slow_ms)
            locust = start_locust(args, nodes.urls, ops_path, raw, total + 30)
            try:
                sampler = Sampler(nodes, locust.pid)
                progress = Progress(nodes, total - args.warmup)
                warm_until = time.time() + args.warmup + 1.0  # +1 s: Locust's own start-up
                while time.time() < warm_until:
                    if locust.poll() is not None:
                        raise RuntimeError(f"locust exited early (code {locust.returncode})")
                    progress.update("warm-up", 0, len(phases), 0.0, 0.0)
                    time.sleep(0.2)
                windows = play(phases, faults, sampler, progress, locust)
            except BaseException:
                faults.heal_all()
                stop_locust(locust)
                raise
            finally:
                faults.heal_all()
            stop_locust(locust)
            print("bench: load stopped; waiting for the nodes to converge", file=sys.stderr)
            ops = load_recorded(ops_path)
            # Every node must list every slot a client was told of before the logs are read: a
            # commit index below it (a node's deferred write still on its way) is not a loss.
            acknowledged = max((op.slot or 0 for op in ops), default=0)
            nodes.wait_converged(timeout=120, at_least=acknowledged)
            logs = fetch_logs(nodes.urls, timeout=30)
            elections = leadership(nodes)
    if not ops:
        print(f"bench: no ops were recorded; see {raw / 'locust.log'}", file=sys.stderr)
        return 2
    result = check(ops, logs, require_complete=True)
    print(f"bench: history check {result.summary(10)}", file=sys.stderr)

    t0 = windows[0].start
    series = per_second(ops, t0, windows[-1].end)
    series.update(cpu_series(sampler.samples, t0, len(series["t"]), sampler.leaders))
    phase_windows = list(by_phase(windows).values())
    cpus = cpu_per_phase(sampler.samples, phase_windows)
    stats = [phase_stats(ops, ws, cpu) for ws, cpu in zip(phase_windows, cpus, strict=True)]
    for s, ws in zip(stats, phase_windows, strict=True):
        probes = [ms for t, ms in sampler.reference if in_any(t, ws)]
        s.reference_ms = statistics.median(probes) if probes else math.nan
    setup = {
        "name": args.name or out.name,
        "date": f"{started:%Y-%m-%d %H:%M}",
        "command": shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)]),
        "cluster": f"{args.nodes} node processes on 127.0.0.1, storage {args.storage}"
        + (f", node args {args.node_args}" if args.node_args else ""),
        "leader": "node 0 at start; any node may lead, and every fault's victims are drawn "
        f"from all nodes, the leader included; {elections} (a restarted node counts afresh)",
        "load": f"Locust {args.users} FastHttpUser users, closed loop (no think time), "
        f"spawn rate {args.spawn_rate:g}/s, "
        + (f"--processes {args.locust_processes}" if args.locust_processes else "one process")
        + ", spread over every node (redirects to the leader followed)",
        "phases": (f"{args.cycles} cycles of " if args.cycles > 1 else "")
        + ", ".join(f"{p.name} {p.duration:g} s" for p in cycle)
        + f" (after {args.warmup:g} s warm-up)"
        + ("; each phase's figures pool its windows" if args.cycles > 1 else ""),
        "faults": f"slowed: {args.slow_ms} ms delay on 1..{args.most_slowed} nodes, new set "
        f"every {args.rotate_every:g} s; stopped: {args.stop_count} nodes SIGSTOPped; "
        "leader killed: kill -9 of the leader, restarted at the phase's end",
        "seed": str(args.seed),
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "paxgos": f"{paxgos.__version__}, git {git_revision()}",
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} "
        f"{platform.release()}, load average at start {os.getloadavg()[0]:.2f}",
        "ops recorded": f"{len(ops):,} ({sum(op.outcome == 'ok' for op in ops):,} ok)",
    }
    run = report.RunResult(
        name=setup["name"],
        setup=setup,
        windows=windows,
        stats=stats,
        series=series,
        events=faults.events,
        t0=t0,
        check_ok=result.ok,
        check_summary=result.summary(20),
        notes=list(args.note),
        failovers=failovers(ops, [(e.t, e.nodes[0]) for e in faults.events if e.action == "kill"]),
    )
    write_report(out, run, ops, not args.no_history)
    print_summary(run, out)
    return 0 if result.ok else 1


def write_report(out: Path, run: report.RunResult, ops: list[Op], full_history: bool) -> None:
    plots.throughput_plot(
        out / "throughput.png",
        run.series,
        run.windows,
        run.events,
        run.t0,
        os.cpu_count() or 1,
        run.failovers,
    )
    plots.percentiles_plot(out / "latency_percentiles.png", run.stats)
    plots.cdf_plot(
        out / "latency_cdf.png",
        {name: phase_latencies(ops, ws) for name, ws in by_phase(run.windows).items()},
    )
    files = report.write_raw(out, run, ops, full_history)
    files += [f"raw/{p.name}" for p in sorted((out / "raw").iterdir())]
    secs = report.sections(run, os.cpu_count() or 1, files)
    title = f"Paxgos benchmark: {run.name}"
    report.write_markdown(out / "report.md", title, secs)
    report.write_html(out / "report.html", title, secs)


def print_summary(run: report.RunResult, out: Path) -> None:
    print(report.summary_table(run.stats).markdown())
    for line in report.reading(run, os.cpu_count() or 1):
        print("- " + line)
    print(f"report: {out / 'report.md'} and {out / 'report.html'}")


def render(out: Path, notes: list[str]) -> int:
    """Redraw the report in ``out`` from the data a run left there (see ``--render``)."""
    summary = json.loads((out / "summary.json").read_text())
    t0 = float(summary["t0"])
    with open(out / "series.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    series = {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}
    ops: list[Op] = []
    with gzip.open(out / "latency.csv.gz", "rt", newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f)):
            start = t0 + float(row["start_s"])
            end = start + float(row["latency_ms"]) / 1000
            slot = int(row["slot"]) if row["slot"] else None
            ops.append(Op("c", i, start, end, row["outcome"], slot))  # values are not kept
    run = report.RunResult(
        name=summary["name"],
        setup=summary["setup"],
        windows=[Window(**w) for w in summary["windows"]],
        stats=[PhaseStats.from_dict(d) for d in summary["phases"]],
        series=series,
        events=[FaultEvent(**e) for e in summary["events"]],
        t0=t0,
        check_ok=bool(summary["check"]["ok"]),
        check_summary=summary["check"]["summary"],
        notes=list(summary.get("notes", [])) + notes,
        failovers=[Failover(**f) for f in summary.get("failovers", [])],
    )
    write_report(out, run, ops, full_history=False)
    print(f"report: {out / 'report.md'} and {out / 'report.html'}")
    return 0 if run.check_ok else 1
