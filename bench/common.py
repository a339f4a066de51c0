"""Helpers shared by the benchmark scripts: process CPU and memory, the host's speed, and filling
a log fast."""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from paxgos.testing.procs import LocalNodes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HostProbe:
    """Times a fixed piece of work in this thread's CPU milliseconds: the host's speed.

    It counts CPU time, not time spent waiting for a core, so even on a busy machine it shows
    how fast the cores run; on a shared host (another tenant on the sibling hyperthread or in
    the shared caches) that varies, and with it everything the benchmark measures.  The work is
    5,000 random lookups in a 300,000-entry dict (tens of MB, like the nodes' and Locust's
    heaps), not a loop that fits in the first-level cache: in a 60 s run under load on our
    2-core machine the same kind of probe (20,000 lookups) correlated with the per-second
    commits at -0.48, a pure arithmetic loop at -0.29.
    """

    def __init__(self, entries: int = 300_000, lookups: int = 5_000, seed: int = 0) -> None:
        self.table = {k: str(k) for k in range(entries)}
        self.keys = random.Random(seed).sample(range(entries), lookups)

    def __call__(self) -> float:
        start = time.thread_time()
        total = 0
        for key in self.keys:
            total += len(self.table[key])
        return (time.thread_time() - start) * 1000


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fill(nodes: LocalNodes, count: int, streams: int = 8, batch: int = 1000) -> float:
    """Commit ``count`` values through ``/autopropose`` from ``streams`` concurrent clients;
    the commits per second it took."""
    calls = -(-count // batch)
    started = time.monotonic()

    def one(_: int) -> None:
        code, _, body = nodes.get(0, f"/autopropose?count={batch}", timeout=60)
        if code != 200 or "error" in body:
            raise RuntimeError(f"autopropose failed: {code} {body[:200]}")

    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(one, range(calls)))
    return calls * batch / (time.monotonic() - started)
