"""The ``python -m paxgos.sim`` command: run many seeds (in parallel), report, replay one.

stdout is a pure function of the options: per-seed summaries (``--verbose`` or ``--seed``),
violation reports, and a final tally; wall-clock timings go to stderr.  Exit status 1 means a
violation was found.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterable, Iterator, Sequence

from paxgos.sim.faulty import VARIANTS
from paxgos.sim.options import SimOptions
from paxgos.sim.simulation import RunResult, run_seed


def _run(job: tuple[int, SimOptions]) -> RunResult:
    seed, options = job
    return run_seed(seed, options)


def run_seeds(
    seeds: Iterable[int], options: SimOptions, jobs: int = 1, keep_going: bool = False
) -> Iterator[RunResult]:
    """Results in seed order; stops after the first violation unless ``keep_going``."""
    work = [(seed, options) for seed in seeds]
    if jobs <= 1 or len(work) <= 1:
        for job in work:
            result = _run(job)
            yield result
            if not result.ok and not keep_going:
                return
        return
    chunk = max(1, min(16, len(work) // (jobs * 8)))
    # "spawn": a forked child of a process with threads (a test runner, say) can inherit a lock
    # some other thread held, and hang.
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for result in pool.imap(_run, work, chunksize=chunk):
            yield result
            if not result.ok and not keep_going:
                break  # leaving the with-block terminates the workers


def _parser() -> argparse.ArgumentParser:
    d = SimOptions()
    p = argparse.ArgumentParser(
        prog="python -m paxgos.sim",
        description="Deterministic simulation of the Paxgos core under faults.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, help="run (replay) this one seed, verbosely")
    which.add_argument("--seeds", type=int, default=100, help="seeds to run (default 100)")
    p.add_argument("--first", type=int, default=0, help="first seed of --seeds (default 0)")
    p.add_argument("--steps", type=int, default=d.steps, help="steps with faults per seed")
    p.add_argument("--nodes", type=int, default=d.nodes)
    p.add_argument("--clients", type=int, default=d.clients)
    p.add_argument("--drop", type=float, default=d.drop, help="message loss probability")
    p.add_argument("--dup", type=float, default=d.dup, help="message duplication probability")
    p.add_argument("--delay", type=float, default=d.delay, help="long-delay probability")
    p.add_argument("--partition", type=float, default=d.partition, help="per-step probability")
    p.add_argument("--crash", type=float, default=d.crash, help="per-step probability")
    p.add_argument("--max-down", type=int, default=d.max_down, help="most nodes down at once")
    p.add_argument(
        "--lost", type=int, default=d.lost, help="nodes (a minority) failing for good at the heal"
    )
    p.add_argument(
        "--hostile", type=float, default=d.hostile, help="per-step probability of a forgery"
    )
    p.add_argument(
        "--pause", type=float, default=d.pause, help="per-step probability of a process pause"
    )
    p.add_argument(
        "--client-timeout", type=float, default=d.client_timeout, help="client patience (s)"
    )
    p.add_argument("--heal-time", type=float, default=d.heal_time, help="liveness bound (s)")
    p.add_argument("--faulty", choices=sorted(VARIANTS), help="run a deliberately broken node")
    p.add_argument("--trace-lines", type=int, default=d.trace_lines)
    p.add_argument("--trace", action="store_true", help="print every event (with --seed)")
    p.add_argument("--jobs", "-j", type=int, default=1, help="worker processes")
    p.add_argument("--keep-going", action="store_true", help="do not stop at the first failure")
    p.add_argument("--verbose", "-v", action="store_true", help="a summary line per seed")
    return p


def options_from(ns: argparse.Namespace) -> SimOptions:
    if ns.nodes < 1:
        raise SystemExit("--nodes must be at least 1")
    return SimOptions(
        steps=ns.steps,
        nodes=ns.nodes,
        clients=ns.clients,
        drop=ns.drop,
        dup=ns.dup,
        delay=ns.delay,
        partition=ns.partition,
        crash=ns.crash,
        max_down=ns.max_down,
        lost=ns.lost,
        hostile=ns.hostile,
        pause=ns.pause,
        client_timeout=ns.client_timeout,
        heal_time=ns.heal_time,
        faulty=ns.faulty,
        trace_lines=ns.trace_lines,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    options = options_from(ns)
    started = time.perf_counter()
    if ns.seed is not None:
        result = run_seed(ns.seed, options, sys.stdout if ns.trace else None)
        print(result.summary())
        if not result.ok:
            print(result.report)
        return 0 if result.ok else 1
    seeds = range(ns.first, ns.first + ns.seeds)
    failed: list[int] = []
    count = steps = 0
    for result in run_seeds(seeds, options, ns.jobs, ns.keep_going):
        count += 1
        steps += result.steps
        if ns.verbose:
            print(result.summary())
        if not result.ok:
            failed.append(result.seed)
            print(result.report)
    wall = time.perf_counter() - started
    print(f"{count} seeds, {steps} steps: " + (f"FAILED {failed}" if failed else "all ok"))
    print(f"{wall:.1f}s wall, {steps / max(wall, 1e-9):.0f} steps/s", file=sys.stderr)
    return 1 if failed else 0
