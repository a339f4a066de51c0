"""Measure SQLiteStore: apply throughput per group-commit batch size, read_chosen, open and load.

Run from the repository root::

    python -m bench.storage_bench                 # defaults: a few seconds
    python -m bench.storage_bench --dir /mnt/ssd  # measure a particular disk

Each ``apply`` is one transaction and one fsync, so entries/s grows with the batch size until the
fsync stops dominating; the figures show what group commit buys.  Prints numbers, asserts none.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from paxgos.core import Ballot, Persist
from paxgos.storage import SQLiteStore


def bench_apply(directory: Path, batch: int, batches: int) -> dict[str, float]:
    """``batches`` applies, each accepting ``batch`` new slots and choosing the previous ones
    (the steady state of a follower: accept a window, learn the window before it)."""
    store = SQLiteStore(directory / f"apply-{batch}-{batches}.db", "bench", 0)
    ballot = Ballot(1, 0)
    latencies = []
    slot = 1
    store.apply([Persist(promised=ballot, accepted=[(s, ballot, s) for s in range(1, batch + 1)])])
    start = time.perf_counter()
    for _ in range(batches):
        persist = Persist(
            accepted=[(s, ballot, s) for s in range(slot + batch, slot + 2 * batch)],
            chosen=[(s, s) for s in range(slot, slot + batch)],
        )
        t0 = time.perf_counter()
        store.apply([persist])
        latencies.append(time.perf_counter() - t0)
        slot += batch
    elapsed = time.perf_counter() - start
    store.close()
    latencies.sort()
    return {
        "entries_per_s": 2 * batch * batches / elapsed,
        "batches_per_s": batches / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def bench_log(directory: Path, slots: int) -> None:
    """Build a log of ``slots`` entries, then time reopening, load and paged reads."""
    path = directory / "log.db"
    store = SQLiteStore(path, "bench", 0)
    chunk = 10_000
    t0 = time.perf_counter()
    for first in range(1, slots + 1, chunk):
        last = min(slots, first + chunk - 1)
        store.apply([Persist(chosen=[(s, s) for s in range(first, last + 1)])])
    build = time.perf_counter() - t0
    store.close()
    size = path.stat().st_size
    print(
        f"log of {slots:,} chosen entries: built in {build:.2f}s "
        f"({slots / build:,.0f} entries/s in batches of {chunk:,}), file {size / 1e6:.1f} MB"
    )

    for check in (True, False):
        t0 = time.perf_counter()
        store = SQLiteStore(path, "bench", 0, quick_check=check)
        opened = time.perf_counter() - t0
        t0 = time.perf_counter()
        state = store.load()
        loaded = time.perf_counter() - t0
        if check:
            store.close()
        print(
            f"  open (quick_check={check!s:5}): {1000 * opened:7.1f} ms   "
            f"load: {1000 * loaded:6.1f} ms (commit {state.commit:,})"
        )

    pages = 0
    t0 = time.perf_counter()
    slot = 1
    while True:
        page = store.read_chosen(slot, 1000)
        if not page:
            break
        pages += 1
        slot = page[-1][0] + 1
    elapsed = time.perf_counter() - t0
    print(
        f"  read_chosen, pages of 1000: {pages / elapsed:,.0f} pages/s "
        f"({(slot - 1) / elapsed:,.0f} entries/s)"
    )
    t0 = time.perf_counter()
    n = 2000
    for i in range(n):
        store.read_chosen(1 + (i * 7919) % slots, 100)
    print(f"  read_chosen(random slot, 100): {1e6 * (time.perf_counter() - t0) / n:.0f} us each")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="directory for the files (default: a temp dir)")
    parser.add_argument("--seconds", type=float, default=1.5, help="time per batch size")
    parser.add_argument("--log", type=int, default=200_000, help="slots in the read/open test")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="paxgos-storage-bench-") as tmp:
        directory = Path(tmp)
        print(f"SQLiteStore on {directory} (WAL, synchronous=FULL: one fsync per apply)")
        header = ("batch (acc+chosen)", "entries/s", "applies/s", "p50", "p99")
        print("{:>20} {:>12} {:>10} {:>8} {:>8}".format(*header))
        for batch in (1, 10, 100, 500, 2000):
            # Calibrate the number of applies to roughly args.seconds.
            probe = bench_apply(directory, batch, 5)
            batches = max(5, int(args.seconds * probe["batches_per_s"]))
            r = bench_apply(directory, batch, batches)
            print(
                f"{f'{batch}+{batch}':>20} {r['entries_per_s']:>12,.0f} "
                f"{r['batches_per_s']:>10,.0f} {r['p50_ms']:>6.2f}ms {r['p99_ms']:>6.2f}ms"
            )
        bench_log(directory, args.log)


if __name__ == "__main__":
    main()
