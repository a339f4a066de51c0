"""``PooledHTTPClient``: the nodes' keep-alive HTTP/1.1 client, as a Tornado ``AsyncHTTPClient``.

It owns the wire side of node-to-node requests: a pool of kept-alive connections per peer (one
request per connection at a time, a new connection when none is idle), so a stalled peer ties
up only its own connections, never those of the healthy majority; one sweep every 100 ms that
closes the connections whose answer is overdue (a timer per request would cost more than the
request); and RFC 9112 response framing with a bound on every answer.  What the requests mean
(signatures, message types, which answer may be how large) is ``paxgos.net.transport``'s.

It is selected through Tornado's extension point, ``AsyncHTTPClient.configure(PooledHTTPClient,
...)``, so that ``tornado.curl_httpclient.CurlAsyncHTTPClient`` can stand in for it with one
flag (``paxgos.net.transport.configure_peer_client``).

Why not Tornado's own clients: the simple client opens a connection per request, and the curl
client spent about a third of the leader's CPU in its Python layer (dozens of ``setopt`` calls
and a header callback per request).  This one writes one preformatted request and reads one
response on Tornado's ``IOStream``; it connects to an IP address directly and to a host name
through Tornado's ``TCPClient``.  It supports the subset of ``HTTPRequest`` the transport uses:
``method``, ``url`` (``http://`` or ``https://``), ``headers``, ``body``, ``request_timeout``,
``connect_timeout``, and ``max_body_size`` (``PeerRequest``); no redirects, cookies, proxies,
compression or streaming.

Framing (RFC 9112 §6.3): a 204 or 304 answer has no body; otherwise one ``Content-Length``
(repeated only with the same value, RFC 9110 §8.6) gives its length, and with none the body runs
to the connection's close, after which the connection is not reused.  ``Transfer-Encoding`` is
refused (our peers never send it) and the connection closed, as is an answer followed by more
bytes on a connection kept alive (one request is answered once).  An idle connection keeps a
read under way, so that one the peer closed, or sent something on unasked (at most one read's
worth, 64 KiB, is taken), is noticed and closed before it carries another request.
``Connection`` is a token list: ``close`` anywhere ends the connection.  The status is exactly
three digits.  An answer longer than the request's ``max_body_size`` fails before its body is
read.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Callable
from io import BytesIO
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from paxgos.net.ratelog import RateLimitedLog

log = logging.getLogger("paxgos.net")

#: Longest response head (status line and headers) a peer may send.
MAX_HEAD = 16 * 1024
#: Longest answer body when neither the client nor the request says otherwise.
DEFAULT_MAX_BODY = 16 * 1024 * 1024
#: How often overdue answers are looked for (seconds).
SWEEP_INTERVAL = 0.1
#: Bytes asked for at once: an answer's first read (its head, usually its body too), and each
#: read of a body that runs to the connection's close.
READ_CHUNK = 64 * 1024

# A block of header lines up to the blank line (RFC 9110 §5: a token, a colon, and a value of
# visible characters, blanks and obs-text: no CR, LF or other control character).
_FIELDS = re.compile(r"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n)*\r\n")


class PeerError(HTTPClientError):
    """A peer's answer could not be read: connection refused, closed, timed out, malformed or
    too large.  An ``HTTPClientError`` with code 599, as Tornado's clients report such failures."""

    def __init__(self, message: str) -> None:
        super().__init__(599, message)


class BadAnswer(PeerError):
    """The peer answered, but not as HTTP/1.1 framing allows, or longer than allowed: a broken
    or hostile peer rather than a lost message."""


class _Stale(PeerError):
    """A reused connection closed before any answer: the peer dropped it while it was idle."""


class Head(NamedTuple):
    """A parsed response head."""

    status: int
    reason: str
    #: The body's length; ``None``: it runs to the connection's close.
    length: int | None
    #: Whether the connection may carry another request after this answer.
    keep_alive: bool
    headers: HTTPHeaders


