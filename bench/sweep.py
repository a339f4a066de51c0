"""The concurrency sweep: Paxgos commits/s against etcd puts/s from one connection to a thousand.

    python -m bench.sweep [--points 1,4,16,64,256,1024] [--duration 8] [--warmup 2] [--nodes 5]
                          [--rounds 1] [--out DIR] [--no-etcd] [--node-args "--min-batch 1"]

Owns ``bench/sweep.py``, ``bench/etcd.py`` (the etcd cluster) and ``bench/put.lua`` (wrk's
etcd puts); ``tests/test_sweep.py`` is its smoke test.

It starts a fresh durable Paxgos cluster of ``--nodes`` processes (``LocalNodes`` in a temporary
directory) and, when ``etcd`` is on PATH (Debian ``etcd-server``), an etcd cluster of as many
members on free 127.0.0.1 ports with its data directories in the same temporary directory
(default durability).  Without etcd it says how to install it and sweeps Paxgos alone.

At each point (a number of connections) it runs wrk (``-t1 -c<N> -d<D>s --latency``) against
the Paxgos leader's ``/propose/<value>`` (``bench/propose.lua``) and against the etcd leader's
``POST /v3/kv/put`` with a key and value that change on every request (``bench/put.lua``), one
after the other, the order alternating from point to point so that a drift of the host's speed
weighs on both; each run follows a short warm-up at the same load.  With ``--rounds R`` each
point runs both systems R times, the order alternating from round to round too (ABBA...), and
the report gives the rounds' mean throughput, their median latencies and how many rounds Paxgos
led: where the two are close, one pair of runs on a host whose speed drifts cannot say which
is faster.

Per run it records the 2xx answers per second (wrk's total minus its "Non-2xx or 3xx" count,
which counts status >= 400), the non-2xx answers and socket errors, p50/p90/p99 latency, and the
CPU cores used by every node or member, by wrk itself and by the whole machine during the run,
so the report says which process saturates a core. A cross-check counts what the leader itself
saw: Paxgos' commit index, etcd's store revision.

The report directory (default ``bench/reports/<date>-sweep-<nodes>nodes/``) holds
``sweep.json`` (raw results and host info), ``sweep.csv``, ``throughput.png``, ``latency.png``
and ``README.md`` (a table per point: commits/s, puts/s, their ratio, p99 of both, the busiest
process).  Every process started is killed by PID at the end, also on Ctrl-C or an error;
every loop is bounded in count and time; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import matplotlib

from bench.common import cpu_seconds
from bench.etcd import INSTALL_HINT, EtcdCluster, etcd_binary, etcd_version
from paxgos.testing.procs import LocalNodes

matplotlib.use("Agg")  # before pyplot: no display here
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

BENCH = Path(__file__).resolve().parent
PROPOSE_LUA = BENCH / "propose.lua"
PUT_LUA = BENCH / "put.lua"
DEFAULT_POINTS = (1, 4, 16, 64, 256, 1024)
SYSTEMS = ("paxgos", "etcd")
COLORS = {"paxgos": "#1f77b4", "etcd": "#ff7f0e"}
#: Cores above which a process is (close to) saturating one core.
SATURATED = 0.85
#: Cores used outside the measured system and wrk above which the report cautions that
#: other load on the host weighed on the figures.
OUTSIDE_CAUTION = 0.5
#: Descriptors wrk needs beyond one per connection.
FD_MARGIN = 64
#: Largest number of connections a point may ask for.
MAX_CONNECTIONS = 16384
#: wrk's own deadline per request: an answer later than this is a socket "timeout" and its
#: latency is not recorded, so it is set well above any p99 seen, to keep p99 honest.
WRK_TIMEOUT = "10s"

# --- wrk -------------------------------------------------------------------------------------


def to_ms(text: str) -> float:
    """A wrk duration (``512.00us``, ``2.15ms``, ``1.02s``, ``1.00m``) in milliseconds."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if match is None:
        return math.nan
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    """The figures of one wrk run from its output (``--latency``): requests, the seconds they
    took, 2xx answers per second, non-2xx, socket errors, p50/p90/p99."""
    total = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m)", out)
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if total is None or rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests = int(total.group(1))
    seconds = to_ms(total.group(2) + total.group(3)) / 1000
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    non_2xx = int(bad.group(1)) if bad else 0
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    line = re.search(r"Socket errors:(.*)", out)
    if line:
        for kind, count in re.findall(r"(connect|read|write|timeout) (\d+)", line.group(1)):
            errors[kind] = int(count)
    result: dict[str, Any] = {
        "requests": requests,
        "seconds": seconds,
        "requests_per_s": float(rate.group(1)),
        "ok": requests - non_2xx,
        "ok_per_s": (requests - non_2xx) / seconds if seconds > 0 else math.nan,
        "non_2xx": non_2xx,
        "socket_errors": errors,
    }
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = to_ms(match.group(1)) if match else math.nan
    return result


