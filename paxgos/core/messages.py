"""The protocol's messages and their wire form.

Every message a node sends another is one of the frozen dataclasses below; each carries the
``sender``'s node id.  Requests (``Prepare``, ``Accept``, ``Learn``, ``CatchupRequest``) are
answered by exactly one response (``Promise``, ``Accepted``, ``LearnAck``, ``CatchupReply``),
which the transport carries back on the same exchange (the HTTP response body).

The wire form is JSON (``encode``/``decode``), pure and I/O-free like the rest of ``core``.
``decode`` validates every field, so a malformed message is a ``MessageError`` before it can
reach protocol state: no input can corrupt an acceptor.  Beyond types, it enforces the bounds
that need no cluster state:

- every integer fits a signed 64-bit integer, and every ballot's round is at most ``MAX_ROUND``
  (``paxgos.core.ballot``), so the round after it still does;
- a request (``Prepare``, ``Accept``, ``Learn``) carries its sender's own ballot: a proposer only
  ever sends its own, so a ballot naming another node (or ``ZERO``) there is malformed;
- lists hold at most ``MAX_BATCH`` items.

The bounds that need the node's state (the sender is a member, an Accept lies within the
acceptor's horizon) are ``Node.step``'s; see ``paxgos.core.node``.

Values are signed 64-bit integers; ``None`` is the no-op a new leader fills holes with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from paxgos.core.ballot import MAX_ROUND, Ballot

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Largest batch of values one Accept (or catch-up reply) may carry.
MAX_BATCH = 100_000

#: How far above its commit index an acceptor ever accepts a slot, whatever its ``Config``
#: (``Config.horizon`` is at most this).  So what an acceptor reports in a Promise (its accepted
#: slots above its commit index) always fits one list of ``MAX_BATCH``, and a new leader never
#: has more than this many slots to re-propose or fill above its commit index.
MAX_HORIZON = MAX_BATCH

Value = int | None
"""A log value: a 64-bit integer, or ``None`` for a no-op."""

AcceptedEntry = tuple[int, Ballot, Value]
"""``(slot, ballot, value)``: a value an acceptor accepted at a slot under a ballot."""

ChosenEntry = tuple[int, Value]
"""``(slot, value)``: a value known to be chosen at a slot."""


class MessageError(ValueError):
    """A message that is not well formed; its text is a one-line reason."""


@dataclass(frozen=True)
class Prepare:
    """Phase 1a: ``sender`` asks for a promise on ``ballot`` for every slot from ``from_slot``.

    With ``probe`` it only asks whether the acceptor *would* promise (Raft's PreVote): nothing is
    promised or stored, so a node that cannot win (it is cut off, or a live leader exists)
    raises no ballot and disturbs no one.
    """

    sender: int
    ballot: Ballot
    from_slot: int
    probe: bool = False


@dataclass(frozen=True)
class Promise:
    """Phase 1b: the answer to a Prepare.

    ``ok`` is false when the acceptor had promised a higher ballot (``promised`` names it), or
    when it still hears from a live leader (``promised`` is then at most ``ballot``).
    ``accepted`` lists what the acceptor accepted at slots above ``commit`` and at or above the
    prepare's ``from_slot``; slots at or below ``commit`` the acceptor knows chosen (their values
    are fetched by catch-up, never guessed).  ``probe`` answers a probe: nothing was promised.
    """

    sender: int
    ballot: Ballot
    ok: bool
    promised: Ballot
    commit: int
    accepted: tuple[AcceptedEntry, ...] = ()
    probe: bool = False


@dataclass(frozen=True)
class Accept:
    """Phase 2a: accept ``values`` at slots ``first, first+1, ...`` under ``ballot``.

    ``commit`` piggybacks the leader's commit index (every slot up to it is chosen).
    """

    sender: int
    ballot: Ballot
    first: int
    values: tuple[Value, ...]
    commit: int


@dataclass(frozen=True)
class Accepted:
    """Phase 2b: the answer to an Accept of ``count`` slots from ``first``.

    ``ok`` is false when the acceptor had promised a higher ballot (``promised`` names it).
    ``commit`` is the acceptor's commit index (the leader shows each peer's lag).
    """

    sender: int
    ballot: Ballot
    first: int
    count: int
    ok: bool
    promised: Ballot
    commit: int = 0


@dataclass(frozen=True)
class Learn:
    """The leader's commit index: every slot up to ``commit`` is chosen.

    A learner that accepted a slot under ``ballot`` holds the chosen value (one ballot proposes
    one value per slot), so the message needs no values; slots it lacks come by catch-up.
    ``read`` (not 0) asks the learner to echo it: the leader confirms its leadership for the
    reads that arrived before it sent this Learn.
    """

    sender: int
    ballot: Ballot
    commit: int
    read: int = 0


@dataclass(frozen=True)
class LearnAck:
    """The answer to a Learn: the learner is alive and has applied every slot up to ``commit``;
    ``promised`` is its promise (above ``ballot``, the Learn's leader has been outbid: only an ack
    at or below counts towards the majority the leader must keep hearing from)."""

    sender: int
    ballot: Ballot
    commit: int
    promised: Ballot
    read: int = 0  # the Learn's ``read``


@dataclass(frozen=True)
class CatchupRequest:
    """Ask a peer for up to ``limit`` chosen entries from ``from_slot`` on."""

    sender: int
    from_slot: int
    limit: int


@dataclass(frozen=True)
class CatchupReply:
    """Chosen entries in slot order, and the sender's commit index."""

    sender: int
    entries: tuple[ChosenEntry, ...]
    commit: int


