"""Unit tests of the peer clients (``paxgos.net.peerclient``, ``paxgos.net.peerlane``) and the
transport's checks on answers (``paxgos.net.transport``), on real sockets on 127.0.0.1.

- the response-head parser (RFC 9112 framing);
- ``PooledHTTPClient`` against a real Tornado server (keep-alive, 204, refused connections,
  overdue answers, host names, TLS with certificates made here), and ``PeerLane`` likewise;
- every peer client (lane, pooled and curl) against a raw TCP peer answering hostile bytes: a
  huge ``Content-Length``, no length, conflicting lengths, ``Connection: keep-alive, close``, a
  bad status, an endless head, an answer in pieces, bytes after it, one sent unasked;
- ``Transport`` with a stand-in host, through the lane and through the pooled client: wrong
  reply type or sender, unsigned answers, oversized answers, rate-limited logging, contained
  exceptions, long answers decoded off the loop, and ``configure_peer_client``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPHeaders
from tornado.testing import AsyncTestCase, bind_unused_port, gen_test

from paxgos.core.ballot import Ballot
from paxgos.core.messages import (
    MAX_BATCH,
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Learn,
    LearnAck,
    Message,
    Prepare,
    Promise,
    encode,
)
from paxgos.net import peerlane as peerlane_module
from paxgos.net import transport as transport_module
from paxgos.net.auth import SIGNATURE, PeerAuth
from paxgos.net.peerclient import (
    MAX_HEAD,
    BadAnswer,
    PeerError,
    PeerRequest,
    PooledHTTPClient,
    parse_head,
)
from paxgos.net.peerlane import PeerLane
from paxgos.net.transport import (
    MAX_RESPONSE,
    PEER_CLIENTS,
    REPLY_ENVELOPE,
    Transport,
    answer_limit,
    configure_peer_client,
)

try:
    import pycurl  # noqa: F401

    HAVE_CURL = True
except ImportError:
    HAVE_CURL = False

B = Ballot(1, 0)
SECRET = b"s" * 32

# --- the head parser --------------------------------------------------------------------------


def test_parse_head_reads_status_length_and_keep_alive() -> None:
    head = parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 57\r\n\r\n"
    )
    assert (head.status, head.reason, head.length, head.keep_alive) == (200, "OK", 57, True)
    assert head.headers["content-type"] == "application/json"
    assert parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")[:4] == (204, "No Content", 0, True)
    assert parse_head(b"HTTP/1.1 400 Bad\r\ncontent-length: 3\r\n\r\n")[:4] == (400, "Bad", 3, True)
    assert parse_head(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status == 200  # no reason


def test_parse_head_knows_when_the_connection_ends() -> None:
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"
    assert parse_head(close).keep_alive is False
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").keep_alive is False
    head = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n"
    assert parse_head(head).keep_alive is True


def test_connection_is_a_token_list() -> None:
    """RFC 9110 §7.6.1: ``close`` anywhere in the list ends the connection (failed before:
    ``keep-alive, close`` kept it)."""
    for value in (b"keep-alive, close", b"Upgrade,CLOSE", b"close , te"):
        head = b"HTTP/1.1 200 OK\r\nConnection: " + value + b"\r\nContent-Length: 1\r\n\r\n"
        assert parse_head(head).keep_alive is False, value
    head = b"HTTP/1.1 200 OK\r\nConnection: te\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n"
    assert parse_head(head).keep_alive is False
    head = b"HTTP/1.0 200 OK\r\nConnection: te, Keep-Alive\r\nContent-Length: 1\r\n\r\n"
    assert parse_head(head).keep_alive is True


def test_no_length_means_the_body_runs_to_the_close() -> None:
    """RFC 9112 §6.3: without Content-Length the body ends at the close, so the connection
    cannot be reused (failed before: read as an empty body on a pooled connection)."""
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
    assert head.length is None and head.keep_alive is False
    assert parse_head(b"HTTP/1.1 304 Not Modified\r\n\r\n")[2:4] == (0, True)


def test_repeated_identical_lengths_are_one_length() -> None:
    """RFC 9110 §8.6: ``Content-Length: 42, 42`` (or the field twice) may be taken as 42."""
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 42, 42\r\n\r\n").length == 42
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n"
    assert parse_head(head).length == 7


def test_a_length_over_the_limit_is_refused_before_the_body() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"
    with pytest.raises(BadAnswer, match="longer than"):
        parse_head(head, max_length=MAX_RESPONSE)
    assert parse_head(head).length == 10**12  # no limit given: only the framing is checked


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 1\r\n\r\n",  # failed before: taken as 2000
        b"HTTP/1.1 20 OK\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",  # failed before
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 7\r\n\r\n",  # failed before
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",  # whitespace before the colon
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 5\r\n\r\n",  # obs-fold
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
)
def test_parse_head_refuses_what_a_peer_never_sends(head: bytes) -> None:
    with pytest.raises(BadAnswer):
        parse_head(head)


# --- the pooled client against a real Tornado server ------------------------------------------

SERVER_STREAMS: list[Any] = []  # the server's side of every connection /echo answered on
NEVER_CALLS: list[int] = []


class _Echo(tornado.web.RequestHandler):
    """POST /echo: the body back, and which client port it came from (one per connection)."""

    def post(self) -> None:
        assert self.request.connection is not None
        stream = self.request.connection.stream  # type: ignore[attr-defined]
        SERVER_STREAMS.append(stream)
        self.set_header(SIGNATURE, "echoed")
        self.write(f"{stream.socket.getpeername()[1]}:".encode() + self.request.body)


class _Empty(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_status(204)


class _Never(tornado.web.RequestHandler):
    async def post(self) -> None:
        NEVER_CALLS.append(1)
        await asyncio.sleep(30)


def _app() -> tornado.web.Application:
    return tornado.web.Application([("/echo", _Echo), ("/empty", _Empty), ("/never", _Never)])


class PooledClientTest(AsyncTestCase):
    def setUp(self) -> None:
        super().setUp()
        sock, self.port = bind_unused_port()
        self.server = HTTPServer(_app())
        self.server.add_sockets([sock])
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = PooledHTTPClient(force_instance=True)
        SERVER_STREAMS.clear()  # an earlier test's, on a loop that is gone

    def tearDown(self) -> None:
        self.client.close()
        self.server.stop()
        super().tearDown()

    async def post(self, path: str, body: bytes = b"", timeout: float = 2.0) -> HTTPResponse:
        """The answer, or a 599 for a failure (``fetch`` raises those even with
        ``raise_error=False``: only an error status is returned)."""
        return await fetch(
            self.client, self.url + path, method="POST", body=body, request_timeout=timeout
        )

    @property
    def pool(self) -> Any:
        return self.client.pools[self.url]

    @gen_test
    async def test_requests_reuse_one_kept_alive_connection(self) -> None:
        first = await self.post("/echo", b"one")
        assert first.code == 200 and first.body.endswith(b":one")
        assert first.headers[SIGNATURE] == "echoed"
        second = await self.post("/echo", b"two")
        assert second.code == 200 and second.body.endswith(b":two")
        assert first.body.split(b":")[0] == second.body.split(b":")[0]  # the same client port
        assert len(self.pool.idle) == 1 and not self.pool.busy

    @gen_test
    async def test_concurrent_requests_open_more_connections(self) -> None:
        answers = await asyncio.gather(*(self.post("/echo", str(i).encode()) for i in range(5)))
        assert [a.body.split(b":")[1] for a in answers] == [b"0", b"1", b"2", b"3", b"4"]
        assert len({a.body.split(b":")[0] for a in answers}) == 5
        assert len(self.pool.idle) == 5

    @gen_test
    async def test_no_content_and_errors(self) -> None:
        empty = await self.post("/empty")
        assert (empty.code, empty.body) == (204, b"")
        missing = await self.client.fetch(self.url + "/missing", raise_error=False)
        assert missing.code == 404 and b"404: Not Found" in missing.body
        assert len(self.pool.idle) == 1  # both answers were framed: one connection, reused

    @gen_test
    async def test_a_connection_the_peer_closed_while_idle_is_replaced(self) -> None:
        first = await self.post("/echo", b"one")
        assert first.code == 200 and len(self.pool.idle) == 1
        for stream in SERVER_STREAMS:  # the peer restarts: its side of every connection closes
            stream.close()
        await asyncio.sleep(0.05)
        second = await self.post("/echo", b"two")
        assert second.code == 200 and second.body.endswith(b":two")
        assert first.body.split(b":")[0] != second.body.split(b":")[0]  # on a new connection

    @gen_test(timeout=10)
    async def test_an_overdue_answer_on_a_reused_connection_is_not_sent_again(self) -> None:
        await self.post("/echo", b"warm")  # one idle connection
        NEVER_CALLS.clear()
        started = asyncio.get_running_loop().time()
        answer = await self.post("/never", timeout=0.2)  # the 100 ms sweep ends it
        assert answer.code == 599 and isinstance(answer.error, PeerError)
        assert asyncio.get_running_loop().time() - started < 1.0
        await asyncio.sleep(0.1)
        assert NEVER_CALLS == [1]  # timed out, not retried: the peer is slow, not gone
        assert not self.pool.busy and not getattr(self.pool, "overdue", ()) and not self.pool.idle
        again = await self.post("/echo", b"again")  # a new connection
        assert again.code == 200

    @gen_test
    async def test_a_host_name_is_resolved(self) -> None:
        url = f"http://localhost:{self.port}"
        answer = await self.client.fetch(url + "/echo", method="POST", body=b"named")
        assert answer.code == 200 and answer.body.endswith(b":named")
        assert self.client.pools[url].family is None

    @gen_test(timeout=10)
    async def test_a_peer_that_never_accepts_times_out(self) -> None:
        # A stopped process: the kernel completes the handshake, nobody reads.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            answer = await fetch(
                self.client, url + "/accept", method="POST", body=b"{}", request_timeout=0.2
            )
            assert answer.code == 599
            assert not self.client.pools[url].busy and not self.client.pools[url].idle

    @gen_test
    async def test_refused_connection_is_a_peer_error(self) -> None:
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(PeerError, match="cannot connect"):
            await self.client.fetch(url + "/accept", method="POST", body=b"{}")
        assert not self.client.pools[url].busy and not self.client.pools[url].idle

    @gen_test
    async def test_an_answer_over_the_request_limit_fails(self) -> None:
        request = PeerRequest(self.url + "/echo", method="POST", body=b"x" * 100, max_body_size=50)
        answer = await fetch(self.client, request)
        assert answer.code == 599 and isinstance(answer.error, BadAnswer)
        assert not self.pool.idle  # its body was never read: the connection is closed

    @gen_test
    async def test_a_line_break_in_a_header_is_refused(self) -> None:
        with pytest.raises(ValueError, match="line break"):
            await self.client.fetch(self.url + "/echo", headers={"X-A": "1\r\nX-B: 2"})

    def test_peer_url_must_be_http(self) -> None:
        with pytest.raises(ValueError, match="does not support"):
            self.client.fetch_impl(cast(Any, _FakeRequest("ftp://127.0.0.1:9000/")), print)


class LaneClientTest(PooledClientTest):
    """The same against ``PeerLane`` (through ``LaneClient``), and what only it does."""

    def setUp(self) -> None:
        super().setUp()
        self.client.close()
        self.client = cast(Any, LaneClient(self.io_loop.asyncio_loop))  # type: ignore[attr-defined]

    @gen_test
    async def test_a_line_break_in_a_header_is_refused(self) -> None:
        pytest.skip("the lane writes the bytes its transport formatted: it takes no headers")

    @gen_test
    async def test_peer_url_must_be_http(self) -> None:  # type: ignore[override]
        for url in ("https://127.0.0.1:9000", "ftp://127.0.0.1:9000", "http://"):
            with pytest.raises(ValueError, match="must be http://host:port"):
                self.client.lane.request(url, b"", 1.0, 10, print)

    @gen_test(timeout=20)
    async def test_a_request_larger_than_the_socket_buffer_is_written_whole(self) -> None:
        body = bytes(range(256)) * (16 * 1024)  # 4 MiB: many partial sends
        answer = await self.post("/echo", body, timeout=10.0)
        assert answer.code == 200 and answer.body.split(b":", 1)[1] == body
        assert len(self.pool.idle) == 1 and not self.pool.busy

    @gen_test(timeout=10)
    async def test_requests_under_way_fail_when_the_lane_closes(self) -> None:
        await self.post("/echo", b"warm")
        lane: PeerLane = self.client.lane
        ended: list[tuple[int, str]] = []
        request = b"POST /never HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        for _ in range(2):  # the first on the idle connection, the second on a new one
            lane.request(self.url, request, 5.0, 100, lambda *a: ended.append((a[0], str(a[3]))))
        assert len(self.pool.busy) == 1 and len(self.pool.connecting) == 1 and ended == []
        self.client.close()
        await asyncio.sleep(0.05)
        assert ended == [(599, "HTTP 599: the peer lane is closed")] * 2
        assert self.client.pools == {}
        with pytest.raises(PeerError, match="closed"):
            await self.client.fetch(self.url + "/echo", method="POST", body=b"late")


async def fetch(client: AsyncHTTPClient, url: str | HTTPRequest, **kwargs: Any) -> HTTPResponse:
    try:
        return await client.fetch(url, raise_error=False, **kwargs)
    except HTTPClientError as exc:
        assert exc.response is None
        request = url if isinstance(url, HTTPRequest) else HTTPRequest(url, **kwargs)
        return HTTPResponse(request, 599, error=exc)


class _FakeRequest:
    def __init__(self, url: str) -> None:
        self.url, self.method, self.body = url, "GET", None


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def certificates(tmp_path: Path) -> Iterator[dict[str, Path]]:
    trustme = pytest.importorskip("trustme", reason="certificates are made with trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    yield files


def test_https_peers_are_verified_against_the_ca(certificates: dict[str, Path]) -> None:
    async def run() -> None:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(certificates["cert"], certificates["key"])
        sock, port = bind_unused_port()
        server = HTTPServer(_app(), ssl_options=server_context)
        server.add_sockets([sock])
        trusted = ssl.create_default_context(cafile=str(certificates["ca"]))
        good = PooledHTTPClient(force_instance=True, ssl_context=trusted)
        system = PooledHTTPClient(force_instance=True)  # the system CAs: ours is not one
        try:
            for host in ("127.0.0.1", "localhost"):
                url = f"https://{host}:{port}/echo"
                answer = await good.fetch(url, method="POST", body=b"secret")
                assert answer.code == 200 and answer.body.endswith(b":secret")
                answer = await good.fetch(url, method="POST", body=b"again")
                assert answer.code == 200 and len(good.pools[f"https://{host}:{port}"].idle) == 1
                refused = await fetch(system, url, method="POST", body=b"x")
                assert refused.code == 599 and "CERTIFICATE_VERIFY_FAILED" in str(refused.error)
        finally:
            good.close()
            system.close()
            server.stop()

    asyncio.run(run())


@pytest.mark.parametrize("client", PEER_CLIENTS)
def test_configured_tls_files_verify_https_peers(
    client: str, certificates: dict[str, Path], restore_client_configuration: None
) -> None:
    """``configure_peer_client`` with the CA file: either client trusts our CA's peers."""
    if client == "curl" and not HAVE_CURL:
        pytest.skip("pycurl is not installed")
    configure_peer_client(client, ca_certs=str(certificates["ca"]))

    async def run() -> None:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(certificates["cert"], certificates["key"])
        sock, port = bind_unused_port()
        server = HTTPServer(_app(), ssl_options=server_context)
        server.add_sockets([sock])
        http = AsyncHTTPClient(force_instance=True)
        try:
            answer = await http.fetch(f"https://127.0.0.1:{port}/echo", method="POST", body=b"s")
            assert answer.code == 200 and answer.body.endswith(b":s")
        finally:
            http.close()
            server.stop()

    asyncio.run(run())


