"""A fuzz suite against one live 3-node cluster (issue 11, item 8): Hypothesis generates HTTP
requests, peer message bodies and malformed HTTP, sent on raw sockets to real node processes.

Properties, checked after every case:

- no 5xx but the documented ones: 503 with ``Retry-After`` (no leader, overloaded, leadership
  lost, a failed disk) and 504 "outcome unknown";
- every error body is one line (a 405 names what is ``Allow``-ed); the one exception is the
  bare ``400`` with no body that Tornado's HTTP/1 parser writes before it hangs up on a
  request it cannot frame (``malformed`` cases), where no handler ever saw the request;
- no node crashes: every PID alive, ``/status`` 200 on the node asked (and on all of them every
  25 cases and at the end);
- state unchanged on rejection: after any request that was refused (or not answered), and
  after every peer message, no node's role, ballot, promise, commit index or log moved.

Peer messages are sent unsigned (then 401) and signed with the cluster secret.  A signed
message that is well formed is made stale (its ballot's round 0, below every promise), except
probes, so that it exercises the checks without legitimately moving state: a member with a
fresh ballot may of course change what an acceptor holds.

A few hundred cases run in the default suite (``derandomize=True``: the same cases every run);
at least 10,000 run behind the ``fuzz`` marker, with fresh random cases each time::

    python -m pytest -m fuzz tests/test_fuzz.py
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hostile import Arena, NodeState, Response, exchange, one_line, peer_signature
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from paxgos.testing.procs import LocalNodes

#: Cases of each kind: in the default run, and behind ``-m fuzz`` (11,000 in all).
DEFAULT = {"request": 150, "message": 150, "malformed": 100}
LONG = {"request": 4500, "message": 4500, "malformed": 2000}

INT64_MAX = 2**63 - 1
MAX_ROUND = 2**62
COUNT = 3

CASES: Counter[str] = Counter()
TIMES: Counter[str] = Counter()


def fuzz_settings(kind: str, long: bool) -> settings:
    return settings(
        max_examples=(LONG if long else DEFAULT)[kind],
        deadline=None,
        derandomize=not long,
        database=None,  # nothing written into the checkout
        print_blob=long,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# --- the cluster ------------------------------------------------------------------------------


class Target:
    """The live cluster and what it held after the last case."""

    def __init__(self, arena: Arena):
        self.arena = arena
        self.base: dict[int, NodeState] = {}
        self.cases = 0
        self.rebase()

    def rebase(self) -> None:
        self.arena.leader(timeout=20.0)
        self.base = self.arena.snapshot(settle=10.0)

    def states(self) -> dict[int, tuple[Any, ...]]:
        """Role, ballot, promise and commit index of every node (the log is compared at times)."""
        out = {}
        for i in range(COUNT):
            s = self.arena.nodes.status(i, timeout=5.0)
            ballot = s.get("ballot")
            out[i] = (
                s["role"],
                tuple(ballot) if isinstance(ballot, list) else None,
                tuple(s["promised"]),
                s["commit_index"],
            )
        return out

    def check(
        self, node: int, answer: Response | None, what: str, changes: bool, head: bool = False
    ) -> None:
        """The properties of the module docstring for one case sent to ``node``; ``changes``:
        the case may legitimately move state (a client's proposal: committed, or of unknown
        outcome)."""
        self.cases += 1
        if answer is not None:
            check_answer(answer, what, head)
        dead = self.arena.dead()
        assert not dead, f"{what}: nodes {dead} exited: {self.arena.log_text(dead[0])[-2000:]}"
        status = self.arena.unsigned(node, "GET", "/status", timeout=5.0)
        assert status.status == 200, f"{what}: /status answered {status.status} after it"
        unknown = answer is None or answer.status in (503, 504)
        if changes and (unknown or 200 <= answer.status < 300):  # type: ignore[union-attr]
            self.rebase()
            return
        now = self.states()
        before = {i: _brief(self.base[i]) for i in self.base}
        if now != before:
            time.sleep(0.5)  # a heartbeat or a catch-up in flight may still land: look again
            now = self.states()
        for i in now:
            assert now[i] == before[i], f"{what}: node {i} changed from {before[i]} to {now[i]}"
        if self.cases % 25 == 0:
            for i in range(COUNT):
                assert self.arena.nodes.history(i) == list(self.base[i].history), (
                    f"{what}: node {i}'s log changed"
                )
                assert self.arena.unsigned(i, "GET", "/status").status == 200


def _brief(state: NodeState) -> tuple[Any, ...]:
    return (state.role, state.ballot, state.promised, state.commit_index)


def check_answer(answer: Response, what: str, head: bool = False) -> None:
    status = answer.status
    shown = f"{what}: {status} {answer.headers} {answer.text[:300]!r}"
    if status >= 500:
        documented = (status == 503 and "retry-after" in answer.headers) or (
            status == 504 and "outcome unknown" in answer.text
        )
        assert documented, f"undocumented 5xx: {shown}"
    if status >= 400 and answer.body:
        assert one_line(answer.text), f"error body is not one line: {shown}"
    if status >= 400 and not answer.body:
        # HEAD has no body; otherwise only the framing layer's bare 400 (then it hangs up)
        assert head or (status == 400 and answer.closed), f"empty error body: {shown}"
    if status == 405:
        assert answer.headers.get("allow"), f"405 without Allow: {shown}"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One 3-node cluster for the whole module (an election timeout of 2 s, so that a loaded
    machine does not elect anew in the middle of a case and look like a state change)."""
    nodes = LocalNodes(
        COUNT,
        tmp_path_factory.mktemp("fuzz"),
        ["--request-timeout", "3s", "--election-timeout", "2s"],
    )
    arena = Arena(nodes)
    try:
        nodes.start(wait=30.0)
        arena.monitor.start()
        arena.propose(3)
        yield Target(arena)
    finally:
        arena.close()
        if CASES:
            summary = ", ".join(f"{k} {CASES[k]} cases in {TIMES[k]:.1f}s" for k in sorted(CASES))
            print(f"\nfuzz: {summary}")


