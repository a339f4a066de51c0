"""What the metrics and the event log add to a node's hot path, per operation, in this process.

    python -m bench.hot_path [--repeat 200000]

The operations ``GET /metrics`` and ``GET /events`` rely on, timed one by one with ``timeit``
(the best of five runs, less an empty call): a bucket count (``Buckets.observe``, one per
committed proposal, fsync and peer answer), the clock read of a round trip, the per-peer
counters and the event log's test when nothing watches (one per message), the outcome
bookkeeping of a committed proposal (its waiter's arrival time, its outcome's count), and what
a watched node pays per message and per recorded message.  Multiply by the operations a second
(``paxgos_client_requests_total``, ``paxgos_peer_messages_sent_total``) for a node's share.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable

from paxgos.core.ballot import Ballot
from paxgos.core.messages import Accept, Accepted
from paxgos.net.events import EventLog
from paxgos.net.metrics import Buckets


def cost(call: Callable[[], object], repeat: int) -> float:
    """Microseconds per ``call()``, less an empty call's."""
    best = min(timeit.repeat(call, number=repeat, repeat=5))
    empty = min(timeit.repeat(lambda: None, number=repeat, repeat=5))
    return (best - empty) / repeat * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200_000)
    args = parser.parse_args(argv)
    n = args.repeat
    buckets = Buckets()
    events = EventLog(0)
    sent = [0] * 5
    counts = {"committed": 0}
    waiters: dict[int, tuple[Callable[[object], None], float]] = {}

    def per_message() -> None:  # Transport.send's additions, nobody watching
        sent[1] += 1
        if events is not None and events.on:
            pass

    def per_outcome() -> None:  # NodeHost._complete's additions for one committed proposal
        waiters[1] = (print, 1.0)
        done, arrived = waiters.pop(1)
        counts["committed"] += 1
        buckets.observe(2.0 - arrived)

    def waiter_only() -> None:  # what _complete did before: a plain callback per waiter
        waiters[1] = print  # type: ignore[assignment]
        waiters.pop(1)

    ballot = Ballot(1, 0)
    accept = Accept(0, ballot, 1, (1, 2, 3), 0)
    reply = Accepted(1, ballot, 1, 3, True, ballot)
    skipped = Accept(0, ballot, 4, (4,), 3)
    results = {
        "Buckets.observe": cost(lambda: buckets.observe(0.0123), n),
        "time.monotonic (a round trip's start)": cost(time.monotonic, n),
        "per message, unwatched": cost(per_message, n),
        "per committed proposal": cost(per_outcome, n) - cost(waiter_only, n),
    }
    events.watch(time.monotonic())
    events.sent(1, accept)  # sampled: its sends and answers are recorded
    events.sent(1, skipped)  # within the gap: counted only
    results["per message, watched, not sampled"] = cost(lambda: events.sent(2, skipped), n)
    results["per recorded message"] = cost(lambda: events._record(1, 0, 1, accept), n // 10)
    results["per recorded answer"] = cost(lambda: events.answered(2, accept, reply), n // 10)
    for name, micros in results.items():
        print(f"{name:40} {micros:6.3f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
