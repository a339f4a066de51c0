"""The safety invariants, checked incrementally as the run goes (every check is O(input)).

- **one value per slot**: a value is chosen at a slot once a majority of acceptors accepted it
  under one ballot.  Acceptances are counted from what acceptors *answered* (an ``Accepted`` with
  ``ok``), since that is what a leader relies on; two different values chosen at one slot, or one
  client value chosen at two slots (every proposal carries a fresh value), is a violation;
- **learned is chosen**: every entry a node writes to its chosen log (``persist.chosen``) is the
  value chosen at that slot;
- **acknowledged is in the log**: a ``Committed`` outcome names the value its client proposed and
  the value chosen at the slot it names (so it is in the log exactly once, at that slot);
- **promises never go backwards**: an acceptor's promised ballot, observed after each of its
  steps and across restarts, never decreases;
- **reads are linearizable**: a ``Readable`` read index is at least the highest slot that any
  client had been told was committed, or any node had applied, when the read was sent (a node
  applies only what some leader knew chosen, and the read index covers that), so the read sees
  every write that finished before it began;
- **ballots are unique**: no ballot is used (sent in a ``Prepare``) by two proposers, nor by two
  incarnations of one node: Paxos's safety argument assumes one value per ballot per slot, and a
  restarted node that reuses its pre-crash ballot can propose a second one.
"""

from __future__ import annotations

from paxgos.core.ballot import ZERO, Ballot
from paxgos.core.messages import Value

_MISSING = object()


class Violation(Exception):
    """An invariant failed: ``invariant`` names it, the message says how."""

    def __init__(self, invariant: str, detail: str):
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


class InvariantChecker:
    """Running state of the invariants over one run."""

    def __init__(self, nodes: int):
        self.majority = nodes // 2 + 1
        self.votes: dict[tuple[int, Ballot, Value], int] = {}  # -> bitmask of acceptors
        self.chosen: dict[int, Value] = {}
        self.slot_of_value: dict[int, int] = {}
        self.promised_hi: list[Ballot] = [ZERO] * nodes
        self.proposed: dict[int, int] = {}  # request -> value
        self.acked: dict[int, tuple[int, int]] = {}  # request -> (slot, value)
        self.ballot_user: dict[Ballot, tuple[int, int]] = {}  # -> (node, incarnation)
        self.acked_high = 0  # the highest slot acknowledged to a client or applied, so far
        self.read_floor: dict[int, int] = {}  # read request -> acked_high when it was sent

    def accepted(
        self, node: int, ballot: Ballot, first: int, values: tuple[Value, ...], commit: int
    ) -> None:
        """``node`` answered ok to an Accept; it accepted the values at slots above ``commit``
        (its commit index when the Accept arrived)."""
        bit = 1 << node
        votes = self.votes
        slot = first
        for value in values:
            if slot > commit:
                key = (slot, ballot, value)
                mask = votes.get(key, 0)
                if not mask & bit:
                    mask |= bit
                    votes[key] = mask
                    if mask.bit_count() == self.majority:
                        self._choose(slot, value, ballot)
            slot += 1

    def _choose(self, slot: int, value: Value, ballot: Ballot) -> None:
        prev = self.chosen.get(slot, _MISSING)
        if prev is _MISSING:
            self.chosen[slot] = value
            if value is not None:
                other = self.slot_of_value.get(value)
                if other is not None:
                    raise Violation(
                        "value-chosen-twice",
                        f"value {value} chosen at slot {slot} (ballot {ballot}) "
                        f"and at slot {other}",
                    )
                self.slot_of_value[value] = slot
        elif prev != value:
            raise Violation(
                "one-value-per-slot",
                f"slot {slot}: value {value} chosen under ballot {ballot}, "
                f"but {prev} was chosen before",
            )

    def learned(self, node: int, entries: list[tuple[int, Value]]) -> None:
        """``node`` is writing ``entries`` to its chosen log."""
        chosen = self.chosen
        if entries:
            self.acked_high = max(self.acked_high, entries[-1][0])
        for slot, value in entries:
            expect = chosen.get(slot, _MISSING)
            if expect is _MISSING:
                raise Violation(
                    "learned-is-chosen",
                    f"node {node} learned {value} at slot {slot}, where nothing is chosen",
                )
            if expect != value:
                raise Violation(
                    "learned-is-chosen",
                    f"node {node} learned {value} at slot {slot}, where {expect} is chosen",
                )

    def committed(self, node: int, request: int, slot: int, value: int) -> None:
        """``node`` told the client of ``request`` that ``value`` is committed at ``slot``."""
        proposed = self.proposed.get(request)
        if proposed != value:
            raise Violation(
                "acknowledged-in-log",
                f"node {node} acknowledged request {request} with value {value}, "
                f"but the client proposed {proposed}",
            )
        chosen = self.chosen.get(slot, _MISSING)
        if chosen != value:
            shown = "nothing" if chosen is _MISSING else chosen
            raise Violation(
                "acknowledged-in-log",
                f"node {node} acknowledged request {request} (value {value}) at slot {slot}, "
                f"where {shown} is chosen",
            )
        if self.slot_of_value.get(value) != slot:
            raise Violation(
                "acknowledged-in-log",
                f"value {value} acknowledged at slot {slot}, chosen at "
                f"{self.slot_of_value.get(value)}",
            )
        self.acked[request] = (slot, value)
        self.acked_high = max(self.acked_high, slot)

    def read_invoked(self, request: int) -> None:
        """A client sends read ``request``: it must see every write acknowledged until now."""
        self.read_floor[request] = self.acked_high

    def readable(self, node: int, request: int, slot: int) -> None:
        """``node`` released read ``request`` at read index ``slot``."""
        floor = self.read_floor.pop(request, 0)
        if slot < floor:
            raise Violation(
                "read-linearizable",
                f"node {node} served read {request} at slot {slot}, but slot {floor} had been "
                "acknowledged before the read was sent",
            )

    def promised(self, node: int, ballot: Ballot) -> None:
        """``node``'s acceptor has promised ``ballot`` (after a step, or on restart)."""
        high = self.promised_hi[node]
        if ballot < high:
            raise Violation(
                "promise-monotonic",
                f"node {node} promised {ballot} after having promised {high}",
            )
        self.promised_hi[node] = ballot

    def prepared(self, node: int, incarnation: int, ballot: Ballot) -> None:
        """Incarnation ``incarnation`` of ``node`` sent a Prepare for ``ballot``."""
        user = self.ballot_user.setdefault(ballot, (node, incarnation))
        if user != (node, incarnation):
            raise Violation(
                "ballot-unique",
                f"ballot {ballot} used by node {node} (incarnation {incarnation}) after node "
                f"{user[0]} (incarnation {user[1]})",
            )

    def final_logs(self, logs: dict[int, list[Value]]) -> None:
        """At the end: every node's chosen log is the chosen values, and holds every
        acknowledged value at its slot."""
        for node, log in logs.items():
            for index, value in enumerate(log):
                slot = index + 1
                if self.chosen.get(slot, _MISSING) != value:
                    raise Violation(
                        "learned-is-chosen",
                        f"node {node} log has {value} at slot {slot}, "
                        f"chosen is {self.chosen.get(slot)}",
                    )
            for request, (slot, value) in self.acked.items():
                if slot > len(log) or log[slot - 1] != value:
                    raise Violation(
                        "acknowledged-in-log",
                        f"request {request} (value {value}, slot {slot}) missing from the "
                        f"log of node {node}",
                    )
