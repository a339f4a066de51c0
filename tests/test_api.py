"""The HTTP interface of a healthy 5-node cluster of real processes, as a user sees it."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from paxgos.testing.http import http_get
from paxgos.testing.procs import LocalNodes

COMMIT = re.compile(r"CommandID: (\d+), Value (-?\d+)\n")


def propose(nodes: LocalNodes, value: int | str, node: int = 0) -> tuple[int, str]:
    code, _, body = nodes.get(node, f"/propose/{value}")
    return code, body


def history_text(nodes: LocalNodes, i: int) -> list[str]:
    code, _, body = nodes.get(i, "/?limit=10000")
    assert code == 200
    lines = body.splitlines()
    assert lines[0] == "History:"
    return lines[1:]


def wait_listed(nodes: LocalNodes, line: str, timeout: float = 1.0) -> None:
    """Every node's ``/`` lists ``line`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    missing = list(range(nodes.count))
    while missing and time.monotonic() < deadline:
        missing = [i for i in missing if line not in history_text(nodes, i)]
        time.sleep(0.02)
    assert not missing, f"{line!r} not on nodes {missing} after {timeout}s"


def test_propose_answers_command_id_and_every_node_lists_it(cluster: LocalNodes) -> None:
    code, body = propose(cluster, 655321)
    assert code == 200, body
    match = COMMIT.fullmatch(body)
    assert match and match.group(2) == "655321", body
    wait_listed(cluster, f"id {match.group(1)} val 655321")


def test_history_is_in_slot_order_and_identical_on_every_node(cluster: LocalNodes) -> None:
    slots = []
    for value in (1, -2, 3):
        code, body = propose(cluster, value)
        assert code == 200
        slots.append(int(COMMIT.fullmatch(body).group(1)))  # type: ignore[union-attr]
    commit = cluster.wait_converged(timeout=5, at_least=max(slots))
    logs = [cluster.history(i) for i in range(cluster.count)]
    assert all(log == logs[0] for log in logs)
    assert [slot for slot, _ in logs[0]] == list(range(1, commit + 1))


def test_concurrent_proposals_get_distinct_slots_and_one_slot_each(cluster: LocalNodes) -> None:
    values = [10_000_000 + i for i in range(200)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda v: propose(cluster, v), values))
    slots = {}
    for value, (code, body) in zip(values, answers, strict=True):
        assert code == 200, body
        match = COMMIT.fullmatch(body)
        assert match and int(match.group(2)) == value
        slots[value] = int(match.group(1))
    assert len(set(slots.values())) == len(values)  # nobody shares a slot
    cluster.wait_converged(timeout=5, at_least=max(slots.values()))
    for i in range(cluster.count):
        log = dict(cluster.history(i))
        for value, slot in slots.items():
            assert log[slot] == value, f"node {i} slot {slot}"
        occurrences = [v for v in log.values() if v in slots]
        assert len(occurrences) == len(values)  # one /propose never occupies two slots