Message = Prepare | Promise | Accept | Accepted | Learn | LearnAck | CatchupRequest | CatchupReply

KINDS: dict[str, type] = {
    "prepare": Prepare,
    "promise": Promise,
    "accept": Accept,
    "accepted": Accepted,
    "learn": Learn,
    "learn_ack": LearnAck,
    "catchup": CatchupRequest,
    "catchup_reply": CatchupReply,
}
KIND_OF: dict[type, str] = {cls: kind for kind, cls in KINDS.items()}


# --- encoding ---------------------------------------------------------------------------------


def to_wire(msg: Message) -> dict[str, Any]:
    """The JSON-ready dict form of ``msg`` (ballots as ``[round, node]`` lists)."""
    kind = KIND_OF[type(msg)]
    body: dict[str, Any] = {"type": kind}
    for name, value in vars(msg).items():
        if name == "read" and not value:
            continue  # a Learn that confirms no read is as before the field existed
        if name == "accepted":
            value = [[slot, list(ballot), v] for slot, ballot, v in value]
        elif name == "entries":
            value = [[slot, v] for slot, v in value]
        elif isinstance(value, Ballot):
            value = list(value)
        elif isinstance(value, tuple):
            value = list(value)
        body[name] = value
    return body


def encode(msg: Message) -> bytes:
    """``msg`` as compact JSON bytes."""
    return json.dumps(to_wire(msg), separators=(",", ":")).encode()


# --- decoding ---------------------------------------------------------------------------------


def _int(body: dict[str, Any], name: str, low: int, high: int = INT64_MAX) -> int:
    value = body.get(name)
    if type(value) is not int or not low <= value <= high:
        raise MessageError(f"field {name!r} must be an integer in [{low}, {high}]")
    return value


def _read(body: dict[str, Any]) -> int:
    """A Learn's or LearnAck's ``read``, 0 when absent (a Learn that confirms no read)."""
    return _int(body, "read", 0) if "read" in body else 0


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if type(value) is not bool:
        raise MessageError(f"field {name!r} must be true or false")
    return value


def _ballot(raw: Any, name: str) -> Ballot:
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or type(raw[0]) is not int
        or type(raw[1]) is not int
        or not 0 <= raw[0] <= MAX_ROUND
        or not -1 <= raw[1] <= INT64_MAX
    ):
        raise MessageError(f"field {name!r} must be a ballot [round, node], round <= {MAX_ROUND}")
    return Ballot(raw[0], raw[1])


def _own_ballot(body: dict[str, Any], sender: int) -> Ballot:
    """A request's ballot: the sender's own (its proposer's), never another node's or ZERO."""
    ballot = _ballot(body.get("ballot"), "ballot")
    if ballot.node != sender:
        raise MessageError("field 'ballot' must be the sender's own ballot [round, sender]")
    return ballot


