"""How fast a node that was down catches up: entries per second fetched from its peers.

    python -m bench.catchup [--missed 100000]

Starts 5 durable nodes, stops node 4, commits ``--missed`` values without it, restarts it with
the same command and data dir, and times how long its log takes to equal the leader's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from bench.common import LocalNodes, cpu_seconds, fill


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--missed", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paxgos-catchup-") as tmp:
        with LocalNodes(5, tmp) as nodes:
            nodes.start()
            nodes.stop(4)
            rate = fill(nodes, args.missed)
            target = nodes.status(0)["commit_index"]
            print(f"committed {target} values with node 4 down ({rate:.0f} commits/s)")
            started = time.monotonic()
            nodes.start(4)
            up = time.monotonic()
            leader_cpu = cpu_seconds(nodes.procs[0].pid)  # type: ignore[union-attr]
            deadline = started + 300
            while nodes.status(4)["commit_index"] < target and time.monotonic() < deadline:
                time.sleep(0.01)
            done = time.monotonic()
            caught = nodes.status(4)["commit_index"]
            leader_cpu = cpu_seconds(nodes.procs[0].pid) - leader_cpu  # type: ignore[union-attr]
            assert nodes.history(4) == nodes.history(0), "node 4's log differs from the leader's"
            print(
                f"node 4 caught up {caught} entries in {done - up:.2f}s after answering "
                f"(start-up {up - started:.2f}s): {caught / (done - up):.0f} entries/s; "
                f"leader CPU {leader_cpu:.2f}s; node 4's log equals the leader's"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
