"""Helpers shared by the benchmark scripts: process CPU and memory, the host's speed, and filling
a log fast."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paxgos.procs import LocalNodes  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reference_loop_ms() -> float:
    """CPU milliseconds this thread spends on a fixed piece of pure-Python work (about 1 ms on
    a quiet core here).  It counts CPU time, not waiting for a core, so on a busy machine it
    still measures how fast the core runs: on a shared host (a neighbour on the sibling
    hyperthread, frequency changes) it varies, and so does everything else the run measures."""
    start = time.thread_time()
    total = 0
    for k in range(20_000):
        total += k * k
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