def parse_head(head: bytes, max_length: int | None = None) -> Head:
    """The ``Head`` of an HTTP/1.x response head (ending in a blank line), framed as RFC 9112
    says (see the module docstring); ``BadAnswer`` for anything else, for a chunked body, or for
    a ``Content-Length`` above ``max_length``."""
    text = head.decode("latin-1")
    first, _, block = text.partition("\r\n")
    version, _, rest = first.partition(" ")
    code, _, reason = rest.partition(" ")
    if not (version.startswith("HTTP/1.") and len(version) == 8 and version[7].isdigit()):
        raise BadAnswer(f"not an HTTP/1 response: {first[:80]!r}")
    if not (len(code) == 3 and code.isascii() and code.isdigit()):
        raise BadAnswer(f"bad status code: {first[:80]!r}")
    status = int(code)
    if status < 200:
        # An interim answer would leave the real one unread on a pooled connection; our peers
        # never send one (no request of ours says "Expect").
        raise BadAnswer(f"unexpected interim response {status}")
    if not _FIELDS.fullmatch(block):
        # A folded line, whitespace before a colon, a bare CR or LF: RFC 9112 §5 lets a
        # recipient refuse them, and a peer framed ambiguously is one not to guess about.
        raise BadAnswer(f"malformed header lines: {block[:80]!r}")
    length: int | None = None
    close = keep_alive_token = False
    fields: list[tuple[str, str]] = []
    for line in block.split("\r\n")[:-2]:  # the last line's CRLF and the blank line's
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        fields.append((name, value))
        lower = name.lower()
        if lower == "content-length":
            for number in value.split(","):
                number = number.strip(" \t")
                # At most 19 digits (a 64-bit length): int() of a longer string is slow, and
                # of one over 4,300 digits an error.
                if not (number.isascii() and number.isdigit() and len(number) <= 19):
                    raise BadAnswer(f"bad Content-Length: {value[:40]!r}")
                if length is not None and int(number) != length:
                    raise BadAnswer(f"conflicting Content-Length values: {value[:40]!r}")
                length = int(number)
        elif lower == "transfer-encoding":
            raise BadAnswer("transfer codings (chunked) are not expected from a peer")
        elif lower == "connection":
            tokens = [token.strip(" \t").lower() for token in value.split(",")]
            close = close or "close" in tokens
            keep_alive_token = keep_alive_token or "keep-alive" in tokens
    if status in (204, 304):
        length = 0
    elif length is not None and max_length is not None and length > max_length:
        raise BadAnswer(f"answer of {length} bytes is longer than the {max_length} allowed")
    keep_alive = length is not None and not close and (version == "HTTP/1.1" or keep_alive_token)
    return Head(status, reason, length, keep_alive, PeerHeaders(fields))


class PeerHeaders(HTTPHeaders):
    """A response's ``HTTPHeaders``, filled on first use: building one costs more than the
    rest of a peer answer's head (9 us of 12), and the transport reads one header, which
    ``get`` finds in the parsed lines without it.  Lines come from ``parse_head``, already
    checked as ``HTTPHeaders.add`` checks them."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:  # no super(): see __getattr__
        self._fields: list[tuple[str, str]] | None = fields

    def __getattr__(self, name: str) -> Any:
        # Only for attributes not set yet: HTTPHeaders' own state, made now from the lines.
        fields = self.__dict__.get("_fields")
        if fields is None or name == "_fields":
            raise AttributeError(name)
        self._fields = None
        HTTPHeaders.__init__(self)
        for field, value in fields:
            self.add(field, value)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        fields = self.__dict__.get("_fields")
        if fields is None:
            return super().get(name, default)
        wanted = name.lower()
        values = [value for field, value in fields if field.lower() == wanted]
        return ",".join(values) if values else default


class PeerRequest(HTTPRequest):
    """An ``HTTPRequest`` whose answer may be at most ``max_body_size`` bytes.  Both peer
    clients honour it: ``PooledHTTPClient`` reads the attribute; for curl the request carries a
    ``prepare_curl_callback`` setting ``CURLOPT_MAXFILESIZE_LARGE`` (which libcurl 8.4 and
    later also applies to an answer without a length)."""

    def __init__(self, url: str, *, max_body_size: int, **kwargs: Any) -> None:
        super().__init__(url, prepare_curl_callback=_curl_limit(max_body_size), **kwargs)
        self.max_body_size = max_body_size


@functools.lru_cache(maxsize=64)
def _curl_limit(size: int) -> Callable[[Any], None]:
    """A ``prepare_curl_callback`` capping the answer at ``size`` bytes (one per size, so a
    request costs no new closure)."""

    def limit(curl: Any) -> None:
        import pycurl  # only the curl client calls this, and it has pycurl

        curl.setopt(pycurl.MAXFILESIZE_LARGE, size)

    return limit


def ip_family(host: str) -> int | None:
    """The address family of an IP address (``AF_INET``, ``AF_INET6``); None for a host name,
    which is resolved when connecting."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


