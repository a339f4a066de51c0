"""Which interpreter is slow, the nodes' or the load generator's: commits/s of every pair.

    python -m bench.interpreters --python 3.11=python3.11 --python 3.10=/tmp/py310/bin/python
        [--users 16] [--connections 16,64] [--duration 8] [--rounds 2] [--diagonal]
        [--node-args "--event-loop uvloop"]

Each ``--python NAME=EXECUTABLE`` is an interpreter with Paxgos installed (``pip install -e
'.[bench]'``).  For every pair (the nodes' interpreter, the client's interpreter) and every
round it starts a fresh durable 3-node cluster run by the nodes' interpreter, and measures
``/propose`` on the leader with Locust (``loadtest/locustfile.py``, headless, ``--users``
closed-loop users) run by the client's interpreter, and with wrk (``--connections``; wrk is one
program for every pair, so only the nodes' interpreter varies).  Pairs alternate inside a round,
so the host's drift weighs on all.  It prints commits/s, p50 and the leader's CPU for each.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import LocalNodes, cpu_seconds
from bench.wrk_propose import run_wrk

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def locust_run(python: str, url: str, users: int, duration: int, out: Path) -> dict[str, float]:
    """Locust headless for ``duration`` seconds: 2xx per second and the median latency."""
    prefix = out / "locust"
    subprocess.run(
        [python, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users),
         "-r", str(users), "-t", f"{duration}s", "--host", url, "--csv", str(prefix),
         "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5"],
        capture_output=True, timeout=duration + 60, cwd=ROOT, check=False,
    )  # fmt: skip
    with open(f"{prefix}_stats.csv") as stats:
        total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
    ok = float(total["Request Count"]) - float(total["Failure Count"])
    median = total["50%"]  # "N/A" when nothing was answered
    return {
        "requests_per_s": ok / duration,
        "p50_ms": float(median) if median.replace(".", "").isdigit() else float("nan"),
    }


def measure(
    nodes_python: str, client: str, args: argparse.Namespace, work: Path
) -> dict[str, float]:
    """One cluster run by ``nodes_python``; Locust by ``client`` (or wrk at ``client`` =
    ``wrk:N``)."""
    with LocalNodes(3, work, args.node_args.split(), python=nodes_python) as nodes:
        nodes.start()
        leader = nodes.urls[0]
        pid = nodes.procs[0].pid  # type: ignore[union-attr]
        before, started = cpu_seconds(pid), time.monotonic()
        if client.startswith("wrk:"):
            result = run_wrk(leader + "/propose/", int(client[4:]), args.duration)
        else:
            result = locust_run(client, leader, args.users, args.duration, work)
        result["leader_cores"] = (cpu_seconds(pid) - before) / (time.monotonic() - started)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", required=True, metavar="NAME=EXECUTABLE")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--diagonal", action="store_true", help="Locust only with the nodes' own interpreter"
    )
    parser.add_argument("--node-args", default="", help="extra node options, space-separated")
    args = parser.parse_args(argv)
    pythons = dict(item.split("=", 1) for item in args.python)
    clients = [(f"locust {name}", exe) for name, exe in pythons.items()]
    clients += [(f"wrk -c{c}", f"wrk:{c}") for c in args.connections.split(",")]
    pairs = [
        ((name, exe), (client_name, client))
        for (name, exe), (client_name, client) in itertools.product(pythons.items(), clients)
        if not (args.diagonal and client_name.startswith("locust") and client != exe)
    ]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="paxgos-interp-") as tmp:
        for r in range(args.rounds):
            order = pairs if r % 2 == 0 else pairs[::-1]
            for k, ((name, exe), (client_name, client)) in enumerate(order):
                res = measure(exe, client, args, Path(tmp) / f"r{r}-{k}")
                results.setdefault((name, client_name), []).append(res)
                print(
                    f"round {r + 1} nodes {name:>5}  {client_name:>14}: "
                    f"{res['requests_per_s']:7.0f} commits/s  p50 {res['p50_ms']:6.2f} ms  "
                    f"leader {res['leader_cores']:.2f} cores",
                    flush=True,
                )
    print("\nmeans:")
    for (name, client_name), rs in results.items():
        print(
            f"nodes {name:>5}  {client_name:>14}: "
            f"{statistics.mean(x['requests_per_s'] for x in rs):7.0f} commits/s  "
            f"p50 {statistics.mean(x['p50_ms'] for x in rs):6.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
