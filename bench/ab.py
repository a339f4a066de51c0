"""An alternating A/B of two revisions' nodes under wrk: which one commits faster, on this host.

    python -m bench.ab --a ec87fd2 --b HEAD [--rounds 4] [--connections 64] [--duration 8]
    python -m bench.ab --a HEAD --a-args=--insecure --b HEAD    # what authentication costs

Each revision is checked out (``git worktree``) into a temporary directory, and the rounds
alternate A, B, B, A, A, B, ...: every run starts a fresh durable 5-node cluster whose nodes
import ``paxgos`` from that revision's checkout (``PYTHONPATH``), runs wrk for ``--duration``
seconds on ``/propose`` at the leader (node 0), and stops it.  Alternating inside one run is
what makes the comparison fair on a host whose speed drifts by tens of percent within minutes.
It prints every round, the mean of each side, and B's ratio to A; which process was busiest;
and the nodes' CPU time per commit, which other tenants of the machine disturb less than
commits/s.
``--a-args``/``--b-args`` add node options to one side.  A revision from before the cluster
secret (no ``paxgos/net/auth.py``) is run the way it was: without a secret or cluster id.
``--a-watch``/``--b-watch`` watch one side's cluster as a dashboard user does (what watching
costs): that revision's ``paxgos dashboard`` polls the nodes for the whole round (``/status``,
``/events``, the leader's ``/metrics``), and a client reads its Server-Sent Events stream.

    python -m bench.ab --a HEAD --b HEAD --b-watch    # what watching costs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.common import LocalNodes, cpu_seconds
from bench.wrk_propose import run_wrk

ROOT = Path(__file__).resolve().parent.parent


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), rev],
        check=True, capture_output=True,
    )  # fmt: skip
    return into


class Watching:
    """A dashboard (``paxgos dashboard``, of the revision on ``PYTHONPATH``) watching ``nodes``,
    and one client reading its stream, as a page would; stopped by ``close``."""

    def __init__(self, nodes: LocalNodes):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paxgos", "dashboard", "--peers", ",".join(nodes.urls),
             "--secret-file", nodes.secret_file, "--port", "0"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "paxgos: dashboard on http://...:P/dashboard"
        self.url = line.rsplit(" ", 1)[-1].strip()
        self.snapshots = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            with urllib.request.urlopen(self.url + "/stream", timeout=30) as stream:
                for raw in stream:
                    if raw.startswith(b'data: {"n"'):
                        self.snapshots += 1
        except OSError:
            pass  # the dashboard stopped

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.thread.join(5)


def one_round(
    source: Path,
    workdir: Path,
    connections: int,
    duration: int,
    node_args: list[str],
    watch: bool = False,
) -> dict[str, float]:
    env = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(source)  # the nodes (children) import this revision
    identity = (source / "paxgos" / "net" / "auth.py").exists()
    try:
        with LocalNodes(5, workdir, node_args, identity=identity) as nodes:
            nodes.start()
            watching = Watching(nodes) if watch else None
            try:
                run_wrk(nodes.urls[0] + "/propose/", connections, 2)  # warm-up
                pids = {i: p.pid for i, p in enumerate(nodes.procs) if p is not None}
                if watching is not None:
                    pids[-1] = watching.proc.pid
                before = {i: cpu_seconds(pid) for i, pid in pids.items()}
                started = time.monotonic()
                result = run_wrk(nodes.urls[0] + "/propose/", connections, duration)
                span = time.monotonic() - started
                cores = {i: (cpu_seconds(pid) - before[i]) / span for i, pid in pids.items()}
                result["snapshots"] = float(watching.snapshots) if watching else 0.0
            finally:
                if watching is not None:
                    watching.close()
            result["leader_cores"] = cores[0]
            result["busiest_follower_cores"] = max(v for i, v in cores.items() if i > 0)
            result["watcher_cores"] = cores.get(-1, 0.0)
            # The nodes' CPU per commit: less at the mercy of other tenants than commits/s.
            nodes_cores = sum(v for i, v in cores.items() if i >= 0)
            result["cpu_ms_per_commit"] = nodes_cores * 1000 / max(result["requests_per_s"], 1.0)
            return result
    finally:
        if env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="revision A (e.g. the last landed commit)")
    parser.add_argument("--b", default="HEAD", help="revision B (default HEAD)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per side (default 4)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=8, help="seconds of wrk per round")
    parser.add_argument("--a-args", default="", help="node options of side A only")
    parser.add_argument("--b-args", default="", help="node options of side B only")
    parser.add_argument("--a-watch", action="store_true", help="watch side A with a dashboard")
    parser.add_argument("--b-watch", action="store_true", help="watch side B with a dashboard")
    args = parser.parse_args(argv)
    node_args = {"A": args.a_args.split(), "B": args.b_args.split()}
    watch = {"A": args.a_watch, "B": args.b_watch}
    with tempfile.TemporaryDirectory(prefix="paxgos-ab-") as tmp:
        sides = {"A": checkout(args.a, Path(tmp) / "a"), "B": checkout(args.b, Path(tmp) / "b")}
        results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
        try:
            for r in range(args.rounds):
                # A-B, then B-A: neither side always runs first in its round.
                order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
                for side in order:
                    source = sides[side]
                    work = Path(tmp) / f"run-{side}-{r}"
                    res = one_round(
                        source, work, args.connections, args.duration, node_args[side],
                        watch[side],
                    )  # fmt: skip
                    results[side].append(res)
                    watched = (
                        f"  watcher {res['watcher_cores']:.2f} cores, "
                        f"{res['snapshots']:.0f} snapshots"
                        if watch[side]
                        else ""
                    )
                    print(
                        f"round {r + 1} {side}: {res['requests_per_s']:8.0f} commits/s  "
                        f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                        f"leader {res['leader_cores']:.2f} cores  "
                        f"nodes {res['cpu_ms_per_commit']:.3f} CPU ms/commit  "
                        f"non-2xx {res['non_2xx']:.0f}{watched}",
                        flush=True,
                    )
        finally:
            for source in sides.values():
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(source)],
                    capture_output=True,
                )  # fmt: skip
    mean = {s: statistics.mean(x["requests_per_s"] for x in rs) for s, rs in results.items()}
    p99 = {s: statistics.mean(x["p99_ms"] for x in rs) for s, rs in results.items()}
    cpu = {s: statistics.mean(x["cpu_ms_per_commit"] for x in rs) for s, rs in results.items()}
    wins = sum(
        b["requests_per_s"] > a["requests_per_s"]
        for a, b in zip(results["A"], results["B"], strict=True)
    )
    print(
        f"A {args.a} {args.a_args}{' watched' * args.a_watch}: {mean['A']:.0f} commits/s, "
        f"p99 {p99['A']:.2f} ms; "
        f"B {args.b} {args.b_args}{' watched' * args.b_watch}: {mean['B']:.0f} commits/s, "
        f"p99 {p99['B']:.2f} ms; "
        f"B/A {mean['B'] / mean['A']:.3f} (B faster in {wins} of {args.rounds} rounds); "
        f"nodes' CPU per commit A {cpu['A']:.3f} ms, B {cpu['B']:.3f} ms, "
        f"B/A {cpu['B'] / cpu['A']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
