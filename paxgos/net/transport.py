"""Peer fan-out: turns the core's outgoing messages into HTTP requests and feeds back replies.

Each peer message is one HTTP/1.1 request (``POST /prepare``, ``/accept``, ``/learn``, or the
catch-up ``GET /learn?...``), signed with the cluster secret (``paxgos.net.auth``).  How it is
sent is chosen with ``configure_peer_client`` (``--peer-client``):

- ``lane`` (the default): to a plain ``http://`` peer through ``paxgos.net.peerlane``, which
  writes the bytes formatted here on a kept-alive socket and reads the answer in the socket's
  callback; to an ``https://`` peer as ``pooled`` does;
- ``pooled``: through ``paxgos.net.peerclient.PooledHTTPClient``, Tornado's ``AsyncHTTPClient``
  interface on kept-alive ``IOStream`` connections (a stalled peer tying up only its own);
- ``curl``: through Tornado's ``CurlAsyncHTTPClient``.

The lane and the pooled client frame answers by the same rules (``parse_head``).
Past ``max_in_flight`` unanswered requests a peer's further messages are dropped, as a lossy
network would drop them: the core retransmits what matters.  A request unanswered after its
timeout fails (the message is lost; the core retransmits).

An answer reaches the core only if it is what was asked for:

- a 200 or 204 whose ``Paxgos-Signature`` binds it to this request (other statuses are dropped
  unread: a refusal, an overload, a failed disk);
- no longer than the request's reply can be (``answer_limit``, from the protocol's limits: a
  peer answering ``Content-Length: 10**12`` costs nothing; ``MAX_RESPONSE``);
- a well-formed message of the type that answers the request (``REPLY_TO``: a Prepare is
  answered by a Promise, ...), from the node asked.

Anything else is dropped and logged at most once per kind and peer every 10 s
(``RateLimitedLog``): a misbehaving peer cannot flood the log.  No failure of an exchange
escapes it.  An answer longer than ``DECODE_IN_THREAD`` is checked and decoded on a worker
thread (see there for what that buys).

Messages to the node itself skip HTTP and go straight back into the host, after the same fault
injection an acceptor applies to its peers' messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
import time
from collections.abc import Callable
from functools import partial
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPResponse
from tornado.httputil import HTTPHeaders

from paxgos.core.messages import (
    MAX_BATCH,
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Learn,
    LearnAck,
    Message,
    MessageError,
    Prepare,
    Promise,
    decode,
    encode,
)
from paxgos.net.auth import SIGNATURE, PeerAuth
from paxgos.net.buckets import Buckets
from paxgos.net.events import EventLog
from paxgos.net.peerclient import (
    BadAnswer,
    PeerError,
    PeerRequest,
    PooledHTTPClient,
    parse_head,
)
from paxgos.net.peerlane import Answered, PeerLane
from paxgos.net.ratelog import RateLimitedLog

__all__ = [
    "MAX_RESPONSE",
    "PEER_CLIENTS",
    "PeerError",
    "Transport",
    "answer_limit",
    "configure_peer_client",
    "parse_head",
]

log = logging.getLogger("paxgos.net")

PATHS: dict[type, str] = {Prepare: "/prepare", Accept: "/accept", Learn: "/learn"}

#: The message type that answers each request.
REPLY_TO: dict[type, type] = {
    Prepare: Promise,
    Accept: Accepted,
    Learn: LearnAck,
    CatchupRequest: CatchupReply,
}

# --- how long an answer can be ----------------------------------------------------------------

#: The longest JSON integer a message holds: ``-9223372036854775808``.
NUMBER = 20
#: Room for a reply's fixed fields (type, sender, ballots, commit, flags: at most eight
#: numbers and their names, under 300 bytes compact) and for a refusal's one-line text.
REPLY_ENVELOPE = 1024
#: One entry of a Promise's ``accepted``, ``[slot,[round,node],value],``: four numbers and
#: eight bytes of punctuation.
ACCEPTED_ENTRY = 4 * NUMBER + 8
#: One entry of a CatchupReply's ``entries``, ``[slot,value],``: two numbers and four bytes.
CHOSEN_ENTRY = 2 * NUMBER + 4
#: The longest answer a peer can legitimately send: a Promise listing MAX_BATCH accepted
#: entries (``decode`` refuses more), 1,024 + 100,000 x 88 = 8,801,024 bytes.  A CatchupReply
#: of MAX_BATCH entries is half that; an Accepted or a LearnAck fits in REPLY_ENVELOPE.
MAX_RESPONSE = REPLY_ENVELOPE + MAX_BATCH * ACCEPTED_ENTRY

#: Answers longer than this are checked and decoded on a worker thread.  ``json.loads`` holds
#: the GIL, so a thread cannot hide its part (about 130 ms for a MAX_RESPONSE Promise on the
#: reference machine), but the field validation after it is Python and yields the loop every
#: switch interval: the longest stall for a MAX_RESPONSE answer fell from 254 ms to 119 ms.
#: Below this size decoding takes a few milliseconds (4 ms for a catch-up reply, 9 ms for a
#: Promise), where a hand-off (55 us, and a GIL switch) would buy little.
DECODE_IN_THREAD = 256 * 1024


def answer_limit(msg: Message) -> int:
    """The most bytes the answer to ``msg`` can have (see ``MAX_RESPONSE``)."""
    if isinstance(msg, Prepare):
        return MAX_RESPONSE
    if isinstance(msg, CatchupRequest):
        return REPLY_ENVELOPE + min(msg.limit, MAX_BATCH) * CHOSEN_ENTRY
    return REPLY_ENVELOPE  # an Accepted or a LearnAck: fixed fields only


# --- which HTTP client ------------------------------------------------------------------------

#: The peer clients ``configure_peer_client`` (and ``--peer-client``) knows, the default first.
PEER_CLIENTS = ("lane", "pooled", "curl")
#: Concurrent requests of the curl client: Tornado's default (10) would queue every peer's
#: requests behind a stalled peer's 32 in flight; this is 32 each for 8 peers.
CURL_MAX_CLIENTS = 256


def configure_peer_client(
    kind: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    ca_certs: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> None:
    """Select the ``AsyncHTTPClient`` implementation peers are reached with (call it before a
    ``NodeHost`` is built; a ``Transport`` makes its client on first use).

    ``lane`` and ``pooled``: ``PooledHTTPClient`` (for every peer, or, with ``lane``, for
    ``https://`` peers: a ``Transport`` told ``lane=True`` reaches plain-HTTP peers through
    ``PeerLane``), TLS by ``ssl_context`` (or one made from the files).
    ``curl``: ``CurlAsyncHTTPClient`` (needs ``pycurl``), TLS by the certificate files, as
    libcurl takes them.  ``ValueError`` with a one-line reason for anything it cannot do."""
    if kind in ("lane", "pooled"):
        if ssl_context is None and (ca_certs or client_cert):
            try:
                ssl_context = ssl.create_default_context(cafile=ca_certs)
                if client_cert:
                    ssl_context.load_cert_chain(client_cert, client_key)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load the peer TLS files: {exc}") from None
        AsyncHTTPClient.configure(
            PooledHTTPClient, max_body_size=MAX_RESPONSE, ssl_context=ssl_context
        )
    elif kind == "curl":
        try:
            import pycurl  # noqa: F401
        except ImportError:
            raise ValueError("--peer-client curl needs pycurl: pip install pycurl") from None
        if ssl_context is not None and not ca_certs:
            raise ValueError("the curl peer client verifies peers by files: give ca_certs")
        defaults = {
            name: value
            for name, value in (
                ("ca_certs", ca_certs), ("client_cert", client_cert), ("client_key", client_key)
            )
            if value
        }  # fmt: skip
        AsyncHTTPClient.configure(
            "tornado.curl_httpclient.CurlAsyncHTTPClient",
            max_clients=CURL_MAX_CLIENTS,
            defaults=defaults,
        )
    else:
        raise ValueError(f"unknown peer client {kind!r} (one of: {', '.join(PEER_CLIENTS)})")


def peer_http_client(ssl_context: ssl.SSLContext | None = None) -> AsyncHTTPClient:
    """A new instance of the configured peer client.  ``PooledHTTPClient`` when none of ours is
    configured (Tornado's default, the simple client, opens a connection per request and queues
    every peer's requests behind ten), or when ``ssl_context`` is given for it (curl takes its
    TLS files from ``configure_peer_client`` instead)."""
    configured = AsyncHTTPClient.configured_class()
    if configured.__name__ == "CurlAsyncHTTPClient":
        return AsyncHTTPClient(force_instance=True)
    if configured is PooledHTTPClient and ssl_context is None:
        return AsyncHTTPClient(force_instance=True)
    return PooledHTTPClient(
        force_instance=True, max_body_size=MAX_RESPONSE, ssl_context=ssl_context
    )


class Transport:
    """Sends core messages to peers over HTTP; see the module docstring."""

    def __init__(
        self,
        node_id: int,
        urls: list[str],
        timeout: float,
        receive: Callable[[Message], None],
        local: Callable[[Message, Callable[[object], None]], None],
        auth: PeerAuth | None = None,
        max_in_flight: int = 32,
        ssl_context: ssl.SSLContext | None = None,
        events: EventLog | None = None,
        lane: bool = True,
    ) -> None:
        """``receive`` takes every valid reply (into the core); ``local`` handles a message the
        node sends itself, in a later turn of the loop, and calls its second argument once
        with the reply (``None`` for none, or the exception that stopped it); ``auth``: signs
        requests and checks answers (``None``: an insecure node's, nothing signed);
        ``ssl_context``: how ``https://`` peers are verified and what this node presents to
        them (the pooled client's; ``None``: the configured client's settings); ``events``:
        where the messages sent and the answers received are recorded while someone watches
        (``paxgos.net.events``); ``lane``: plain-HTTP peers are reached through ``PeerLane``
        (``False``: every peer through the configured ``AsyncHTTPClient``)."""
        self.node_id = node_id
        self.events = events
        self.receive = receive
        self.local = local
        self.urls = urls
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.in_flight = [0] * len(urls)
        # Per peer, for /metrics: messages sent, dropped unsent, answered unusably (lost,
        # refused, timed out), and the round-trip times of the usable answers.
        self.sent = [0] * len(urls)
        self.dropped_to = [0] * len(urls)
        self.failures = [0] * len(urls)
        self.rtt = [Buckets() for _ in urls]
        self.auth = auth if auth is not None else PeerAuth(None)
        self.ssl_context = ssl_context
        self.http: AsyncHTTPClient | None = None  # made on first use, on the running loop
        self.lane: PeerLane | None = None  # likewise
        #: Per peer, for the lane: its origin, its URL's path and its requests' ``Host`` line
        #: (None: a peer the lane does not reach).
        self._lane_to: list[tuple[str, str, bytes] | None] = [
            _lane_target(url) if lane else None for url in urls
        ]
        self.log = RateLimitedLog(log)
        self._decoder: concurrent.futures.ThreadPoolExecutor | None = None
        #: The last message broadcast: its body, signature and the end of its request.
        self._encoded: tuple[Message | None, bytes, str, bytes] = (None, b"", "", b"")
        self.closed = False

    @property
    def dropped(self) -> int:
        """Messages dropped unsent, to every peer."""
        return sum(self.dropped_to)

    def close(self) -> None:
        """Close every connection; messages sent from now on are dropped (the node stops)."""
        self.closed = True
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.lane is not None:
            self.lane.close()
            self.lane = None
        if self._decoder is not None:
            self._decoder.shutdown(wait=False)

    def send(self, to: int, msg: Message) -> None:
        """Send ``msg`` to node ``to``; its reply, if any, goes back into the core."""
        if to == self.node_id:
            # A plain callback in the next turn (not within the Ready being sent): no task,
            # coroutine or future per round.
            asyncio.get_running_loop().call_soon(self._local, msg)
            return
        if self.in_flight[to] >= self.max_in_flight or self.closed:
            self.dropped_to[to] += 1
            return
        self.sent[to] += 1
        if self.events is not None and self.events.on:
            self.events.sent(to, msg)
        body: bytes | None
        if isinstance(msg, CatchupRequest):
            query = urlencode({"from": msg.from_slot, "limit": msg.limit, "sender": msg.sender})
            method, target, body = "GET", f"/learn?{query}", None
            timeout = max(self.timeout, 5.0)
            signature = self.auth.sign_request(method, target, b"")
            tail = _request_tail(signature, None)
        else:
            method, target = "POST", PATHS[type(msg)]
            if self._encoded[0] is not msg:  # a broadcast: encode and sign once for every peer
                data = encode(msg)
                signature = self.auth.sign_request(method, target, data)
                self._encoded = (msg, data, signature, _request_tail(signature, data))
            _, body, signature, tail = self._encoded
            timeout = self.timeout
        self.in_flight[to] += 1
        answered = partial(self._answered, to, msg, signature, time.monotonic())
        try:
            lane_to = self._lane_to[to]
            if lane_to is not None:
                if self.lane is None:
                    self.lane = PeerLane()
                origin, prefix, host_line = lane_to
                start = f"{method} {prefix}{target} HTTP/1.1\r\n".encode()
                self.lane.request(
                    origin, start + host_line + tail, timeout, answer_limit(msg), answered
                )
                return
            if self.http is None:
                self.http = peer_http_client(self.ssl_context)
            headers = {"Content-Type": "application/json"}
            if signature:
                headers[SIGNATURE] = signature
            request = PeerRequest(
                self.urls[to] + target, method=method, headers=headers, body=body,
                request_timeout=timeout, connect_timeout=timeout, max_body_size=answer_limit(msg),
            )  # fmt: skip
            if type(self.http) is PooledHTTPClient:
                # Our own client, by its fetch_impl: fetch() would copy the headers into an
                # HTTPHeaders, wrap the request in a proxy of defaults and add a future, a
                # third of the client's own cost per request, for nothing it reads.
                self.http.fetch_impl(request, partial(_response_to, answered))
            else:
                future = self.http.fetch(request, raise_error=False)
                future.add_done_callback(partial(_response_of, request, answered))
        except Exception as exc:  # a closed client, no file descriptor: the message is lost
            self.in_flight[to] -= 1
            self.failures[to] += 1
            self.log.warning(
                f"send {to}", "node %d: cannot send to node %d: %r", self.node_id, to, exc
            )

    def _answered(
        self,
        to: int,
        msg: Message,
        signature: str,
        sent_at: float,
        status: int,
        headers: HTTPHeaders | None,
        body: bytes,
        error: BaseException | None,
    ) -> None:
        """The answer to ``msg`` (``status`` 599 and ``error``: none came)."""
        self.in_flight[to] -= 1
        if status == 200 or status == 204:
            self.rtt[to].observe(time.monotonic() - sent_at)
        else:
            self.failures[to] += 1
        try:
            self._check(to, msg, signature, status, headers, body, error)
        except Exception as exc:  # never an error in a callback, whatever a peer answered
            self.log.warning(
                f"error {to}", "node %d: the answer from node %d to %s failed: %r",
                self.node_id, to, type(msg).__name__, exc,
            )  # fmt: skip

    def _check(
        self,
        to: int,
        msg: Message,
        signature: str,
        status: int,
        headers: HTTPHeaders | None,
        body: bytes,
        error: BaseException | None,
    ) -> None:
        """Pass the answer to ``msg`` on to the core if it is what was asked for (``error``:
        none came; a peer's own status 599 is a refusal like any other)."""
        if error is not None:
            if isinstance(error, BadAnswer):  # framed against the rules, or too long
                self._refuse(to, "bad answer", "to a %s: %s", _name(msg), error.message)
                return
            if not isinstance(error, HTTPClientError):  # not a network failure: say so
                raise error or RuntimeError("599 without an error")
            # Refused, closed, timed out: the message is lost.
            log.debug("node %d: %s to node %d lost: %s", self.node_id, msg, to, error)
            return
        if status != 200 and status != 204:
            # A refusal (401, 403), an overload (503), a failed disk: dropped unread, so not a
            # "not signed" answer either (only 200 and 204 carry a signature).
            log.debug("node %d: %s to node %d failed: %s", self.node_id, msg, to, status)
            return
        answer_signature = headers.get(SIGNATURE) if headers is not None else None
        if len(body) > answer_limit(msg):  # what any configured client let through
            self._refuse(to, "oversized", "%d bytes in answer to a %s", len(body), _name(msg))
            return
        if len(body) > DECODE_IN_THREAD:
            asyncio.ensure_future(self._check_large(to, msg, signature, body, answer_signature))
            return
        if not self.auth.check_reply(signature, status, body, answer_signature):
            self._refuse_unsigned(to)
            return
        if status == 204:
            return
        try:
            reply = decode(body)
        except MessageError as exc:
            self._refuse(to, "malformed", "a malformed reply to a %s: %s", _name(msg), exc)
            return
        self._deliver(to, msg, reply)

    async def _check_large(
        self, to: int, msg: Message, signature: str, body: bytes, answer_signature: str | None
    ) -> None:
        """``_check``'s signature check and decoding for a long answer, on the worker thread
        (see ``DECODE_IN_THREAD``; one worker: long answers queue, rather than take turns
        with the loop for the GIL).  Replies may then overtake each other, as the network may
        reorder messages anyway."""
        try:
            if self._decoder is None:
                self._decoder = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="paxgos-decode"
                )
            loop = asyncio.get_running_loop()
            checked = await loop.run_in_executor(
                self._decoder, _check_and_decode, self.auth, signature, body, answer_signature
            )
            if checked is None:
                self._refuse_unsigned(to)
            elif isinstance(checked, MessageError):
                self._refuse(to, "malformed", "a malformed reply to a %s: %s", _name(msg), checked)
            else:
                self._deliver(to, msg, checked)
        except Exception as exc:  # a shut-down executor (the node stops), no memory, ...
            if not self.closed:
                self.log.warning(
                    f"error {to}", "node %d: the answer from node %d to %s failed: %r",
                    self.node_id, to, type(msg).__name__, exc,
                )  # fmt: skip

    def _deliver(self, to: int, msg: Message, reply: Message) -> None:
        expected = REPLY_TO[type(msg)]
        if type(reply) is not expected:
            self._refuse(to, "wrong type", "a %s in answer to a %s", _name(reply), _name(msg))
            return
        if reply.sender != to:  # an answer must come from the node asked
            self._refuse(to, "wrong sender", "a reply naming node %d", reply.sender)
            return
        if not self.closed:
            if self.events is not None and self.events.on:
                self.events.answered(to, msg, reply)
            self.receive(reply)

    def _refuse(self, to: int, kind: str, what: str, *args: object) -> None:
        """Log a dropped answer, at most once per kind and peer every 10 s."""
        self.log.warning(
            f"{kind} {to}", "node %d: dropped from node %d (%s): " + what,
            self.node_id, to, kind, *args,
        )  # fmt: skip

    def _refuse_unsigned(self, to: int) -> None:
        self.log.warning(
            f"unsigned {to}",
            "node %d: answer from node %d is not signed with the cluster secret; dropped",
            self.node_id, to,
        )  # fmt: skip

    def _local(self, msg: Message) -> None:
        if self.closed:
            return
        try:
            self.local(msg, partial(self._own_reply, msg))
        except Exception as exc:  # never an error in the loop's callback
            self._local_failed(msg, exc)

    def _own_reply(self, msg: Message, reply: object) -> None:
        """The node's own reply to ``msg``, into the core like a peer's, in the next turn (the
        host answers within its release of a Ready; a step there would be nested in it)."""
        if isinstance(reply, Exception):  # a failed store (logged by the host), or a fault's
            log.debug("node %d: its own %s failed: %r", self.node_id, _name(msg), reply)
        elif reply is not None and not self.closed:
            asyncio.get_running_loop().call_soon(self._receive_own, msg, reply)

    def _receive_own(self, msg: Message, reply: Message) -> None:
        if self.closed:
            return
        try:
            self.receive(reply)
        except Exception as exc:
            self._local_failed(msg, exc)

    def _local_failed(self, msg: Message, exc: Exception) -> None:
        self.log.warning(
            "local", "node %d: its own %s failed: %r", self.node_id, type(msg).__name__, exc
        )


def _response_to(answered: Answered, response: HTTPResponse) -> None:
    """Hand an ``AsyncHTTPClient``'s answer to ``answered``, as the lane hands its own."""
    failed = response.code == 599  # Tornado's clients also give an error to every non-2xx
    answered(response.code, response.headers, response.body, response.error if failed else None)


def _response_of(request: PeerRequest, answered: Answered, future: asyncio.Future) -> None:
    """Hand ``fetch()``'s outcome to ``answered``: a failure (which ``fetch`` raises even with
    ``raise_error=False``) as a 599 carrying its error."""
    if future.cancelled():
        return
    error = future.exception()
    if error is None:
        _response_to(answered, future.result())
    else:
        answered(599, None, b"", error)


def _lane_target(url: str) -> tuple[str, str, bytes] | None:
    """A plain-HTTP peer's origin, the path its URL puts before every target, and its
    ``Host`` line, for the lane; None for any other URL."""
    scheme, _, rest = url.partition("://")
    netloc, slash, prefix = rest.partition("/")
    if scheme != "http" or not netloc:
        return None
    return f"http://{netloc}", slash + prefix, f"Host: {netloc}\r\n".encode("latin-1")


def _request_tail(signature: str, body: bytes | None) -> bytes:
    """A peer request's header lines after ``Host``, the blank line and the body, as
    ``PooledHTTPClient`` writes them."""
    lines = ["Content-Type: application/json\r\n"]
    if signature:
        lines.append(f"{SIGNATURE}: {signature}\r\n")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    return ("".join(lines) + "\r\n").encode("latin-1") + (body or b"")


def _name(msg: Message) -> str:
    return type(msg).__name__


def _check_and_decode(
    auth: PeerAuth, signature: str, body: bytes, answer_signature: str | None
) -> Message | MessageError | None:
    """On the worker thread: the decoded 200 answer, its ``MessageError``, or ``None`` when its
    signature is wrong (``hashlib`` releases the GIL while it hashes a long body)."""
    if not auth.check_reply(signature, 200, body, answer_signature):
        return None
    try:
        return decode(body)
    except MessageError as exc:
        return exc