def children_cpu_seconds() -> float:
    """User + system CPU time of every child this process has reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    url: str, script: Path, connections: int, duration: int, script_args: Sequence[str] = ()
) -> tuple[dict[str, Any], float]:
    """Run wrk once; its parsed figures and the CPU seconds wrk itself used."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
        "--timeout", WRK_TIMEOUT, "-s", str(script), url,
    ]  # fmt: skip
    if script_args:
        command += ["--", *script_args]
    before = children_cpu_seconds()
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    wrk_cpu = children_cpu_seconds() - before
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    result = parse_wrk(done.stdout)
    if done.stderr.strip():
        result["wrk_stderr"] = done.stderr.strip()[-500:]
    return result, wrk_cpu


# --- the two systems -------------------------------------------------------------------------


class Target(Protocol):
    """One system under test, as the sweep sees it."""

    name: str
    script: Path

    def leader(self) -> int: ...
    def url(self, i: int) -> str: ...
    def pids(self) -> dict[str, int]: ...
    def counter(self, leader: int) -> int: ...


class PaxgosTarget:
    """The Paxgos cluster: wrk on the leader's ``/propose/<value>``; counter: commit index."""

    name = "paxgos"
    script = PROPOSE_LUA

    def __init__(self, nodes: LocalNodes) -> None:
        self.nodes = nodes

    def leader(self) -> int:
        return self.nodes.wait_leader(timeout=15.0)

    def url(self, i: int) -> str:
        return self.nodes.urls[i] + "/propose/"

    def pids(self) -> dict[str, int]:
        return {f"node {i}": p.pid for i, p in enumerate(self.nodes.procs) if p is not None}

    def counter(self, leader: int) -> int:
        return int(self.nodes.status(leader)["commit_index"])


class EtcdTarget:
    """The etcd cluster: wrk on the leader's ``POST /v3/kv/put``; counter: store revision."""

    name = "etcd"
    script = PUT_LUA

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster

    def leader(self) -> int:
        return self.cluster.leader(timeout=15.0)

    def url(self, i: int) -> str:
        return self.cluster.urls[i]

    def pids(self) -> dict[str, int]:
        return {f"member {i}": pid for i, pid in self.cluster.pids.items()}

    def counter(self, leader: int) -> int:
        return self.cluster.revision(leader)


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (``/proc/stat``, all but idle)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(x) for i, x in enumerate(fields[:8]) if i not in (3, 4))  # not idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


def process_cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            out[name] = math.nan
    return out


def busiest_of(cores: dict[str, float]) -> str:
    """The process that used the most cores (one whose figure is missing counts least)."""
    return max(cores, key=lambda k: -1.0 if math.isnan(cores[k]) else cores[k])


def measure(
    target: Target, connections: int, duration: int, warmup: int, tag: str
) -> dict[str, Any]:
    """One wrk run (after a warm-up) against ``target``'s leader, with CPU per process."""
    leader = target.leader()
    url = target.url(leader)
    script_args = [tag] if target.script == PUT_LUA else []
    if warmup > 0:
        run_wrk(url, target.script, connections, warmup, [f"{tag}w"] if script_args else [])
    pids = target.pids()
    counted = target.counter(leader)
    before = process_cpu(pids)
    machine = machine_cpu_seconds()
    started = time.monotonic()
    result, wrk_cpu = run_wrk(url, target.script, connections, duration, script_args)
    elapsed = time.monotonic() - started
    machine = (machine_cpu_seconds() - machine) / elapsed
    after = process_cpu(pids)
    cores = {name: (after[name] - before[name]) / elapsed for name in pids}
    cores["wrk"] = wrk_cpu / elapsed
    leader_after = target.leader()
    ours = sum(v for v in cores.values() if not math.isnan(v))
    busiest = busiest_of(cores)
    result.update(
        system=target.name,
        connections=connections,
        duration_s=duration,
        warmup_s=warmup,
        leader=leader,
        leader_after=leader_after,
        leader_counted_per_s=(target.counter(leader_after) - counted) / elapsed
        if leader_after == leader
        else math.nan,
        cores=cores,
        machine_cores=machine,
        outside_cores=max(0.0, machine - ours),
        busiest=busiest,
        busiest_cores=cores[busiest],
        elapsed_s=elapsed,
    )
    return result


