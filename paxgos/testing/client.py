"""A recording client: proposes values over HTTP and writes down what it was told.

Tests and the nemesis drive real clusters with it; every proposal becomes an ``Op`` in a
``History`` with the outcome a careful user would conclude from the answer:

- ``200 CommandID: n, Value v`` (v the value sent) → ``ok`` at slot n;
- an answer that says the value was not proposed (400, 404, 503 "no leader"/"overloaded", a
  redirect, connection refused: nothing was sent) → ``fail``;
- anything else (504, a 503 after leadership was lost, a timeout, a reset connection, a 200 with
  an unexpected body) → ``unknown``: the value may or may not be in the log.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
from collections.abc import Callable

from paxgos.check.model import FAIL, OK, UNKNOWN, Op
from paxgos.check.record import History
from paxgos.testing.http import http_get

COMMIT_LINE = re.compile(r"CommandID: (\d+), Value (-?\d+)\n?")


def classify(status: int, body: str, value: int) -> tuple[str, int | None]:
    """The outcome and slot a client concludes from an HTTP answer to ``/propose/<value>``."""
    if status == 200:
        match = COMMIT_LINE.fullmatch(body)
        if match and int(match.group(2)) == value:
            return OK, int(match.group(1))
        return UNKNOWN, None
    if status == 503 and "outcome unknown" in body:
        return UNKNOWN, None
    if status in (307, 400, 404, 405, 503):
        return FAIL, None
    return UNKNOWN, None


def retry_after(header: str | None, most: float = 1.0, default: float = 0.05) -> float:
    """Seconds to wait before retrying a 503: its ``Retry-After`` (at most ``most``), else
    ``default``."""
    try:
        return min(most, max(0.0, float(header))) if header else default
    except ValueError:
        return default


def ask(url: str, value: int, timeout: float = 10.0) -> tuple[str, int | None, str, dict[str, str]]:
    """``GET url``, a URL that proposes ``value`` (redirects not followed): outcome, slot, the
    answer (status and first line) and its headers (none when no answer came)."""
    try:
        status, headers, body = http_get(url, timeout)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return FAIL, None, "connection refused", {}  # nothing was sent
        return UNKNOWN, None, str(exc.reason), {}
    except OSError as exc:  # timeouts, resets after the request went out
        return UNKNOWN, None, str(exc), {}
    outcome, slot = classify(status, body, value)
    return outcome, slot, f"{status} {body.strip()}", headers


def propose(
    url: str, value: int, timeout: float = 10.0, follow: bool = False
) -> tuple[str, int | None, str]:
    """``GET url/propose/value``: outcome, slot and the answer (status and first line).  With
    ``follow``, a 307 to the leader is followed once (a follower proposed nothing, so asking
    the leader is the same proposal, not a second one)."""
    outcome, slot, answer, headers = ask(f"{url}/propose/{value}", value, timeout)
    location = headers.get("Location")
    if follow and answer.startswith("307 ") and location:
        outcome, slot, answer, _ = ask(location, value, timeout)
    return outcome, slot, answer


class LoadClients:
    """``threads`` clients proposing distinct values to ``url()`` until ``stop()``.

    ``url`` is called before each proposal, so a test can point the clients elsewhere mid-run;
    with ``follow`` they follow a redirect to the leader (and so may be pointed at any node).
    Values are ``base + client * 10**9 + n`` and so never repeat within a run.
    """

    def __init__(
        self,
        url: Callable[[], str],
        history: History,
        threads: int = 8,
        base: int = 1_000_000_000_000,
        timeout: float = 10.0,
        pause: float = 0.0,
        follow: bool = False,
    ):
        self.url = url
        self.follow = follow
        self.history = history
        self.timeout = timeout
        self.pause = pause
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i, base), daemon=True) for i in range(threads)
        ]

    def start(self) -> LoadClients:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> list[Op]:
        """Stop proposing, wait for the proposals in flight, and return the whole history."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.history.ops

    def _run(self, client: int, base: int) -> None:
        for n in range(10**9):
            if self._stop.is_set():
                return
            value = base + client * 10**9 + n
            start = time.time()
            outcome, slot, _ = propose(self.url(), value, self.timeout, self.follow)
            self.history.record(f"c{client}", value, start, time.time(), outcome, slot)
            if outcome != OK:
                time.sleep(0.05)  # no busy loop against a node that is down
            elif self.pause:
                time.sleep(self.pause)
