"""The hot paths, answered by bare delegates: ``/propose/<int>`` on the leader and the protocol
messages (``POST /prepare``, ``/accept``, ``/learn``) on every node.  The delegates are driven
by Tornado's HTTP/1 connection (``NodeDelegate``, below) or, for the plainest requests on plain
HTTP, by ``paxgos.net.lane`` straight off the socket; ``FastRequest.emit`` writes the answer
through whichever read the request.

A ``RequestHandler`` costs about as much CPU per request as the whole Paxos round does per
value once rounds are batched (routing, header objects, default headers, ETag, access log), and
on a 2-core machine the leader's core is the limit.  So ``NodeDelegate`` sits in front of the
``Application``: requests for ``/propose`` go to ``ProposeRequest`` and protocol messages to
``MessageRequest``, bare ``HTTPMessageDelegate``s; every other request goes to the application
unchanged.  The answers themselves come from ``paxgos.net.answers``, as for every endpoint.

Every request is screened here before any handler sees it (``paxgos.net.auth`` says why):

- a request that changes state (``/propose``, ``/autopropose``, every ``POST``) from another
  site's web page is 403;
- a peer message must be signed with the cluster secret, else 401; its answer is signed;
- a body larger than its endpoint takes is 413 before it is read: a peer message at most
  ``MAX_MESSAGE_BYTES``, every other endpoint none at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

import tornado.web
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPMessageDelegate,
    HTTPServerConnectionDelegate,
    RequestStartLine,
    ResponseStartLine,
    format_timestamp,
)

from paxgos.core.messages import (
    INT64_MIN,
    MAX_BATCH,
    Accept,
    Learn,
    Message,
    MessageError,
    Prepare,
    decode,
    encode,
)
from paxgos.net.answers import Answer, BadValue, error, outcome_answer, parse_int64
from paxgos.net.auth import SIGNATURE, certificate_missing, foreign
from paxgos.net.guard import ConnectionGuard
from paxgos.net.host import NodeHost
from paxgos.net.ratelog import RateLimitedLog

PREFIX = "/propose"
PROTOCOL: dict[str, type] = {"/prepare": Prepare, "/accept": Accept, "/learn": Learn}
#: Paths that take nothing but a peer's ``POST`` (``GET /learn`` is the catch-up read).
POST_ONLY = ("/prepare", "/accept")

#: The largest peer message body: an Accept of ``MAX_BATCH`` values, each at most as long as
#: the longest 64-bit integer and a comma, plus room for the other fields.
MAX_MESSAGE_BYTES = MAX_BATCH * (len(str(INT64_MIN)) + 1) + 4096

#: Paths a browser's page must not reach with any method (they change state even on GET).
WRITES = (PREFIX, "/autopropose")

rated = RateLimitedLog(logging.getLogger("paxgos.net"))

#: Writes one answer (status, headers with ``Content-Length`` and ``Date``, body).
Emit = Callable[[int, dict[str, str], bytes], None]

_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The ``Date`` header's value now, formatted once a second (every answer carries one, as
    Tornado's own answers do)."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, format_timestamp(second))
    return _date[1]


class FastRequest(HTTPMessageDelegate):
    """A request answered by a bare delegate; ``emit`` writes the answer (Tornado's connection
    or the lane's)."""

    def __init__(self, host: NodeHost, connection: HTTPConnection, emit: Emit | None = None):
        self.host = host
        self.connection = connection
        self.as_json = False
        self.head = False  # a HEAD request: the answer's headers without its body
        #: Writes the answer: through Tornado's connection, or the lane's (``paxgos.net.lane``).
        self.emit: Emit = emit or self._emit

    def data_received(self, chunk: bytes) -> None:
        pass  # only requests with a body keep it

    def on_connection_close(self) -> None:
        pass  # the outcome arrives anyway; writing it to a closed stream is a no-op

    def send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        if status not in (204, 304):
            headers["Content-Length"] = str(len(body))
        if self.head:
            body = b""
        headers["Date"] = http_date()
        self.emit(status, headers, body)

    def _emit(self, status: int, headers: dict[str, str], body: bytes) -> None:
        start = ResponseStartLine("HTTP/1.1", status, REASONS.get(status, ""))
        self.connection.write_headers(start, HTTPHeaders(headers), body)
        self.connection.finish()

    def respond(self, answer: Answer) -> None:
        self.send(answer.status, answer.headers(self.as_json), answer.body(self.as_json))


class ProposeRequest(FastRequest):
    """One ``/propose`` request: parse, propose, answer once the outcome is known."""

    def __init__(self, host: NodeHost, connection: HTTPConnection, emit: Emit | None = None):
        super().__init__(host, connection, emit)
        self.uri = ""
        self.answer: Answer | None = None
        self.value = 0

    def headers_received(self, start_line: Any, headers: Mapping[str, str]) -> None:  # type: ignore[override]
        assert isinstance(start_line, RequestStartLine)
        self.uri = start_line.path
        self.as_json = "application/json" in headers.get("Accept", "")
        path = self.uri.split("?", 1)[0]
        if start_line.method != "GET":
            refused = error(405, f"method {start_line.method} not allowed on {path}")
            self.answer = dataclasses.replace(refused, allow="GET")
            return
        raw = unquote(path[len(PREFIX) + 1 :]) if path.startswith(PREFIX + "/") else ""
        try:
            self.value = parse_int64(raw)
        except BadValue as exc:
            self.answer = error(400, str(exc))

    def finish(self) -> None:
        host = self.host
        if self.answer is None:
            if host.failed:
                self.answer = error(503, host.failed, retry_after=5)
        if self.answer is not None:
            self.respond(self.answer)
            return
        host.propose(self.value, self.done)

    def done(self, result: Any) -> None:
        """The proposal's outcome (or exception) is in: answer it."""
        self.respond(outcome_answer(self.host, result, self.uri))


class MessageRequest(FastRequest):
    """``POST /prepare``, ``/accept``, ``/learn``: a peer's message in, the reply out (JSON);
    malformed messages are 400 and never reach the core."""

    def __init__(
        self,
        host: NodeHost,
        connection: HTTPConnection,
        message_type: type,
        emit: Emit | None = None,
    ):
        super().__init__(host, connection, emit)
        self.message_type = message_type
        self.chunks: list[bytes] = []
        self.target = ""
        self.signature: str | None = None

    def headers_received(self, start_line: Any, headers: Mapping[str, str]) -> None:  # type: ignore[override]
        self.as_json = "application/json" in headers.get("Accept", "")
        self.target = start_line.path
        self.signature = headers.get(SIGNATURE)

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self) -> None:
        host = self.host
        body = b"".join(self.chunks)
        refused = host.auth.check_request("POST", self.target, body, self.signature)
        if refused is None and host.peer_cert_required:
            refused = certificate_missing(self.connection.stream)  # type: ignore[attr-defined]
        if refused is not None:
            rated.warning(
                "unsigned", "node %d: refused a peer message to %s: %s",
                host.node.id, self.target, refused,
            )  # fmt: skip
            self.respond(error(401, refused))
            return
        try:
            msg = decode(body, expect=self.message_type)
        except MessageError as exc:
            self.respond(error(400, str(exc)))
            return
        if msg.sender >= len(host.urls) or msg.sender == host.node.id:
            self.respond(error(400, f"unknown sender node {msg.sender}"))
            return
        if host.faults.active():
            delayed = asyncio.ensure_future(host.faults.delay())
            delayed.add_done_callback(lambda _: self.deliver(msg))
        else:
            self.deliver(msg)

    def deliver(self, msg: Message) -> None:
        self.host.deliver(msg, self.replied)

    def replied(self, result: Any) -> None:
        """The core's response message, None, or the exception that stopped it."""
        auth = self.host.auth
        if isinstance(result, Exception):
            self.respond(error(503, str(result)))
        elif result is None:
            signed = {SIGNATURE: auth.sign_reply(self.signature or "", 204, b"")}
            self.send(204, signed if auth.enabled else {}, b"")
        else:
            body = encode(result)
            headers = {"Content-Type": "application/json"}
            if auth.enabled:
                headers[SIGNATURE] = auth.sign_reply(self.signature or "", 200, body)
            self.send(200, headers, body)