# --- strategies: requests ---------------------------------------------------------------------

KNOWN_PATHS = [
    "/", "/status", "/propose/1", "/propose/-5", "/propose/", "/propose", "/propose/x",
    "/propose/9223372036854775808", "/propose/%2D7", "/propose/1/2", "/autopropose", "/fault",
    "/fault/slow", "/fault/stall", "/fault/heal", "/fault/xyz", "/fault/", "/prepare", "/accept",
    "/learn", "/status/", "//", "/../../etc/passwd", "/favicon.ico", "/LEARN", "/propose?x=1",
]  # fmt: skip
METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "get", "Get"]
PARAMS = ["from", "limit", "count", "ms", "sender", "x", "from[]", ""]

#: Characters a request target may carry unencoded without breaking the request line (any
#: other character is sent percent-encoded; framing itself is ``malformed``'s subject).
plain = st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="#")
digits = st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n)
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["0", "-1", "1", "10000", "10001", "100000", str(INT64_MAX), str(2**63)]),
    digits,
    st.sampled_from(["1e3", "+1", " 1", "0x10", "1_000", "١٢", "1.5", "", "NaN", "--1", "1 "]),
    st.text(max_size=20),
)
raw_numbers = st.one_of(
    digits, st.integers(-(10**30), 10**30).map(str), st.text(plain, max_size=12)
)


@st.composite
def queries(draw: st.DrawFn, encoded: bool = False) -> str:
    """A query string: repeated and unknown parameters, long, signed, odd and unicode numbers,
    percent-encoded (always, with ``encoded``), or raw where the characters allow."""
    if encoded or draw(st.booleans()):
        pairs = draw(st.lists(st.tuples(st.sampled_from(PARAMS), numbers), max_size=4))
        parts = [f"{quote(k)}={quote(v)}" for k, v in pairs]
    else:
        pairs = draw(st.lists(st.tuples(st.sampled_from(PARAMS), raw_numbers), max_size=4))
        parts = [f"{k}={v}" for k, v in pairs]
    return "?" + "&".join(parts) if parts else ""


@st.composite
def paths(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 3)):
        path = draw(st.sampled_from(KNOWN_PATHS))
    else:
        if draw(st.booleans()):
            path = "/" + quote(draw(st.text(max_size=40)))
        else:
            path = "/" + draw(st.text(plain, max_size=40)).replace("?", "")
    return path + draw(queries())


