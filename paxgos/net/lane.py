"""The lane: a node's plain-HTTP connections read and answered straight off their sockets while
they carry only the hot requests, and handed to Tornado the moment they carry anything else.

Tornado's HTTP/1 connection (an ``IOStream``, a coroutine per request, ``HTTPHeaders``) costs
the leader more CPU per ``/propose`` than the Paxos round does per value, and more again on the
slower interpreters.  So every connection a node accepts starts here.  When it becomes readable
the lane *peeks* at what the kernel holds (``MSG_PEEK``: nothing is consumed) and takes the
request only if it is one of the simple shapes below, whole, head and body; it then consumes
exactly that request and hands it to the same delegates Tornado's path uses
(``paxgos.net.fastpath.ProposeRequest`` and ``MessageRequest``), which answer through
``emit``.  Anything else — another path or method, HTTP/1.0, a head or body still arriving,
``Transfer-Encoding``, ``Expect``, ``Connection: close``, a repeated or folded header, a byte
outside printable ASCII, ``Origin`` or ``Sec-Fetch-Site``, a ``Host`` that is not this node's —
is left unread in the kernel, and the socket goes to Tornado's ``HTTPServer`` for good, which
reads the request as if it had accepted the connection itself and applies every rule of
``paxgos.net.fastpath`` and the application.  So the lane answers nothing that Tornado would
answer otherwise, and what it does not understand costs one peek.

The shapes it takes (HTTP/1.1 only):

- ``GET /propose/<value>`` with no body (no ``Content-Length`` but ``0``);
- ``POST /prepare``, ``/accept``, ``/learn`` with a ``Content-Length`` of at most
  ``MAX_MESSAGE_BYTES``.

Like Tornado's server it reads one request at a time per connection: the next is not looked at
until this one's answer has been written.  Unlike Tornado's, it does not watch for the client's
end of the stream meanwhile: a client that half-closes after its request still gets the answer
(Tornado closes at once), and one that left holds its descriptor until the answer is due.

The connection limits of ``paxgos.net.guard`` apply as to Tornado's connections: the read
deadline runs while a connection waits for a request, the cap counts lane connections too, and
eviction closes them alike.  HTTPS connections, and nodes that require peer certificates, never
use the lane (``paxgos.net.server``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from tornado.httputil import RequestStartLine

from paxgos.net.auth import SIGNATURE, foreign
from paxgos.net.fastpath import (
    MAX_MESSAGE_BYTES,
    PREFIX,
    PROTOCOL,
    REASONS,
    FastRequest,
    MessageRequest,
    ProposeRequest,
)
from paxgos.net.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from paxgos.net.guard import NodeServer
    from paxgos.net.host import NodeHost

rated = RateLimitedLog(logging.getLogger("paxgos.net"))

#: The longest request head the lane takes; a longer one goes to Tornado.
MAX_LANE_HEAD = 4096
#: How much a peek looks at first: a request and an Accept of a thousand values fit.  Only
#: when the kernel holds more is it peeked at again, up to ``PEEK_MAX`` (a peek allocates what
#: it may return, and most requests are a few hundred bytes).
PEEK_BYTES = 64 * 1024
#: The most one peek looks at: the longest peer message and its head.
PEEK_MAX = MAX_LANE_HEAD + MAX_MESSAGE_BYTES
#: A byte a plain head line never holds (controls, DEL, anything beyond ASCII).
_ODD = re.compile(rb"[^\x20-\x7e\t\r\n]")
#: A request target the lane takes: visible ASCII only (no tab, no space).
_TARGET = re.compile(rb"[\x21-\x7e]+")
#: A header field name (RFC 9110 token), as Tornado's parser requires.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: The header fields the lane reads (lower case); any other is ignored, as Tornado's delegates
#: ignore them.
_FIELDS = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"accept",
     SIGNATURE.lower().encode(), b"origin", b"sec-fetch-site", b"expect")
)  # fmt: skip
_PROPOSE = (PREFIX + "/").encode()


class Take(NamedTuple):
    """A request the lane serves: its start line, the header fields its delegate reads, and
    where its head and body end in the peeked bytes."""

    start_line: RequestStartLine
    headers: dict[str, str]
    message_type: type | None  # None: a proposal
    head_end: int
    body_end: int


def take(data: bytes, own_origin: str) -> Take | None:
    """The request at the start of ``data`` if the lane serves it (see the module docstring),
    else ``None``: Tornado reads it."""
    end = data.find(b"\r\n\r\n", 0, MAX_LANE_HEAD)
    if end < 0:
        return None
    head = data[:end]
    pairs = head.count(b"\r\n")
    if _ODD.search(head) or head.count(b"\r") != pairs or head.count(b"\n") != pairs:
        return None  # a bare CR or LF (Tornado ends a head at LF LF), or an odd byte
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not _TARGET.fullmatch(parts[1]):
        return None
    method, target = parts[0], parts[1]
    message_type: type | None = None
    if method == b"GET":
        if not target.startswith(_PROPOSE):
            return None
    elif method == b"POST":
        message_type = PROTOCOL.get(target.decode())
        if message_type is None:
            return None
    else:
        return None
    fields: dict[bytes, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return None  # a folded line, or a name that is no token: Tornado's rules decide
        key = name.lower()
        if key in _FIELDS:
            if key in fields:
                return None
            fields[key] = value.strip(b" \t").decode()
    if (
        b"transfer-encoding" in fields
        or b"expect" in fields
        or b"origin" in fields
        or b"sec-fetch-site" in fields
        or fields.get(b"connection", "keep-alive").lower() != "keep-alive"
        or foreign(None, None, fields.get(b"host"), own_origin) is not None
    ):
        return None
    length = fields.get(b"content-length")
    body_end = end + 4
    if message_type is None:
        if length is not None and length != "0":
            return None
    else:
        if length is None or not length.isdigit() or len(length) > 9:
            return None
        body_end += int(length)
        if int(length) > MAX_MESSAGE_BYTES or body_end > len(data):
            return None  # too long (Tornado answers 413), or not all in yet
    headers = {"Accept": fields.get(b"accept", "")}
    signature = fields.get(SIGNATURE.lower().encode())
    if signature is not None:
        headers[SIGNATURE] = signature
    start = RequestStartLine(method.decode(), target.decode(), "HTTP/1.1")
    return Take(start, headers, message_type, end + 4, body_end)


def answer_bytes(status: int, headers: Mapping[str, str], body: bytes) -> bytes:
    """An HTTP/1.1 answer as Tornado's connection writes it (``headers`` already hold
    ``Content-Length`` and ``Date``: ``FastRequest.send``)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Lane:
    """The lane of one node's listening sockets: adopts accepted connections (``adopt``, the
    accept callback) and keeps those it serves."""

    def __init__(self, host: NodeHost, server: NodeServer):
        self.host = host
        self.server = server
        self.origin = host.urls[host.node.id]
        self.connections: set[LaneConnection] = set()

    def adopt(self, sock: socket.socket, address: Any) -> None:
        """A connection just accepted: serve it here until it asks for something else."""
        if not self.server.room():
            sock.close()
            return
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write per answer
        except OSError:
            sock.close()  # reset before we got to it
            return
        connection = LaneConnection(self, sock, address)
        self.connections.add(connection)
        connection.wait()


