"""The benchmark's phases and the faults they inject into a running cluster.

A run is a list of :class:`Phase` objects played in order against one cluster: each has a name, a
duration, an action at its start and at its end, and optionally an action repeated every few
seconds (the rotating slowed minority). Actions act through :class:`Faults`, which knows the
nodes, draws every random choice from one seeded ``random.Random`` (the same seed picks the same
nodes) and writes down every fault it injects or heals (``events``) for the report.

Any node may lead, so the slowed and stopped minorities are drawn from every node, the leader
included, and the "leader killed" phase ``kill -9``s whichever node leads when it begins and
restarts it on its data when it ends.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from paxgos.testing.procs import LocalNodes

Action = Callable[["Faults"], None]


def _nothing(_: Faults) -> None:
    pass


@dataclass
class Phase:
    """One stretch of the run: ``start`` when it begins, ``tick`` every ``every`` seconds
    after that, ``stop`` when it ends (``fault`` marks a window the plots shade)."""

    name: str
    duration: float
    description: str
    start: Action = _nothing
    stop: Action = _nothing
    tick: Action | None = None
    every: float = 0.0
    fault: bool = False


@dataclass
class FaultEvent:
    """One fault injected or healed, at wall-clock time ``t``."""

    t: float
    action: str  # "slow", "heal", "pause", "resume", "kill", "restart"
    nodes: list[int]
    detail: str = ""


@dataclass
class Faults:
    """Fault actions on ``nodes`` (any of them, the leader included); every choice comes from
    ``rng``."""

    nodes: LocalNodes
    rng: random.Random
    slow_ms: int = 2000
    events: list[FaultEvent] = field(default_factory=list)
    slowed: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    killed: set[int] = field(default_factory=set)

    @property
    def members(self) -> list[int]:
        return list(range(self.nodes.count))

    def leader(self) -> int:
        """The node that leads now (every live node agrees on it)."""
        live = [i for i in self.members if i not in self.killed and i not in self.paused]
        return self.nodes.wait_leader(timeout=10.0, nodes=live)

    def _note(self, action: str, nodes: list[int], detail: str = "") -> None:
        self.events.append(FaultEvent(time.time(), action, sorted(nodes), detail))

    def _post(self, i: int, path: str) -> None:
        code, _, body = self.nodes.control(i, path)
        if code != 200:
            raise RuntimeError(f"node {i}: POST {path} answered {code} {body.strip()}")

    # --- slow ---------------------------------------------------------------------------------

    def slow(self, ids: list[int]) -> None:
        """Delay every protocol message nodes ``ids`` handle by ``slow_ms``."""
        for i in ids:
            self._post(i, f"/fault/slow?ms={self.slow_ms}")
        self.slowed |= set(ids)
        self._note("slow", ids, f"{self.slow_ms} ms")

    def heal_slowed(self) -> None:
        """Remove the delay from every node slowed so far."""
        if not self.slowed:
            return
        ids = sorted(self.slowed)
        for i in ids:
            self._post(i, "/fault/heal")
        self.slowed.clear()
        self._note("heal", ids)

    def slow_random_minority(self, most: int = 2) -> None:
        """Heal the current slowed set, then slow 1..``most`` nodes picked at random, the leader
        among the candidates (a set different from the one just healed, when there is
        another)."""
        previous = set(self.slowed)
        most = max(1, min(most, (self.nodes.count - 1) // 2))
        for _ in range(20):
            ids = sorted(self.rng.sample(self.members, self.rng.randint(1, most)))
            if set(ids) != previous:
                break
        self.heal_slowed()
        self.slow(ids)

    # --- stop ---------------------------------------------------------------------------------

    def pause_random_minority(self, count: int = 2) -> None:
        """SIGSTOP ``count`` nodes picked at random, the leader among the candidates (kept
        below a majority)."""
        count = max(1, min(count, (self.nodes.count - 1) // 2))
        ids = sorted(self.rng.sample(self.members, count))
        for i in ids:
            self.nodes.pause(i)
        self.paused |= set(ids)
        self._note("pause", ids, "SIGSTOP")

    def resume_paused(self) -> None:
        if not self.paused:
            return
        ids = sorted(self.paused)
        for i in ids:
            self.nodes.resume(i)
        self.paused.clear()
        self._note("resume", ids, "SIGCONT")

    def kill_leader(self) -> None:
        """``kill -9`` the node that leads now."""
        i = self.leader()
        self.nodes.kill(i)
        self.killed.add(i)
        self._note("kill", [i], "SIGKILL (the leader)")

    def restart_killed(self) -> None:
        """Restart every killed node on its own data (it rejoins as a follower)."""
        if not self.killed:
            return
        ids = sorted(self.killed)
        for i in ids:
            self.nodes.start(i)
        self.killed.clear()
        self._note("restart", ids)

    def heal_all(self) -> None:
        """Undo every fault still in place (safe to call more than once)."""
        self.resume_paused()
        self.heal_slowed()
        self.restart_killed()


def default_phases(
    healthy: float,
    slowed: float,
    stopped: float,
    healed: float,
    killed: float = 0.0,
    rotate_every: float = 5.0,
    most_slowed: int = 2,
    stop_count: int = 2,
    slow_ms: int = 2000,
) -> list[Phase]:
    """healthy; a random minority slowed (re-drawn every ``rotate_every`` s); a random
    minority SIGSTOPped; healed; the leader killed (restarted at the phase's end).  The leader
    may be among every minority.  A phase of duration 0 is left out."""
    phases = [
        Phase("healthy", healthy, "all nodes up, no injected fault"),
        Phase(
            "slowed",
            slowed,
            f"1 to {most_slowed} random nodes (the leader may be one) answer {slow_ms} ms late "
            f"(POST /fault/slow), a new set every {rotate_every:g} s",
            start=lambda f: f.slow_random_minority(most_slowed),
            tick=lambda f: f.slow_random_minority(most_slowed),
            every=rotate_every,
            stop=Faults.heal_slowed,
            fault=True,
        ),
        Phase(
            "stopped",
            stopped,
            f"{stop_count} random nodes (the leader may be one) SIGSTOPped (LocalNodes.pause)",
            start=lambda f: f.pause_random_minority(stop_count),
            stop=Faults.resume_paused,
            fault=True,
        ),
        Phase("healed", healed, "every fault removed; stopped nodes catch up"),
        Phase(
            "leader killed",
            killed,
            "the leader kill -9ed at the start (another node takes over), restarted on its data "
            "at the end (it rejoins as a follower)",
            start=Faults.kill_leader,
            stop=Faults.restart_killed,
            fault=True,
        ),
    ]
    return [p for p in phases if p.duration > 0]
