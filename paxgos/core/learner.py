"""The learner: the part of a node that knows which slots are chosen.

It owns the commit index (every slot up to it is chosen and applied, in slot order), the chosen
slots known above a gap, and catch-up: a learner that hears of a commit index beyond its own
and cannot fill the gap from what its acceptor accepted fetches the missing entries from the
node that told it.  It returns what it applied; the node turns that into outcomes and persists.
"""

from __future__ import annotations

from paxgos.core.acceptor import Acceptor
from paxgos.core.ballot import Ballot
from paxgos.core.messages import CatchupReply, CatchupRequest, ChosenEntry, Value


class Learner:
    """Chosen-log state of one node; times are the core's clock, passed in by the node."""

    def __init__(self, node_id: int, commit: int):
        self.node_id = node_id
        self.commit = commit
        self.chosen_ahead: dict[int, Value] = {}  # chosen slots above a gap
        self.known_commit = commit  # highest commit index heard of
        self.commit_source: int | None = None  # who told us about known_commit
        self.progress_at = 0.0  # last time commit moved or we were told nothing new
        self.catchup_sent_at: float | None = None

    def chosen(self, slot: int, value: Value) -> None:
        """``slot`` is known chosen with ``value`` (it is applied once the gap below closes)."""
        if slot > self.commit:
            self.chosen_ahead[slot] = value

    def apply(self, acceptor: Acceptor, now: float) -> list[ChosenEntry]:
        """Move the commit index over every contiguous chosen slot; the entries applied."""
        applied: list[ChosenEntry] = []
        while self.commit + 1 in self.chosen_ahead:
            slot = self.commit + 1
            value = self.chosen_ahead.pop(slot)
            self.commit = slot
            acceptor.forget_through(slot)
            applied.append((slot, value))
        if applied:
            self.progress_at = now
            if self.commit > self.known_commit:
                self.known_commit = self.commit
        return applied

    def note_commit(self, commit: int, source: int, now: float) -> None:
        """``source`` says every slot up to ``commit`` is chosen."""
        if commit > self.known_commit:
            if self.known_commit <= self.commit:
                self.progress_at = now  # newly behind: start the catch-up clock now
            self.known_commit = commit
            self.commit_source = source

    def learn(
        self, acceptor: Acceptor, ballot: Ballot, commit: int, source: int, now: float
    ) -> None:
        """The sender (leading under ``ballot``) says every slot up to ``commit`` is chosen;
        what we accepted under that ballot is therefore the chosen value."""
        self.note_commit(commit, source, now)
        slot = self.commit + 1
        while slot <= commit:
            if slot not in self.chosen_ahead:
                known, value = acceptor.accepted_under(slot, ballot)
                if not known:
                    break  # a gap: catch-up will fill it
                self.chosen_ahead[slot] = value
            slot += 1

    def catchup_due(self, now: float, after: float, timeout: float) -> int | None:
        """The node to fetch missing entries from now, or None (none missing, one request in
        flight, or in-flight Accepts may still fill the gap)."""
        if self.known_commit <= self.commit or self.commit_source is None:
            return None
        if self.catchup_sent_at is not None:
            if now - self.catchup_sent_at < timeout:
                return None
        elif now - self.progress_at < after:
            return None
        return self.commit_source

    def request(self, now: float, limit: int) -> CatchupRequest:
        """A catch-up request for the slots after the commit index (one in flight)."""
        self.catchup_sent_at = now
        return CatchupRequest(self.node_id, self.commit + 1, limit)

    def on_reply(self, msg: CatchupReply, now: float) -> None:
        self.catchup_sent_at = None
        self.note_commit(msg.commit, msg.sender, now)
        for slot, value in msg.entries:
            self.chosen(slot, value)
