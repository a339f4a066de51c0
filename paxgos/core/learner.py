"""The learner: the part of a node that knows which slots are chosen.

It owns the commit index (every slot up to it is chosen and applied, in slot order), the chosen
slots known above a gap, and catch-up: a learner that hears of a commit index beyond its own
and cannot fill the gap from what its acceptor accepted fetches the missing entries from the
node that told it.  It returns what it applied; the node turns that into outcomes and persists.

A commit index heard of is a claim, not a fact (any message can carry one), so catch-up never
trusts it blindly:

- a catch-up attempt that brings nothing (no answer within the timeout, or an answer that does
  not move the commit index) makes the next one wait twice as long as the one before, from one
  ``catchup_timeout`` up to ``catchup_backoff_max``; progress (the commit index moving, by any
  means) resets it.  A lagging follower with a live source never waits: each answer moves its
  commit index and the next request leaves at once;
- when the node a claim came from answers with a lower commit index of its own, the claim is
  dropped: that node cannot serve it, and a live leader repeats its real commit index soon;
- once an attempt brought nothing, the next goes to whichever node last claimed more than we
  have, so a dead or lying source does not keep a follower from a live one.

An answer's entries are taken only up to the answering node's own commit index and within
``MAX_HORIZON`` of ours (what one request can fetch), so no answer can fill ``chosen_ahead``
with far slots.
"""

from __future__ import annotations

from paxgos.core.acceptor import Acceptor
from paxgos.core.ballot import Ballot
from paxgos.core.messages import MAX_HORIZON, CatchupReply, CatchupRequest, ChosenEntry, Value

#: Doubling more often than this changes nothing (the cap is reached long before); it keeps the
#: power small.
_MAX_DOUBLINGS = 32


class Learner:
    """Chosen-log state of one node; times are the core's clock, passed in by the node."""

    def __init__(self, node_id: int, commit: int):
        self.node_id = node_id
        self.commit = commit
        self.chosen_ahead: dict[int, Value] = {}  # chosen slots above a gap
        self.known_commit = commit  # highest commit index heard of (and not refuted)
        self.commit_source: int | None = None  # who told us about known_commit
        self.progress_at = 0.0  # last time commit moved or we were told nothing new
        self.catchup_sent_at: float | None = None  # the request in flight, if any, since
        self.attempt_at = 0.0  # when the latest catch-up request left
        self.fruitless = 0  # catch-up attempts in a row that brought nothing

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
            self.fruitless = 0  # progress: catch-up asks at its normal pace again
            if self.commit > self.known_commit:
                self.known_commit = self.commit
        return applied

    def note_commit(self, commit: int, source: int, now: float) -> None:
        """``source`` says every slot up to ``commit`` is chosen.  The highest claim names the
        node to fetch from; once fetching from it has brought nothing, any node claiming more
        than we have takes its place (the one that claimed most may be down, or lying)."""
        if commit > self.known_commit:
            if self.known_commit <= self.commit:
                self.progress_at = now  # newly behind: start the catch-up clock now
            self.known_commit = commit
            self.commit_source = source
        elif commit > self.commit and self.fruitless:
            self.commit_source = source

    def learn(
        self, acceptor: Acceptor, ballot: Ballot, commit: int, source: int, now: float
    ) -> None:
        """The sender (leading under ``ballot``) says every slot up to ``commit`` is chosen;
        what we accepted under that ballot is therefore the chosen value."""
        self.note_commit(commit, source, now)
        slot = self.commit + 1
        while slot <= commit:  # ends at the first gap: at most len(accepted) + len(ahead) steps
            if slot not in self.chosen_ahead:
                known, value = acceptor.accepted_under(slot, ballot)
                if not known:
                    break  # a gap: catch-up will fill it
                self.chosen_ahead[slot] = value
            slot += 1

    def catchup_due(
        self, now: float, after: float, timeout: float, backoff_max: float
    ) -> int | None:
        """The node to fetch missing entries from now, or None (none missing, one request in
        flight, in-flight Accepts may still fill the gap, or the back-off is not over).

        A request unanswered for ``timeout`` counts as fruitless (see the module docstring);
        after ``k`` fruitless attempts in a row the next leaves ``min(timeout * 2**(k-1),
        backoff_max)`` after the previous one did."""
        if self.known_commit <= self.commit or self.commit_source is None:
            return None
        if self.catchup_sent_at is not None:
            if now - self.catchup_sent_at < timeout:
                return None
            self.catchup_sent_at = None  # lost, or its source is down: it brought nothing
            self.fruitless += 1
        if self.fruitless:
            wait = min(timeout * 2 ** min(self.fruitless - 1, _MAX_DOUBLINGS), backoff_max)
            if now - self.attempt_at < wait:
                return None
        elif now - self.progress_at < after:
            return None
        return self.commit_source

    def request(self, now: float, limit: int) -> CatchupRequest:
        """A catch-up request for the slots after the commit index (one in flight)."""
        self.catchup_sent_at = self.attempt_at = now
        return CatchupRequest(self.node_id, self.commit + 1, limit)

    def on_reply(self, msg: CatchupReply, now: float) -> None:
        """Take a catch-up answer's entries (up to its sender's commit index and within
        ``MAX_HORIZON`` of ours); a sender whose claim we chased and who now says its commit
        index is lower cannot serve the claim: it is dropped.  The node then applies, and
        calls ``fruitless_reply`` if that did not move the commit index."""
        self.catchup_sent_at = None
        if msg.sender == self.commit_source and msg.commit < self.known_commit:
            self.known_commit = max(self.commit, msg.commit)
        self.note_commit(msg.commit, msg.sender, now)
        high = min(msg.commit, self.commit + MAX_HORIZON)
        for slot, value in msg.entries:
            if slot <= high:
                self.chosen(slot, value)

    def fruitless_reply(self) -> None:
        """The last answer moved nothing: back off before asking again."""
        self.fruitless += 1