def test_autopropose_streams_a_line_per_commit(cluster: LocalNodes) -> None:
    code, _, body = cluster.get(0, "/autopropose?count=7")
    assert code == 200, body
    lines = body.splitlines(keepends=True)
    assert len(lines) == 7
    slots = [int(COMMIT.fullmatch(line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert len(set(slots)) == 7
    code, _, body = cluster.get(0, "/autopropose")
    assert code == 200 and len(body.splitlines()) == 20  # the demo's default batch


def test_autopropose_streams_before_the_last_commit(cluster: LocalNodes) -> None:
    """The answer is chunked: the first line arrives as its value commits."""
    with urllib.request.urlopen(cluster.urls[0] + "/autopropose?count=50", timeout=10) as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        first = resp.readline().decode()
        assert COMMIT.fullmatch(first), first
        rest = resp.read().decode().splitlines()
    assert len(rest) == 49


def test_autopropose_count_is_bounded(cluster: LocalNodes) -> None:
    for query in ("count=0", "count=1001", "count=abc"):
        code, _, body = cluster.get(0, f"/autopropose?{query}")
        assert code == 400 and body.startswith("error: ") and body.count("\n") == 1, body


def test_json_answers(cluster: LocalNodes) -> None:
    code, _, body = cluster.get(0, "/propose/77", json_body=True)
    assert code == 200
    answer = json.loads(body)
    assert answer["value"] == 77 and answer["command_id"] >= 1
    code, _, body = cluster.get(0, "/autopropose?count=3", json_body=True)
    assert code == 200
    lines = [json.loads(line) for line in body.splitlines()]
    assert len(lines) == 3 and all("command_id" in line for line in lines)
    slot = answer["command_id"]  # node 2 may be a thrifty round behind: wait for the slot
    code, _, body = cluster.get(2, f"/?from={slot}&limit=1&min_commit={slot}", json_body=True)
    page = json.loads(body)
    assert page["entries"] == [{"slot": answer["command_id"], "value": 77}]


def test_status(cluster: LocalNodes) -> None:
    leader = cluster.status(0)
    follower = cluster.status(3)
    assert leader["id"] == 0 and leader["role"] == "leader" and leader["leader"] == 0
    assert follower["id"] == 3 and follower["role"] == "follower" and follower["leader"] == 0
    assert follower["leader_url"] == cluster.urls[0]
    assert leader["ballot"] == follower["promised"]
    assert sorted(follower["peers"]) == sorted(u for i, u in enumerate(cluster.urls) if i != 3)
    assert isinstance(leader["commit_index"], int)


def test_history_is_paged(cluster: LocalNodes) -> None:
    code, _, body = cluster.get(0, "/autopropose?count=30")
    assert code == 200
    last = max(int(m.group(1)) for m in COMMIT.finditer(body))
    commit = cluster.wait_converged(timeout=5, at_least=last)
    code, headers, body = cluster.get(1, "/?from=2&limit=10")
    lines = body.splitlines()
    assert lines[0] == "History:" and len(lines) == 11
    assert lines[1].startswith("id 2 val ") and lines[-1].startswith("id 11 val ")
    assert headers["Link"] == '</?from=12&limit=10>; rel="next"'
    code, _, body = cluster.get(1, f"/?from={commit}&limit=10", json_body=True)
    page = json.loads(body)
    assert [e["slot"] for e in page["entries"]] == [commit] and page["next"] is None
    code, _, body = cluster.get(1, "/?limit=10001")
    assert code == 400


@pytest.mark.parametrize(
    "raw", ["abc", "1.5", "9223372036854775808", "-9223372036854775809", "", "1e3", "0x10", "%20"]
)
def test_bad_values_are_400_and_change_nothing(cluster: LocalNodes, raw: str) -> None:
    before = cluster.status(0)["commit_index"]
    code, body = propose(cluster, raw)
    assert code == 400, body
    assert body.startswith("error: ") and body.count("\n") == 1, body
    assert cluster.status(0)["commit_index"] == before


RULE = "decimal digits, an optional leading '-', no '+', no leading zeros, no '-0'"
LONG = "9" * 4300  # past the 4,300 digits Python's int() parses


@pytest.mark.parametrize(
    "raw, line",
    [
        ("+5", f"value '+5' is not a canonical integer ({RULE})"),
        ("-0", f"value '-0' is not a canonical integer ({RULE})"),
        ("007", f"value '007' is not a canonical integer ({RULE})"),
        ("12345678901234567890", "value '12345678901234567890' is outside the signed 64-bit range"),
        (LONG, f"value '{'9' * 20}'... (4300 characters) is outside the signed 64-bit range"),
    ],
    ids=["plus", "minus-zero", "leading-zeros", "20-digits", "4300-digits"],
)
def test_integers_are_canonical_and_too_long_is_out_of_range(
    cluster: LocalNodes, raw: str, line: str
) -> None:
    """One rule for every integer in a path or a query: as ``str(int)`` writes it."""
    before = cluster.status(0)["commit_index"]
    assert propose(cluster, raw) == (400, f"error: {line}\n")
    query = line.replace("value", "query parameter min_commit", 1)
    query = query.replace("the signed 64-bit range", f"[0, {2**63 - 1}]")  # min_commit >= 0
    code, _, body = cluster.get(0, f"/?min_commit={raw.replace('+', '%2B')}")
    assert (code, body) == (400, f"error: {query}\n")
    assert cluster.status(0)["commit_index"] == before


def test_64_bit_extremes_are_accepted(cluster: LocalNodes) -> None:
    for value in (2**63 - 1, -(2**63), 0):
        code, body = propose(cluster, value)
        assert code == 200 and body.endswith(f"Value {value}\n"), body


def test_unknown_path_and_wrong_method(cluster: LocalNodes) -> None:
    code, _, body = cluster.get(0, "/nope")
    assert code == 404 and body == "error: no such path: /nope\n"
    code, _, body = http_get(cluster.urls[0] + "/propose/5", method="POST")
    assert code == 405 and body.startswith("error: ")
    for method, path, allow in (
        ("GET", "/accept", "POST"),
        ("PUT", "/prepare?x=1", "POST"),
        ("DELETE", "/learn", "GET, POST"),
    ):
        code, headers, body = http_get(cluster.urls[0] + path, method=method)
        bare = path.split("?")[0]
        assert (code, headers.get("Allow")) == (405, allow), (method, path, code, headers)
        assert body == f"error: method {method} not allowed on {bare}\n", body


def test_follower_redirects_proposals_to_the_leader(cluster: LocalNodes) -> None:
    code, headers, body = cluster.get(2, "/propose/4242")
    assert code == 307, body
    assert headers["Location"] == cluster.urls[0] + "/propose/4242"
    with urllib.request.urlopen(cluster.urls[2] + "/propose/4243", timeout=10) as resp:
        assert COMMIT.fullmatch(resp.read().decode())  # a client that follows it commits
    code, headers, body = cluster.get(3, "/autopropose?count=2")
    assert code == 307, body
    assert headers["Location"] == cluster.urls[0] + "/autopropose?count=2"


ACCEPT = '"type": "accept", "ballot": [99, 1], "first": 1, "commit": 0'


def accept(fields: str) -> bytes:
    return ("{" + ACCEPT + ", " + fields + "}").encode()


MALFORMED = [
    b"",
    b"not json",
    b"[]",
    b'{"type": "accept"}',
    b'{"type": "prepare", "sender": 1, "ballot": [99, 1], "from_slot": 0}',
    accept('"sender": 1, "values": ["x"]'),
    accept('"sender": 1, "values": [1e30]'),
    accept('"sender": 9, "values": [5]'),
    accept('"sender": 1, "values": [5], "first": -3'),
    b'{"type": "promise", "sender": 1, "ballot": [99, 1], "ok": true, "promised": [99, 1]}',
    accept('"sender": true, "values": [5]'),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_internal_messages_are_400_and_change_nothing(
    cluster: LocalNodes, body: bytes
) -> None:
    before = cluster.status(3)
    history = cluster.history(3)
    for path in ("/prepare", "/accept", "/learn"):
        code, _, text = cluster.as_peer(3, path, body)  # signed: it passes authentication
        assert text.startswith("error: ") and text.count("\n") == 1, text
        assert code == 400, (path, body)
    after = cluster.status(3)
    assert after["promised"] == before["promised"]
    assert cluster.history(3)[: len(history)] == history
    assert propose(cluster, 31337)[0] == 200  # and the cluster still works


def test_the_fan_out_runs_on_tornados_curl_client_too(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    pytest.importorskip("pycurl", reason="--peer-client curl needs pycurl")
    nodes = make_nodes(3, ["--peer-client", "curl"])
    for value in (5, 6, 7):
        code, body = propose(nodes, value)
        assert code == 200, body
    nodes.wait_converged(at_least=3)
    assert [[v for _, v in nodes.history(i)] for i in range(3)] == [[5, 6, 7]] * 3


def raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` as is to the node at ``url``; the answer's bytes until the node closes
    or goes quiet."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer


def test_a_get_with_an_empty_chunked_body_is_served(cluster: LocalNodes) -> None:
    """geventhttpclient 2.4 (Locust's client on Python 3.10) sends every GET so."""
    empty = b"GET /propose/77 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    answer = raw_request(cluster.urls[0], empty.replace(b"Host: x", b"Host: 127.0.0.1"))
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"Value 77\n"), answer
    full = empty.replace(b"0\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n").replace(b"/77", b"/78")
    answer = raw_request(cluster.urls[0], full.replace(b"Host: x", b"Host: 127.0.0.1"))
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"Value 78" not in cluster.get(0, "/")[2].encode()


def test_min_commit_reads_your_own_write_on_any_node(cluster: LocalNodes) -> None:
    code, body = propose(cluster, 4711)
    assert code == 200, body
    slot = int(body.split("CommandID: ")[1].split(",")[0])
    for i in range(5):  # every node, at once: none may answer before it holds the slot
        code, _, text = cluster.get(i, f"/?from={slot}&limit=1&min_commit={slot}")
        assert code == 200 and f"id {slot} val 4711" in text, (i, text)
    started = time.monotonic()
    code, _, text = cluster.get(2, f"/?min_commit={slot + 10**9}")
    assert code == 504 and "has not applied slot" in text and text.count("\n") == 1, text
    assert 2.5 < time.monotonic() - started < 6  # bounded by --request-timeout (3 s here)


def test_propose_answers_carry_a_date_and_slow_needs_its_delay(cluster: LocalNodes) -> None:
    code, headers, _ = cluster.get(0, "/propose/31")
    assert code == 200 and headers.get("Date", "").endswith(" GMT"), headers
    code, _, body = cluster.control(1, "/fault/slow")
    assert code == 400 and "needs ?ms=N" in body and body.count("\n") == 1, body
    assert cluster.status(1)["faults"]["slow_ms"] == 0  # nothing changed


def test_a_linearizable_read_on_the_leader_sees_every_acknowledged_write(
    cluster: LocalNodes,
) -> None:
    code, body = propose(cluster, 5150)
    assert code == 200, body
    slot = int(COMMIT.match(body).group(1))  # type: ignore[union-attr]
    # At once, no min_commit: the leader's own log write may still be pending, and the read
    # index makes the read wait for it.
    code, _, text = cluster.get(0, f"/?from={slot}&limit=1&linearizable=true")
    assert code == 200 and text == f"History:\nid {slot} val 5150\n", text


def test_a_linearizable_read_on_a_follower_is_redirected_to_the_leader(
    cluster: LocalNodes,
) -> None:
    code, headers, _ = cluster.get(3, "/?linearizable=true&limit=5")
    assert code == 307, code
    assert headers["Location"] == f"{cluster.urls[0]}/?linearizable=true&limit=5"


@pytest.mark.parametrize("raw", ["1", "false", "", "TRUE"])
def test_linearizable_takes_only_true(cluster: LocalNodes, raw: str) -> None:
    code, _, text = cluster.get(0, f"/?linearizable={raw}")
    assert code == 400 and "linearizable must be 'true'" in text and text.count("\n") == 1, text
