"""The nemesis: random faults on a cluster of real node processes while clients propose.

At every step it heals what it broke last time and breaks something new, never more than a
minority at once: SIGSTOP one or two nodes (the leader included), slow them through their fault
control, or ``kill -9`` one and restart it with the same command and data dir.  ``run_nemesis``
wraps a whole experiment: start recording clients, let the nemesis loose, heal everything, wait
for the nodes to converge, and check the clients' history against every node's log.  A failing
run leaves its history, the nodes' logs and the nemesis' own log in the work directory, for
replay with ``python -m paxgos.check --ops ops.jsonl --logs logs.json --complete``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from paxgos.check import CheckResult, History, check, dump_logs, dump_ops, fetch_logs
from paxgos.testing.client import LoadClients
from paxgos.testing.procs import LocalNodes


@dataclass
class Nemesis:
    """Breaks a minority of ``nodes`` at random; ``heal`` undoes everything it did."""

    nodes: LocalNodes
    rng: random.Random
    kill: bool = True
    slow_ms: int = 300
    paused: set[int] = field(default_factory=set)
    slowed: set[int] = field(default_factory=set)
    killed: set[int] = field(default_factory=set)
    log: list[str] = field(default_factory=list)

    def _note(self, text: str) -> None:
        self.log.append(f"{time.time():.3f} {text}")

    def heal(self) -> None:
        for i in sorted(self.paused):
            self.nodes.resume(i)
            self._note(f"SIGCONT node {i}")
        for i in sorted(self.slowed):
            self.nodes.control(i, "/fault/heal")
            self._note(f"heal node {i}")
        for i in sorted(self.killed):
            self.nodes.start(i)
            self._note(f"restarted node {i}")
        self.paused.clear()
        self.slowed.clear()
        self.killed.clear()

    def step(self) -> None:
        """Heal the last fault, then inject a new one on a random minority."""
        self.heal()
        minority = (self.nodes.count - 1) // 2
        victims = self.rng.sample(range(self.nodes.count), self.rng.randint(1, minority))
        actions = ["pause", "slow", "none"] + (["kill"] if self.kill else [])
        action = self.rng.choice(actions)
        if action == "pause":
            for i in victims:
                self.nodes.pause(i)
                self.paused.add(i)
        elif action == "slow":
            for i in victims:
                self.nodes.control(i, f"/fault/slow?ms={self.slow_ms}")
                self.slowed.add(i)
        elif action == "kill":
            i = victims[0]
            self.nodes.kill(i)
            self.killed.add(i)
            victims = [i]
        self._note(f"{action} nodes {sorted(victims)}")


def run_nemesis(
    workdir: Path, seed: int, duration: float, interval: float = 1.0, clients: int = 6
) -> CheckResult:
    """One experiment on a fresh 5-node cluster; returns the checker's verdict (files saved in
    ``workdir`` either way)."""
    rng = random.Random(seed)
    rng_clients = random.Random(seed + 1)
    with LocalNodes(5, workdir, ["--request-timeout", "2s"]) as nodes:
        nodes.start()
        # Clients ask any node and follow its redirect: the leader is a victim like the rest.
        load = LoadClients(
            lambda: rng_clients.choice(nodes.urls), History(), clients, timeout=5.0, follow=True
        ).start()
        nemesis = Nemesis(nodes, rng)
        try:
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                nemesis.step()
                time.sleep(rng.uniform(0.5, 1.5) * interval)
        finally:
            nemesis.heal()
            ops = load.stop()
        (workdir / "nemesis.log").write_text("\n".join(nemesis.log) + "\n")
        dump_ops(ops, workdir / "ops.jsonl")
        nodes.wait_converged(timeout=60, at_least=max((op.slot or 0 for op in ops), default=0))
        logs = fetch_logs(nodes.urls)
        dump_logs(logs, workdir / "logs.json")
        result = check(ops, logs, require_complete=True)
        (workdir / "check.txt").write_text(result.summary() + "\n")
        return result
