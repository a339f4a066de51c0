"""Ballots: the totally ordered, per-proposer-unique numbers of Paxos.

A ballot is a ``(round, node)`` pair compared lexicographically, so two proposers never pick the
same ballot (their node ids differ) and a proposer outbids any ballot it has seen by taking
``round + 1``.  ``ZERO`` sorts below every real ballot (real rounds start at 1) and stands for
"nothing promised / nothing accepted yet".

Rounds are bounded by ``MAX_ROUND``, the one bound on ballots: every ballot on the wire, on disk
and picked by a proposer has ``0 <= round <= MAX_ROUND``, so a round, and the round after it,
fit a signed 64-bit integer (SQLite's INTEGER) with room to spare.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_ROUND = 2**62
"""The highest round of any ballot.  ``decode`` refuses a ballot above it, ``Node.step`` drops a
request carrying one, and a node that has seen a ballot at it stops campaigning rather than pick
``MAX_ROUND + 1``.  Honest elections add one round each (2**62 of them would take 146 million
years at a thousand a second), so only a forged ballot gets near it."""


class Ballot(NamedTuple):
    """A proposal number: ``round`` first, ``node`` (the proposer's id) breaks ties."""

    round: int
    node: int

    def next_for(self, node: int) -> Ballot:
        """The smallest ballot owned by ``node`` that is above this one (``round + 1``);
        a ValueError past ``MAX_ROUND`` (callers check ``exhausted`` first)."""
        if self.exhausted:
            raise ValueError(f"no round above {self.round} (MAX_ROUND is {MAX_ROUND})")
        return Ballot(self.round + 1, node)

    @property
    def exhausted(self) -> bool:
        """Whether no ballot can outbid this one by a round (``round >= MAX_ROUND``)."""
        return self.round >= MAX_ROUND

    def __str__(self) -> str:
        return f"{self.round}.{self.node}"


ZERO = Ballot(0, -1)