def process_label(r: dict[str, Any], name: str) -> str:
    """``node 0 (leader)``-style name of a process in result ``r``."""
    return f"{name} (leader)" if name.split()[-1] == str(r["leader"]) and name != "wrk" else name


# --- the sweep -------------------------------------------------------------------------------


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft descriptor limit to its hard limit (wrk and the cluster
    inherit it); warn when even that is below ``needed``.  The limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft < needed:
        print(
            f"sweep: file descriptor limit {soft} is below the {needed} wrk needs at the "
            "largest point; raise it (ulimit -n) or expect connect errors",
            file=sys.stderr,
        )
    return soft


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` while inside, so cleanup runs as on Ctrl-C; and make
    Ctrl-C raise ``KeyboardInterrupt`` even when started with SIGINT ignored (``cmd &``)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, interrupt)


def host_info(argv: Sequence[str], etcd: bool, fd_limit: int) -> dict[str, Any]:
    def version(module: str) -> str:
        try:
            return __import__("importlib.metadata").metadata.version(module)
        except Exception:  # noqa: BLE001 - a missing version is not worth failing a run for
            return "?"

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.sweep", *argv]),
        "cpu_count": os.cpu_count(),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tornado": version("tornado"),
        "matplotlib": version("matplotlib"),
        "etcd": etcd_version() if etcd else None,
        "wrk": " ".join((wrk.stdout + wrk.stderr).split()[:3]),  # "wrk <version> [epoll]"
        "git_commit": git("rev-parse", "--short", "HEAD") or "?",
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "load_average_at_start": os.getloadavg()[0],
        "fd_limit": fd_limit,
    }


def sweep(args: argparse.Namespace, tmp: Path, use_etcd: bool) -> list[dict[str, Any]]:
    """Start the clusters, run every point, stop the clusters; the results in run order."""
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        nodes = stack.enter_context(LocalNodes(args.nodes, tmp / "paxgos", args.node_args.split()))
        nodes.start(wait=30.0)
        targets: dict[str, Target] = {"paxgos": PaxgosTarget(nodes)}
        if use_etcd:
            cluster = stack.enter_context(EtcdCluster(args.nodes, tmp / "etcd"))
            cluster.start()
            targets["etcd"] = EtcdTarget(cluster)
        for index, connections in enumerate(args.points):
            for round_ in range(args.rounds):
                order = [s for s in SYSTEMS if s in targets]
                if (index + round_) % 2:
                    order.reverse()
                for system in order:
                    r = measure(
                        targets[system], connections, args.duration, args.warmup,
                        f"{index}-{round_}-{system}",
                    )  # fmt: skip
                    r["point"] = index
                    r["round"] = round_
                    r["order"] = order.index(system)
                    results.append(r)
                    print(summary_line(r), flush=True)
    return results


def summary_line(r: dict[str, Any]) -> str:
    errors = sum(r["socket_errors"].values())
    cores = "  ".join(f"{process_label(r, k)} {v:.2f}" for k, v in r["cores"].items())
    return (
        f"{r['connections']:>5} conn {r['system']:>6}: {r['ok_per_s']:8.0f} ok/s  "
        f"p50 {r['p50_ms']:7.2f}  p90 {r['p90_ms']:7.2f}  p99 {r['p99_ms']:7.2f} ms  "
        f"non-2xx {r['non_2xx']}  socket errors {errors}\n"
        f"{'':>19}cores: {cores}  (machine {r['machine_cores']:.2f})"
    )


# --- the report ------------------------------------------------------------------------------


#: A run's figures of which the rounds of a point give the mean.
AVERAGED = ("ok_per_s", "requests_per_s", "machine_cores", "outside_cores")
#: ... and of which the median: one stall (a cluster's first seconds, a hiccup of the host)
#: would make the mean of a p99 a figure of that stall alone.
MEDIAN = ("p50_ms", "p90_ms", "p99_ms")


def summary(values: Iterator[float], of: Callable[[list[float]], float]) -> float:
    """``of`` (a mean, a median) of the figures that were measured: a run whose output gave
    none has NaN, and NaN when no run measured it."""
    known = [v for v in values if not math.isnan(v)]
    return of(known) if known else math.nan


def combined(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One system's runs at one point as one result: the first run's fields (its counts and
    leader among them), with the means of the rounds' throughput and cores and the medians
    of their latencies, each over the rounds that measured it, and ``runs`` (every round's
    result)."""
    out = {**runs[0], "runs": list(runs)}
    for key in AVERAGED:
        out[key] = summary((r[key] for r in runs), statistics.fmean)
    for key in MEDIAN:
        out[key] = summary((r[key] for r in runs), statistics.median)
    names = dict.fromkeys(k for r in runs for k in r["cores"])
    out["cores"] = {
        n: summary((r["cores"].get(n, math.nan) for r in runs), statistics.fmean) for n in names
    }  # fmt: skip
    out["busiest"] = busiest_of(out["cores"])
    out["busiest_cores"] = out["cores"][out["busiest"]]
    return out


def by_point(results: Sequence[dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """The results grouped per point, in point order: ``[{system: combined result}]``."""
    points: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        points.setdefault(r["point"], {}).setdefault(r["system"], []).append(r)
    return [{system: combined(runs) for system, runs in points[k].items()} for k in sorted(points)]


def ahead(p: dict[str, Any], e: dict[str, Any]) -> tuple[int, int]:
    """In how many of a point's rounds Paxgos committed faster than etcd put, of how many
    rounds both ran."""
    theirs = {r.get("round", 0): r for r in e["runs"]}
    pairs = [(r, theirs[r.get("round", 0)]) for r in p["runs"] if r.get("round", 0) in theirs]
    return sum(a["ok_per_s"] > b["ok_per_s"] for a, b in pairs), len(pairs)


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def busiest_text(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    text = f"{process_label(r, r['busiest'])} {r['busiest_cores']:.2f}"
    return text + (" (saturated)" if r["busiest_cores"] >= SATURATED else "")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(p: dict[str, Any], e: dict[str, Any] | None) -> float:
    if e is None or not e["ok_per_s"]:
        return math.nan
    return p["ok_per_s"] / e["ok_per_s"]


def readme(results: Sequence[dict[str, Any]], host: dict[str, Any], nodes: int) -> str:
    points = by_point(results)
    with_etcd = any("etcd" in pt for pt in points)
    lines = [
        f"# Concurrency sweep: Paxgos ({nodes} nodes)"
        + (f" against etcd {host.get('etcd')} ({nodes} members)" if with_etcd else ""),
        "",
        f"Run {host['date']} with `{host['command']}`, git {host['git_commit']}"
        + (" + local changes" if host.get("git_dirty") else "")
        + ".",
        "",
    ]
    rounds = max(len(r["runs"]) for pt in points for r in pt.values())

    def run_name(r: dict[str, Any]) -> str:
        return f"{r['system']}, round {r.get('round', 0) + 1}" if rounds > 1 else r["system"]

    rows = []
    for pt in points:
        p, e = pt["paxgos"], pt.get("etcd")
        row = [
            str(p["connections"]),
            fmt(p["ok_per_s"]),
            fmt(e["ok_per_s"]) if e else "–",
            f"{ratio(p, e):.2f}x" if e else "–",
            f"{fmt(p['p99_ms'], 1)} / {fmt(e['p99_ms'], 1) if e else '–'}",
            f"{fmt(p['p50_ms'], 2)} / {fmt(e['p50_ms'], 2) if e else '–'}",
            busiest_text(p),
            busiest_text(e),
        ]
        if rounds > 1:
            row.insert(4, "{} of {}".format(*ahead(p, e)) if e else "–")
        rows.append(row)
    headers = [
        "connections",
        "paxgos commits/s",
        "etcd puts/s",
        "ratio",
        "p99 paxgos / etcd (ms)",
        "p50 paxgos / etcd (ms)",
        "busiest process, paxgos run (cores)",
        "busiest process, etcd run (cores)",
    ]
    if rounds > 1:
        headers.insert(4, "rounds paxgos ahead")
    lines += [
        "## Results",
        "",
        markdown_table(headers, rows),
        "",
    ]
    if rounds > 1:
        lines += [
            f"Throughput and cores are the means of {rounds} rounds, latencies their medians "
            "(every run is in the raw data).",
            "",
        ]
    if with_etcd:
        both = [pt for pt in points if "etcd" in pt]
        met = [
            pt
            for pt in both
            if ratio(pt["paxgos"], pt["etcd"]) >= 1.0
            and pt["paxgos"]["p99_ms"] <= pt["etcd"]["p99_ms"]
        ]
        missed = ", ".join(str(pt["paxgos"]["connections"]) for pt in both if pt not in met)
        lines += [
            "Paxgos commits at least as fast as etcd puts, with a p99 no worse"
            + (" (the rounds' mean throughput, their median p99)" if rounds > 1 else "")
            + f", at {len(met)} of {len(both)} points"
            + (f" (missed at N = {missed})." if missed else "."),
            "",
        ]
    else:
        lines += [f"etcd was not run ({INSTALL_HINT}).", ""]
    busy = max(results, key=lambda r: r["outside_cores"])
    if busy["outside_cores"] >= OUTSIDE_CAUTION:
        lines += [
            f"Caution: up to {busy['outside_cores']:.2f} of the host's {host['cpu_count']} cores "
            f"went to processes outside the measured system and wrk (the {busy['system']} run at "
            f"{busy['connections']} connections; the whole machine "
            f"{busy['machine_cores']:.2f} cores): other load on the host weighs on these "
            "figures (see the CPU table).",
            "",
        ]
    lines += [
        "![throughput](throughput.png)",
        "",
        "![latency](latency.png)",
        "",
        "## Errors",
        "",
    ]
    troubled = [
        r
        for r in results
        if r["non_2xx"] or any(r["socket_errors"].values()) or r.get("wrk_stderr")
    ]
    if troubled:
        lines.append(
            markdown_table(
                ["connections", "system", "non-2xx", "socket errors", "wrk stderr"],
                [
                    [
                        str(r["connections"]),
                        run_name(r),
                        str(r["non_2xx"]),
                        ", ".join(f"{k} {v}" for k, v in r["socket_errors"].items()),
                        r.get("wrk_stderr", "").replace("\n", " ")[:120],
                    ]
                    for r in troubled
                ],
            )
        )
    else:
        lines.append("No non-2xx answers and no socket errors in any run.")
    changed = [r for r in results if r["leader"] != r["leader_after"]]
    for r in changed:
        lines.append(
            f"\nLeader changed during the {run_name(r)} run at {r['connections']} connections "
            f"({r['leader']} -> {r['leader_after']}): that point measured a failover too."
        )
    lines += ["", "## CPU per process (cores, during each measured run)", ""]
    names = list(dict.fromkeys(k for r in results for k in r["cores"]))
    lines.append(
        markdown_table(
            ["connections", "system", *names, "whole machine", "outside this run"],
            [
                [
                    str(r["connections"]),
                    run_name(r),
                    *(
                        fmt(r["cores"][n], 2) + (" (leader)" if process_label(r, n) != n else "")
                        if n in r["cores"]
                        else ""
                        for n in names
                    ),
                    fmt(r["machine_cores"], 2),
                    fmt(r["outside_cores"], 2),
                ]
                for r in results
            ],
        )
    )
    lines += [
        "",
        f"A process at {SATURATED} cores or more is (close to) saturating one core. "
        "\"Outside this run\" is the machine's CPU use minus the measured system's processes "
        "and wrk: the idle other system, this script, and anything else on the host.",
        "",
        "## Method",
        "",
        f"- Paxgos: {nodes} durable node processes (`LocalNodes`, default options"
        + (f" plus `{host['node_args']}`" if host.get("node_args") else "")
        + "), wrk on the leader's `/propose/<value>` (`bench/propose.lua`).",
        f"- etcd: {nodes} members, static `--initial-cluster`, default durability, wrk on the "
        "leader's `POST /v3/kv/put` with a new base64 key and value per request "
        "(`bench/put.lua`)."
        if with_etcd
        else "- etcd: not run.",
        f"- wrk `-t1 -c<N> -d<D>s --latency --timeout {WRK_TIMEOUT}`, after a warm-up of the "
        "same load; at each point both systems run one after the other, the order "
        "alternating from point to point"
        + (f" and from round to round ({rounds} rounds)." if rounds > 1 else "."),
        '- Throughput counts 2xx answers only: wrk\'s requests minus its "Non-2xx or 3xx" '
        "count (which counts status >= 400; neither system answers its leader with a "
        "redirect). `leader_counted_per_s` in the raw data is what the leader itself "
        "counted: Paxgos' commit index, etcd's store revision.",
        f"- Host: {host['cpu_count']} CPUs, {host['machine']}, Python {host['python']}, "
        f"tornado {host['tornado']}, {host['wrk']}, load average at start "
        f"{host['load_average_at_start']:.2f}, descriptor limit {host['fd_limit']}.",
        "",
        "Raw data: `sweep.json` (every run and the host), `sweep.csv` (one row per run).",
        "",
    ]
    return "\n".join(lines)


def _log_x(ax: plt.Axes, points: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(points), [str(p) for p in points])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("connections (wrk -t1 -c N)")
    ax.grid(True, which="major", alpha=0.3)


def throughput_plot(path: Path, results: Sequence[dict[str, Any]]) -> None:
    """2xx answers per second against connections (log x), both systems, ratio labelled."""
    points = by_point(results)
    fig, ax = plt.subplots(figsize=(9, 4.6))
    xs = [pt["paxgos"]["connections"] for pt in points]
    for system in SYSTEMS:
        pts = [pt[system] for pt in points if system in pt]
        if pts:
            label = "paxgos commits/s" if system == "paxgos" else "etcd puts/s"
            ax.plot(
                [r["connections"] for r in pts], [r["ok_per_s"] for r in pts], marker="o",
                color=COLORS[system], lw=1.6, label=label,
            )  # fmt: skip
    for pt in points:
        if "etcd" in pt:
            top = max(pt["paxgos"]["ok_per_s"], pt["etcd"]["ok_per_s"])
            ax.annotate(
                f"{ratio(pt['paxgos'], pt['etcd']):.2f}x", (pt["paxgos"]["connections"], top),
                xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8,
            )  # fmt: skip
    _log_x(ax, xs)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("2xx answers per second")
    ax.set_title("Throughput against connections (labels: paxgos / etcd)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def latency_plot(path: Path, results: Sequence[dict[str, Any]]) -> None:
    """p50 (dashed) and p99 (solid) latency against connections, both systems, log-log."""
    points = by_point(results)
    fig, ax = plt.subplots(figsize=(9, 4.6))
    for system in SYSTEMS:
        pts = [pt[system] for pt in points if system in pt]
        if not pts:
            continue
        cs = [r["connections"] for r in pts]
        for key, style in (("p99_ms", "-"), ("p50_ms", "--")):
            ax.plot(
                cs, [r[key] for r in pts], ls=style, marker="o", ms=4, color=COLORS[system],
                lw=1.4, label=f"{system} {key[:3]}",
            )  # fmt: skip
    _log_x(ax, [pt["paxgos"]["connections"] for pt in points])
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency against connections: p50 (dashed) and p99 (solid)")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def json_safe(value: Any) -> Any:
    """``value`` with NaN turned into ``None`` (strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def csv_rows(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    names = list(dict.fromkeys(k for r in results for k in r["cores"]))
    fields = [
        "point", "round", "connections", "system", "order", "ok_per_s", "requests_per_s",
        "requests", "ok", "non_2xx", "socket_connect", "socket_read", "socket_write",
        "socket_timeout", "p50_ms", "p90_ms", "p99_ms", "leader", "leader_after",
        "leader_counted_per_s", "busiest", "busiest_cores", *(f"cores {n}" for n in names),
        "machine_cores", "outside_cores", "duration_s", "warmup_s", "elapsed_s",
    ]  # fmt: skip
    rows = []
    for r in results:
        row = {k: round(r[k], 3) if isinstance(r[k], float) else r[k] for k in fields if k in r}
        row.update({f"socket_{k}": v for k, v in r["socket_errors"].items()})
        row.update({f"cores {n}": f"{v:.3f}" for n, v in r["cores"].items()})
        rows.append(row)
    return fields, rows


def write_report(
    out: Path, results: Sequence[dict[str, Any]], host: dict[str, Any], nodes: int
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    raw = {"host": host, "results": list(results)}
    (out / "sweep.json").write_text(json.dumps(json_safe(raw), indent=1) + "\n")
    fields, rows = csv_rows(results)
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    throughput_plot(out / "throughput.png", results)
    latency_plot(out / "latency.png", results)
    (out / "README.md").write_text(readme(results, host, nodes))


# --- command line ----------------------------------------------------------------------------


def parse_points(text: str) -> list[int]:
    try:
        points = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not points or any(not 1 <= p <= MAX_CONNECTIONS for p in points):
        raise argparse.ArgumentTypeError(f"points must be 1..{MAX_CONNECTIONS}: {text!r}")
    return points


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--points", type=parse_points, default=list(DEFAULT_POINTS),
        help="connection counts, comma-separated (default 1,4,16,64,256,1024)",
    )  # fmt: skip
    parser.add_argument("--duration", type=int, default=8, help="seconds of wrk per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    parser.add_argument("--nodes", type=int, default=5, help="Paxgos nodes and etcd members")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of each system per point, alternating"
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="report directory")
    parser.add_argument("--no-etcd", action="store_true", help="sweep Paxgos alone")
    parser.add_argument("--node-args", default="", help="extra node options, space-separated")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600:
        parser.error("--duration must be 1..600 seconds")
    if not 0 <= args.warmup <= 60:
        parser.error("--warmup must be 0..60 seconds")
    if not 1 <= args.nodes <= 15:
        parser.error("--nodes must be 1..15")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be 1..20")
    if args.out is None:
        args.out = BENCH / "reports" / f"{datetime.now():%Y-%m-%d}-sweep-{args.nodes}nodes"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("sweep: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    use_etcd = not args.no_etcd and etcd_binary() is not None
    if not args.no_etcd and not use_etcd:
        print(f"sweep: {INSTALL_HINT}; sweeping Paxgos alone")
    fd_limit = raise_fd_limit(max(args.points) + FD_MARGIN)
    host = host_info(sys.argv[1:] if argv is None else list(argv), use_etcd, fd_limit)
    host["node_args"] = args.node_args
    print(
        f"sweep: {args.nodes} Paxgos nodes"
        + (f" and {args.nodes} etcd {host['etcd']} members" if use_etcd else "")
        + f", points {','.join(map(str, args.points))}, {args.duration} s each "
        f"(+{args.warmup} s warm-up)"
        + (f", {args.rounds} rounds" if args.rounds > 1 else "")
        + f"; report in {args.out}",
        flush=True,
    )
    with terminated_as_exit(), tempfile.TemporaryDirectory(prefix="paxgos-sweep-") as tmp:
        try:
            results = sweep(args, Path(tmp), use_etcd)
        except KeyboardInterrupt:
            print("sweep: interrupted; every process it started was stopped", file=sys.stderr)
            return 130
    host["load_average_at_end"] = os.getloadavg()[0]
    write_report(args.out, results, host, args.nodes)
    for pt in by_point(results):
        p, e = pt["paxgos"], pt.get("etcd")
        print(
            f"{p['connections']:>5} connections: paxgos {p['ok_per_s']:8.0f}/s p99 "
            f"{p['p99_ms']:6.1f} ms"
            + (
                f"  etcd {e['ok_per_s']:8.0f}/s p99 {e['p99_ms']:6.1f} ms  ratio {ratio(p, e):.2f}x"
                + (
                    "  paxgos ahead in {} of {} rounds".format(*ahead(p, e))
                    if args.rounds > 1
                    else ""
                )
                if e
                else ""
            )
        )
    print(f"sweep: report in {args.out}/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