# --- both clients against a hostile raw peer --------------------------------------------------

Respond = Callable[[asyncio.StreamWriter, "RawPeer"], Awaitable[bool]]


class RawPeer:
    """A TCP server on a free 127.0.0.1 port that reads each request and lets ``respond``
    write whatever bytes it likes (and say whether to keep the connection); it counts the
    requests and the bytes it managed to send."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests = 0
        self.connections = 0
        self.sent = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> RawPeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                self.requests += 1
                if not await self.respond(writer, self):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        try:
            await asyncio.wait_for(self.server.wait_closed(), 2)
        except asyncio.TimeoutError:
            pass


def answer(data: bytes, keep: bool = True) -> Respond:
    async def respond(writer: asyncio.StreamWriter, peer: RawPeer) -> bool:
        writer.write(data)
        await writer.drain()
        peer.sent += len(data)
        return keep

    return respond


def endless(head: bytes, limit: int = 300 * 1024 * 1024) -> Respond:
    """``head``, then body bytes until the client gives up (or ``limit``, so that a client that
    never does fails the test rather than hanging it)."""

    async def respond(writer: asyncio.StreamWriter, peer: RawPeer) -> bool:
        writer.write(head)
        chunk = b"7" * 65536
        while peer.sent < limit:
            writer.write(chunk)
            await writer.drain()
            peer.sent += len(chunk)
        return False

    return respond


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(body), body)


class LaneClient:
    """A ``PeerLane`` behind the calls these tests make of an ``AsyncHTTPClient`` (``fetch`` of a
    ``PeerRequest`` or a URL, ``close``); the request is formatted as the transport does."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.lane = PeerLane(loop)

    async def fetch(
        self, request: HTTPRequest | str, raise_error: bool = True, **kwargs: Any
    ) -> HTTPResponse:
        if isinstance(request, str):
            request = HTTPRequest(request, **kwargs)
        scheme, _, rest = request.url.partition("://")
        netloc, slash, path = rest.partition("/")
        body = request.body or b""
        data = (
            f"{request.method} {slash}{path} HTTP/1.1\r\nHost: {netloc}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        done: asyncio.Future[HTTPResponse] = asyncio.get_running_loop().create_future()

        def answered(
            status: int, headers: HTTPHeaders | None, answer: bytes, error: BaseException | None
        ) -> None:
            done.set_result(
                HTTPResponse(request, status, headers=headers, buffer=BytesIO(answer), error=error)  # type: ignore[arg-type]
            )

        limit = getattr(request, "max_body_size", None) or MAX_RESPONSE
        timeout = request.request_timeout or 20.0
        self.lane.request(f"{scheme}://{netloc}", data, timeout, limit, answered)
        response = await done
        if response.code == 599:  # as AsyncHTTPClient.fetch raises it, whatever raise_error
            assert response.error is not None
            raise response.error
        return response

    @property
    def pools(self) -> dict[str, Any]:
        return self.lane.pools

    def close(self) -> None:
        self.lane.close()


def make_client(kind: str) -> AsyncHTTPClient:
    if kind == "lane":
        return cast(AsyncHTTPClient, LaneClient())
    if kind == "curl":
        if not HAVE_CURL:
            pytest.skip("pycurl is not installed")
        from tornado.curl_httpclient import CurlAsyncHTTPClient

        return CurlAsyncHTTPClient(force_instance=True)
    return PooledHTTPClient(force_instance=True, max_body_size=MAX_RESPONSE)


@pytest.fixture(params=PEER_CLIENTS)
def kind(request: pytest.FixtureRequest) -> str:
    return cast(str, request.param)


def exchange(
    kind: str, respond: Respond, count: int = 1, limit: int = 10_000, timeout: float = 5.0
) -> tuple[RawPeer, list[HTTPResponse], AsyncHTTPClient]:
    """``count`` requests one after another from a new ``kind`` client to a ``RawPeer``; the
    peer, the answers (599 for failures) and the (closed) client."""

    async def run() -> tuple[RawPeer, list[HTTPResponse], AsyncHTTPClient]:
        peer = await RawPeer(respond).start()
        client = make_client(kind)
        answers = []
        try:
            for _ in range(count):
                request = PeerRequest(
                    peer.url + "/learn", method="POST", body=b"{}", max_body_size=limit,
                    request_timeout=timeout, connect_timeout=timeout,
                )  # fmt: skip
                answers.append(await fetch(client, request))
        finally:
            client.close()
            await peer.stop()
        return peer, answers, client

    return asyncio.run(run())


def test_a_huge_content_length_is_refused_unread(kind: str) -> None:
    """R1: ``Content-Length: 10**12`` and a peer streaming behind it (failed before: 100 MB
    buffered per connection, then ``StreamBufferFullError``)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"
    peer, answers, _ = exchange(kind, endless(head))
    assert answers[0].code == 599
    assert peer.sent < 32 * 1024 * 1024  # what loopback socket buffers hold, not 100 MB


def test_an_endless_answer_without_length_stops_at_the_limit(kind: str) -> None:
    peer, answers, _ = exchange(kind, endless(b"HTTP/1.1 200 OK\r\n\r\n"))
    assert answers[0].code == 599
    assert peer.sent < 32 * 1024 * 1024


def test_an_answer_without_length_runs_to_the_close_and_is_not_pooled(kind: str) -> None:
    """RFC 9112 §6.3 (failed before: an empty body, and the connection pooled)."""
    peer, answers, _ = exchange(kind, answer(b"HTTP/1.1 200 OK\r\n\r\nhello", keep=False), 2)
    assert [(a.code, a.body) for a in answers] == [(200, b"hello"), (200, b"hello")]
    assert peer.connections == 2


def test_conflicting_lengths_are_an_error(kind: str) -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nhello"
    peer, answers, _ = exchange(kind, answer(data))
    assert answers[0].code == 599


def test_connection_close_in_a_token_list_is_honoured(kind: str) -> None:
    peer, answers, _ = exchange(kind, answer(ok(b"{}", b"Connection: keep-alive, close\r\n")), 2)
    assert [a.code for a in answers] == [200, 200]
    assert peer.connections == 2  # failed before: one connection, pooled and reused


def test_a_request_made_just_before_close_fails_without_connecting() -> None:
    """A node stopping with messages just sent: they fail at once (failed before: the pooled
    client made a new pool after close and sent them anyway)."""

    async def run() -> None:
        peer = await RawPeer(answer(ok(b"{}"))).start()
        client = PooledHTTPClient(force_instance=True)
        pending = client.fetch(peer.url + "/learn", method="POST", body=b"{}")
        client.close()
        with pytest.raises(PeerError, match="closed"):
            await asyncio.wait_for(pending, 1.0)
        await asyncio.sleep(0.05)
        assert peer.connections == 0 and client.pools == {}
        await peer.stop()

    asyncio.run(run())


def test_a_kept_alive_answer_reuses_its_connection(kind: str) -> None:
    peer, answers, _ = exchange(kind, answer(ok(b"{}")), 3)
    assert [a.code for a in answers] == [200, 200, 200]
    assert peer.connections == 1


def at_offsets(data: bytes, offsets: list[int]) -> Respond:
    """``data`` cut at ``offsets``, each piece written in a segment of its own."""

    async def respond(writer: asyncio.StreamWriter, peer: RawPeer) -> bool:
        cuts = [0, *offsets, len(data)]
        for start, stop in zip(cuts, cuts[1:], strict=False):
            writer.write(data[start:stop])
            await writer.drain()
            await asyncio.sleep(0.002)
            peer.sent += stop - start
        return True

    return respond


BODY = b'{"a": "' + b"x" * 600 + b'"}'
PIECES = ok(BODY, b"X-Pad: " + b"p" * 300 + b"\r\n")
HEAD_END = PIECES.index(b"\r\n\r\n")


@pytest.mark.parametrize(
    "offsets",
    [[HEAD_END + 1], [HEAD_END + 2], [HEAD_END + 3], [HEAD_END + 4], [HEAD_END + 9],
     [5, HEAD_END - 1, HEAD_END + 2, HEAD_END + 300]],
    ids=["cr|lf", "crlf|crlf", "crlfcr|lf", "head|body", "in-body", "many"],
)  # fmt: skip
def test_an_answer_in_pieces_is_read_whole(kind: str, offsets: list[int]) -> None:
    """The head and the body arrive split anywhere, the end of the head too (the pooled
    client reads whatever has arrived and looks for the end of the head across reads)."""
    peer, answers, _ = exchange(kind, at_offsets(PIECES, offsets), 2)
    assert [(a.code, a.body) for a in answers] == [(200, BODY), (200, BODY)]
    assert peer.connections == 1


#: The clients of ours, which frame answers by ``parse_head``'s rules (curl has its own).
OURS = ("lane", "pooled")


@pytest.mark.parametrize("ours", OURS)
def test_a_head_of_the_longest_allowed_is_read_and_one_byte_more_is_not(ours: str) -> None:
    def answer_with_head_of(size: int) -> bytes:
        start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: "
        return start + b"p" * (size - len(start) - 4) + b"\r\n\r\n{}"

    _, answers, _ = exchange(ours, answer(answer_with_head_of(MAX_HEAD)))
    assert (answers[0].code, answers[0].body) == (200, b"{}")
    _, answers, _ = exchange(ours, answer(answer_with_head_of(MAX_HEAD + 1)))
    assert answers[0].code == 599 and f"longer than {MAX_HEAD}" in str(answers[0].error)


@pytest.mark.parametrize("ours", OURS)
def test_bytes_after_an_answer_fail_it(ours: str) -> None:
    """A peer that sends more than the answer it was asked for, in the same segment, is not
    believed, and its connection is not reused."""
    peer, answers, _ = exchange(ours, answer(ok(b"{}") + b"HTTP/1.1 200 OK\r\n"), 2)
    assert [a.code for a in answers] == [599, 599]
    assert "after the answer" in str(answers[0].error)
    assert peer.connections == 2


@pytest.mark.parametrize("ours", OURS)
def test_an_answer_sent_unasked_on_an_idle_connection_is_never_taken_for_one(ours: str) -> None:
    """A stray answer arriving while the connection is idle (failed before: the next request
    got it, and every later one the answer to the request before it)."""

    async def respond(writer: asyncio.StreamWriter, peer: RawPeer) -> bool:
        writer.write(ok(b'{"n": %d}' % peer.requests))
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(ok(b'{"stray": 1}'))
        await writer.drain()
        return True

    async def run() -> tuple[RawPeer, list[HTTPResponse]]:
        peer = await RawPeer(respond).start()
        client = make_client(ours)
        answers = []
        try:
            for _ in range(3):
                answers.append(await fetch(client, peer.url + "/learn", method="POST", body=b"{}"))
                await asyncio.sleep(0.25)  # the stray answer arrives meanwhile
        finally:
            client.close()
            await peer.stop()
        return peer, answers

    peer, answers = asyncio.run(run())
    assert [(a.code, a.body) for a in answers] == [
        (200, b'{"n": 1}'), (200, b'{"n": 2}'), (200, b'{"n": 3}')
    ]  # fmt: skip
    assert peer.connections == 3  # each connection dropped once the stray answer came


@pytest.mark.parametrize("ours", OURS)
def test_a_reused_connection_closed_instead_of_answering_is_retried_once(ours: str) -> None:
    """The peer reads the request on a kept-alive connection and closes it unanswered (the
    close crossed the request): the request goes again on a new connection."""

    async def respond(writer: asyncio.StreamWriter, peer: RawPeer) -> bool:
        if peer.requests == 2:
            return False  # closed, unanswered
        writer.write(ok(b'{"n": %d}' % peer.requests))
        await writer.drain()
        return True

    peer, answers, _ = exchange(ours, respond, 2)
    assert [(a.code, a.body) for a in answers] == [(200, b'{"n": 1}'), (200, b'{"n": 3}')]
    assert peer.requests == 3 and peer.connections == 2


def test_the_lane_retries_on_a_new_connection_not_another_idle_one() -> None:
    """A peer that restarts closes every idle connection at once: the retry of a request that
    met one of those closes goes on a new connection, not on another idle one, which is likely
    closed too (failed before: it took the next idle connection)."""

    async def run() -> tuple[RawPeer, list[bytes]]:
        peer = await RawPeer(answer(ok(b"{}"))).start()
        client = LaneClient()
        try:
            warm = [client.fetch(peer.url + "/learn", method="POST", body=b"{}") for _ in range(2)]
            await asyncio.gather(*warm)  # two idle connections
            pool = client.pools[peer.url]
            assert len(pool.idle) == 2 and peer.connections == 2
            # The peer closes the connection the next request will take (the last idle one).
            port = pool.idle[-1].sock.getsockname()[1]
            server_side = [w for w in peer.writers if w.get_extra_info("peername")[1] == port]
            server_side[0].get_extra_info("socket").shutdown(socket.SHUT_WR)
            await asyncio.sleep(0)  # not long enough for the client to read the close
            retried = await client.fetch(peer.url + "/learn", method="POST", body=b"{}")
            bodies = [retried.body]
        finally:
            client.close()
            await peer.stop()
        return peer, bodies

    peer, bodies = asyncio.run(run())
    assert bodies == [b"{}"]
    assert peer.connections == 3  # the retry's own; the other idle connection was left alone


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 300_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}",  # cut short by the close
    ],
    ids=["status-2000", "endless-head", "short-body"],
)
def test_broken_answers_fail(kind: str, data: bytes) -> None:
    if kind == "curl" and data.startswith(b"HTTP/1.1 2000"):
        pytest.skip("libcurl 8.23 takes status 2000 as 200 (measured); the pooled one refuses it")
    peer, answers, _ = exchange(kind, answer(data, keep=False))
    assert answers[0].code == 599


# --- the transport's checks on answers --------------------------------------------------------


class FakeNode:
    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.stepped: list[Message] = []
        self.threads: set[str] = set()

    def step(self, msg: Message) -> str:
        self.stepped.append(msg)
        return "ready"


class FakeHost:
    """The host side of a ``Transport``: a node whose replies are recorded."""

    def __init__(self) -> None:
        self.node = FakeNode(0)
        self.inputs: list[object] = []
        self.own: list[Message] = []  # messages the node sent itself
        self.own_reply: Message | None = None

    def receive(self, reply: Message) -> None:
        self.inputs.append(self.node.step(reply))

    def local(self, msg: Message, respond: Callable[[object], None]) -> None:
        self.own.append(msg)
        respond(self.own_reply)

    def transport(
        self, urls: list[str], timeout: float, auth: PeerAuth, lane: bool = True
    ) -> Transport:
        return Transport(self.node.id, urls, timeout, self.receive, self.local, auth, lane=lane)


class SigningPeer(RawPeer):
    """A raw peer that signs its answers to each request with ``auth`` (an honest node's
    framing, with a chosen status and body)."""

    def __init__(self, status: int, body: bytes, auth: PeerAuth | None, sign: bool = True):
        super().__init__(answer(b""))
        self.status, self.body, self.auth, self.sign = status, body, auth, sign

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, signature = 0, ""
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                    elif name.lower() == SIGNATURE.lower().encode():
                        signature = value.strip().decode()
                await reader.readexactly(length)
                self.requests += 1
                extra = b""
                if self.auth is not None and self.sign:
                    mac = self.auth.sign_reply(signature, self.status, self.body)
                    extra = f"{SIGNATURE}: {mac}\r\n".encode()
                reason = b"OK" if self.status < 300 else b"Failed"
                writer.write(
                    b"HTTP/1.1 %d %s\r\n%sContent-Length: %d\r\n\r\n%s"
                    % (self.status, reason, extra, len(self.body), self.body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class FailingClient:
    """A stand-in peer client (an ``AsyncHTTPClient`` or a ``PeerLane``) whose every request
    fails with ``error`` (raised by ``fetch`` or ``request`` itself with ``at_once``)."""

    def __init__(self, error: BaseException, at_once: bool = False) -> None:
        self.error, self.at_once = error, at_once

    def request(self, origin: str, data: bytes, timeout: float, limit: int, answered: Any) -> None:
        if self.at_once:
            raise self.error
        asyncio.get_running_loop().call_soon(answered, 599, None, b"", self.error)

    def fetch(self, request: object, raise_error: bool = True) -> asyncio.Future[HTTPResponse]:
        if self.at_once:
            raise self.error
        future: asyncio.Future[HTTPResponse] = asyncio.get_running_loop().create_future()
        future.set_exception(self.error)
        return future

    def close(self) -> None:
        pass


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]


class TransportTest(AsyncTestCase):
    """The transport's checks, its plain-HTTP peers reached through the lane."""

    lane = True

    def setUp(self) -> None:
        super().setUp()
        self.captured = Captured()
        self.logger = logging.getLogger("paxgos.net")
        self.logger.addHandler(self.captured)
        self.errors: list[dict[str, Any]] = []
        self.peers: list[RawPeer] = []
        self.transports: list[Transport] = []

    def tearDown(self) -> None:
        self.logger.removeHandler(self.captured)
        for transport in self.transports:
            transport.close()
        for peer in self.peers:
            self.io_loop.run_sync(peer.stop)
        super().tearDown()

    async def transport(
        self, peer: RawPeer, auth: PeerAuth | None = None
    ) -> tuple[Transport, FakeHost]:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: self.errors.append(ctx))
        self.peers.append(await peer.start())
        host = FakeHost()
        urls = ["http://127.0.0.1:9", peer.url]
        transport = host.transport(urls, 2.0, auth or PeerAuth(None), lane=self.lane)
        self.transports.append(transport)
        return transport, host

    def break_client(self, transport: Transport, client: FailingClient | None) -> None:
        """Put ``client`` in the place of the transport's client (None: a real one anew)."""
        if self.lane:
            transport.lane = cast(Any, client)
        else:
            transport.http = cast(Any, client)

    async def settle(self, transport: Transport) -> None:
        for _ in range(200):
            if transport.in_flight[1] == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        gc.collect()  # an unretrieved task exception is reported when the task is collected
        await asyncio.sleep(0)

    async def send(self, transport: Transport, msg: Message, count: int = 1) -> None:
        for _ in range(count):
            transport.send(1, msg)
            await self.settle(transport)

    @gen_test(timeout=20)
    async def test_a_right_reply_reaches_the_core(self) -> None:
        reply = Accepted(1, B, 1, 1, True, B)
        transport, host = await self.transport(SigningPeer(200, encode(reply), PeerAuth(SECRET)))
        transport.auth = PeerAuth(SECRET)
        await self.send(transport, Accept(0, B, 1, (5,), 0))
        assert host.node.stepped == [reply] and host.inputs == ["ready"]
        assert self.captured.warnings() == [] and self.errors == []

    @gen_test(timeout=20)
    async def test_a_reply_of_the_wrong_type_is_dropped_and_logged_once(self) -> None:
        """S2: a Promise answering an Accept (failed before: stepped into the core), 20 times:
        one warning line, not 20 (failed before: there was no check, so no line)."""
        reply = encode(Promise(1, B, True, B, 0))
        transport, host = await self.transport(RawPeer(answer(ok(reply))))
        await self.send(transport, Accept(0, B, 1, (5,), 0), 20)
        assert host.node.stepped == []
        warnings = self.captured.warnings()
        assert len(warnings) == 1 and "Promise in answer to a Accept" in warnings[0]
        assert self.errors == []

    @gen_test(timeout=20)
    async def test_each_request_type_wants_its_own_reply(self) -> None:
        replies: dict[type, Message] = {
            Prepare: Promise(1, B, True, B, 0),
            Accept: Accepted(1, B, 1, 1, True, B),
            Learn: LearnAck(1, B, 0, B),
            CatchupRequest: CatchupReply(1, ((1, 5),), 1),
        }
        requests: list[Message] = [
            Prepare(0, B, 1), Accept(0, B, 1, (5,), 0), Learn(0, B, 1), CatchupRequest(0, 1, 10)
        ]  # fmt: skip
        for request in requests:
            for kind, reply in replies.items():
                transport, host = await self.transport(RawPeer(answer(ok(encode(reply)))))
                await self.send(transport, request)
                wanted = [reply] if kind is type(request) else []
                assert host.node.stepped == wanted, (request, reply)

    @gen_test(timeout=20)
    async def test_a_reply_from_another_node_is_dropped(self) -> None:
        """S2: an answer naming node 3 from the node asked, 1 (faking a majority)."""
        reply = encode(Accepted(3, B, 1, 1, True, B))
        transport, host = await self.transport(RawPeer(answer(ok(reply))))
        await self.send(transport, Accept(0, B, 1, (5,), 0), 20)
        assert host.node.stepped == []
        warnings = self.captured.warnings()
        assert len(warnings) == 1 and "naming node 3" in warnings[0]  # failed before: 20

    @gen_test(timeout=20)
    async def test_an_unsigned_or_missigned_answer_is_dropped(self) -> None:
        reply = encode(LearnAck(1, B, 0, B))
        for peer in (
            SigningPeer(200, reply, None),
            SigningPeer(200, reply, PeerAuth(b"t" * 32)),  # another cluster's secret
            SigningPeer(204, b"", PeerAuth(b"t" * 32)),
        ):
            transport, host = await self.transport(peer, PeerAuth(SECRET))
            await self.send(transport, Learn(0, B, 1), 5)
            assert host.node.stepped == []
            warnings = self.captured.warnings()
            assert len(warnings) == 1 and "not signed" in warnings[0]
            self.captured.records.clear()

    @gen_test(timeout=20)
    async def test_a_refusal_is_dropped_without_a_not_signed_line(self) -> None:
        """Only 200 and 204 carry a signature (failed before: a 500 was logged unsigned)."""
        for status in (401, 500, 503, 599):  # 599 is a peer's status like any other here
            peer = SigningPeer(status, b'{"error":"no"}', None)
            transport, host = await self.transport(peer, PeerAuth(SECRET))
            await self.send(transport, Learn(0, B, 1), 3)
            assert host.node.stepped == [] and self.captured.warnings() == []

    @gen_test(timeout=20)
    async def test_an_oversized_answer_is_not_read_and_logged_once(self) -> None:
        """R1/R2: an 8 MB answer to a Learn is refused by its length, never parsed; one line."""
        padded = encode(LearnAck(1, B, 0, B)) + b" " * (8 * 1024 * 1024)
        transport, host = await self.transport(RawPeer(answer(ok(padded))))
        decoded: list[int] = []
        original = transport_module.decode
        transport_module.decode = lambda data, expect=None: decoded.append(1) or original(data)  # type: ignore[assignment]
        try:
            await self.send(transport, Learn(0, B, 1), 5)
        finally:
            transport_module.decode = original
        assert host.node.stepped == [] and decoded == []
        warnings = self.captured.warnings()
        assert len(warnings) == 1 and "longer than the 1024 allowed" in warnings[0]

    @gen_test(timeout=30)
    async def test_a_long_legitimate_answer_is_decoded_off_the_loop(self) -> None:
        """R2: a Promise of MAX_BATCH entries (the largest legal answer) is checked and decoded
        on the worker thread, and reaches the core."""
        big = -(2**63)
        accepted = tuple((2**62 + i, Ballot(2**62, 2**62), big) for i in range(MAX_BATCH))
        reply = Promise(1, B, True, B, 0, accepted)
        body = encode(reply)
        assert len(body) <= MAX_RESPONSE == answer_limit(Prepare(0, B, 1))
        auth = PeerAuth(SECRET)
        transport, host = await self.transport(SigningPeer(200, body, auth), auth)
        threads: list[str] = []
        original = transport_module.decode

        def spy(data: bytes, expect: type | None = None) -> Message:
            threads.append(threading.current_thread().name)
            return original(data)

        transport_module.decode = spy  # type: ignore[assignment]
        try:
            transport.send(1, Prepare(0, B, 1))
            for _ in range(300):
                if host.node.stepped:
                    break
                await asyncio.sleep(0.02)
        finally:
            transport_module.decode = original
        assert host.node.stepped == [reply]
        assert threads and threads[0].startswith("paxgos-decode")

    @gen_test(timeout=20)
    async def test_every_failure_of_an_exchange_is_contained(self) -> None:
        """R1: ``StreamBufferFullError`` or ``MemoryError`` out of the client, or out of the
        core's step (failed before: "Task exception was never retrieved")."""
        from tornado.iostream import StreamBufferFullError

        transport, host = await self.transport(RawPeer(answer(ok(b"{}"))))
        for error in (StreamBufferFullError("full"), MemoryError(), RuntimeError("bug")):
            self.break_client(transport, FailingClient(error))
            await self.send(transport, Learn(0, B, 1))
        self.break_client(transport, FailingClient(MemoryError(), at_once=True))
        await self.send(transport, Learn(0, B, 1))
        self.break_client(transport, None)  # the real client, and a step that fails
        reply = encode(LearnAck(1, B, 0, B))
        self.peers.append(peer := await RawPeer(answer(ok(reply))).start())
        transport.urls[1] = peer.url
        transport._lane_to[1] = transport_module._lane_target(peer.url) if self.lane else None

        def failing_step(msg: Message) -> str:
            raise MemoryError()

        host.node.step = failing_step  # type: ignore[method-assign]
        await self.send(transport, Learn(0, B, 1))
        assert self.errors == []
        assert transport.in_flight == [0, 0]
        warnings = self.captured.warnings()
        assert any("StreamBufferFullError" in w for w in warnings)
        assert any("cannot send" in w for w in warnings)

    @gen_test(timeout=20)
    async def test_a_client_failure_reaches_no_task(self) -> None:
        """The client turns any exception in its exchange into a 599 answer: the pooled one in
        its task, the lane in its reader callback."""
        transport, host = await self.transport(RawPeer(answer(ok(b"{}"))))
        module: Any = peerlane_module if self.lane else transport_module.PooledHTTPClient
        name = "parse_head" if self.lane else "pool"
        original = getattr(module, name)

        def broken(*args: Any) -> Any:
            raise MemoryError()

        setattr(module, name, broken)
        try:
            await self.send(transport, Learn(0, B, 1), 3)
        finally:
            setattr(module, name, original)
        assert self.errors == [] and transport.in_flight == [0, 0] and host.node.stepped == []
        await self.send(transport, Learn(0, B, 1))
        assert host.node.stepped == [] and transport.failures[1] == 3

    @gen_test(timeout=20)
    async def test_a_huge_length_costs_no_memory_through_the_transport(self) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"
        peer = RawPeer(endless(head))
        transport, host = await self.transport(peer)
        await self.send(transport, Prepare(0, B, 1), 3)
        assert host.node.stepped == [] and self.errors == []
        assert peer.sent < 3 * 32 * 1024 * 1024
        warnings = self.captured.warnings()
        assert len(warnings) == 1 and "bad answer" in warnings[0]

    @gen_test(timeout=20)
    async def test_past_max_in_flight_messages_are_dropped(self) -> None:
        async def silent(writer: asyncio.StreamWriter, peer: RawPeer) -> bool:
            await asyncio.sleep(5)
            return False

        transport, host = await self.transport(RawPeer(silent))
        transport.max_in_flight = 3
        for _ in range(5):
            transport.send(1, Learn(0, B, 1))
        assert transport.in_flight[1] == 3 and transport.dropped == 2
        transport.close()
        await self.settle(transport)
        assert transport.in_flight[1] == 0