def header_sets(port: int) -> st.SearchStrategy[list[tuple[str, str]]]:
    own = f"http://127.0.0.1:{port}"
    choices = st.sampled_from(
        [
            ("Accept", "application/json"), ("Accept", "*/*"), ("Accept", "text/html"),
            ("Origin", own), ("Origin", "http://evil.example"), ("Origin", "null"),
            ("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Site", "same-origin"),
            ("Sec-Fetch-Site", "none"), ("Host", "evil.example"), ("Host", "localhost"),
            ("Host", "[::1]"), ("Host", ""), ("Content-Type", "application/json"),
            ("Content-Type", "text/plain; charset=utf-16"), ("Authorization", "Bearer nope"),
            ("Authorization", "Basic Zm9vOmJhcg=="), ("Paxgos-Signature", "1.00"),
            ("Paxgos-Signature", "9" * 30 + "." + "a" * 64), ("X-Forwarded-For", "10.0.0.1"),
            ("Expect", "100-continue"), ("Cookie", "a=b"), ("Range", "bytes=0-10"),
        ]
    )  # fmt: skip
    token = st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        min_size=1,
        max_size=20,
    )
    value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
    return st.lists(st.one_of(choices, st.tuples(token, value)), max_size=5)


bodies = st.one_of(
    st.just(b""),
    st.just(b""),
    st.binary(max_size=256),
    st.sampled_from([b"{}", b"[]", b"null", b'{"type":"prepare"}', b"x" * 3000]),
)


def build(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    has_host = any(k.lower() == "host" for k, _ in headers)
    lines = [f"{method} {target} HTTP/1.1"]
    if not has_host:
        lines.append("Host: 127.0.0.1")
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body


def send_request(
    t: Target, node: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    start = time.monotonic()
    data = build(method, path, headers, body)
    answer = exchange(t.arena.url(node), data, method.upper(), timeout=10.0)
    what = f"{method} {path[:120]!r} headers {headers} body {body[:60]!r} to node {node}"
    assert answer is not None, f"no answer within 10 s: {what}"
    event(f"{method.upper() if method.upper() in METHODS else 'other method'} {answer.status}")
    writes = path.startswith(("/propose", "/autopropose"))
    t.check(node, answer, what, changes=writes, head=method.upper() == "HEAD")
    CASES["request"] += 1
    TIMES["request"] += time.monotonic() - start


def case_request(t: Target, data: st.DataObject) -> None:
    node = data.draw(st.integers(0, COUNT - 1), "node")
    method = data.draw(
        st.one_of(st.sampled_from(METHODS), st.text("ABCXYZ", min_size=1, max_size=8))
    )
    path = data.draw(paths(), "path")
    if path.startswith("/autopropose") and not re.search(r"count=[0-9]{1,2}(&|$)", path):
        path = (
            path.split("?", 1)[0] + "?count=" + data.draw(st.sampled_from(["2", "0", "x", "99999"]))
        )
    headers = data.draw(header_sets(t.arena.port(node)), "headers")
    body = data.draw(bodies, "body")
    send_request(t, node, method, path, headers, body)


def case_control(t: Target, data: st.DataObject) -> None:
    """A runtime control with the cluster secret and a bad parameter: 400 and no change."""
    node = data.draw(st.integers(0, COUNT - 1), "node")
    ms = data.draw(numbers, "ms")
    if re.fullmatch(r"-?[0-9]{1,12}", ms) and 0 <= int(ms) <= 3_600_000:
        ms = ms + "x"  # a valid delay would slow the cluster on purpose
    secret = getattr(t.arena.nodes, "secret", None)
    headers = [("Authorization", f"Bearer {secret}")] if secret else []
    send_request(t, node, "POST", f"/fault/slow?ms={quote(ms)}", headers, b"")


# --- strategies: peer messages ----------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=False),
        st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=10),
        st.sampled_from([0, -1, 1, 2, 3, 99, INT64_MAX, 2**63, MAX_ROUND, MAX_ROUND + 1, 10**12]),
    ),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def base_messages(commit: int, leader: int, round_: int) -> list[dict[str, Any]]:
    """Valid messages of every type (requests and replies) to mutate."""
    ballot = [round_, leader]
    fresh = [round_ + 1, 1]
    return [
        dict(type="prepare", sender=1, ballot=fresh, from_slot=commit + 1, probe=True),
        dict(type="prepare", sender=2, ballot=[round_ + 1, 2], from_slot=1, probe=False),
        dict(
            type="accept", sender=leader, ballot=ballot, first=commit + 1, values=[666],
            commit=commit,
        ),
        dict(type="learn", sender=leader, ballot=ballot, commit=commit),
        dict(
            type="promise", sender=1, ballot=ballot, ok=True, promised=ballot, commit=0,
            accepted=[], probe=False,
        ),
        dict(
            type="accepted", sender=1, ballot=ballot, first=1, count=1, ok=True,
            promised=ballot, commit=0,
        ),
        dict(type="learn_ack", sender=1, ballot=ballot, commit=0, promised=ballot),
        dict(type="catchup", sender=1, from_slot=1, limit=10),
        dict(type="catchup_reply", sender=1, entries=[[commit + 1, 666]], commit=commit + 1),
    ]  # fmt: skip


