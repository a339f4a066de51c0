"""Ballots: the totally ordered, per-proposer-unique numbers of Paxos.

A ballot is a ``(round, node)`` pair compared lexicographically, so two proposers never pick the
same ballot (their node ids differ) and a proposer outbids any ballot it has seen by taking
``round + 1``.  ``ZERO`` sorts below every real ballot (real rounds start at 1) and stands for
"nothing promised / nothing accepted yet".
"""

from __future__ import annotations

from typing import NamedTuple


class Ballot(NamedTuple):
    """A proposal number: ``round`` first, ``node`` (the proposer's id) breaks ties."""

    round: int
    node: int

    def next_for(self, node: int) -> Ballot:
        """The smallest ballot owned by ``node`` that is above this one."""
        return Ballot(self.round + 1, node)

    def __str__(self) -> str:
        return f"{self.round}.{self.node}"


ZERO = Ballot(0, -1)
