"""A bounded, sampled record of the protocol messages one node sends and the answers it gets,
for watchers such as the dashboard (``GET /events``).

Every message of the protocol is a request one node's transport sends (``Prepare``,
``Accept``, ``Learn``, a catch-up request) and the answer it gets back (``Promise``,
``Accepted``, ``LearnAck``, a catch-up reply), so the records of every node together show every
exchange of the cluster.  Messages a node sends itself are not recorded (nothing travels).

Recording is off until a watcher asks (``watch``) and turns itself off ``WATCH_FOR`` seconds
after the last request, so an unwatched node pays one attribute test per message.  While on, it
keeps a sample, decided per *exchange* (one message object, which a broadcast sends to every
peer, with all its answers): every Prepare and catch-up request, since elections and catch-up
are rare and are what a watcher wants to see, and of the rest (Accept, Learn) at most one every
``GAP`` seconds.  ``seen`` and ``recorded`` count messages while on, so a watcher can say
"sampled: 1 in N".  At most ``CAPACITY`` records are kept; older ones are dropped.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

from paxgos.core.messages import (
    KIND_OF,
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Learn,
    LearnAck,
    Message,
    Prepare,
    Promise,
)

#: Records kept (a watcher polling every 250 ms reads about 6 of them per poll).
CAPACITY = 1024
#: The shortest time between two sampled Accept or Learn exchanges of one node.
GAP = 0.1
#: Recording stops this long after the last ``watch`` (a watcher that went away).
WATCH_FOR = 3.0
#: Exchanges whose answers are still recorded (a sampled Accept's Accepted may come back after
#: newer exchanges were sampled).
OPEN_EXCHANGES = 16


class EventLog:
    """The sampled messages of one node; see the module docstring."""

    def __init__(self, node_id: int, capacity: int = CAPACITY, gap: float = GAP):
        self.node_id = node_id
        self.gap = gap
        #: Whether messages are recorded now (tested on the hot path: a plain attribute).
        self.on = False
        self.until = 0.0
        self.records: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.seq = 0  # number of the latest record
        self.seen = 0  # messages sent and answers received while on
        self.recorded = 0
        self._exchanges = itertools.count(1)
        self._current: tuple[object, int] = (None, 0)  # the message being sent, its exchange
        self._open: deque[tuple[object, int]] = deque(maxlen=OPEN_EXCHANGES)
        self._sampled_at = float("-inf")

    def watch(self, now: float) -> None:
        """A watcher asked (``now``: ``time.monotonic()``): record for ``WATCH_FOR`` more."""
        self.on = True
        self.until = now + WATCH_FOR

    def tick(self, now: float) -> None:
        """Stop recording once no watcher asked for ``WATCH_FOR`` seconds."""
        if now > self.until:
            self.on = False
            self._current = (None, 0)
            self._open.clear()

    def sent(self, to: int, msg: Message) -> None:
        """``msg`` leaves for node ``to`` (call only while ``on``)."""
        self.seen += 1
        current, exchange = self._current
        if current is not msg:
            exchange = 0
            now = time.monotonic()
            if isinstance(msg, (Prepare, CatchupRequest)) or now - self._sampled_at >= self.gap:
                exchange = next(self._exchanges)
                self._open.append((msg, exchange))
                if not isinstance(msg, (Prepare, CatchupRequest)):
                    self._sampled_at = now
            self._current = (msg, exchange)
        if exchange:
            self._record(exchange, self.node_id, to, msg)

    def answered(self, to: int, msg: Message, reply: Message) -> None:
        """Node ``to`` answered ``msg`` with ``reply`` (call only while ``on``)."""
        self.seen += 1
        for sent, exchange in reversed(self._open):
            if sent is msg:
                self._record(exchange, to, self.node_id, reply)
                return

    def since(self, after: int) -> list[dict[str, Any]]:
        """The records numbered above ``after``, oldest first."""
        if after >= self.seq:
            return []
        newer = self.seq - after
        records = self.records
        if newer >= len(records):
            return list(records)
        return list(itertools.islice(records, len(records) - newer, None))

    def _record(self, exchange: int, sender: int, receiver: int, msg: Message) -> None:
        self.seq += 1
        self.recorded += 1
        record: dict[str, Any] = {
            "seq": self.seq,
            "t": round(time.time(), 4),
            "x": f"{self.node_id}.{exchange}",
            "kind": KIND_OF[type(msg)],
            "from": sender,
            "to": receiver,
        }
        record.update(describe(msg))
        self.records.append(record)


def describe(msg: Message) -> dict[str, Any]:
    """What a watcher shows of ``msg``: its ballot, its slots ``[first, last]``, and whether it
    says yes (``ok``), in JSON-ready form."""
    if isinstance(msg, Prepare):
        return {"ballot": list(msg.ballot), "slots": [msg.from_slot, None], "probe": msg.probe}
    if isinstance(msg, Promise):
        return {
            "ballot": list(msg.ballot), "ok": msg.ok, "probe": msg.probe,
            "promised": list(msg.promised), "commit": msg.commit, "accepted": len(msg.accepted),
        }  # fmt: skip
    if isinstance(msg, Accept):
        last = msg.first + len(msg.values) - 1
        return {"ballot": list(msg.ballot), "slots": [msg.first, last], "commit": msg.commit}
    if isinstance(msg, Accepted):
        last = msg.first + msg.count - 1
        return {"ballot": list(msg.ballot), "slots": [msg.first, last], "ok": msg.ok}
    if isinstance(msg, Learn):
        return {"ballot": list(msg.ballot), "commit": msg.commit}
    if isinstance(msg, LearnAck):
        return {"ballot": list(msg.ballot), "commit": msg.commit, "ok": msg.promised <= msg.ballot}
    if isinstance(msg, CatchupRequest):
        return {"slots": [msg.from_slot, msg.from_slot + msg.limit - 1]}
    if isinstance(msg, CatchupReply):
        slots = [msg.entries[0][0], msg.entries[-1][0]] if msg.entries else None
        return {"slots": slots, "commit": msg.commit}
    return {}
