"""The Paxgos protocol as a pure, deterministic state machine.

No sockets, files, clocks, tornado or asyncio here: inputs go in (``Node`` methods), outputs come
out (``Ready``).  ``paxgos.net`` and ``paxgos.sim`` are two hosts for the same code.
"""

from paxgos.core.ballot import ZERO, Ballot
from paxgos.core.node import CANDIDATE, FOLLOWER, LEADER, PRECANDIDATE, Config, Node, StoredState
from paxgos.core.ready import Abandoned, Committed, Outcome, Persist, Readable, Ready, Rejected

__all__ = [
    "ZERO",
    "Ballot",
    "CANDIDATE",
    "FOLLOWER",
    "LEADER",
    "PRECANDIDATE",
    "Config",
    "Node",
    "StoredState",
    "Abandoned",
    "Committed",
    "Outcome",
    "Persist",
    "Readable",
    "Ready",
    "Rejected",
]
