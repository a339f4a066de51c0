"""An in-memory store: fast, and forgets everything when the process dies (not durable)."""

from __future__ import annotations

from collections.abc import Sequence

from paxgos.core import ZERO, Persist, StoredState
from paxgos.core.ballot import Ballot
from paxgos.core.messages import ChosenEntry, Value
from paxgos.storage.base import StorageError, Store


class MemoryStore(Store):
    """Keeps the chosen log in a list (slot ``n`` at index ``n - 1``)."""

    durable = False

    def __init__(self) -> None:
        self.promised: Ballot = ZERO
        self.accepted: dict[int, tuple[Ballot, Value]] = {}
        self.chosen: list[Value] = []

    def load(self) -> StoredState:
        commit = len(self.chosen)
        accepted = {s: e for s, e in self.accepted.items() if s > commit}
        return StoredState(self.promised, commit, accepted)

    def write(self, batch: Sequence[Persist]) -> None:
        # The core applies in slot order, so the log only ever grows at its end; check the whole
        # batch first so that a bad one changes nothing (as in SQLiteStore).
        commit = len(self.chosen)
        for persist in batch:
            for slot, _ in persist.chosen:
                if slot != commit + 1:
                    raise StorageError(
                        f"memory: chosen slot {slot} does not follow commit index {commit}"
                    )
                commit = slot
        for persist in batch:
            if persist.promised is not None:
                self.promised = persist.promised
            for slot, ballot, value in persist.accepted:
                self.accepted[slot] = (ballot, value)
            for slot, value in persist.chosen:
                self.chosen.append(value)
                self.accepted.pop(slot, None)

    def commit_index(self) -> int:
        """The highest chosen slot (the length of the log)."""
        return len(self.chosen)

    def read_chosen(self, from_slot: int, limit: int) -> list[ChosenEntry]:
        if limit <= 0:
            return []
        start = max(from_slot, 1) - 1
        return [(start + i + 1, v) for i, v in enumerate(self.chosen[start : start + limit])]
