"""The peer lane: requests to plain-HTTP peers written, and their answers read, straight on
the sockets: the client side of ``paxgos.net.lane``.

``PooledHTTPClient`` pays, per request, for an ``HTTPRequest``, a task, two coroutines, an
``IOStream`` read future and an ``HTTPResponse``: on the leader, more CPU than the Paxos round
itself.  Here a request is bytes the transport formatted, written with one ``send`` on an idle
connection in the caller's turn of the event loop, and its answer is read by the connection's
reader callback, which the event loop calls directly, and is handed back through one callback.
What is kept from ``paxgos.net.peerclient``, where the rules are stated:

- the framing, ``parse_head`` (RFC 9112: 204 and 304 carry no body, one ``Content-Length`` or
  the body runs to the close, no transfer codings, ``Connection: close`` honoured), the bound on
  a head (``MAX_HEAD``) and on a body (the request's ``max_body``, refused before the body is
  read), and bytes after an answer on a kept-alive connection failing that answer;
- a pool of kept-alive connections per peer, one request per connection at a time, a new
  connection when none is idle, so that a stalled peer ties up only its own connections;
- one sweep every ``SWEEP_INTERVAL`` that fails the requests whose answer is overdue;
- an idle connection watched all along: one the peer closes, or sends anything on unasked, is
  closed at once, and a reused connection that closes before any byte of its answer sends the
  request once more on a new connection (the peer restarted; a peer message may arrive twice
  anyway);
- every failure reported as a ``PeerError`` (a ``BadAnswer`` for a peer that broke the framing).

A connection is made with the event loop's ``sock_connect``, after ``getaddrinfo`` for a host
name, bounded by the request's timeout.  Only plain ``http://`` peers come here; TLS goes through
``PooledHTTPClient`` (``paxgos.net.transport`` chooses).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from tornado.httputil import HTTPHeaders

from paxgos.net.peerclient import (
    MAX_HEAD,
    READ_CHUNK,
    SWEEP_INTERVAL,
    BadAnswer,
    Head,
    PeerError,
    ip_family,
    parse_head,
)
from paxgos.net.ratelog import RateLimitedLog

rated = RateLimitedLog(logging.getLogger("paxgos.net"))

#: How a request ends: ``(status, headers, body, None)`` for an answer, ``(599, None, b"",
#: error)`` for a failure.
Answered = Callable[[int, "HTTPHeaders | None", bytes, "BaseException | None"], None]


class Exchange:
    """One request and what its answer is waited for with."""

    __slots__ = ("data", "timeout", "max_body", "answered", "retried")

    def __init__(self, data: bytes, timeout: float, max_body: int, answered: Answered):
        self.data = data
        self.timeout = timeout
        self.max_body = max_body
        self.answered: Answered | None = answered
        self.retried = False  # sent once more after a reused connection closed

    def end(
        self, status: int, headers: HTTPHeaders | None, body: bytes, error: PeerError | None
    ) -> None:
        """Hand over the outcome; only the first call counts (a connect that fails while the
        lane closes ends its request once)."""
        answered, self.answered = self.answered, None
        if answered is None:
            return
        try:
            answered(status, headers, body, error)
        except Exception as exc:  # the caller's problem, but never in the event loop's callback
            rated.warning("callback", "peer lane: an answer callback failed: %r", exc)


class PeerLane:
    """The connections to every plain-HTTP peer of one node, on ``loop`` (default: the running
    loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        #: ``http://host:port`` -> that peer's connections.
        self.pools: dict[str, LanePool] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    def request(
        self, origin: str, data: bytes, timeout: float, max_body: int, answered: Answered
    ) -> None:
        """Send ``data`` (a whole request) to ``origin`` (``http://host:port``); ``answered`` is
        called once, with the answer or the failure, never before this returns."""
        pool = self.pools.get(origin)
        if pool is None:
            if self.closed:
                raise PeerError("the peer lane is closed")
            pool = self.pools[origin] = LanePool(self, origin)
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        pool.request(Exchange(data, timeout, max_body, answered))

    def _sweep(self) -> None:
        try:
            now = self.loop.time()
            for pool in list(self.pools.values()):
                pool.expire(now)
        finally:  # a failure here must not leave stalled peers' requests in flight for good
            if not self.closed:
                self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        """Close every connection; requests under way fail."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()


class LanePool:
    """The kept-alive connections to one peer."""

    def __init__(self, lane: PeerLane, origin: str) -> None:
        parts = urlsplit(origin)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"peer lane URL must be http://host:port, not {origin!r}")
        self.lane = lane
        self.loop = lane.loop
        self.address = parts.hostname
        self.port = parts.port or 80
        self.family = ip_family(self.address)
        self.idle: list[PeerSocket] = []
        self.busy: set[PeerSocket] = set()
        #: Connections being made -> the request each will carry.
        self.connecting: dict[asyncio.Task[None], Exchange] = {}
        self.closed = False

    def request(self, exchange: Exchange) -> None:
        """Send on an idle connection, or on a new one."""
        if self.closed:
            raise PeerError("the peer lane is closed")
        if self.idle:
            self.idle.pop().start(exchange)
        else:
            self.dial(exchange)

    def dial(self, exchange: Exchange) -> None:
        """Send on a new connection."""
        task = self.loop.create_task(self._connect(exchange))
        self.connecting[task] = exchange
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[None]) -> None:
        exchange = self.connecting.pop(task)
        if task.cancelled():  # the lane closed, maybe before the task began
            exchange.end(599, None, b"", PeerError("the peer lane is closed"))
        elif task.exception() is not None:  # no reader could be registered, say
            exchange.end(599, None, b"", PeerError(f"cannot connect: {task.exception()!r}"))

    async def _connect(self, exchange: Exchange) -> None:
        try:
            sock = await asyncio.wait_for(self._open(), exchange.timeout)
        except Exception as exc:  # refused, timed out, no descriptor, no such host
            exchange.end(599, None, b"", PeerError(f"cannot connect: {exc!r}"))
            return
        if self.closed:
            sock.close()
            exchange.end(599, None, b"", PeerError("the peer lane is closed"))
            return
        try:
            connection = PeerSocket(self, sock)
        except BaseException:  # no reader: the task's failure ends the request (_connected)
            sock.close()
            raise
        connection.start(exchange)

    async def _open(self) -> socket.socket:
        """A connected non-blocking socket with TCP_NODELAY (one write per request)."""
        if self.family is not None:
            targets = [(self.family, (self.address, self.port))]
        else:
            infos = await self.loop.getaddrinfo(self.address, self.port, type=socket.SOCK_STREAM)
            targets = [(family, address) for family, _, _, _, address in infos]
        error: Exception = OSError(f"no address for {self.address}")
        for family, address in targets:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await self.loop.sock_connect(sock, address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except BaseException as exc:  # a refusal, or the timeout's cancellation
                sock.close()
                if not isinstance(exc, Exception):
                    raise
                error = exc
                continue
            return sock
        raise error

    def expire(self, now: float) -> None:
        """Fail the requests whose answer is overdue (their connections close)."""
        for connection in list(self.busy):
            if connection.due <= now:
                connection.fail(PeerError("timed out"))

    def close(self) -> None:
        self.closed = True
        for task in list(self.connecting):
            task.cancel()
        for connection in list(self.idle):
            connection.close()
        for connection in list(self.busy):
            connection.fail(PeerError("the peer lane is closed"))


class PeerSocket:
    """One connection to a peer: idle in its pool, or carrying one request (``exchange``)."""

    __slots__ = (
        "pool", "sock", "fd", "loop", "exchange", "due", "buffer", "searched", "head", "unsent",
        "used", "closed",
    )  # fmt: skip

    def __init__(self, pool: LanePool, sock: socket.socket) -> None:
        self.pool = pool
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = pool.loop
        self.exchange: Exchange | None = None
        self.due = 0.0
        self.buffer = bytearray()
        self.searched = 0  # where the head's end may start, in ``buffer``
        self.head: Head | None = None
        self.unsent = b""  # the part of the request the socket did not take yet
        self.used = False  # it carried an answer before: a close before any byte is stale
        self.closed = False
        # The reader stays registered from one request to the next, so that a close or unasked
        # bytes on an idle connection are seen at once (and no request costs an epoll change).
        self.loop.add_reader(self.fd, self._readable)

    def start(self, exchange: Exchange) -> None:
        """Write ``exchange``'s request; the answer is read as it arrives."""
        self.exchange = exchange
        self.due = self.loop.time() + exchange.timeout
        self.pool.busy.add(self)
        self._write(exchange.data)

    def _write(self, data: bytes) -> None:
        data = self.unsent + data
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            # In a later turn: this may be the caller's (``request``), which never sees its
            # answer before it returns.
            self.loop.call_soon(self._lost, exc)
            return
        if sent < len(data) and not self.unsent:
            self.loop.add_writer(self.fd, self._write, b"")
        elif sent == len(data) and self.unsent:
            self.loop.remove_writer(self.fd)
        self.unsent = data[sent:]

    def _readable(self) -> None:
        try:
            chunk = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not chunk:
            self._lost(None)
        elif self.exchange is None:
            self.close()  # something unasked on an idle connection: out of step from now on
        else:
            self.buffer += chunk
            try:
                self._frame(self.exchange)
            except BadAnswer as exc:
                self.fail(exc)
            except Exception as exc:  # no memory: this request fails, alone
                self.fail(PeerError(f"answer unreadable: {exc!r}"))

    def _frame(self, exchange: Exchange) -> None:
        """Finish the exchange if its whole answer is in."""
        buffer = self.buffer
        head = self.head
        if head is None:
            end = buffer.find(b"\r\n\r\n", self.searched)
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise BadAnswer(f"response head longer than {MAX_HEAD} bytes")
                self.searched = max(0, len(buffer) - 3)  # the end may straddle two reads
                return
            if end + 4 > MAX_HEAD:
                raise BadAnswer(f"response head longer than {MAX_HEAD} bytes")
            head = self.head = parse_head(bytes(buffer[: end + 4]), exchange.max_body)
            del buffer[: end + 4]
        if head.length is None:  # to the close (``_lost``)
            if len(buffer) > exchange.max_body:
                raise BadAnswer(
                    f"answer without a length ran past the {exchange.max_body} bytes allowed"
                )
            return
        if len(buffer) < head.length:
            return
        if len(buffer) > head.length and head.keep_alive:
            raise BadAnswer(f"{len(buffer) - head.length} bytes after the answer")
        self._finish(head, bytes(buffer[: head.length]))

    def _finish(self, head: Head, body: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        self._reset()
        if head.keep_alive and not self.pool.closed:
            self.used = True
            self.pool.idle.append(self)
        else:
            self.close()
        exchange.end(head.status, head.headers, body, None)

    def _reset(self) -> None:
        """Back to no request (busy no more, nothing read)."""
        self.exchange = None
        self.pool.busy.discard(self)
        self.buffer = bytearray()
        self.searched = 0
        self.head = None

    def _lost(self, error: OSError | None) -> None:
        """The peer closed the connection (``error``: or it failed)."""
        exchange = self.exchange
        if exchange is None:
            self.close()
            return
        head = self.head
        if head is not None and head.length is None and error is None:
            self._finish(head, bytes(self.buffer))  # a body that runs to the close
            return
        if head is None and not self.buffer and self.used and not exchange.retried:
            # Closed while it was idle, the request crossing the close: once more, on a new
            # connection (the idle ones are likely closed too).
            self._reset()
            self.close()
            if self.pool.closed:
                self.fail(PeerError("the peer lane is closed"), exchange)
                return
            exchange.retried = True
            try:
                self.pool.dial(exchange)
            except Exception as exc:  # the loop is closing
                self.fail(PeerError(f"cannot connect: {exc!r}"), exchange)
            return
        where = "before an answer" if head is None else "in the answer"
        self.fail(PeerError(f"connection closed {where}: {error or 'by the peer'}"))

    def fail(self, error: PeerError, exchange: Exchange | None = None) -> None:
        """End the request under way with ``error``, and the connection with it."""
        exchange = exchange or self.exchange
        self._reset()
        try:
            self.close()
        finally:
            if exchange is not None:
                exchange.end(599, None, b"", error)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            if self.unsent:
                self.loop.remove_writer(self.fd)
            self.sock.close()
        try:
            self.pool.idle.remove(self)
        except ValueError:
            pass
