"""The lane (paxgos/net/lane.py): which requests it takes off the socket, and, on real nodes,
that a connection it hands to Tornado keeps its unread request and goes on being served."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from hostile import host_port

from paxgos.core.messages import Accept, Learn
from paxgos.net.fastpath import MAX_MESSAGE_BYTES
from paxgos.net.guard import ConnectionGuard, NodeServer
from paxgos.net.lane import take
from paxgos.testing.procs import LocalNodes

OWN = "http://127.0.0.1:9000"
PROPOSE = b"GET /propose/7 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\r\n"


def post(path: str, body: bytes, *fields: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1:9000", f"Content-Length: {len(body)}"]
    return ("\r\n".join([*head, *fields]) + "\r\n\r\n").encode() + body


def test_the_lane_takes_a_proposal_and_a_whole_peer_message() -> None:
    got = take(PROPOSE + b"GET /propose/8 HTTP/1.1\r\n\r\n", OWN)
    assert got is not None and got.message_type is None
    assert got.start_line == ("GET", "/propose/7", "HTTP/1.1")
    assert got.head_end == got.body_end == len(PROPOSE)  # only the first request is taken
    body = b'{"sender": 1}'
    data = post("/accept", body, "Paxgos-Signature: abc", "Accept: application/json")
    got = take(data, OWN)
    assert got is not None and got.message_type is Accept
    assert data[got.head_end : got.body_end] == body and got.body_end == len(data)
    assert got.headers == {"Accept": "application/json", "Paxgos-Signature": "abc"}
    assert take(post("/learn", b"{}"), OWN).message_type is Learn  # type: ignore[union-attr]
    # Header names are case-insensitive, and a request for a bad value is still the lane's: its
    # delegate answers 400 as Tornado's path does.
    lower = b"GET /propose/x HTTP/1.1\r\nhOST: localhost\r\ncontent-length: 0\r\n\r\n"
    assert take(lower, OWN) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"GET /propose/7 HTTP/1.0\r\n\r\n",
        b"HEAD /propose/7 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /proposeX HTTP/1.1\r\n\r\n",
        b"GET /propose?value=1 HTTP/1.1\r\n\r\n",
        b"POST /propose/7 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"GET /accept HTTP/1.1\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nOrigin: http://127.0.0.1:9000\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nSec-Fetch-Site: same-origin\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nAccept: a\r\nAccept: b\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nAccept: a\r\n b\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nAccept : a\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nNo-Colon\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nAccept: \xe9\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nAccept: a\nX: b\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /propose/7 HTTP/1.1\r\nHost: 127.0.0.1",  # the head is not all in
        post("/accept", b"{}")[:-1],  # nor the body
        b"POST /accept HTTP/1.1\r\n\r\n",  # a message without a length
        b"POST /accept HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}",
        b"POST /accept HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        post("/accept", b" " * (MAX_MESSAGE_BYTES + 1)),
        # Tornado answers these 400 (a field name that is no token, a bare CR and a bare LF,
        # a tab in the target), or ends the head at the bare LF LF and serves two requests.
        b"GET /propose/7 HTTP/1.1\r\nX(y): z\r\n\r\n",
        b"GET /propose/7 HTTP/1.1\r\nX Y: z\r\n\r\n",
        b"GET /propose/5 HTTP/1.1\r\nX: a\rb\nc\r\n\r\n",
        b"GET /propose/1\t HTTP/1.1\r\n\r\n",
        b"GET /propose/1 HTTP/1.1\r\nX: a\n\n\rGET /propose/2 HTTP/1.1\r\r\nY: b\r\n\r\n",
    ],
)
def test_every_other_request_is_left_to_tornado(data: bytes) -> None:
    assert take(data, OWN) is None


class Answers:
    """The answers coming back on one connection, read in order by ``http.client`` (framed by
    Content-Length or chunks) from one buffered reader, so that pipelined answers stay whole."""

    class _Reader:
        def __init__(self, file: Any):
            self.file = file

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

        def close(self) -> None:
            pass  # http.client closes its reader after each answer; the next one needs it

    def __init__(self, sock: socket.socket):
        self.reader = self._Reader(sock.makefile("rb"))

    def makefile(self, mode: str) -> Any:
        return self.reader

    def read(self, count: int = 1) -> list[tuple[int, bytes]]:
        answers = []
        for _ in range(count):
            response = http.client.HTTPResponse(self)  # type: ignore[arg-type]
            response.begin()
            answers.append((response.status, response.read()))
        return answers


def test_one_connection_goes_from_the_lane_to_tornado_and_keeps_its_requests(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(3)
    host, _ = host_port(nodes.urls[0])
    with socket.create_connection(host_port(nodes.urls[0]), timeout=10) as sock:
        answers = Answers(sock)
        sock.sendall(f"GET /propose/11 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert answers.read() == [(200, b"CommandID: 1, Value 11\n")]
        # Two proposals in one write: answered in order, one at a time.
        sock.sendall(b"GET /propose/12 HTTP/1.1\r\n\r\nGET /propose/13 HTTP/1.1\r\n\r\n")
        assert [body for _, body in answers.read(2)] == [
            b"CommandID: 2, Value 12\n",
            b"CommandID: 3, Value 13\n",
        ]
        # The log is Tornado's to serve: the connection moves there with the request unread...
        sock.sendall(
            f"GET /?linearizable=true HTTP/1.1\r\nHost: {host}\r\n"
            "Accept: application/json\r\n\r\n".encode()
        )
        [(status, body)] = answers.read()
        assert status == 200 and [e["value"] for e in json.loads(body)["entries"]] == [11, 12, 13]
        # ...and goes on serving proposals there.
        sock.sendall(b"GET /propose/14 HTTP/1.1\r\n\r\n")
        assert answers.read() == [(200, b"CommandID: 4, Value 14\n")]
    nodes.wait_converged(timeout=5, at_least=4)
    for i in range(3):
        assert [value for _, value in nodes.history(i)] == [11, 12, 13, 14]


def test_a_request_that_arrives_in_pieces_is_answered(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(3)
    with socket.create_connection(host_port(nodes.urls[0]), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET /propose/21 HT")
        time.sleep(0.2)
        sock.sendall(b"TP/1.1\r\n\r\n")
        assert Answers(sock).read() == [(200, b"CommandID: 1, Value 21\n")]
    # A bad value is the lane's 400, as it is Tornado's, and changes nothing.
    with socket.create_connection(host_port(nodes.urls[0]), timeout=10) as sock:
        sock.sendall(b"GET /propose/1.5 HTTP/1.1\r\n\r\n")
        [(status, body)] = Answers(sock).read()
        assert status == 400 and body.count(b"\n") == 1, body
    nodes.wait_converged(timeout=5, at_least=1)
    for i in range(3):
        assert [value for _, value in nodes.history(i)] == [21]


class _Idle:
    """A connection waiting for a request whose close, like Tornado's, leaves the server's count
    only later (once its request loop unwinds)."""

    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_new_connection_evicts_only_as_many_as_the_cap_needs() -> None:
    server = NodeServer(lambda request: None, guard=ConnectionGuard())
    server.cap = 4
    idle = [_Idle() for _ in range(4)]
    server._connections = set(idle)  # type: ignore[assignment]
    for connection in idle:
        server.guard.waits(connection)
    assert server.room()
    assert [c.closed for c in idle] == [True, False, False, False]  # the longest-waiting one
