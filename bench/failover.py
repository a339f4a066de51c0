"""Failover: how long commits stop when the leader is killed.

``python -m bench.failover [--trials 20] [--nodes 5] [--out DIR]`` starts a fresh durable cluster
at the default settings, keeps a light load on it (clients that ask any node and follow its
redirect), and then, trial after trial: finds the leader from ``/status``, ``kill -9``s it, and
times how long until a proposal sent after the kill commits on another node (a probe that asks
every live node in turn every 10 ms, following redirects).  It restarts the killed node on its
data, waits until it has caught up, checks that the leader did not change when it returned (no
flip-back), and lets the cluster settle before the next trial.  At the end it checks what every
client was told against every node's log.

It prints one line per trial and a summary (median, max), and writes ``failover.json`` (every
trial) into ``--out`` when given.  Which process is busiest is printed too: on a 2-core machine
the load clients and the nodes share the cores.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from paxgos.check import History, check, fetch_logs
from paxgos.testing.client import OK, LoadClients, propose
from paxgos.testing.procs import LocalNodes

PROBE_EVERY = 0.01
PROBE_LIMIT = 10.0
SETTLE = 2.0


def first_commit(nodes: LocalNodes, dead: int, value: int, history: History) -> tuple[float, int]:
    """Probe the live nodes until one proposal commits: when (monotonic) and on which node.
    Every probe is recorded in ``history`` (the checker must know every value proposed)."""
    live = [i for i in range(nodes.count) if i != dead]
    deadline = time.monotonic() + PROBE_LIMIT
    turn = 0
    while time.monotonic() < deadline:
        i = live[turn % len(live)]
        turn += 1
        start = time.time()
        outcome, slot, _ = propose(nodes.urls[i], value + turn, timeout=1.0, follow=True)
        history.record("probe", value + turn, start, time.time(), outcome, slot)
        if outcome == OK:
            return time.monotonic(), i
        time.sleep(PROBE_EVERY)
    raise TimeoutError(f"nothing committed within {PROBE_LIMIT}s of killing node {dead}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4, help="background load threads")
    parser.add_argument("--out", type=Path, default=None, help="directory for failover.json")
    args = parser.parse_args(argv)
    rng = random.Random(1)
    trials = []
    with tempfile.TemporaryDirectory(prefix="paxgos-failover-") as tmp:
        nodes = LocalNodes(args.nodes, tmp)
        with nodes:
            nodes.start()
            everyone = list(range(args.nodes))
            load = LoadClients(
                lambda: rng.choice(nodes.urls), History(), args.clients, timeout=3.0, follow=True
            ).start()
            try:
                for trial in range(args.trials):
                    leader = nodes.wait_leader(10.0)
                    time.sleep(0.5)  # load flowing through this leader
                    killed_at = time.monotonic()
                    nodes.kill(leader)
                    committed_at, via = first_commit(
                        nodes, leader, 7_000_000_000 + trial * 10**6, load.history
                    )
                    live = [i for i in everyone if i != leader]
                    new = nodes.wait_leader(10.0, live)
                    ballot = nodes.status(new)["ballot"]
                    gap = committed_at - killed_at
                    nodes.start(leader)
                    nodes.wait_converged(timeout=30.0)
                    time.sleep(SETTLE)
                    after = nodes.wait_leader(10.0)
                    ballot_after = nodes.status(after)["ballot"]
                    flip = after != new or ballot_after != ballot
                    trials.append(
                        {"trial": trial, "killed": leader, "new_leader": new, "seconds": gap,
                         "first_commit_via": via, "flip_back": flip}
                    )  # fmt: skip
                    print(
                        f"trial {trial + 1:2d}: killed leader {leader}, node {new} leads; "
                        f"first commit {gap * 1000:.0f} ms after the kill"
                        + ("; LEADER CHANGED when the old leader returned" if flip else ""),
                        flush=True,
                    )
            finally:
                ops = load.stop()
            top = max((op.slot or 0 for op in ops), default=0)
            nodes.wait_converged(timeout=30.0, at_least=top)
            result = check(ops, fetch_logs(nodes.urls), require_complete=True)
    gaps = [t["seconds"] for t in trials]
    summary = {
        "trials": len(gaps),
        "median_s": statistics.median(gaps),
        "max_s": max(gaps),
        "min_s": min(gaps),
        "flip_backs": sum(t["flip_back"] for t in trials),
        "history_check": result.summary(),
        "client_ops": len(ops),
    }
    print(
        f"{len(gaps)} failovers: median {summary['median_s'] * 1000:.0f} ms, "
        f"max {summary['max_s'] * 1000:.0f} ms, min {summary['min_s'] * 1000:.0f} ms; "
        f"flip-backs {summary['flip_backs']}; history: {result.summary()}"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "failover.json").write_text(
            json.dumps({"summary": summary, "trials": trials}, indent=2) + "\n"
        )
    return 0 if result.ok and not summary["flip_backs"] else 1


if __name__ == "__main__":
    sys.exit(main())
