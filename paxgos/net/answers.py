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

INTEGER = re.compile(r"-?[0-9]+")
"""A decimal integer as clients may write it (no sign but minus, no spaces)."""


class BadValue(ValueError):
    """A proposed value that is not a signed 64-bit integer; the text says why."""


def parse_int64(raw: str) -> int:
    """``raw`` as a signed 64-bit integer, or ``BadValue`` with a one-line reason."""
    if raw == "":
        raise BadValue("missing value: use /propose/<64-bit integer>")
    if len(raw) > 40 or not INTEGER.fullmatch(raw):
        raise BadValue(f"value {raw[:40]!r} is not an integer")
    value = int(raw)
    if not INT64_MIN <= value <= INT64_MAX:
        raise BadValue(f"value {raw} is outside the signed 64-bit range")
    return value


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
