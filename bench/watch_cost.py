"""What watching costs, on one cluster: wrk runs alternate unwatched and watched by a dashboard.

    python -m bench.watch_cost [--rounds 4] [--connections 64] [--duration 8]

One durable 5-node cluster of this checkout; each round runs wrk on ``/propose`` at the leader
for ``--duration`` seconds twice, once with nothing watching and once with ``paxgos dashboard``
polling the nodes and a client reading its stream (``bench.ab.Watching``), in alternating
order.  The same cluster on both sides removes what differs between fresh clusters (their
disks' state, their ports, the time they started), which ``bench.ab --b-watch`` cannot.  It
prints every run, and per side the mean commits/s and the nodes' CPU per commit.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.ab import Watching
from bench.common import LocalNodes, cpu_seconds
from bench.wrk_propose import run_wrk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=8)
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {"unwatched": [], "watched": []}
    with tempfile.TemporaryDirectory(prefix="paxgos-watch-") as tmp:
        with LocalNodes(5, Path(tmp)) as nodes:
            nodes.start()
            url = nodes.urls[0] + "/propose/"
            run_wrk(url, args.connections, 2)  # warm-up
            pids = [p.pid for p in nodes.procs if p is not None]
            for r in range(args.rounds):
                for side in ("unwatched", "watched") if r % 2 == 0 else ("watched", "unwatched"):
                    watching = Watching(nodes) if side == "watched" else None
                    try:
                        if watching is not None:
                            time.sleep(1.0)  # the dashboard's first polls
                        before = sum(cpu_seconds(pid) for pid in pids)
                        result = run_wrk(url, args.connections, args.duration)
                        spent = sum(cpu_seconds(pid) for pid in pids) - before
                    finally:
                        if watching is not None:
                            watching.close()
                    rate = result["requests_per_s"]
                    per_commit = spent * 1000 / max(rate * args.duration, 1.0)
                    results[side].append((rate, per_commit))
                    print(
                        f"round {r + 1} {side:9}: {rate:8.0f} commits/s  p99 "
                        f"{result['p99_ms']:6.2f} ms  nodes {per_commit:.3f} CPU ms/commit"
                        + (f"  {watching.snapshots} snapshots" if watching else ""),
                        flush=True,
                    )
    mean = {s: statistics.mean(r for r, _ in v) for s, v in results.items()}
    cpu = {s: statistics.mean(c for _, c in v) for s, v in results.items()}
    wins = sum(w[0] > u[0] for u, w in zip(results["unwatched"], results["watched"], strict=True))
    print(
        f"unwatched {mean['unwatched']:.0f} commits/s, {cpu['unwatched']:.3f} CPU ms/commit; "
        f"watched {mean['watched']:.0f} commits/s, {cpu['watched']:.3f} CPU ms/commit; "
        f"watched/unwatched {mean['watched'] / mean['unwatched']:.3f} commits/s "
        f"(watched faster in {wins} of {args.rounds}), "
        f"{cpu['watched'] / cpu['unwatched']:.3f} CPU per commit"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
