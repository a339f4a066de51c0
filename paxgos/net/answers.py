"""What a client is told: the outcome of a proposal as a status code and one line of text or JSON.

Shared by ``/propose`` (``paxgos.net.fastpath``), ``/autopropose`` and every error answer of the
handlers, so the same outcome always reads the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from paxgos.core import Abandoned, Committed, Outcome, Rejected
from paxgos.core.messages import INT64_MAX, INT64_MIN
from paxgos.net.host import NodeHost, StorageFailed

CANONICAL = re.compile(r"0|-?[1-9][0-9]*")
"""The one way an integer is written in a path or a query: as ``str(int)`` writes it, decimal
digits with an optional leading ``-``; no ``+``, no leading zeros, no ``-0``, no spaces."""
CANONICAL_RULE = "decimal digits, an optional leading '-', no '+', no leading zeros, no '-0'"

#: The longest canonical signed 64-bit integer, ``-9223372036854775808``: anything longer is
#: out of range before ``int()`` (which refuses more than 4,300 digits) is asked.
INT64_CHARS = len(str(INT64_MIN))


class BadValue(ValueError):
    """A proposed value that is not a signed 64-bit integer; the text says why."""


def parse_int(raw: str, what: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """``raw``, written canonically (``CANONICAL``), as an integer in ``[low, high]``; else
    ``BadValue`` with a one-line reason that names ``what`` (``value``, ``query parameter
    limit``) and says which rule ``raw`` broke."""
    shown = repr(raw) if len(raw) <= 40 else f"{raw[:20]!r}... ({len(raw)} characters)"
    if not CANONICAL.fullmatch(raw):
        raise BadValue(f"{what} {shown} is not a canonical integer ({CANONICAL_RULE})")
    if len(raw) > INT64_CHARS or not low <= int(raw) <= high:
        span = (
            "the signed 64-bit range"
            if (low, high) == (INT64_MIN, INT64_MAX)
            else f"[{low}, {high}]"
        )
        raise BadValue(f"{what} {shown} is outside {span}")
    return int(raw)


def parse_int64(raw: str) -> int:
    """A proposed value: ``raw`` as a signed 64-bit integer (``parse_int``), or ``BadValue``."""
    if raw == "":
        raise BadValue("missing value: use /propose/<64-bit integer>")
    return parse_int(raw, "value")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, the one line it says, and the headers it needs."""

    status: int
    line: str
    command_id: int | None = None
    value: int | None = None
    retry_after: int | None = None
    location: str | None = None
    allow: str | None = None  # a 405's methods

    def body(self, as_json: bool) -> bytes:
        """The body, newline-terminated: the line, or a JSON object."""
        if as_json:
            fields: dict[str, Any]
            if self.command_id is not None:
                fields = {"command_id": self.command_id, "value": self.value}
            else:
                fields = {"error": self.line}
            return (json.dumps(fields) + "\n").encode()
        if self.command_id is not None:
            return (self.line + "\n").encode()
        return f"error: {self.line}\n".encode()

    def headers(self, as_json: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json" if as_json else "text/plain; charset=utf-8"}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.location is not None:
            headers["Location"] = self.location
        if self.allow is not None:
            headers["Allow"] = self.allow
        return headers


def error(status: int, message: str, retry_after: int | None = None) -> Answer:
    """An error answer; ``message`` is folded onto one line."""
    return Answer(status, " ".join(message.split()), retry_after=retry_after)


def not_leader(host: NodeHost, uri: str, leader: int | None = None) -> Answer:
    """307 to the leader (``leader``, else the one this node knows of), or 503 if none."""
    node = host.node
    if leader is None:
        leader = node.leader()
    if leader is None or leader == node.id:
        return error(503, "no leader is known right now; retry shortly", retry_after=1)
    return Answer(
        307,
        f"node {node.id} is not the leader; ask node {leader}",
        location=host.urls[leader] + uri,
    )


def outcome_answer(host: NodeHost, result: Outcome | BaseException, uri: str) -> Answer:
    """The answer to a proposal that ended with ``result`` (an outcome or an exception)."""
    if isinstance(result, Committed):
        return Answer(
            200,
            f"CommandID: {result.slot}, Value {result.value}",
            command_id=result.slot,
            value=result.value,
        )
    if isinstance(result, Rejected):
        if result.reason == "overloaded":
            return error(503, "leader overloaded: too many proposals queued", retry_after=1)
        return not_leader(host, uri, result.leader)
    if isinstance(result, Abandoned):
        return error(
            503,
            f"leadership lost while slot {result.slot} was in flight; outcome unknown: "
            "the value may still be chosen",
            retry_after=1,
        )
    if isinstance(result, TimeoutError):
        return error(
            504,
            f"no majority answered within {host.request_timeout:g}s; outcome unknown: "
            "the value may still be chosen",
        )
    if isinstance(result, StorageFailed):
        return error(503, f"{result}; outcome unknown", retry_after=5)
    return error(500, f"internal error ({type(result).__name__}); outcome unknown")