class PeerPool:
    """The kept-alive connections to one peer (``scheme://host:port``)."""

    def __init__(
        self, url: str, max_buffer: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.hostname is None:
            raise ValueError(f"peer URL must be http(s)://host:port, not {url!r}")
        self.address = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self.family = ip_family(self.address)
        self.max_buffer = max_buffer  # an IOStream's read buffer: a backstop for every read
        self.idle: list[IOStream] = []
        #: The read each idle connection keeps under way, which becomes the first read of its
        #: next answer: one done while the connection is idle means the peer closed it or sent
        #: something unasked, and the connection is dropped instead of being used.
        self.listening: dict[IOStream, asyncio.Future[bytes]] = {}
        #: Connections with a request under way -> the loop time its answer is due by.
        self.busy: dict[IOStream, float] = {}
        self.overdue: set[IOStream] = set()  # closed by ``expire``: their request timed out
        self.closed = False

    def send_idle(self, request: bytes, timeout: float) -> IOStream | None:
        """Write ``request`` now on an idle connection, if there is one, and return it (its
        answer is read by ``fetch(..., sent=stream)``); None when a connection must be made.
        Writing in the caller's turn of the event loop, rather than in the request's task one
        turn later, puts a broadcast's requests on the wire back to back."""
        while True:
            stream = self._take_idle()
            if stream is None:
                return None
            self.busy[stream] = IOLoop.current().time() + timeout
            try:
                stream.write(request)
            except StreamClosedError:  # closed while idle: try the next one
                self.busy.pop(stream, None)
                self._drop(stream)
                continue
            return stream

    def _take_idle(self) -> IOStream | None:
        """An idle connection still fit for a request (its read under way, nothing arrived
        on it unasked), the others closed; None when there is none."""
        while self.idle:
            stream = self.idle.pop()
            first = self.listening.get(stream)
            if first is None or not first.done():
                return stream
            self._drop(stream)
        return None

    def _drop(self, stream: IOStream) -> None:
        """Close a connection that will not carry another request (Tornado fails its read
        under way and marks that failure retrieved)."""
        self.listening.pop(stream, None)
        stream.close()

    async def fetch(
        self,
        request: bytes,
        timeout: float,
        connect_timeout: float,
        max_body: int,
        sent: IOStream | None = None,
    ) -> tuple[Head, bytes]:
        """Send ``request`` (its bytes, head and body) and return the answer's head and body;
        ``sent``: the idle connection ``send_idle`` already wrote it on."""
        # An idle connection the peer closed (a restart) is usually noticed by its read under
        # way; if one closes before any answer anyway (the close and the request crossed),
        # the request goes once more on a new connection.  A peer message may arrive twice
        # anyway (the core retransmits), so resending is safe.
        stream = sent if sent is not None else self._take_idle()
        if stream is not None:
            try:
                return await self._round_trip(
                    stream, request, timeout, max_body, written=sent is not None
                )
            except _Stale:
                if stream in self.overdue or self.closed:  # timed out, or shut down: no resend
                    self.overdue.discard(stream)
                    raise
        stream = await self._connect(connect_timeout)
        try:
            return await self._round_trip(stream, request, timeout, max_body, written=False)
        finally:
            self.overdue.discard(stream)

    async def _round_trip(
        self, stream: IOStream, request: bytes, timeout: float, max_body: int, written: bool
    ) -> tuple[Head, bytes]:
        """One request (already on the wire if ``written``) and its answer on ``stream``; the
        stream goes back to the idle pool if the answer leaves it reusable, and is closed on
        any failure."""
        if not written:
            self.busy[stream] = IOLoop.current().time() + timeout
        first = self.listening.pop(stream, None)
        head: Head | None = None
        try:
            if not written:
                stream.write(request)
            # Reads of whatever has arrived (the first one under way since the connection went
            # idle), never read_until: that leaves the body in the stream's buffer, and a stream
            # with buffered bytes stops listening until the next read (two epoll changes per
            # request).
            if first is None:
                first = stream.read_bytes(READ_CHUNK, partial=True)
            data = bytearray(await first)
            end = data.find(b"\r\n\r\n")
            while end < 0:
                if len(data) > MAX_HEAD:
                    raise BadAnswer(f"response head longer than {MAX_HEAD} bytes")
                searched = max(0, len(data) - 3)  # the end may straddle two reads
                data += await stream.read_bytes(READ_CHUNK, partial=True)
                end = data.find(b"\r\n\r\n", searched)
            if end + 4 > MAX_HEAD:
                raise BadAnswer(f"response head longer than {MAX_HEAD} bytes")
            head = parse_head(bytes(data[: end + 4]), max_body)
            body = bytes(data[end + 4 :])
            if head.length is None:
                body = await self._read_to_close(stream, max_body, body)
            elif len(body) < head.length:
                rest = await stream.read_bytes(head.length - len(body))
                body = body + rest if body else rest
            elif len(body) > head.length:
                if head.keep_alive:  # the connection would be out of step from now on
                    raise BadAnswer(f"{len(body) - head.length} bytes after the answer")
                body = body[: head.length]
        except PeerError:
            stream.close()
            raise
        except StreamClosedError as exc:
            stream.close()
            if head is None:
                raise _Stale(f"connection closed: {exc.real_error or 'before an answer'}") from None
            raise PeerError(f"connection closed in the answer: {exc.real_error}") from None
        except Exception as exc:  # a full buffer, no memory
            stream.close()
            raise PeerError(f"answer unreadable: {exc!r}") from None
        finally:
            self.busy.pop(stream, None)
        if head.keep_alive and not self.closed and not stream.closed():
            self.listening[stream] = stream.read_bytes(READ_CHUNK, partial=True)
            self.idle.append(stream)
        else:
            stream.close()
        return head, body

    async def _read_to_close(self, stream: IOStream, max_body: int, start: bytes) -> bytes:
        """A body with no length: ``start`` and everything until the peer closes, at most
        ``max_body``."""
        if len(start) > max_body:
            raise BadAnswer(f"answer without a length ran past the {max_body} bytes allowed")
        chunks: list[bytes] = [start]
        size = len(start)
        while True:
            try:
                chunk = await stream.read_bytes(READ_CHUNK, partial=True)
            except StreamClosedError:
                break
            size += len(chunk)
            if size > max_body:
                raise BadAnswer(f"answer without a length ran past the {max_body} bytes allowed")
            chunks.append(chunk)
        if stream.error is not None or stream in self.overdue or self.closed:
            # Reset, timed out or shut down: what came may be cut short.
            raise PeerError(f"answer cut short: {stream.error or 'timed out'}")
        return b"".join(chunks)

    async def _connect(self, timeout: float) -> IOStream:
        """A new connection to the peer (TLS for ``https``), or ``PeerError``.  An IP address
        is connected to directly: a stalled or stopped peer costs a new connection per timed-out
        request, and ``TCPClient`` would resolve the address in a thread (a GIL handoff) every
        time."""
        if self.family is None:  # a host name: resolution and fallbacks by TCPClient
            try:
                stream = await TCPClient().connect(
                    self.address, self.port, ssl_options=self.ssl, timeout=timeout,
                    max_buffer_size=self.max_buffer,
                )  # fmt: skip
            except Exception as exc:  # OSError, timeout, TLS failure, ...
                raise PeerError(f"cannot connect: {exc}") from None
        else:
            try:
                sock = socket.socket(self.family, socket.SOCK_STREAM)
            except OSError as exc:  # out of file descriptors, say
                raise PeerError(f"cannot connect: {exc}") from None
            if self.ssl is None:
                stream = IOStream(sock, max_buffer_size=self.max_buffer)
            else:
                stream = SSLIOStream(sock, ssl_options=self.ssl, max_buffer_size=self.max_buffer)
            self.busy[stream] = IOLoop.current().time() + timeout  # the sweep bounds connect
            try:
                if self.ssl is None:
                    await stream.connect((self.address, self.port))
                else:  # resolves once the handshake (and the certificate check) is done
                    await stream.connect((self.address, self.port), server_hostname=self.address)
            except Exception as exc:  # refused, timed out, bad certificate, ...
                stream.close()
                raise PeerError(f"cannot connect: {stream.error or exc}") from None
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
        for stream in self.idle:
            self._drop(stream)
        for stream in list(self.busy):
            stream.close()
        self.idle.clear()


class PooledHTTPClient(AsyncHTTPClient):
    """An ``AsyncHTTPClient`` with a pool of kept-alive connections per peer; see the module
    docstring.  Options (``AsyncHTTPClient.configure(PooledHTTPClient, **options)``):
    ``max_body_size``, the longest answer any request may get (a request's own
    ``max_body_size`` may lower it), and ``ssl_context``, the TLS settings for ``https`` peers
    (default: ``ssl.create_default_context()``, the system's CAs, host names checked)."""

    def initialize(  # type: ignore[override]
        self,
        defaults: dict[str, Any] | None = None,
        max_body_size: int = DEFAULT_MAX_BODY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().initialize(defaults)
        self.max_body_size = max_body_size
        self.ssl_context = ssl_context
        #: ``scheme://host:port`` -> that peer's connections.
        self.pools: dict[str, PeerPool] = {}
        self._sweeper: PeriodicCallback | None = None
        self._log = RateLimitedLog(log)

    def pool(self, origin: str) -> PeerPool:
        """The connections to ``origin`` (``scheme://host:port``), made on first use."""
        pool = self.pools.get(origin)
        if pool is None:
            # A read buffer never holds more than one answer and a chunk past it.
            backstop = self.max_body_size + MAX_HEAD + 2 * READ_CHUNK
            pool = self.pools[origin] = PeerPool(origin, backstop, self.ssl_context)
            if self._sweeper is None:
                # Overdue answers are found by one sweep for all requests: a timer per request
                # would cost more than the request.
                self._sweeper = PeriodicCallback(self._expire, SWEEP_INTERVAL * 1000)
                self._sweeper.start()
        return pool

    def _expire(self) -> None:
        now = IOLoop.current().time()
        for pool in self.pools.values():
            pool.expire(now)

    def close(self) -> None:
        """Close every connection; requests under way fail."""
        if self._sweeper is not None:
            self._sweeper.stop()
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        super().close()

    def fetch_impl(self, request: HTTPRequest, callback: Callable[[HTTPResponse], None]) -> None:
        url = request.url
        scheme, _, rest = url.partition("://")
        netloc, slash, path = rest.partition("/")
        method = request.method
        if method == "HEAD" or scheme not in ("http", "https"):
            raise ValueError(f"PooledHTTPClient does not support {method} {url[:80]}")
        body = request.body  # None or bytes (HTTPRequest encodes a str)
        lines = [f"{method} {slash}{path} HTTP/1.1", f"Host: {netloc}"]
        headers = request.headers  # an HTTPHeaders through fetch(); a dict if given one
        pairs = headers.get_all() if isinstance(headers, HTTPHeaders) else headers.items()
        for name, value in pairs:
            if "\n" in value or "\r" in value:  # as Tornado's clients refuse it: no injection
                raise ValueError(f"line break in header {name}")
            if name not in ("Host", "Content-Length"):
                lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        max_body = getattr(request, "max_body_size", None) or self.max_body_size
        origin = f"{scheme}://{netloc}"
        data = head.encode("latin-1") + (body or b"")
        timeout = request.request_timeout or 20.0
        sent = None if self._closed else self.pool(origin).send_idle(data, timeout)
        coroutine = self._run(
            origin, data, request, min(max_body, self.max_body_size), callback, sent
        )  # fmt: skip
        asyncio.ensure_future(coroutine)

    async def _run(
        self,
        origin: str,
        data: bytes,
        request: HTTPRequest,
        max_body: int,
        callback: Callable[[HTTPResponse], None],
        sent: IOStream | None = None,
    ) -> None:
        """One request's whole life (``sent``: the connection it was written on already):
        every failure becomes a 599 answer, so nothing escapes this task ("Task exception was
        never retrieved")."""
        loop = IOLoop.current()
        started = loop.time()
        try:
            if self._closed:  # closed after this request was made, before it started
                if sent is not None:
                    sent.close()
                raise PeerError("the client is closed")
            pool = self.pool(origin)
            answer, data = await pool.fetch(
                data,
                request.request_timeout or 20.0,
                request.connect_timeout or 20.0,
                max_body,
                sent,
            )  # fmt: skip
            response = HTTPResponse(
                request, answer.status, reason=answer.reason, headers=answer.headers,
                buffer=BytesIO(data), effective_url=request.url,
                request_time=loop.time() - started,
            )  # fmt: skip
        except Exception as exc:  # MemoryError too: the request fails, alone
            error = exc if isinstance(exc, HTTPClientError) else PeerError(repr(exc))
            response = HTTPResponse(
                request, 599, error=error, effective_url=request.url,
                request_time=loop.time() - started,
            )  # fmt: skip
        try:
            callback(response)
        except Exception as exc:  # the caller's problem, but never unretrieved
            self._log.warning("callback", "peer client: a response callback failed: %r", exc)