class PooledTransportTest(TransportTest):
    """The same checks, every peer reached through the configured ``AsyncHTTPClient``."""

    lane = False


def test_the_request_bytes_are_the_pooled_clients() -> None:
    """Whichever client carries it, a peer gets the same request, byte for byte but for the
    signature's nonce, under a URL with a path too."""
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.partition(b"Content-Length: ")[2].partition(b"\r\n")[0] or 0)
        heads.append(head + await reader.readexactly(length))
        writer.write(ok(b"{}"))
        await writer.drain()
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(record, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/prefix"
        try:
            for lane in (True, False):
                transport = FakeHost().transport(
                    ["http://127.0.0.1:9", url], 2.0, PeerAuth(SECRET), lane
                )
                for msg in (Accept(0, B, 7, (5, -6), 6), CatchupRequest(0, 3, 100)):
                    transport.send(1, msg)
                    for _ in range(200):
                        if transport.in_flight[1] == 0:
                            break
                        await asyncio.sleep(0.01)
                transport.close()
        finally:
            server.close()

    asyncio.run(run())
    signed = re.compile(rb"(Paxgos-Signature: )[^\r]+")
    same = [signed.sub(rb"\1-", head) for head in heads]
    assert len(same) == 4 and same[:2] == same[2:]
    assert same[0].startswith(b"POST /prefix/accept HTTP/1.1\r\nHost: 127.0.0.1:")
    assert same[0].endswith(
        b"Paxgos-Signature: -\r\nContent-Length: 80\r\n\r\n" + encode(Accept(0, B, 7, (5, -6), 6))
    )
    assert same[1].startswith(b"GET /prefix/learn?from=3&limit=100&sender=0 HTTP/1.1\r\n")
    assert same[1].endswith(b"Content-Type: application/json\r\nPaxgos-Signature: -\r\n\r\n")


def test_answer_limits_follow_the_protocol() -> None:
    assert MAX_RESPONSE == 1024 + MAX_BATCH * 88
    assert answer_limit(Accept(0, B, 1, (5,), 0)) == answer_limit(Learn(0, B, 1)) == REPLY_ENVELOPE
    assert answer_limit(CatchupRequest(0, 1, 10_000)) == REPLY_ENVELOPE + 10_000 * 44
    assert answer_limit(CatchupRequest(0, 1, MAX_BATCH)) < MAX_RESPONSE
    # The longest replies of each kind fit their limits.
    top = 2**63 - 1
    ballot = Ballot(top, top)
    assert len(encode(Accepted(top, ballot, top, MAX_BATCH, False, ballot, top))) < 300
    assert len(encode(LearnAck(top, ballot, top, ballot))) < 300
    entries = tuple((top - i, -(2**63)) for i in range(1000))
    assert len(encode(CatchupReply(top, entries, top))) <= answer_limit(CatchupRequest(0, 1, 1000))


# --- choosing the client ----------------------------------------------------------------------


@pytest.fixture
def restore_client_configuration() -> Iterator[None]:
    saved = AsyncHTTPClient._save_configuration()
    yield
    AsyncHTTPClient._restore_configuration(saved)


def test_an_unknown_client_is_a_one_line_error(restore_client_configuration: None) -> None:
    with pytest.raises(ValueError, match="unknown peer client 'simple'.*pooled, curl"):
        configure_peer_client("simple")
    with pytest.raises(ValueError, match="cannot load the peer TLS files"):
        configure_peer_client("pooled", ca_certs="/nonexistent/ca.pem")


@pytest.mark.parametrize("client", PEER_CLIENTS)
def test_the_configured_client_carries_the_fan_out(
    client: str, restore_client_configuration: None
) -> None:
    if client == "curl" and not HAVE_CURL:
        pytest.skip("pycurl is not installed")
    configure_peer_client(client)

    async def run() -> None:
        reply = Accepted(1, B, 1, 1, True, B)
        auth = PeerAuth(SECRET)
        peer = await SigningPeer(200, encode(reply), auth).start()
        host = FakeHost()
        lane = client == "lane"  # as the node's server decides
        transport = host.transport(["http://127.0.0.1:9", peer.url], 2.0, auth, lane=lane)
        try:
            for _ in range(3):
                transport.send(1, Accept(0, B, 1, (5,), 0))
                for _ in range(200):
                    if transport.in_flight[1] == 0:
                        break
                    await asyncio.sleep(0.01)
            used = transport.lane if lane else transport.http
            names = {
                "lane": "PeerLane",
                "pooled": "PooledHTTPClient",
                "curl": "CurlAsyncHTTPClient",
            }
            assert type(used).__name__ == names[client]
            assert (transport.http if lane else transport.lane) is None
            assert host.node.stepped == [reply] * 3
            assert peer.connections == 1  # kept alive by either client
        finally:
            transport.close()
            await peer.stop()

    asyncio.run(run())


def test_an_unconfigured_process_gets_the_pooled_client(
    restore_client_configuration: None,
) -> None:
    AsyncHTTPClient.configure(None)  # Tornado's default, the simple client

    async def run() -> None:
        urls = ["http://127.0.0.1:9"] * 2
        transport = FakeHost().transport(urls, 1.0, PeerAuth(None), lane=False)
        transport.send(1, Learn(0, B, 1))
        assert isinstance(transport.http, PooledHTTPClient)
        transport.close()

    asyncio.run(run())


def test_a_message_to_the_node_itself_skips_http() -> None:
    """The transport hands it to ``local`` (no request, no slot in flight) and the reply
    ``local`` returns to ``receive``, as a peer's."""

    async def run() -> None:
        host = FakeHost()
        host.own_reply = LearnAck(0, B, 0, B)
        transport = host.transport(["http://127.0.0.1:9"] * 2, 1.0, PeerAuth(None))
        transport.send(0, Learn(0, B, 2))
        await asyncio.sleep(0.01)
        assert host.own == [Learn(0, B, 2)] and transport.in_flight == [0, 0]
        assert host.node.stepped == [LearnAck(0, B, 0, B)] and transport.http is None
        transport.close()

    asyncio.run(run())


def test_a_lane_exchange_ends_once() -> None:
    """A second outcome (a connect that failed while the lane closed) is not handed over."""
    calls: list[tuple[Any, ...]] = []
    exchange = peerlane_module.Exchange(b"", 1.0, 10, lambda *a: calls.append(a))
    exchange.end(599, None, b"", PeerError("cannot connect"))
    exchange.end(599, None, b"", PeerError("the peer lane is closed"))
    assert [(c[0], str(c[3])) for c in calls] == [(599, "HTTP 599: cannot connect")]
