"""The acceptor: the part of a node whose memory makes Paxos safe.

It owns the promised ballot and the values accepted at slots not yet known chosen.  Its two rules
("Paxos Made Simple", phase 1b and 2b): promise a ballot only if it is at least the promised one,
and accept under a ballot only if it is at least the promised one.  A third rule bounds its
memory: it accepts only slots within its ``horizon`` of its commit index (see ``on_accept``).
Every change it makes is recorded in the ``Persist`` it is handed, so the host stores it before
the answer leaves.
"""

from __future__ import annotations

from paxgos.core.ballot import Ballot
from paxgos.core.messages import (
    MAX_HORIZON,
    Accept,
    Accepted,
    AcceptedEntry,
    Prepare,
    Promise,
    Value,
)
from paxgos.core.ready import Persist


class Acceptor:
    """Promise and accept state of one node.

    ``accepted`` holds only slots above ``commit`` (the node's applied prefix): below it the
    chosen log is authoritative and kept by storage, and above it the horizon bounds it, which
    keeps memory bounded.
    """

    def __init__(
        self,
        node_id: int,
        promised: Ballot,
        accepted: dict[int, tuple[Ballot, Value]],
        horizon: int = MAX_HORIZON,
    ):
        self.node_id = node_id
        self.promised = promised
        self.accepted = accepted
        self.horizon = min(horizon, MAX_HORIZON)

    def on_prepare(self, msg: Prepare, commit: int, persist: Persist) -> Promise:
        """Phase 1b: promise ``msg.ballot`` and report what was accepted from ``from_slot``.

        The report stops at ``commit + MAX_HORIZON``: no acceptor accepts beyond it, so an
        entry there predates the bound (or came from a forged Accept before it); reporting it
        would make the new leader fill every hole up to it, at every election."""
        if msg.ballot < self.promised:
            return Promise(self.node_id, msg.ballot, False, self.promised, commit)
        if msg.ballot > self.promised:
            self.promised = msg.ballot
            persist.promised = msg.ballot
        low = max(msg.from_slot, commit + 1)
        high = commit + MAX_HORIZON
        accepted: list[AcceptedEntry] = [
            (slot, ballot, value)
            for slot, (ballot, value) in sorted(self.accepted.items())
            if low <= slot <= high
        ]
        return Promise(self.node_id, msg.ballot, True, self.promised, commit, tuple(accepted))

    def within_horizon(self, msg: Accept, commit: int) -> bool:
        """Whether ``msg``'s slots lie within reach: every slot at most ``commit + horizon``,
        or, for the Accept that starts at the next slot to choose (``commit + 1`` or below),
        at most ``commit + MAX_HORIZON`` (so that a leader's lowest round, which a follower
        that has caught up must take for the log to move on, is taken whatever its length)."""
        last = msg.first + len(msg.values) - 1
        if msg.first <= commit + 1:
            return last <= commit + MAX_HORIZON
        return last <= commit + self.horizon

    def on_accept(self, msg: Accept, commit: int, persist: Persist) -> Accepted:
        """Phase 2b: accept ``msg.values`` unless a higher ballot was promised, or the slots lie
        beyond the horizon (``within_horizon``).  Beyond it nothing changes, not even the
        promise, and the refusal names a promise not above ``msg.ballot``: the leader is not
        outbid, and sends it again later (by then this acceptor may have caught up)."""
        count = len(msg.values)
        if msg.ballot < self.promised or not self.within_horizon(msg, commit):
            return Accepted(
                self.node_id, msg.ballot, msg.first, count, False, self.promised, commit
            )
        if msg.ballot > self.promised:
            self.promised = msg.ballot
            persist.promised = msg.ballot
        slot = msg.first
        for value in msg.values:
            # Slots at or below the commit index are chosen already; the chosen log holds them.
            if slot > commit and self.accepted.get(slot) != (msg.ballot, value):
                self.accepted[slot] = (msg.ballot, value)
                persist.accepted.append((slot, msg.ballot, value))
            slot += 1
        return Accepted(self.node_id, msg.ballot, msg.first, count, True, self.promised, commit)

    def accepted_under(self, slot: int, ballot: Ballot) -> tuple[bool, Value]:
        """Whether ``slot`` was accepted under exactly ``ballot``, and the value if so."""
        entry = self.accepted.get(slot)
        if entry is None or entry[0] != ballot:
            return False, None
        return True, entry[1]

    def forget_through(self, slot: int) -> None:
        """Drop the accepted value of ``slot``: it is chosen and now lives in the chosen log."""
        self.accepted.pop(slot, None)
