"""The acceptor: the part of a node whose memory makes Paxos safe.

It owns the promised ballot and the values accepted at slots not yet known chosen.  Its two rules
("Paxos Made Simple", phase 1b and 2b): promise a ballot only if it is at least the promised one,
and accept under a ballot only if it is at least the promised one.  Every change it makes is
recorded in the ``Persist`` it is handed, so the host stores it before the answer leaves.
"""

from __future__ import annotations

from paxgos.core.ballot import Ballot
from paxgos.core.messages import Accept, Accepted, AcceptedEntry, Prepare, Promise, Value
from paxgos.core.ready import Persist


class Acceptor:
    """Promise and accept state of one node.

    ``accepted`` holds only slots above ``commit`` (the node's applied prefix): below it the
    chosen log is authoritative and kept by storage, which keeps memory bounded.
    """

    def __init__(self, node_id: int, promised: Ballot, accepted: dict[int, tuple[Ballot, Value]]):
        self.node_id = node_id
        self.promised = promised
        self.accepted = accepted

    def on_prepare(self, msg: Prepare, commit: int, persist: Persist) -> Promise:
        """Phase 1b: promise ``msg.ballot`` and report what was accepted from ``from_slot``."""
        if msg.ballot < self.promised:
            return Promise(self.node_id, msg.ballot, False, self.promised, commit)
        if msg.ballot > self.promised:
            self.promised = msg.ballot
            persist.promised = msg.ballot
        low = max(msg.from_slot, commit + 1)
        accepted: list[AcceptedEntry] = [
            (slot, ballot, value)
            for slot, (ballot, value) in sorted(self.accepted.items())
            if slot >= low
        ]
        return Promise(self.node_id, msg.ballot, True, self.promised, commit, tuple(accepted))

    def on_accept(self, msg: Accept, commit: int, persist: Persist) -> Accepted:
        """Phase 2b: accept ``msg.values`` unless a higher ballot was promised."""
        count = len(msg.values)
        if msg.ballot < self.promised:
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
