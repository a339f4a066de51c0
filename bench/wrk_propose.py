"""Throughput and latency of /propose on a fresh local cluster, measured with wrk.

    python -m bench.wrk_propose [--nodes 5] [--connections 64] [--duration 20] [--stop 2]

Starts the nodes as real processes on free ports, runs wrk (Debian package ``wrk``, 1 thread,
``bench/propose.lua`` varies the value) against the leader while healthy, then with ``--stop``
followers SIGSTOPped, and prints commits/s and latency percentiles for both, their ratio, and
each process's CPU use during the runs (so you can see which one saturates a core).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from bench.common import LocalNodes, cpu_seconds

LUA = Path(__file__).with_name("propose.lua")


def to_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, connections: int, duration: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(LUA), url],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout  # fmt: skip
    result = {"requests_per_s": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = to_ms(match.group(1)) if match else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    result["non_2xx"] = float(bad.group(1)) if bad else 0.0
    result["socket_errors"] = errors.group(0) if errors else ""  # type: ignore[assignment]
    return result


def store_writes(nodes: LocalNodes, ids: Iterable[int]) -> dict[int, int]:
    """Each answering node's count of group commits (one fsync each); stopped nodes are left
    out."""
    counts = {}
    for i in ids:
        try:
            counts[i] = nodes.status(i, timeout=0.5)["store_writes"]
        except OSError:
            pass
    return counts


def measure(nodes: LocalNodes, label: str, args: argparse.Namespace) -> dict[str, float]:
    pids = {i: p.pid for i, p in enumerate(nodes.procs) if p is not None}
    before = {i: cpu_seconds(pid) for i, pid in pids.items()}
    writes_before = store_writes(nodes, pids)
    first = nodes.status(0)
    started = time.monotonic()
    result = run_wrk(nodes.urls[0], args.connections, args.duration)
    elapsed = time.monotonic() - started
    last = nodes.status(0)
    writes = store_writes(nodes, pids)
    cpu = {}
    for i, pid in pids.items():
        try:
            cpu[i] = (cpu_seconds(pid) - before[i]) / elapsed
        except FileNotFoundError:
            cpu[i] = float("nan")
    result["commits_per_s"] = (last["commit_index"] - first["commit_index"]) / args.duration
    rounds = last["rounds_sent"] - first["rounds_sent"]
    result["batch"] = (last["values_sent"] - first["values_sent"]) / max(rounds, 1)
    print(
        f"{label:>22}: {result['requests_per_s']:8.0f} req/s  {result['commits_per_s']:8.0f} "
        f"commits/s  p50 {result['p50_ms']:6.2f} ms  p90 {result['p90_ms']:6.2f} ms  "
        f"p99 {result['p99_ms']:6.2f} ms  non-2xx {result['non_2xx']:.0f}  "
        f"values/batch {result['batch']:.1f} "
        f"{result['socket_errors']}"
    )
    print(" " * 24 + "CPU (cores): " + "  ".join(f"node {i} {c:.2f}" for i, c in cpu.items()))
    fsyncs = {i: (writes[i] - writes_before[i]) / elapsed for i in pids if i in writes}
    print(" " * 24 + "fsyncs/s:    " + "  ".join(f"node {i} {f:.0f}" for i, f in fsyncs.items()))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--stop", type=int, default=2, help="followers to SIGSTOP in phase 2")
    parser.add_argument("--node-args", default="", help="extra node options, space-separated")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="paxgos-wrk-") as tmp:
        with LocalNodes(args.nodes, tmp, args.node_args.split()) as nodes:
            nodes.start()
            run_wrk(nodes.urls[0], 8, 2)  # warm-up
            healthy = measure(nodes, "healthy", args)
            stopped = list(range(args.nodes - args.stop, args.nodes))
            for i in stopped:
                nodes.pause(i)
            degraded = measure(nodes, f"{args.stop} followers stopped", args)
            for i in stopped:
                nodes.resume(i)
            ratio = degraded["commits_per_s"] / healthy["commits_per_s"]
            p99 = degraded["p99_ms"] / healthy["p99_ms"]
            print(f"stopped/healthy: throughput {ratio:.0%}, p99 {p99:.2f}x")
            nodes.wait_converged(timeout=30)
            commit = nodes.status(0)["commit_index"]
            print(f"all {args.nodes} nodes converged at commit index {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
