"""Fetching committed logs from live nodes over HTTP (synchronous, standard library only).

A node pages its log on ``GET /?from=<slot>&limit=<n>`` with ``Accept: application/json``::

    {"node": 0, "commit_index": 12, "from": 1, "limit": 1000,
     "entries": [{"slot": 1, "value": 5}, {"slot": 2, "value": null}], "next": 13}

``next`` is the ``from`` to ask for next, or null once the page reached the end of the log.
:func:`fetch_log` follows it; the loop is bounded (an empty page or null ``next`` ends it, a
``next`` that does not move forward or too many pages is an error).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from paxgos.check.model import HistoryError

Log = list[tuple[int, int | None]]

DEFAULT_MAX_PAGES = 100_000


class FetchError(HistoryError):
    """A node could not be reached, or answered something that is not a log page."""


def _get_page(url: str, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        # Not urlopen's shared opener: from Python 3.12 on, it fixes the trusted CAs when first
        # used, and SSL_CERT_FILE may name another CA by now.
        with urllib.request.build_opener().open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        raise FetchError(f"GET {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"GET {url}: {reason}") from None
    try:
        page = json.loads(body)
    except ValueError:
        raise FetchError(f"GET {url}: answer is not JSON: {body[:80]!r}") from None
    if not isinstance(page, dict) or not isinstance(page.get("entries"), list):
        raise FetchError(f"GET {url}: answer has no 'entries' list")
    return page


def fetch_log(
    base_url: str,
    page: int = 10000,
    timeout: float = 5.0,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> Log:
    """Fetch a node's whole committed log as ``(slot, value)`` pairs, ``page`` entries a request.

    Raises :class:`FetchError` when the node is unreachable, answers an error or malformed
    JSON, does not move forward, or needs more than ``max_pages`` pages.
    """
    if page < 1:
        raise ValueError("page must be >= 1")
    base = base_url.rstrip("/")
    log: Log = []
    start = 1
    for _ in range(max_pages):
        url = f"{base}/?from={start}&limit={page}"
        answer = _get_page(url, timeout)
        entries = answer["entries"]
        for e in entries:
            if not isinstance(e, dict) or "slot" not in e:
                raise FetchError(f"GET {url}: malformed entry {e!r}")
            log.append((e["slot"], e.get("value")))
        nxt = answer.get("next")
        if not entries or nxt is None:
            return log
        if type(nxt) is not int or nxt <= start:
            raise FetchError(f"GET {url}: 'next' {nxt!r} does not move past from={start}")
        start = nxt
    raise FetchError(f"{base}: log not finished after {max_pages} pages of {page}")


def fetch_logs(
    urls: Iterable[str],
    page: int = 10000,
    timeout: float = 5.0,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> dict[int, Log]:
    """Fetch every node's log; keyed by the node's index in ``urls`` (node i at ``urls[i]``)."""
    return {
        i: fetch_log(url, page=page, timeout=timeout, max_pages=max_pages)
        for i, url in enumerate(urls)
    }