def _value(raw: Any, name: str) -> Value:
    if raw is None:
        return None
    if type(raw) is not int or not INT64_MIN <= raw <= INT64_MAX:
        raise MessageError(f"field {name!r} must hold 64-bit integers or null")
    return raw


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list) or len(value) > MAX_BATCH:
        raise MessageError(f"field {name!r} must be a list of at most {MAX_BATCH} items")
    return value


def _slot_entry(raw: Any, name: str, width: int) -> list[Any]:
    if not isinstance(raw, list) or len(raw) != width:
        raise MessageError(f"field {name!r} has a malformed entry")
    if type(raw[0]) is not int or not 1 <= raw[0] <= INT64_MAX:
        raise MessageError(f"field {name!r} has an entry with a bad slot")
    return raw


def from_wire(body: Any, expect: type | None = None) -> Message:
    """Validate a decoded JSON body and build its message.

    ``expect`` restricts the accepted message type (an /accept endpoint takes only ``Accept``).
    Raises ``MessageError`` with a one-line reason on any deviation.
    """
    if expect is not None and expect not in KINDS.values():
        raise MessageError("expect must be a message class")
    if not isinstance(body, dict):
        raise MessageError("message must be a JSON object")
    kind = body.get("type")
    # A list or object as "type" is unhashable: check it is a string before the lookup.
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError("unknown message type")
    if expect is not None and cls is not expect:
        raise MessageError(f"expected a {KIND_OF[expect]} message, got {body.get('type')}")
    sender = _int(body, "sender", 0)
    if cls is Prepare:
        ballot = _own_ballot(body, sender)
        return Prepare(sender, ballot, _int(body, "from_slot", 1), _bool(body, "probe"))
    if cls is Promise:
        accepted = []
        for raw in _list(body, "accepted"):
            slot, ballot, value = _slot_entry(raw, "accepted", 3)
            accepted.append((slot, _ballot(ballot, "accepted"), _value(value, "accepted")))
        return Promise(
            sender,
            _ballot(body.get("ballot"), "ballot"),
            _bool(body, "ok"),
            _ballot(body.get("promised"), "promised"),
            _int(body, "commit", 0),
            tuple(accepted),
            _bool(body, "probe"),
        )
    if cls is Accept:
        values = tuple(_value(v, "values") for v in _list(body, "values"))
        if not values:
            raise MessageError("field 'values' must not be empty")
        first = _int(body, "first", 1, INT64_MAX - len(values))
        ballot = _own_ballot(body, sender)  # never ZERO: its node is -1
        return Accept(sender, ballot, first, values, _int(body, "commit", 0))
    if cls is Accepted:
        return Accepted(
            sender,
            _ballot(body.get("ballot"), "ballot"),
            _int(body, "first", 1),
            _int(body, "count", 1, MAX_BATCH),
            _bool(body, "ok"),
            _ballot(body.get("promised"), "promised"),
            _int(body, "commit", 0),
        )
    if cls is Learn:
        return Learn(sender, _own_ballot(body, sender), _int(body, "commit", 0), _read(body))
    if cls is LearnAck:
        return LearnAck(
            sender,
            _ballot(body.get("ballot"), "ballot"),
            _int(body, "commit", 0),
            _ballot(body.get("promised"), "promised"),
            _read(body),
        )
    if cls is CatchupRequest:
        return CatchupRequest(sender, _int(body, "from_slot", 1), _int(body, "limit", 1, MAX_BATCH))
    entries = []
    for raw in _list(body, "entries"):
        slot, value = _slot_entry(raw, "entries", 2)
        entries.append((slot, _value(value, "entries")))
    return CatchupReply(sender, tuple(entries), _int(body, "commit", 0))


def decode(data: bytes, expect: type | None = None) -> Message:
    """Parse JSON bytes into a validated message (see ``from_wire``)."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError("message is not valid JSON") from exc
    except RecursionError as exc:  # json.loads on deeply nested arrays/objects
        raise MessageError("message is nested too deeply") from exc
    return from_wire(body, expect)
