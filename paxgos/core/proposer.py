"""The proposer's state for one ballot: phase 1's tally and phase 2's rounds in flight.

A ``Proposer`` lives exactly as long as one candidacy or leadership: ``Node._reset`` makes a new
one at every role change, so no field of an old ballot can leak into the next (as etcd's raft
``reset`` does for a term).  It decides nothing about roles; the node does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from paxgos.core.ballot import ZERO, Ballot
from paxgos.core.messages import Promise, Value
from paxgos.core.ready import Abandoned


@dataclass
class Round:
    """One Accept batch in flight: slots ``first .. first+len(values)-1``."""

    first: int
    values: tuple[Value, ...]
    sent_at: float
    acks: set[int] = field(default_factory=set)
    #: The nodes its Accept went to (thrifty: this node and the fastest peers of a majority).
    sent_to: set[int] = field(default_factory=set)
    #: When it goes to every other peer too, if not chosen by then (None: it already has).
    fallback_at: float | None = None


class Proposer:
    """Phase 1 and phase 2 state under ``ballot`` (``ZERO`` for a follower: no proposer)."""

    def __init__(self, ballot: Ballot = ZERO, next_slot: int = 1, now: float = 0.0):
        self.ballot = ballot
        # phase 1
        self.promises: dict[int, Promise] = {}
        self.refused: set[int] = set()  # acceptors that refused without outbidding us
        self.prepare_sent_at = now
        self.awaiting_commit = 0  # candidate: catch up to this before leading
        # phase 2
        self.rounds: dict[int, Round] = {}
        self.requests: dict[int, int] = {}  # slot -> client request proposed there
        self.next_slot = next_slot
        self.lingering_since: float | None = None  # a small first batch waits since then
        #: Commits answered and not yet matched by a new request: each commit answered adds
        #: one, each proposal queued or read taken takes one, down to 0.  With clients that
        #: come back once answered, it counts those still to come; a linger that runs out sets
        #: it to 0 (whoever is not back by then has gone).
        self.returning = 0
        self.commit_unsent_since: float | None = None  # first tick to find a peer not told
        self.began_at = now  # every peer counts as sent to then
        self.peer_sent_at: dict[int, float] = {}  # per peer, its last Accept or Learn
        self.told: dict[int, int] = {}  # per peer, the commit index it was last sent
        # thrifty phase 2 (Config.thrifty): per peer, the usual time from an Accept to its
        # answer (a moving average) and the Accepts it has not answered, (first slot, sent
        # at), oldest first; and the peers of the last thrifty round
        self.latency: dict[int, float] = {}
        self.owed: dict[int, deque[tuple[int, float]]] = {}
        self.targets: list[int] = []
        self.probed_at = float("-inf")  # the last round sent to every peer
        # read index: reads waiting for the next Learn, (request, slot); reads sent with the
        # Learn numbered ``seq``, (seq, request, slot), in order; per peer, the highest
        # ``read`` it echoed; and slots a new leader re-proposed, which every read must cover
        self.reads_unsent: list[tuple[int, int]] = []
        self.reads: deque[tuple[int, int, int]] = deque()
        self.read_seq = 0
        self.read_acks: dict[int, int] = {}
        self.read_sent_at = now
        self.read_floor = 0

    def abandon(self) -> list[Abandoned]:
        """Forget every round in flight; their clients learn that their fate is unknown."""
        outcomes = [Abandoned(request, slot) for slot, request in sorted(self.requests.items())]
        self.rounds.clear()
        self.requests.clear()
        return outcomes

    def drop_reads(self) -> list[int]:
        """Forget every read not yet confirmed (a read changes nothing: retrying is safe)."""
        requests = [request for request, _ in self.reads_unsent]
        requests.extend(request for _, request, _ in self.reads)
        self.reads_unsent.clear()
        self.reads.clear()
        return requests

    def highest_accepted(self, above: int) -> dict[int, tuple[Ballot, Value]]:
        """Per slot above ``above``, the value accepted under the highest ballot among the
        promises (what phase 2 must re-propose)."""
        highest: dict[int, tuple[Ballot, Value]] = {}
        for promise in self.promises.values():
            for slot, ballot, value in promise.accepted:
                if slot > above and (slot not in highest or ballot > highest[slot][0]):
                    highest[slot] = (ballot, value)
        return highest
