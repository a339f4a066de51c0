"""Peer fan-out: turns the core's outgoing messages into HTTP requests and feeds back replies.

Each peer message is one HTTP/1.1 request (``POST /prepare``, ``/accept``, ``/learn``, or the
catch-up ``GET /learn?...``) on a kept-alive connection of that peer's own pool: a stalled peer
ties up only its own connections, never those of the healthy majority.  Past ``max_in_flight``
unanswered requests a peer's further messages are dropped, as a lossy network would drop them:
the core retransmits what matters.  A request unanswered after its timeout has its connection
closed (the message is lost; the core retransmits).

Why not a general HTTP client: the requests are a fixed, tiny subset of HTTP/1.1 between our
own nodes (small bodies, ``Content-Length`` always, no redirects, cookies, TLS or chunking), and
on the leader the fan-out is on the hot path of every round.  Tornado's simple client opens a
connection per request, and the curl client spent about a third of the leader's CPU in its
Python layer (request objects, dozens of ``setopt`` calls and a header callback per request).
``PeerClient`` writes one preformatted request and reads one ``Content-Length`` response on
Tornado's ``IOStream``; it connects to an IP address directly and to a host name through
Tornado's ``TCPClient``.

Messages to the node itself skip HTTP and go straight back into the host, after the same fault
injection an acceptor applies to its peers' messages.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from paxgos.core.messages import (
    Accept,
    CatchupRequest,
    Learn,
    Message,
    MessageError,
    Prepare,
    decode,
    encode,
)

if TYPE_CHECKING:
    from paxgos.net.host import NodeHost

log = logging.getLogger("paxgos.net")

PATHS: dict[type, str] = {Prepare: "/prepare", Accept: "/accept", Learn: "/learn"}

#: Longest response head (status line and headers) a peer may send.
MAX_HEAD = 16 * 1024


class PeerError(Exception):
    """A peer's answer could not be read: connection refused, closed, timed out, or not HTTP."""


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """``(status, content length, keep alive)`` of an HTTP/1.x response head (ending in a
    blank line); ``PeerError`` for anything else, or for a chunked body."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise PeerError(f"not an HTTP/1 response: {lines[0][:80]!r}")
    status = int(parts[1])
    if status < 200:
        # An interim answer would leave the real one unread on a pooled connection; our peers
        # never send one (no request of ours says "Expect").
        raise PeerError(f"unexpected interim response {status}")
    keep_alive = parts[0] == b"HTTP/1.1"
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            text = value.strip()
            if not text.isdigit():
                raise PeerError(f"bad Content-Length: {text[:40]!r}")
            length = int(text)
        elif name == b"connection":
            keep_alive = value.strip().lower() == b"keep-alive" or (
                keep_alive and value.strip().lower() != b"close"
            )
        elif name == b"transfer-encoding":
            raise PeerError("chunked responses are not expected from a peer")
    if status in (204, 304):
        length = 0
    return status, length, keep_alive


class PeerClient:
    """HTTP/1.1 requests to one peer on a pool of kept-alive connections (one request per
    connection at a time; a new connection when none is idle)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"peer URL must be http://host:port, not {url!r}")
        self.address = parts.hostname
        self.port = parts.port or 80
        self.family: int | None  # of an IP address; None for a host name
        try:
            version = ipaddress.ip_address(self.address).version
            self.family = socket.AF_INET6 if version == 6 else socket.AF_INET
        except ValueError:
            self.family = None
        self.netloc = parts.netloc
        self.idle: list[IOStream] = []
        #: Connections with a request under way -> the loop time its answer is due by.
        self.busy: dict[IOStream, float] = {}
        self.overdue: set[IOStream] = set()  # closed by ``expire``: their request timed out
        self.closed = False

    async def fetch(self, head: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        """Send a request (``head``: its request line) and return ``(status, body)``."""
        request = (
            f"{head} HTTP/1.1\r\nHost: {self.netloc}\r\n"
            + (f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        ).encode() + body
        # An idle connection may have been closed by the peer (a restart) without this side
        # noticing (nothing reads an idle stream): if a reused one fails before its answer is
        # due, the request goes once more on a new connection.  A peer message may arrive twice
        # anyway (the core retransmits), so resending is safe.
        stream = self.idle.pop() if self.idle else None
        if stream is not None:
            try:
                return await self._round_trip(stream, request, timeout)
            except PeerError:
                if stream in self.overdue:
                    self.overdue.discard(stream)
                    raise
        stream = await self._connect(timeout)
        try:
            return await self._round_trip(stream, request, timeout)
        finally:
            self.overdue.discard(stream)

    async def _round_trip(
        self, stream: IOStream, request: bytes, timeout: float
    ) -> tuple[int, bytes]:
        """One request and its answer on ``stream``; the stream goes back to the idle pool if
        the answer leaves it reusable."""
        self.busy[stream] = IOLoop.current().time() + timeout
        try:
            stream.write(request)
            status, length, keep_alive = parse_head(
                await stream.read_until(b"\r\n\r\n", max_bytes=MAX_HEAD)
            )
            answer = await stream.read_bytes(length) if length else b""
        except (StreamClosedError, PeerError) as exc:
            stream.close()
            raise PeerError(str(exc) or "connection closed") from exc
        finally:
            self.busy.pop(stream, None)
        if keep_alive and not self.closed and not stream.closed():
            self.idle.append(stream)
        else:
            stream.close()
        return status, answer

    async def _connect(self, timeout: float) -> IOStream:
        """A new connection to the peer, or ``PeerError``.  An IP address is connected to
        directly: a stalled or stopped peer costs a new connection per timed-out request, and
        ``TCPClient`` would resolve the address in a thread (a GIL handoff) every time."""
        if self.family is None:  # a host name: resolution and fallbacks by TCPClient
            try:
                stream = await TCPClient().connect(self.address, self.port, timeout=timeout)
            except (OSError, StreamClosedError, asyncio.TimeoutError, TimeoutError) as exc:
                raise PeerError(f"cannot connect: {exc}") from exc
        else:
            try:
                stream = IOStream(socket.socket(self.family, socket.SOCK_STREAM))
            except OSError as exc:  # out of file descriptors, say
                raise PeerError(f"cannot connect: {exc}") from exc
            self.busy[stream] = IOLoop.current().time() + timeout  # the sweep bounds connect
            try:
                await stream.connect((self.address, self.port))
            except (OSError, StreamClosedError) as exc:
                stream.close()
                raise PeerError(f"cannot connect: {exc}") from exc
            finally:
                self.busy.pop(stream, None)
                self.overdue.discard(stream)
        stream.set_nodelay(True)
        return stream

    def expire(self, now: float) -> None:
        """Close the connections whose answer is overdue (their requests fail)."""
        for stream, due in list(self.busy.items()):
            if due <= now:
                self.overdue.add(stream)
                stream.close()

    def close(self) -> None:
        self.closed = True
        for stream in self.idle + list(self.busy):
            stream.close()
        self.idle.clear()


class Transport:
    """Sends core messages to peers over HTTP; see the module docstring."""

    def __init__(
        self, host: NodeHost, urls: list[str], timeout: float, max_in_flight: int = 32
    ) -> None:
        self.host = host
        self.urls = urls
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.in_flight = [0] * len(urls)
        self.dropped = 0
        self.clients: dict[int, PeerClient] = {}
        self._encoded: tuple[Message | None, bytes] = (None, b"")
        self._sweeper: PeriodicCallback | None = None
        self.closed = False

    def _client(self, to: int) -> PeerClient:
        client = self.clients.get(to)
        if client is None:
            client = self.clients[to] = PeerClient(self.urls[to])
            if self._sweeper is None:
                # Overdue answers are found by one sweep for all requests: a timer per request
                # would cost more than the request.
                self._sweeper = PeriodicCallback(self._expire, 100)
                self._sweeper.start()
        return client

    def _expire(self) -> None:
        now = IOLoop.current().time()
        for client in self.clients.values():
            client.expire(now)

    def close(self) -> None:
        """Close every connection; messages sent from now on are dropped (the node stops)."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.stop()
        for client in self.clients.values():
            client.close()
        self.clients.clear()

    def send(self, to: int, msg: Message) -> None:
        """Send ``msg`` to node ``to``; its reply, if any, goes back into the core."""
        if to == self.host.node.id:
            asyncio.ensure_future(self._local(msg))
            return
        if self.in_flight[to] >= self.max_in_flight or self.closed:
            self.dropped += 1
            return
        if isinstance(msg, CatchupRequest):
            query = urlencode({"from": msg.from_slot, "limit": msg.limit, "sender": msg.sender})
            head, body, timeout = f"GET /learn?{query}", b"", max(self.timeout, 5.0)
        else:
            if self._encoded[0] is not msg:  # a broadcast: encode once for every peer
                self._encoded = (msg, encode(msg))
            head, body, timeout = f"POST {PATHS[type(msg)]}", self._encoded[1], self.timeout
        self.in_flight[to] += 1
        asyncio.ensure_future(self._exchange(to, msg, head, body, timeout))

    async def _exchange(
        self, to: int, msg: Message, head: str, body: bytes, timeout: float
    ) -> None:
        try:
            status, answer = await self._client(to).fetch(head, body, timeout)
        except PeerError as exc:  # refused, closed, timed out: the message is lost
            log.debug("node %d: %s to node %d lost: %s", self.host.node.id, msg, to, exc)
            return
        finally:
            self.in_flight[to] -= 1
        if status == 204:
            return
        if status != 200:
            log.debug("node %d: %s to node %d failed: %s", self.host.node.id, msg, to, status)
            return
        try:
            reply = decode(answer)
        except MessageError as exc:
            log.warning("node %d: bad reply from node %d: %s", self.host.node.id, to, exc)
            return
        if reply.sender != to:  # an answer must come from the node asked
            log.warning(
                "node %d: reply from node %d names node %d", self.host.node.id, to, reply.sender
            )
            return
        if self.host.failed is None:
            self.host.input(self.host.node.step(reply))

    async def _local(self, msg: Message) -> None:
        host = self.host
        if host.faults.active():
            await host.faults.delay()
        try:
            reply = await host.deliver_future(msg)
        except Exception:  # a failed store: the host has logged it
            return
        if reply is not None and host.failed is None:
            host.input(host.node.step(reply))