ENDPOINT = {"prepare": "/prepare", "accept": "/accept", "learn": "/learn"}


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    msg = json.loads(json.dumps(base))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        op = draw(st.sampled_from(["set", "delete", "add", "ballot", "values", "type", "sender"]))
        keys = sorted(msg)
        if op == "set" and keys:
            msg[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "delete" and keys:
            msg.pop(draw(st.sampled_from(keys)))
        elif op == "add":
            msg[draw(st.text(max_size=8))] = draw(json_values)
        elif op == "ballot":
            name = draw(st.sampled_from(["ballot", "promised"]))
            msg[name] = draw(
                st.one_of(
                    st.lists(st.integers(-2, 2**64), min_size=2, max_size=2),
                    st.lists(json_values, max_size=3),
                    st.sampled_from(
                        [[MAX_ROUND, 1], [MAX_ROUND + 1, 1], [INT64_MAX, 1], [1, 99], [1, -1]]
                    ),
                )
            )
        elif op == "values":
            msg["values"] = draw(
                st.one_of(
                    st.lists(st.one_of(st.none(), st.integers(-(2**64), 2**64)), max_size=50),
                    st.lists(json_values, max_size=5),
                    st.integers(0, 3000).map(lambda n: [7] * n),
                )
            )
        elif op == "type":
            msg["type"] = draw(
                st.one_of(
                    st.sampled_from(["prepare", "accept", "learn", "catchup", "PREPARE", ""]),
                    json_values,
                )
            )
        elif op == "sender":
            msg["sender"] = draw(st.sampled_from([-1, 0, 1, 2, 3, 99, 2**63, "1", 1.0, True, None]))
    raw = json.dumps(msg, allow_nan=True).encode()
    form = draw(st.integers(0, 9))
    if form == 0:
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]  # cut short
    if form == 1:
        depth = draw(st.integers(1, 100_000))
        return b"[" * depth + b"]" * depth  # nested too deeply for the parser
    if form == 2:
        return draw(
            st.sampled_from(
                [
                    b"NaN",
                    b"[Infinity]",
                    b'{"type":"prepare","type":"accept"}',
                    b"\xef\xbb\xbf{}",
                    "{}".encode("utf-16"),
                    b"1" * 5000,
                ]
            )
        )
    return raw


def stale(data: bytes) -> bytes:
    """A well-formed request message with its ballot's round set to 0 (below every promise);
    anything else unchanged.  Probes stay as they are: they change nothing by design."""
    from paxgos.core.messages import Accept, Learn, MessageError, Prepare, from_wire

    try:
        msg = from_wire(json.loads(data))
    except (MessageError, ValueError, RecursionError, TypeError, KeyError, AttributeError):
        return data
    if isinstance(msg, (Accept, Learn)) or (isinstance(msg, Prepare) and not msg.probe):
        body = json.loads(data)
        body["ballot"] = [0, msg.ballot.node]
        return json.dumps(body).encode()
    return data


