"""The checker's data: client operations, violations, check results, and their JSON forms.

An :class:`Op` is one proposal as a client saw it. Its outcome is one of:

- ``"ok"``: the client was told ``CommandID: <slot>``; ``slot`` holds that number;
- ``"fail"``: the value was definitely not proposed (400, a redirect not followed, 503);
- ``"unknown"``: timeout, 504 or connection error; the value may or may not be in the log.

A node's log is a list of ``(slot, value)`` pairs in increasing slot order, ``value`` ``None``
for a no-op; :data:`Logs` maps node id to log.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"
OUTCOMES = (OK, UNKNOWN, FAIL)

AGREEMENT = "agreement"
VALIDITY = "validity"
DURABILITY = "durability"
UNIQUENESS = "uniqueness"
REALTIME = "realtime"

NodeId = int | str
Entry = tuple[int, int | None]
Logs = Mapping[NodeId, Sequence[Entry]]

_TIME_TYPES = (float, int)
_NOT_OK = (UNKNOWN, FAIL)

# The summary lists at most this many violations; the result keeps them all.
SUMMARY_LIMIT = 50


class HistoryError(ValueError):
    """The input is malformed (not a history the checker can judge)."""


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_time(x: object) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


@dataclass(frozen=True)
class Op:
    """One proposal of ``value`` by ``client``, from ``start`` to ``end`` (seconds, one clock)."""

    client: str
    value: int
    start: float
    end: float
    outcome: str
    slot: int | None = None

    def __post_init__(self) -> None:
        # The common case in exact types, cheaply (a history holds ~10^5 ops); anything else
        # goes through the full validation below, which names what is wrong.
        start, end, slot = self.start, self.end, self.slot
        if (
            type(self.client) is str
            and type(self.value) is int
            and type(start) in _TIME_TYPES
            and type(end) in _TIME_TYPES
            and start <= end
            and math.isfinite(start)
            and math.isfinite(end)
            and (
                (self.outcome == OK and type(slot) is int and slot >= 1)
                or (self.outcome in _NOT_OK and (slot is None or type(slot) is int))
            )
        ):
            return
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.client, str):
            raise HistoryError(f"op client must be a string, got {self.client!r}")
        if not _is_int(self.value):
            raise HistoryError(f"op value must be an integer, got {self.value!r}")
        if not _is_time(self.start) or not _is_time(self.end):
            raise HistoryError(f"op times must be numbers, got {self.start!r}..{self.end!r}")
        if self.end < self.start:
            raise HistoryError(f"op ends before it starts: {self.start!r}..{self.end!r}")
        if self.outcome not in OUTCOMES:
            raise HistoryError(f"op outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.outcome == OK:
            if not _is_int(self.slot) or self.slot < 1:  # type: ignore[operator]
                raise HistoryError(f"an ok op needs a slot >= 1, got {self.slot!r}")
        elif self.slot is not None and not _is_int(self.slot):
            raise HistoryError(f"op slot must be an integer or null, got {self.slot!r}")

    def to_dict(self) -> dict[str, Any]:
        """The op as one JSON Lines record."""
        return {
            "client": self.client,
            "value": self.value,
            "start": self.start,
            "end": self.end,
            "outcome": self.outcome,
            "slot": self.slot,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Op:
        """Build an op from a record; raises :class:`HistoryError` when it is malformed."""
        if type(d) is not dict and not isinstance(d, Mapping):
            raise HistoryError(f"an op must be a JSON object, got {type(d).__name__}")
        try:
            return cls(
                client=d["client"],
                value=d["value"],
                start=d["start"],
                end=d["end"],
                outcome=d["outcome"],
                slot=d.get("slot"),
            )
        except KeyError as e:
            raise HistoryError(f"op lacks field {e.args[0]!r}") from None

    def describe(self) -> str:
        """A short name for messages: client, value, outcome, slot and time window."""
        told = f" slot {self.slot}" if self.outcome == OK else ""
        return (
            f"{self.client}:{self.value} ({self.outcome}{told}, {self.start:.6f}..{self.end:.6f})"
        )


@dataclass(frozen=True)
class Violation:
    """One broken property, with a one-line message and the offending entries in ``details``."""

    property: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"property": self.property, "message": self.message, "details": self.details}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Violation:
        return cls(str(d["property"]), str(d["message"]), dict(d.get("details") or {}))

    def __str__(self) -> str:
        return f"[{self.property}] {self.message}"


@dataclass
class CheckResult:
    """The verdict: every violation found, and counts of what was checked."""

    violations: list[Violation] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_property(self) -> dict[str, list[Violation]]:
        """Violations grouped by property name, in the order found."""
        out: dict[str, list[Violation]] = {}
        for v in self.violations:
            out.setdefault(v.property, []).append(v)
        return out

    def summary(self, limit: int = SUMMARY_LIMIT) -> str:
        """Human-readable: one OK line, or a FAIL line followed by (up to ``limit``) violations."""
        s = self.stats
        scope = (
            f"{s.get('ops', 0)} ops ({s.get('ok', 0)} ok, {s.get('unknown', 0)} unknown, "
            f"{s.get('fail', 0)} fail), {s.get('nodes', 0)} nodes, {s.get('slots', 0)} slots"
        )
        if self.ok:
            return f"OK: {scope}"
        counts = ", ".join(f"{p}: {len(vs)}" for p, vs in self.by_property().items())
        lines = [f"FAIL: {len(self.violations)} violations ({counts}) in {scope}"]
        lines += [f"  {v}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stats": dict(self.stats),
            "violations": [v.to_dict() for v in self.violations],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckResult:
        return cls(
            violations=[Violation.from_dict(v) for v in d.get("violations", [])],
            stats={str(k): int(v) for k, v in (d.get("stats") or {}).items()},
        )

    @classmethod
    def from_json(cls, text: str) -> CheckResult:
        return cls.from_dict(json.loads(text))
