"""Deterministic simulation of the Paxgos core: many nodes, one seed, every fault, every check.

N copies of the pure ``paxgos.core.Node`` run under a seeded scheduler (``random.Random(seed)``
is the only source of chance, the clock is simulated): the network loses, duplicates, delays
and reorders messages and partitions nodes; nodes crash and restart with only what they
persisted (a ``MemoryStore`` each); clients propose and wait.  Safety is checked after every
step, liveness once the faults heal (``paxgos.sim.invariants``).  A violation prints the seed, the
step, the invariant, the last events and the command that replays it.

Modules: ``options`` (a run's knobs), ``scheduler`` (clock and event queue), ``network``
(message faults, partitions), ``clients`` (proposers), ``checker`` (the invariants),
``simulation`` (the host and the run), ``trace`` (what happened lately), ``faulty`` (broken
nodes that prove the checks bite), ``hostile`` (forged messages the core must shrug off),
``cli`` (the command).

Commands::

    python -m paxgos.sim --seeds 1000 --jobs 2            # what CI runs (tests/test_sim.py)
    python -m paxgos.sim --seed 42 --trace                # replay one seed, every event
    python -m paxgos.sim --seeds 20000 --first 1000 --steps 10000 --jobs 2 --keep-going -v
                                                          # a long soak
    python -m paxgos.sim --seeds 200 --faulty noop-fill-leader   # watch a broken leader fail
    python -m paxgos.sim --seeds 500 --hostile 0.02 --jobs 2      # forgeries the bounds refuse
"""

from paxgos.sim.cli import run_seeds
from paxgos.sim.invariants import InvariantChecker, Violation
from paxgos.sim.options import SimOptions
from paxgos.sim.simulation import RunResult, Simulation, run_seed

__all__ = [
    "InvariantChecker",
    "RunResult",
    "SimOptions",
    "Simulation",
    "Violation",
    "run_seed",
    "run_seeds",
]
