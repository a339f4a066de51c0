"""Unit tests of the peer transport's HTTP client (``paxgos.net.transport``): the response-head
parser, and ``PeerClient`` against a real Tornado server on 127.0.0.1 (keep-alive, 204, refused
connections, overdue answers)."""

from __future__ import annotations

import asyncio
import socket

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.testing import AsyncTestCase, bind_unused_port, gen_test

from paxgos.net.transport import PeerClient, PeerError, parse_head


def test_parse_head_reads_status_length_and_keep_alive() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 57\r\n\r\n"
    assert parse_head(head) == (200, 57, True)
    assert parse_head(b"HTTP/1.1 204 No Content\r\n\r\n") == (204, 0, True)
    assert parse_head(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\n") == (400, 3, True)


def test_parse_head_knows_when_the_connection_ends() -> None:
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"
    assert parse_head(close)[2] is False
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")[2] is False
    head = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n"
    assert parse_head(head)[2] is True


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
)
def test_parse_head_refuses_what_a_peer_never_sends(head: bytes) -> None:
    with pytest.raises(PeerError):
        parse_head(head)


SERVER_STREAMS: list[object] = []  # the server's side of every connection /echo answered on
NEVER_CALLS: list[int] = []


class _Echo(tornado.web.RequestHandler):
    """POST /echo: the body back, and which client port it came from (one per connection)."""

    def post(self) -> None:
        assert self.request.connection is not None
        stream = self.request.connection.stream  # type: ignore[attr-defined]
        SERVER_STREAMS.append(stream)
        self.write(f"{stream.socket.getpeername()[1]}:".encode() + self.request.body)


class _Empty(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_status(204)


class _Never(tornado.web.RequestHandler):
    async def post(self) -> None:
        NEVER_CALLS.append(1)
        await asyncio.sleep(30)


class PeerClientTest(AsyncTestCase):
    def setUp(self) -> None:
        super().setUp()
        sock, self.port = bind_unused_port()
        app = tornado.web.Application([("/echo", _Echo), ("/empty", _Empty), ("/never", _Never)])
        self.server = HTTPServer(app)
        self.server.add_sockets([sock])
        self.client = PeerClient(f"http://127.0.0.1:{self.port}")

    def tearDown(self) -> None:
        self.client.close()
        self.server.stop()
        super().tearDown()

    @gen_test
    async def test_requests_reuse_one_kept_alive_connection(self) -> None:
        status, first = await self.client.fetch("POST /echo", b"one", 2.0)
        assert status == 200 and first.endswith(b":one")
        status, second = await self.client.fetch("POST /echo", b"two", 2.0)
        assert status == 200 and second.endswith(b":two")
        assert first.split(b":")[0] == second.split(b":")[0]  # the same client port
        assert len(self.client.idle) == 1 and not self.client.busy

    @gen_test
    async def test_concurrent_requests_open_more_connections(self) -> None:
        answers = await asyncio.gather(
            *(self.client.fetch("POST /echo", str(i).encode(), 2.0) for i in range(5))
        )
        assert [body.split(b":")[1] for _, body in answers] == [b"0", b"1", b"2", b"3", b"4"]
        assert len({body.split(b":")[0] for _, body in answers}) == 5
        assert len(self.client.idle) == 5

    @gen_test
    async def test_no_content(self) -> None:
        assert await self.client.fetch("POST /empty", b"", 2.0) == (204, b"")
        assert await self.client.fetch("GET /missing", b"", 2.0) == (
            404,
            b"<html><title>404: Not Found</title><body>404: Not Found</body></html>",
        )

    @gen_test
    async def test_a_connection_the_peer_closed_while_idle_is_replaced(self) -> None:
        status, first = await self.client.fetch("POST /echo", b"one", 2.0)
        assert status == 200 and len(self.client.idle) == 1
        for stream in SERVER_STREAMS:  # the peer restarts: its side of every connection closes
            stream.close()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        status, second = await self.client.fetch("POST /echo", b"two", 2.0)
        assert status == 200 and second.endswith(b":two")
        assert first.split(b":")[0] != second.split(b":")[0]  # on a new connection

    @gen_test(timeout=10)
    async def test_an_overdue_answer_on_a_reused_connection_is_not_sent_again(self) -> None:
        await self.client.fetch("POST /echo", b"warm", 2.0)  # one idle connection
        NEVER_CALLS.clear()
        request = asyncio.ensure_future(self.client.fetch("POST /never", b"", 0.2))
        await asyncio.sleep(0.3)
        self.client.expire(IOLoop.current().time())
        with pytest.raises(PeerError):
            await request
        await asyncio.sleep(0.1)
        assert NEVER_CALLS == [1]  # timed out, not retried: the peer is slow, not gone
        assert not self.client.busy and not self.client.overdue

    @gen_test
    async def test_a_host_name_is_resolved(self) -> None:
        client = PeerClient(f"http://localhost:{self.port}")
        assert client.family is None
        try:
            status, body = await client.fetch("POST /echo", b"named", 2.0)
        finally:
            client.close()
        assert status == 200 and body.endswith(b":named")

    @gen_test(timeout=10)
    async def test_a_peer_that_never_accepts_times_out(self) -> None:
        # A stopped process: the kernel completes the handshake, nobody reads.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            client = PeerClient(f"http://127.0.0.1:{listener.getsockname()[1]}")
            request = asyncio.ensure_future(client.fetch("POST /accept", b"{}", 0.2))
            await asyncio.sleep(0.3)
            client.expire(IOLoop.current().time())
            with pytest.raises(PeerError):
                await request
            assert not client.busy and not client.idle

    @gen_test
    async def test_refused_connection_is_a_peer_error(self) -> None:
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        client = PeerClient(f"http://127.0.0.1:{port}")
        with pytest.raises(PeerError, match="cannot connect"):
            await client.fetch("POST /accept", b"{}", 2.0)
        assert not client.busy and not client.idle

    @gen_test(timeout=10)
    async def test_an_overdue_answer_fails_and_frees_its_connection(self) -> None:
        request = asyncio.ensure_future(self.client.fetch("POST /never", b"", 0.2))
        await asyncio.sleep(0.1)
        self.client.expire(IOLoop.current().time())  # not yet due: nothing happens
        assert not request.done() and len(self.client.busy) == 1
        await asyncio.sleep(0.2)
        self.client.expire(IOLoop.current().time())
        with pytest.raises(PeerError):
            await request
        assert not self.client.busy and not self.client.idle
        status, _ = await self.client.fetch("POST /echo", b"again", 2.0)  # a new connection
        assert status == 200


def test_peer_url_must_be_plain_http() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        PeerClient("https://127.0.0.1:9000")
