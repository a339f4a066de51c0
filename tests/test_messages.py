"""Wire form of the protocol messages: every message round-trips through ``encode``/``decode``,
and no input, however malformed, makes ``decode`` raise anything but a one-line ``MessageError``.
Out of bounds counts as malformed: a round above ``MAX_ROUND``, or a request (Prepare, Accept,
Learn) whose ballot is not its sender's own.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paxgos.core.ballot import MAX_ROUND, ZERO, Ballot
from paxgos.core.messages import (
    INT64_MAX,
    INT64_MIN,
    KIND_OF,
    KINDS,
    MAX_BATCH,
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Learn,
    LearnAck,
    Message,
    MessageError,
    Prepare,
    Promise,
    decode,
    encode,
    from_wire,
    to_wire,
)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies over valid fields -------------------------------------------------------------


def ints(low: int, high: int = INT64_MAX) -> st.SearchStrategy[int]:
    """Integers in [low, high], with the bounds (64-bit extremes) drawn often."""
    return st.one_of(st.sampled_from([low, high]), st.integers(low, high))


values = st.one_of(st.none(), ints(INT64_MIN, INT64_MAX))
rounds = ints(0, MAX_ROUND)
ballots = st.builds(Ballot, rounds, ints(-1))
senders = ints(0)
slots = ints(1)
commits = ints(0)


@st.composite
def own_ballots(draw: st.DrawFn) -> tuple[int, Ballot]:
    """A sender and a ballot of its own: what a request (Prepare, Accept, Learn) carries."""
    sender = draw(senders)
    return sender, Ballot(draw(rounds), sender)


prepares = own_ballots().flatmap(
    lambda sb: st.builds(Prepare, st.just(sb[0]), st.just(sb[1]), slots)
)
promises = st.builds(
    Promise,
    senders,
    ballots,
    st.booleans(),
    ballots,
    commits,
    st.lists(st.tuples(slots, ballots, values), max_size=5).map(tuple),
)


@st.composite
def accepts(draw: st.DrawFn) -> Accept:
    vals = tuple(draw(st.lists(values, min_size=1, max_size=8)))
    first = draw(ints(1, INT64_MAX - len(vals)))
    sender, ballot = draw(own_ballots())
    return Accept(sender, ballot, first, vals, draw(commits))


accepteds = st.builds(Accepted, senders, ballots, slots, ints(1, MAX_BATCH), st.booleans(), ballots)
learns = own_ballots().flatmap(
    lambda sb: st.builds(Learn, st.just(sb[0]), st.just(sb[1]), commits, commits)
)
learn_acks = st.builds(LearnAck, senders, ballots, commits, ballots, commits)
catchup_requests = st.builds(CatchupRequest, senders, slots, ints(1, MAX_BATCH))
catchup_replies = st.builds(
    CatchupReply,
    senders,
    st.lists(st.tuples(slots, values), max_size=5).map(tuple),
    commits,
)
messages = st.one_of(
    prepares, promises, accepts(), accepteds, learns, learn_acks, catchup_requests, catchup_replies
)

# One valid example of each type, for the targeted malformation tests.
EXAMPLES: list[Message] = [
    Prepare(1, Ballot(3, 1), 7),
    Promise(
        2, Ballot(3, 1), True, Ballot(3, 1), 4, ((5, Ballot(2, 0), 9), (6, Ballot(2, 0), None))
    ),
    Accept(0, Ballot(3, 0), 5, (1, None, -2), 4),
    Accepted(2, Ballot(3, 0), 5, 3, True, Ballot(3, 0), 4),
    Learn(0, Ballot(3, 0), 9),
    LearnAck(3, Ballot(3, 0), 8, Ballot(4, 1)),
    Learn(0, Ballot(3, 0), 9, read=4),
    LearnAck(3, Ballot(3, 0), 8, Ballot(3, 0), read=4),
    CatchupRequest(4, 10, 100),
    CatchupReply(1, ((10, 5), (11, None)), 11),
    Prepare(1, Ballot(3, 1), 7, probe=True),
    Promise(1, Ballot(4, 1), False, Ballot(3, 0), 4, probe=True),
]


def assert_message_error(data: Any, expect: type | None = None, *, wire: bool = False) -> str:
    """``decode`` (or ``from_wire`` with ``wire``) rejects ``data`` with a one-line MessageError."""
    with pytest.raises(MessageError) as info:
        if wire:
            from_wire(data, expect)
        else:
            decode(data, expect)
    text = str(info.value)
    assert text and "\n" not in text
    return text


def decode_or_error(data: Any, *, wire: bool = False) -> Message | None:
    """Decode, allowing only MessageError as failure; a decoded message must round-trip."""
    try:
        msg = from_wire(data) if wire else decode(data)
    except MessageError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert type(msg) in KIND_OF
    assert decode(encode(msg)) == msg
    return msg


# --- round trip -------------------------------------------------------------------------------


def test_every_kind_has_an_example() -> None:
    assert {type(m) for m in EXAMPLES} == set(KINDS.values())


@FAST
@given(messages)
def test_round_trip(msg: Message) -> None:
    data = encode(msg)
    assert decode(data) == msg
    assert decode(data, type(msg)) == msg
    assert from_wire(json.loads(data)) == msg
    assert to_wire(msg)["type"] == KIND_OF[type(msg)]
    assert b" " not in data  # compact form


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_examples_and_wrong_expect(msg: Message) -> None:
    assert decode(encode(msg), type(msg)) == msg
    for other in KINDS.values():
        if other is not type(msg):
            assert "expected" in assert_message_error(encode(msg), other)


@pytest.mark.parametrize("expect", [int, str, dict, "accept", 1, object, Ballot])
def test_expect_that_is_not_a_message_class(expect: Any) -> None:
    assert_message_error(encode(EXAMPLES[0]), expect)


def test_extremes_round_trip() -> None:
    big = Ballot(MAX_ROUND, INT64_MAX)
    msgs: list[Message] = [
        Accept(INT64_MAX, big, INT64_MAX - 2, (INT64_MIN, INT64_MAX), INT64_MAX),
        Accept(0, Ballot(0, 0), 1, (None,), 0),
        Promise(0, ZERO, False, big, INT64_MAX, ((INT64_MAX, big, INT64_MIN),)),
        CatchupReply(0, ((INT64_MAX, None),), INT64_MAX),
        Accepted(0, ZERO, INT64_MAX, MAX_BATCH, False, big),
        CatchupRequest(INT64_MAX, INT64_MAX, MAX_BATCH),
        Prepare(3, Ballot(MAX_ROUND, 3), INT64_MAX),
        Learn(INT64_MAX, big, INT64_MAX, INT64_MAX),
        LearnAck(0, big, INT64_MAX, big, INT64_MAX),
    ]
    for msg in msgs:
        assert decode(encode(msg)) == msg


def test_a_learn_without_read_confirms_no_read() -> None:
    body = to_wire(Learn(0, Ballot(3, 0), 9, read=4))
    del body["read"]
    assert from_wire(body) == Learn(0, Ballot(3, 0), 9, read=0)


def test_a_full_batch_round_trips() -> None:
    msg = Accept(0, Ballot(1, 0), 1, tuple(range(MAX_BATCH)), 0)
    assert decode(encode(msg)) == msg


# --- malformed input --------------------------------------------------------------------------

INT_LOW = {"sender": 0, "from_slot": 1, "commit": 0, "first": 1, "count": 1, "limit": 1, "read": 0}
OPTIONAL = {"read"}  # absent means 0 (a Learn that confirms no read)
INT_HIGH = {"count": MAX_BATCH, "limit": MAX_BATCH}
BALLOT_FIELDS = {"ballot", "promised"}
BOOL_FIELDS = {"ok", "probe"}
WRONG_TYPES: list[Any] = ["1", 1.0, 1.5, None, [], {}, [1], {"a": 1}]
BAD_BALLOTS: list[Any] = [
    [1],
    [1, 2, 3],
    [],
    [True, 0],
    [1, False],
    [1.0, 0],
    ["1", 0],
    [None, 0],
    [-1, 0],
    [0, -2],
    [INT64_MAX + 1, 0],
    [INT64_MAX, 0],  # W1's round: SQLite could store it, but not the round after
    [MAX_ROUND + 1, 0],
    [0, INT64_MAX + 1],
    {"round": 1, "node": 0},
    "1.0",
    1,
    None,
    True,
]
BAD_VALUES: list[Any] = ["1", 1.5, True, False, [], {}, [1], INT64_MAX + 1, INT64_MIN - 1]


REQUESTS = (Prepare, Accept, Learn)


def malformations(msg: Message) -> list[tuple[str, dict[str, Any]]]:
    """Valid wire body of ``msg`` with one thing broken, each labelled."""
    body = to_wire(msg)
    out: list[tuple[str, dict[str, Any]]] = []

    def variant(label: str, name: str, value: Any) -> None:
        broken = copy.deepcopy(body)
        broken[name] = value
        out.append((label, broken))

    for name in body:
        missing = copy.deepcopy(body)
        del missing[name]
        if name not in OPTIONAL:
            out.append((f"missing {name}", missing))
        if name == "type":
            for bad in ["nope", "", "Prepare", 1, None, [], {}, ["prepare"], True]:
                variant(f"type={bad!r}", name, bad)
        elif name in INT_LOW:
            for bad in [*WRONG_TYPES, True, False]:
                variant(f"{name}={bad!r}", name, bad)
            if name == "sender" and isinstance(msg, REQUESTS):  # its ballot is not its own then
                variant("sender other than the ballot's node", name, msg.sender + 1)
            variant(f"{name} below range", name, INT_LOW[name] - 1)
            variant(f"{name} above range", name, INT_HIGH.get(name, INT64_MAX) + 1)
            variant(f"{name} huge", name, 10**40)
        elif name in BALLOT_FIELDS:
            for bad in BAD_BALLOTS:
                variant(f"{name}={bad!r}", name, bad)
            if name == "ballot" and isinstance(msg, REQUESTS):  # not the sender's own
                variant("ballot of another node", name, [msg.ballot.round, msg.sender + 1])
                variant("ballot ZERO", name, list(ZERO))
                variant("ballot of node 99", name, [msg.ballot.round, 99])
        elif name in BOOL_FIELDS:
            for bad in [1, 0, "true", None, [], 1.0]:
                variant(f"{name}={bad!r}", name, bad)
        elif name == "values":
            for bad in ["x", {}, None, 1, [], list(range(MAX_BATCH + 1))]:
                variant(f"values={str(bad)[:20]}", name, bad)
            for bad in BAD_VALUES:
                variant(f"values item {bad!r}", name, [1, bad])
        elif name == "accepted":
            for bad in ["x", {}, None, 1, [[1, [1, 0], 1]] * (MAX_BATCH + 1)]:
                variant(f"accepted={str(bad)[:20]}", name, bad)
            entries: list[Any] = [
                [1, [1, 0]],
                [1, [1, 0], 1, 1],
                [0, [1, 0], 1],
                [True, [1, 0], 1],
                [1.0, [1, 0], 1],
                [INT64_MAX + 1, [1, 0], 1],
                [1, [1], 1],
                [1, [-1, 0], 1],
                [1, None, 1],
                *([1, [1, 0], bad] for bad in BAD_VALUES),
                1,
                None,
                {"slot": 1},
                "x",
            ]
            for bad in entries:
                variant(f"accepted entry {bad!r}", name, [bad])
        elif name == "entries":
            for bad in ["x", {}, None, 1, [[1, 1]] * (MAX_BATCH + 1)]:
                variant(f"entries={str(bad)[:20]}", name, bad)
            entries = [
                [1],
                [1, 1, 1],
                [0, 1],
                [-5, 1],
                [True, 1],
                [1.0, 1],
                [INT64_MAX + 1, 1],
                *([1, bad] for bad in BAD_VALUES),
                1,
                None,
                "x",
            ]
            for bad in entries:
                variant(f"entries entry {bad!r}", name, [bad])
        else:  # pragma: no cover - a new field needs cases above
            raise AssertionError(f"no malformations for field {name}")
    return out


CASES = [
    pytest.param(broken, id=f"{type(msg).__name__}: {label}"[:90])
    for msg in EXAMPLES
    for label, broken in malformations(msg)
]


@pytest.mark.parametrize("body", CASES)
def test_malformed_fields_raise_message_error(body: dict[str, Any]) -> None:
    assert_message_error(body, wire=True)
    assert_message_error(json.dumps(body).encode())


@pytest.mark.parametrize(
    "body",
    [
        {**to_wire(EXAMPLES[2]), "values": []},  # an Accept of nothing
        {**to_wire(EXAMPLES[2]), "ballot": [0, -1]},  # an Accept under ZERO
        {**to_wire(EXAMPLES[2]), "first": INT64_MAX - 2},  # last slot past INT64_MAX
        {**to_wire(EXAMPLES[2]), "first": INT64_MAX},
    ],
)
def test_semantically_invalid_accepts(body: dict[str, Any]) -> None:
    assert_message_error(body, wire=True)


def test_accept_ending_exactly_at_int64_max_is_fine() -> None:
    body = {**to_wire(EXAMPLES[2]), "first": INT64_MAX - 3}  # three values: ..., INT64_MAX - 1
    assert from_wire(body) == Accept(0, Ballot(3, 0), INT64_MAX - 3, (1, None, -2), 4)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"not json",
        b"\xff\xfe\x00",
        b"\x00",
        b"[1, 2",
        b'{"type": "prepare",}',
        b"1" * 5000,  # an integer literal too long to parse (3.11+) or just not an object
        b"[" * 100_000,  # nesting deep enough to hit the recursion limit
        b'{"a":' * 100_000,
        b"null",
        b"1",
        b'"prepare"',
        b"[]",
        b"{}",
        b"NaN",
        b'{"type": "prepare", "sender": NaN, "ballot": [1, 0], "from_slot": 1}',
        b'{"type": "prepare", "sender": Infinity, "ballot": [1, 0], "from_slot": 1}',
        b'{"type": "prepare", "sender": 1e3, "ballot": [1, 0], "from_slot": 1}',
    ],
)
def test_non_messages_raise_message_error(data: bytes) -> None:
    assert_message_error(data)


def test_regression_unhashable_type_field() -> None:
    # Regression: ``KINDS.get(body["type"])`` raised TypeError for a list or object.
    assert_message_error(b'{"type": []}')
    assert_message_error(b'{"type": {"a": 1}}')


# --- fuzzing ----------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 0, -1, 1]),
    st.floats(),
    st.text(max_size=10),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = sorted({name for m in EXAMPLES for name in to_wire(m)})
near_messages = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(KINDS)) | json_scalars},
    optional={
        name: json_values | st.sampled_from([1, 0, [1, 0], [[1, [1, 0], 1]], [[1, 1]], True])
        for name in FIELDS
        if name != "type"
    },
)


@FAST
@given(json_values)
def test_arbitrary_json_decodes_or_raises_message_error(body: Any) -> None:
    decode_or_error(body, wire=True)
    decode_or_error(json.dumps(body).encode())


@FAST
@given(near_messages)
def test_near_messages_decode_or_raise_message_error(body: dict[str, Any]) -> None:
    decode_or_error(body, wire=True)


@FAST
@given(messages, st.data())
def test_one_field_replaced_by_arbitrary_json(msg: Message, data: st.DataObject) -> None:
    body = to_wire(msg)
    name = data.draw(st.sampled_from(sorted(body)))
    body[name] = data.draw(json_values)
    decoded = decode_or_error(body, wire=True)
    if decoded is not None and name != "type":
        # Whatever was accepted must be representable: every field re-validates.
        assert from_wire(to_wire(decoded)) == decoded


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_message_error(data: bytes) -> None:
    decode_or_error(data)
