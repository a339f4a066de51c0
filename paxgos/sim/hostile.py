"""A nemesis that forges messages: the attacks of issue 11 that need no credentials and that the
core's bounds must make harmless (``--hostile RATE``; off by default).

Without peer authentication anyone can send a node anything; forging an Accept or a catch-up
reply with values can break safety, and only authentication (a host's job) stops that.  What
the core alone must survive are the forgeries below, each the shape of one finding:

- ``absurd-commit`` (R4): a Learn claiming commit index 2**63 - 1, under an old ballot of a
  member, so that catch-up chases what nobody can serve;
- ``far-accept`` (W2): an Accept at slot 10**12, far beyond every horizon;
- ``stranger`` (W5): a request whose ballot, or whose sender, is not a member;
- ``over-limit`` (W1): a request whose ballot's round is above ``MAX_ROUND``;
- ``outbid`` (W4): a Prepare (or probe) one round above every promise, from a member that does
  not run it and does not lead (stickiness makes the others refuse it while their leader is
  live); which may only ever cost an election, never safety.  A Prepare in the live leader's
  own name gets past stickiness by design: only authentication keeps such a forgery out.

Every check of the simulation still holds under them: safety at every step, and liveness and the
stability of the leader once the faults (these included) stop.
"""

from __future__ import annotations

import random

from paxgos.core.ballot import MAX_ROUND, Ballot
from paxgos.core.messages import INT64_MAX, Accept, Learn, Message, Prepare

KINDS = ("absurd-commit", "far-accept", "stranger", "over-limit", "outbid")


def forge(
    rng: random.Random, nodes: int, top_round: int, leaders: frozenset[int] = frozenset()
) -> tuple[str, int, Message]:
    """One forged message: ``(kind, claimed sender, message)``; ``top_round`` is the highest
    round any live node promised (what ``/status`` shows an attacker), ``leaders`` the nodes
    that lead now (an outbidding Prepare never claims to come from one)."""
    kind = rng.choice(KINDS)
    sender = rng.randrange(nodes)
    if kind == "outbid" and sender in leaders:
        sender = rng.choice([i for i in range(nodes) if i not in leaders] or [sender])
    if kind == "absurd-commit":
        return kind, sender, Learn(sender, Ballot(0, sender), INT64_MAX)
    if kind == "far-accept":
        return kind, sender, Accept(sender, Ballot(0, sender), 10**12, (666,), 0)
    if kind == "stranger":
        stranger = nodes + rng.randrange(1, 100)
        ballot = Ballot(top_round + 1, stranger)
        owner = rng.choice((sender, stranger))  # a member naming a stranger's ballot, or not
        return kind, sender, _request(rng, owner, ballot)
    if kind == "over-limit":
        return kind, sender, _request(rng, sender, Ballot(MAX_ROUND + 1 + rng.randrange(9), sender))
    return kind, sender, Prepare(sender, Ballot(top_round + 1, sender), 1, rng.random() < 0.5)


def _request(rng: random.Random, sender: int, ballot: Ballot) -> Message:
    choice = rng.randrange(3)
    if choice == 0:
        return Prepare(sender, ballot, 1)
    if choice == 1:
        return Accept(sender, ballot, 1, (666,), 0)
    return Learn(sender, ballot, INT64_MAX)
