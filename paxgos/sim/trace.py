"""The run's trace: a ring of the last events, formatted only when someone reads it.

Entries are tuples ``(step, time_us, what, node, peer, payload)``; turning them into text costs
far more than recording them, so it happens only for a violation report or ``--trace``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, TextIO

from paxgos.core.messages import (
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Learn,
    Prepare,
    Promise,
)

Entry = tuple[int, int, str, Any, Any, Any]


def _values(values: tuple[Any, ...], limit: int = 6) -> str:
    shown = ",".join("noop" if v is None else str(v) for v in values[:limit])
    return f"[{shown}{',...' if len(values) > limit else ''}]"


def describe(msg: Any) -> str:
    """A one-line, deterministic description of a message (or any payload)."""
    kind = type(msg)
    if kind is Accept:
        last = msg.first + len(msg.values) - 1
        return (
            f"Accept b={msg.ballot} slots {msg.first}..{last} {_values(msg.values)} "
            f"commit={msg.commit}"
        )
    if kind is Accepted:
        last = msg.first + msg.count - 1
        return f"Accepted b={msg.ballot} slots {msg.first}..{last} ok={msg.ok} p={msg.promised}"
    if kind is Prepare:
        return f"Prepare b={msg.ballot} from={msg.from_slot}"
    if kind is Promise:
        acc = " ".join(f"{s}:{b}={'noop' if v is None else v}" for s, b, v in msg.accepted[:6]) + (
            " ..." if len(msg.accepted) > 6 else ""
        )
        return f"Promise b={msg.ballot} ok={msg.ok} p={msg.promised} commit={msg.commit} [{acc}]"
    if kind is Learn:
        return f"Learn b={msg.ballot} commit={msg.commit}"
    if kind is CatchupRequest:
        return f"CatchupRequest from={msg.from_slot} limit={msg.limit}"
    if kind is CatchupReply:
        span = f"{msg.entries[0][0]}..{msg.entries[-1][0]}" if msg.entries else "none"
        return f"CatchupReply entries {span} commit={msg.commit}"
    return str(msg)


def format_entry(entry: Entry) -> str:
    step, time_us, what, node, peer, payload = entry
    head = f"{step:>7} {time_us / 1000:>10.3f}ms {what:<9}"
    if what in ("deliver", "lost", "cut", "down"):
        return f"{head} {peer}->{node} {describe(payload)}"
    where = "" if node is None else f" n{node}"
    text = "" if payload is None else f" {describe(payload)}"
    return f"{head}{where}{text}"


class Trace:
    """Keeps the last ``size`` entries; with ``out`` it also prints every entry."""

    def __init__(self, size: int, out: TextIO | None = None):
        self.entries: deque[Entry] = deque(maxlen=size)
        self.out = out

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        if self.out is not None:
            print(format_entry(entry), file=self.out)

    def lines(self) -> list[str]:
        return [format_entry(e) for e in self.entries]
