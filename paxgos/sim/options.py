"""The knobs of one simulated run (``SimOptions``) and their command-line rendering.

Everything that shapes a run lives here, so that a run is a pure function of ``(options, seed)``
and a failing run can print the exact command that replays it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SimOptions:
    """One run's shape; rates are probabilities (per message for the network, per step for
    the nemesis that crashes nodes and cuts the network)."""

    #: Simulated events (message deliveries, ticks, client proposals) before faults stop and the
    #: liveness phase begins.
    steps: int = 3000
    nodes: int = 3
    clients: int = 3
    #: Probability that a message between two nodes is lost.
    drop: float = 0.05
    #: Probability that a message is delivered twice.
    dup: float = 0.03
    #: Probability that a message takes a long detour (20-600 ms), which reorders it.
    delay: float = 0.05
    #: Probability per step that the network is partitioned (if it is not already).
    partition: float = 0.002
    #: Probability per step that a node crashes (it restarts 20-800 ms later).
    crash: float = 0.003
    #: Probability per step that a node (the leader, seven times in ten) is paused for
    #: 0.3-2 s, as by SIGSTOP or a blocked event loop: it handles nothing meanwhile, and on
    #: resume handles what reached it in arrival order, before its next tick.
    pause: float = 0.0
    #: Simulated seconds a client waits for an answer before it tries another node.
    client_timeout: float = 2.0
    #: Most nodes down at once (``None``: all but one).
    max_down: int | None = None
    #: Nodes (at most a minority, the leader among the candidates) that fail for good when the
    #: faults stop: the rest must finish every proposal and converge without them.
    lost: int = 0
    #: Probability per step that the nemesis forges a message (``paxgos.sim.hostile``).
    hostile: float = 0.0
    #: Simulated seconds the healed cluster gets to finish every proposal and converge.
    heal_time: float = 15.0
    #: Name of a deliberately broken node variant from ``paxgos.sim.faulty`` (tests only).
    faulty: str | None = None
    #: Trace entries kept for a violation report.
    trace_lines: int = 60

    def args(self) -> list[str]:
        """The command-line options that rebuild these options (defaults omitted)."""
        out: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out += [f"--{f.name.replace('_', '-')}", str(value)]
        return out
