"""The hot paths, served straight off Tornado's HTTP/1 connection: ``/propose/<int>`` on the
leader and the protocol messages (``POST /prepare``, ``/accept``, ``/learn``) on every node.

A ``RequestHandler`` costs about as much CPU per request as the whole Paxos round does per
value once rounds are batched (routing, header objects, default headers, ETag, access log), and
on a 2-core machine the leader's core is the limit.  So ``NodeDelegate`` sits in front of the
``Application``: requests for ``/propose`` go to ``ProposeRequest`` and protocol messages to
``MessageRequest``, bare ``HTTPMessageDelegate``s; every other request goes to the application
unchanged.  The answers themselves come from ``paxgos.net.answers``, as for every endpoint.
"""

from __future__ import annotations

import asyncio
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
)

from paxgos.core.messages import Accept, Learn, Message, MessageError, Prepare, decode, encode
from paxgos.net.answers import Answer, BadValue, error, outcome_answer, parse_int64
from paxgos.net.host import NodeHost

PREFIX = "/propose"
PROTOCOL: dict[str, type] = {"/prepare": Prepare, "/accept": Accept, "/learn": Learn}


class FastRequest(HTTPMessageDelegate):
    """A request answered straight on its HTTP/1 connection."""

    def __init__(self, host: NodeHost, connection: HTTPConnection):
        self.host = host
        self.connection = connection
        self.as_json = False

    def data_received(self, chunk: bytes) -> None:
        pass  # only requests with a body keep it

    def on_connection_close(self) -> None:
        pass  # the outcome arrives anyway; writing it to a closed stream is a no-op

    def send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        if status != 204:
            headers["Content-Length"] = str(len(body))
        start = ResponseStartLine("HTTP/1.1", status, _REASONS.get(status, ""))
        self.connection.write_headers(start, HTTPHeaders(headers), body)
        self.connection.finish()

    def respond(self, answer: Answer) -> None:
        self.send(answer.status, answer.headers(self.as_json), answer.body(self.as_json))


class ProposeRequest(FastRequest):
    """One ``/propose`` request: parse, propose, answer once the outcome is known."""

    def __init__(self, host: NodeHost, connection: HTTPConnection):
        super().__init__(host, connection)
        self.uri = ""
        self.answer: Answer | None = None
        self.value = 0

    def headers_received(self, start_line: Any, headers: HTTPHeaders) -> None:
        assert isinstance(start_line, RequestStartLine)
        self.uri = start_line.path
        self.as_json = "application/json" in headers.get("Accept", "")
        path = self.uri.split("?", 1)[0]
        if start_line.method != "GET":
            self.answer = error(405, f"method {start_line.method} not allowed on {path}")
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

    def __init__(self, host: NodeHost, connection: HTTPConnection, message_type: type):
        super().__init__(host, connection)
        self.message_type = message_type
        self.chunks: list[bytes] = []

    def headers_received(self, start_line: Any, headers: HTTPHeaders) -> None:
        self.as_json = "application/json" in headers.get("Accept", "")

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self) -> None:
        host = self.host
        try:
            msg = decode(b"".join(self.chunks), expect=self.message_type)
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
        if isinstance(result, Exception):
            self.respond(error(503, str(result)))
        elif result is None:
            self.send(204, {}, b"")
        else:
            self.send(200, {"Content-Type": "application/json"}, encode(result))


_REASONS = {
    200: "OK",
    307: "Temporary Redirect",
    400: "Bad Request",
    405: "Method Not Allowed",
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
        path = start_line.path
        message_type = PROTOCOL.get(path) if start_line.method == "POST" else None
        if message_type is not None:
            self.inner = MessageRequest(self.owner.host, self.connection, message_type)
        elif path == PREFIX or path.startswith(PREFIX + "/") or path.startswith(PREFIX + "?"):
            self.inner = ProposeRequest(self.owner.host, self.connection)
        else:
            self.inner = self.owner.app.start_request(self.server_conn, self.connection)
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        assert self.inner is not None
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        assert self.inner is not None
        self.inner.finish()

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()


class NodeDelegate(HTTPServerConnectionDelegate):
    """The node's HTTP server delegate: ``/propose`` on the fast path, the rest to ``app``."""

    def __init__(self, app: tornado.web.Application, host: NodeHost):
        self.app = app
        self.host = host

    def start_request(self, server_conn: object, request_conn: HTTPConnection) -> _Dispatch:
        return _Dispatch(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)