class Refused(FastRequest):
    """A request answered with ``answer`` as soon as its head is in; its body is never read
    (the connection closes after the answer)."""

    def __init__(self, host: NodeHost, connection: HTTPConnection, answer: Answer):
        super().__init__(host, connection)
        self.answer = answer

    def headers_received(self, start_line: Any, headers: HTTPHeaders) -> None:
        self.as_json = "application/json" in headers.get("Accept", "")
        self.connection.set_max_body_size(0)  # whatever body follows is not read
        self.respond(self.answer)

    def finish(self) -> None:
        pass  # answered already


#: The reason phrase of each status the fast path answers with.
REASONS = {
    200: "OK",
    307: "Temporary Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    405: "Method Not Allowed",
    413: "Content Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _Dispatch(HTTPMessageDelegate):
    """Chooses, once the request line is in, between the fast path and the application."""

    def __init__(self, owner: NodeDelegate, server_conn: object, connection: HTTPConnection):
        self.owner = owner
        self.server_conn = server_conn
        self.connection = connection
        self.inner: HTTPMessageDelegate | None = None

    def headers_received(self, start_line: Any, headers: HTTPHeaders) -> Any:
        host = self.owner.host
        path = start_line.path
        method = start_line.method
        message_type = PROTOCOL.get(path) if method == "POST" else None
        refused = self.screen(method, path, headers, message_type is not None)
        if refused is None and message_type is None and path.split("?", 1)[0] in POST_ONLY:
            not_allowed = error(405, f"method {method} not allowed on {path.split('?', 1)[0]}")
            refused = dataclasses.replace(not_allowed, allow="POST")
        if refused is not None:
            self.inner = Refused(host, self.connection, refused)
        elif message_type is not None:
            self.inner = MessageRequest(host, self.connection, message_type)
            self.connection.set_max_body_size(MAX_MESSAGE_BYTES)
        elif path == PREFIX or path.startswith(PREFIX + "/") or path.startswith(PREFIX + "?"):
            self.inner = ProposeRequest(host, self.connection)
        else:
            self.inner = self.owner.app.start_request(self.server_conn, self.connection)
        if isinstance(self.inner, FastRequest):
            self.inner.head = method == "HEAD"
        return self.inner.headers_received(start_line, headers)

    def screen(
        self, method: str, path: str, headers: HTTPHeaders, peer_message: bool
    ) -> Answer | None:
        """The answer that refuses this request before it is read any further, or ``None``."""
        if method != "GET" and method != "HEAD" or path.startswith(WRITES):
            why = foreign(
                headers.get("Origin"),
                headers.get("Sec-Fetch-Site"),
                headers.get("Host"),
                self.owner.origin,
            )
            if why is not None:
                return error(403, why)
        length = headers.get("Content-Length")
        if not peer_message:
            if length is not None and length != "0":
                return error(413, f"{method} {path.split('?', 1)[0]} takes no request body")
            if "Transfer-Encoding" in headers:
                # An empty chunked body is no body (geventhttpclient 2.4, Locust's client on
                # Python 3.10, sends one with every GET); a chunk of anything is refused.
                self.connection.set_max_body_size(0)
        elif length is not None or "Transfer-Encoding" in headers:
            if length is not None and not (
                length.isdigit() and len(length) < 12 and int(length) <= MAX_MESSAGE_BYTES
            ):
                return error(413, f"a peer message is at most {MAX_MESSAGE_BYTES} bytes")
        return None

    def data_received(self, chunk: bytes) -> Any:
        assert self.inner is not None
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        assert self.inner is not None
        self.owner.guard.read(self.connection)
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.owner.guard.read(self.connection)
        if self.inner is not None:
            self.inner.on_connection_close()


class NodeDelegate(HTTPServerConnectionDelegate):
    """The node's HTTP server delegate: ``/propose`` on the fast path, the rest to ``app``."""

    def __init__(self, app: tornado.web.Application, host: NodeHost, guard: ConnectionGuard):
        self.app = app
        self.host = host
        self.guard = guard
        self.origin = host.urls[host.node.id]

    def start_request(self, server_conn: object, request_conn: HTTPConnection) -> _Dispatch:
        self.guard.waits(request_conn)
        return _Dispatch(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)
