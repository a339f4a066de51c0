"""Recording histories and the file formats the checker reads.

- Ops: JSON Lines, one object per op:
  ``{"client": "c1", "value": 42, "start": 1.5, "end": 1.52, "outcome": "ok", "slot": 7}``
  (``slot`` is null or absent unless the outcome is ``"ok"``).
- Logs: one JSON object mapping node id to that node's log, a list of ``[slot, value]`` pairs
  (``{"slot": s, "value": v}`` objects are read too), ``value`` null for a no-op:
  ``{"0": [[1, 42], [2, null]], "1": [[1, 42]]}``. Node ids made of digits are read as ints.

:class:`History` is the recorder clients share: ``record`` is thread-safe and cheap, ``dump``
writes the JSON Lines file.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from paxgos.check.model import HistoryError, NodeId, Op

PathLike = str | os.PathLike[str]


class History:
    """A thread-safe, append-only record of the operations clients performed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: list[Op] = []

    def record(
        self,
        client: str,
        value: int,
        start: float,
        end: float,
        outcome: str,
        slot: int | None = None,
    ) -> Op:
        """Record one operation (validated: raises :class:`HistoryError` if malformed)."""
        op = Op(client, value, start, end, outcome, slot)
        with self._lock:
            self._ops.append(op)
        return op

    def add(self, op: Op) -> None:
        """Record an already built op."""
        with self._lock:
            self._ops.append(op)

    @property
    def ops(self) -> list[Op]:
        """A copy of the ops recorded so far, in recording order."""
        with self._lock:
            return list(self._ops)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def dump(self, path: PathLike) -> None:
        """Write the ops recorded so far to ``path`` as JSON Lines."""
        dump_ops(self.ops, path)


def dump_ops(ops: Iterable[Op], path: PathLike) -> None:
    """Write ops to ``path`` as JSON Lines (written to a temporary file, then renamed)."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for op in ops:
            f.write(json.dumps(op.to_dict(), separators=(",", ":")))
            f.write("\n")
    os.replace(tmp, path)


def load_ops(path: PathLike) -> list[Op]:
    """Read a JSON Lines ops file (blank lines skipped); raises :class:`HistoryError`."""
    ops: list[Op] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ops.append(Op.from_dict(json.loads(line)))
            except (ValueError, TypeError) as e:  # HistoryError and JSONDecodeError included
                raise HistoryError(f"{os.fspath(path)}:{lineno}: {e}") from None
    return ops


def _node_id(key: Any) -> NodeId:
    return int(key) if isinstance(key, str) and key.isdigit() else key


def logs_from_json(data: Any) -> dict[NodeId, list[tuple[int, int | None]]]:
    """Logs from parsed JSON: an object by node id (or a list by node index) of entry lists."""
    if isinstance(data, list):
        data = dict(enumerate(data))
    if not isinstance(data, Mapping):
        raise HistoryError("logs must be a JSON object mapping node id to a list of entries")
    logs: dict[NodeId, list[tuple[int, int | None]]] = {}
    for key, entries in data.items():
        node = _node_id(key)
        if not isinstance(entries, list):
            raise HistoryError(f"node {node}: log must be a list of [slot, value] entries")
        if set(map(type, entries)) == {list} and set(map(len, entries)) == {2}:
            logs[node] = list(map(tuple, entries))  # the usual [slot, value] pairs, at C speed
            continue
        log: list[tuple[int, int | None]] = []
        for e in entries:
            if isinstance(e, Mapping) and "slot" in e:
                log.append((e["slot"], e.get("value")))
            elif isinstance(e, Sequence) and not isinstance(e, str) and len(e) == 2:
                log.append((e[0], e[1]))
            else:
                raise HistoryError(f"node {node}: malformed log entry {e!r}")
        logs[node] = log
    return logs


def load_logs(path: PathLike) -> dict[NodeId, list[tuple[int, int | None]]]:
    """Read a logs JSON file (see the module docstring); raises :class:`HistoryError`."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except ValueError as e:
            raise HistoryError(f"{os.fspath(path)}: not JSON: {e}") from None
    return logs_from_json(data)


def dump_logs(logs: Mapping[NodeId, Sequence[tuple[int, int | None]]], path: PathLike) -> None:
    """Write logs to ``path`` in the format :func:`load_logs` reads."""
    data = {str(node): [[s, v] for s, v in log] for node, log in logs.items()}
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)