class LaneConnection:
    """One connection the lane serves; ``close`` and ``hand_off`` end its time here."""

    def __init__(self, lane: Lane, sock: socket.socket, address: Any):
        self.lane = lane
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        # The asyncio loop's own reader and writer callbacks: Tornado's ``update_handler``
        # around every request cost more than the lane's parsing.
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.busy = False  # a request is in: the next is not looked at until it is answered
        self.reading = False  # the socket's reader is registered
        self.unsent = b""  # the part of an answer the socket did not take yet

    def wait(self) -> None:
        """Wait for the next request (its read deadline runs from now).  The reader stays
        registered from one request to the next; it is removed only when a request arrives
        while one is being answered (``_read``)."""
        self.lane.server.guard.waits(self)
        self.busy = False
        if not self.reading:
            self.reading = True
            self.loop.add_reader(self.fd, self._read)

    def _read(self) -> None:
        if self.busy:  # a pipelined request: looked at once this one's answer is out
            self.reading = False
            self.loop.remove_reader(self.fd)
            return
        try:
            data = self.sock.recv(PEEK_BYTES, socket.MSG_PEEK)
            request = take(data, self.lane.origin)
            if request is None and len(data) == PEEK_BYTES:  # maybe a long Accept: look at all
                data = self.sock.recv(PEEK_MAX, socket.MSG_PEEK)
                request = take(data, self.lane.origin)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()  # the client is done
            return
        if request is None:
            self.hand_off()
            return
        self.busy = True  # one request at a time
        self.lane.server.guard.read(self)
        try:
            self._consume(request.body_end)
        except OSError:
            self.close()
            return
        host = self.lane.host
        delegate: FastRequest
        if request.message_type is None:
            delegate = ProposeRequest(host, self, self.emit)  # type: ignore[arg-type]
        else:
            delegate = MessageRequest(host, self, request.message_type, self.emit)  # type: ignore[arg-type]
        try:
            delegate.headers_received(request.start_line, request.headers)
            if request.body_end > request.head_end:
                delegate.data_received(data[request.head_end : request.body_end])
            delegate.finish()
        except Exception as exc:  # a bug must cost this connection, never the node
            rated.warning("lane", "node %d: a request in the lane failed: %r", host.node.id, exc)
            self.close()

    def _consume(self, count: int) -> None:
        """Read and drop the ``count`` bytes just peeked (they are all in the kernel)."""
        while count > 0:
            chunk = self.sock.recv(count)
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "closed mid-request")
            count -= len(chunk)

    def emit(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """The delegate's answer: write it, then wait for the next request."""
        if not self.closed:
            self._send(answer_bytes(status, headers, body))

    def _send(self, data: bytes) -> None:
        data = self.unsent + data
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data) and not self.unsent:
            self.loop.add_writer(self.fd, self._send, b"")
        elif sent == len(data) and self.unsent:
            self.loop.remove_writer(self.fd)
        self.unsent = data[sent:]
        if not self.unsent:
            self.wait()

    def _leave(self) -> None:
        self.closed = True
        self.lane.connections.discard(self)
        self.lane.server.guard.read(self)
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)

    def close(self) -> None:
        """Close the connection (the client left, the guard's deadline or eviction)."""
        if not self.closed:
            self._leave()
            self.sock.close()

    def hand_off(self) -> None:
        """Give the connection to Tornado, with the request it has not read."""
        self._leave()
        self.lane.server.serve_in_tornado(self.sock, self.address)