def case_message(t: Target, data: st.DataObject) -> None:
    start = time.monotonic()
    arena = t.arena
    leader = next(i for i, s in t.base.items() if s.role == "leader")
    commit = t.base[leader].commit_index
    round_ = t.base[leader].promised[0]
    bases = base_messages(commit, leader, round_)
    requests = [m for m in bases if m["type"] in ENDPOINT]
    base = data.draw(st.sampled_from(requests * 3 + bases), "base")
    body = data.draw(mutated(base), "body")
    node = data.draw(st.integers(0, COUNT - 1), "node")
    path = ENDPOINT.get(base["type"], "/learn")
    if data.draw(st.integers(0, 3), "other endpoint?") == 0:
        path = data.draw(st.sampled_from(["/prepare", "/accept", "/learn"]), "endpoint")
    signed = data.draw(st.booleans(), "signed")
    if signed:
        body = stale(body)
    method = "POST"
    target = path
    if data.draw(st.integers(0, 7)) == 0:  # a catch-up read instead
        method, target, body = "GET", "/learn" + data.draw(queries(encoded=signed)), b""
    headers = {"Content-Type": "application/json"}
    if signed:
        headers.update(peer_signature(arena.nodes, method, target, body))
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    raw = "\r\n".join(lines).encode() + b"\r\n\r\n" + body
    answer = exchange(arena.url(node), raw, method, timeout=10.0)
    what = (
        f"{'signed' if signed else 'unsigned'} {method} {target[:80]} {body[:200]!r} to node {node}"
    )
    assert answer is not None, f"no answer within 10 s: {what}"
    event(f"{'signed' if signed else 'unsigned'} {method} {answer.status}")
    if not signed:
        assert answer.status in (401, 413), (
            f"unsigned peer message answered: {what}: {answer.status} {answer.text[:200]}"
        )
    t.check(node, answer, what, changes=False)
    CASES["message"] += 1
    TIMES["message"] += time.monotonic() - start


# --- strategies: malformed HTTP -------------------------------------------------------------------


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    path = draw(st.sampled_from(["/status", "/", "/accept", "/learn", "/prepare", "/nothing"]))
    method = draw(st.sampled_from(["GET", "POST"]))
    kind = draw(st.integers(0, 14))
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if kind == 0:
        return draw(st.binary(min_size=1, max_size=300))
    if kind == 1:
        line = draw(st.sampled_from([
            "GET\r\n", "GET / HTTP/9.9\r\n", "GET  / HTTP/1.1\r\n", "G\x00ET / HTTP/1.1\r\n",
            "GET / HTTP/1.1 extra\r\n", "GET http://evil.example/ HTTP/1.1\r\n",
            "OPTIONS * HTTP/1.1\r\n", "CONNECT 127.0.0.1:1 HTTP/1.1\r\n", "GET / http/1.1\r\n",
            "GET /\r\n", "\r\n\r\nGET / HTTP/1.1\r\n", "GET / HTTP/1.0\r\n",
            "GET /" + "a" * 70_000 + " HTTP/1.1\r\n",
        ]))  # fmt: skip
        return (line + "Host: 127.0.0.1\r\nConnection: close\r\n\r\n").encode("latin-1")
    if kind == 2:  # conflicting or broken Content-Length
        a, b = draw(
            st.tuples(
                st.sampled_from(
                    ["0", "1", "5", "-1", "1e3", "99999999999999999999", " 3", "3 ", "0x5", ""]
                ),
                st.sampled_from(["0", "2", "7"]),
            )
        )
        return (head + f"Content-Length: {a}\r\nContent-Length: {b}\r\n\r\n{{}}").encode()
    if kind == 3:  # Transfer-Encoding with Content-Length (request smuggling)
        both = "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        return (head + both + "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").encode()
    if kind == 4:  # broken chunked bodies
        chunk = draw(
            st.sampled_from(
                [
                    "zz\r\n{}\r\n0\r\n\r\n",
                    "-1\r\n{}\r\n",
                    "ffffffffffffffff\r\n{}",
                    "2\r\n{}",
                    "0\r\n",
                    "2;ext=1\r\n{}\r\n0\r\n\r\n",
                    "1\r\n{}\r\n0\r\n\r\n",
                ]
            )
        )
        te = draw(
            st.sampled_from(
                ["chunked", "gzip, chunked", "chunked, gzip", "identity", "Chunked", "chunked\x00"]
            )
        )
        return (head + f"Transfer-Encoding: {te}\r\n\r\n{chunk}").encode("latin-1")
    if kind == 5:  # a header line without a colon, obs-fold, spaces in the name
        bad = draw(
            st.sampled_from(
                [
                    "NoColon",
                    " folded: yes",
                    "Na me: x",
                    ": empty",
                    "X: a\r\n b",
                    "X:\x00y",
                    "X-\x7f: 1",
                ]
            )
        )
        return (head + bad + "\r\nConnection: close\r\n\r\n").encode("latin-1")
    if kind == 6:  # very many headers, or one very long one
        if draw(st.booleans()):
            return (head + "".join(f"X-{k}: {k}\r\n" for k in range(2000)) + "\r\n").encode()
        return (head + "X-Long: " + "a" * 100_000 + "\r\n\r\n").encode()
    if kind == 7:  # a body shorter than its length: the client gives up
        return (
            head + 'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"type":'
        ).encode()
    if kind == 8:  # pipelined requests
        return (head + "\r\n" + head + "Connection: close\r\n\r\n").encode()
    if kind == 9:  # a body on a client endpoint, both ways
        return (head + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").encode()
    if kind == 10:  # duplicate Host, absurd Host
        host = draw(st.sampled_from(["a, b", "127.0.0.1:99999", "[::1", "\xff\xfe", "x" * 5000]))
        two = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: {host}\r\n"
        return (two + "Connection: close\r\n\r\n").encode("latin-1")
    if kind == 11:  # unicode and control bytes in the target
        target = draw(st.text(min_size=1, max_size=30))
        return (
            f"{method} /{target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(
                "utf-8", "surrogateescape"
            )
        )
    if kind == 12:  # LF-only line ends
        return f"{method} {path} HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n".encode()
    if kind == 13:  # Expect: 100-continue with a big declared body
        return (head + "Expect: 100-continue\r\nContent-Length: 50000000\r\n\r\n").encode()
    return (head + "Connection: close\r\n\r\n").encode() + draw(
        st.binary(max_size=100)
    )  # trailing bytes


