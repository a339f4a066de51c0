"""Memory after many commits: each node's resident set size once ``--commits`` values are in.

    python -m bench.memory [--commits 1000000]

The durable store keeps the log on disk; a node holds in RAM only the slots still in flight.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from bench.common import LocalNodes, fill, rss_mib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1_000_000)
    parser.add_argument("--step", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paxgos-memory-") as tmp:
        with LocalNodes(5, tmp) as nodes:
            nodes.start()
            pids = [p.pid for p in nodes.procs if p is not None]
            print("commits      " + "  ".join(f"node {i} RSS" for i in range(5)))
            print(f"{0:>9}    " + "  ".join(f"{rss_mib(p):8.1f} MiB" for p in pids))
            done = 0
            while done < args.commits:
                rate = fill(nodes, min(args.step, args.commits - done))
                done = nodes.wait_converged(timeout=120, at_least=nodes.status(0)["commit_index"])
                print(
                    f"{done:>9}    " + "  ".join(f"{rss_mib(p):8.1f} MiB" for p in pids)
                    + f"   ({rate:.0f} commits/s)"
                )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