def case_malformed(t: Target, data: st.DataObject) -> None:
    start = time.monotonic()
    node = data.draw(st.integers(0, COUNT - 1), "node")
    raw = data.draw(malformed(), "request")
    answer = exchange(t.arena.url(node), raw, "GET", timeout=0.5)  # no answer is an answer here
    event("no answer" if answer is None else f"status {answer.status}")
    what = f"malformed {raw[:160]!r} to node {node}"
    t.check(node, answer, what, changes=False)
    CASES["malformed"] += 1
    TIMES["malformed"] += time.monotonic() - start


# --- the tests ------------------------------------------------------------------------------


def request_case(t: Target, data: st.DataObject) -> None:
    if data.draw(st.integers(0, 9), "control?") == 0:
        case_control(t, data)
    else:
        case_request(t, data)


@fuzz_settings("request", long=False)
@given(data=st.data())
def test_fuzz_http_requests(target: Target, data: st.DataObject) -> None:
    request_case(target, data)


@fuzz_settings("message", long=False)
@given(data=st.data())
def test_fuzz_peer_messages(target: Target, data: st.DataObject) -> None:
    case_message(target, data)


@fuzz_settings("malformed", long=False)
@given(data=st.data())
def test_fuzz_malformed_http(target: Target, data: st.DataObject) -> None:
    case_malformed(target, data)


@pytest.mark.fuzz
@fuzz_settings("request", long=True)
@given(data=st.data())
def test_fuzz_long_http_requests(target: Target, data: st.DataObject) -> None:
    request_case(target, data)


@pytest.mark.fuzz
@fuzz_settings("message", long=True)
@given(data=st.data())
def test_fuzz_long_peer_messages(target: Target, data: st.DataObject) -> None:
    case_message(target, data)


@pytest.mark.fuzz
@fuzz_settings("malformed", long=True)
@given(data=st.data())
def test_fuzz_long_malformed_http(target: Target, data: st.DataObject) -> None:
    case_malformed(target, data)


def test_fuzzed_cluster_is_whole_afterwards(target: Target) -> None:
    """After the fuzz (it runs last in the module): every node alive, answering, and holding
    the same log; real proposals still commit."""
    arena = target.arena
    assert not arena.dead()
    for i in range(COUNT):
        assert arena.unsigned(i, "GET", "/status").status == 200
    slots = arena.propose(3)
    arena.assert_agree(at_least=max(slots))
