"""Peer fan-out: turns the core's outgoing messages into HTTP requests and feeds back replies.

Each peer gets its own curl-based ``AsyncHTTPClient`` (``force_instance``): curl keeps the TCP
connections alive between requests (Tornado's simple client opens one per request), and a
separate client per peer means a stalled peer fills only its own request slots, never the
slots of the healthy majority.  Past ``max_in_flight`` unanswered requests a peer's further
messages are dropped, as a lossy network would: the core retransmits what matters.

Messages to the node itself skip HTTP and go straight back into the host, after the same fault
injection an acceptor applies to its peers' messages.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from tornado.curl_httpclient import CurlAsyncHTTPClient
from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.ioloop import IOLoop

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
        self.clients: dict[int, CurlAsyncHTTPClient] = {}
        self.loop = IOLoop.current()
        self._encoded: tuple[Message | None, bytes] = (None, b"")

    def _client(self, to: int) -> CurlAsyncHTTPClient:
        client = self.clients.get(to)
        if client is None:
            client = CurlAsyncHTTPClient(force_instance=True, max_clients=self.max_in_flight)
            self.clients[to] = client
        return client

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()

    def send(self, to: int, msg: Message) -> None:
        """Send ``msg`` to node ``to``; its reply, if any, goes back into the core."""
        if to == self.host.node.id:
            asyncio.ensure_future(self._local(msg))
            return
        if self.in_flight[to] >= self.max_in_flight:
            self.dropped += 1
            return
        url = self.urls[to]
        if isinstance(msg, CatchupRequest):
            query = urlencode({"from": msg.from_slot, "limit": msg.limit, "sender": msg.sender})
            request = HTTPRequest(
                f"{url}/learn?{query}", request_timeout=max(self.timeout, 5.0), connect_timeout=1.0
            )
        else:
            if self._encoded[0] is not msg:  # a broadcast: encode once for every peer
                self._encoded = (msg, encode(msg))
            request = HTTPRequest(
                url + PATHS[type(msg)],
                method="POST",
                body=self._encoded[1],
                headers={"Content-Type": "application/json"},
                request_timeout=self.timeout,
                connect_timeout=min(self.timeout, 1.0),
            )
        self.in_flight[to] += 1
        future = self._client(to).fetch(request, raise_error=False)
        self.loop.add_future(future, partial(self._on_reply, to, msg))

    def _on_reply(self, to: int, msg: Message, future: Any) -> None:
        self.in_flight[to] -= 1
        try:
            response: HTTPResponse = future.result()
        except Exception as exc:  # connection refused, timeout: the message is lost
            log.debug("node %d: %s to node %d lost: %s", self.host.node.id, msg, to, exc)
            return
        if response.code == 204:
            return
        if response.code != 200:
            log.debug(
                "node %d: %s to node %d failed: %s", self.host.node.id, msg, to, response.code
            )
            return
        try:
            reply = decode(response.body)
        except MessageError as exc:
            log.warning("node %d: bad reply from node %d: %s", self.host.node.id, to, exc)
            return
        if self.host.failed is None:
            self.host.input(self.host.node.step(reply))

    async def _local(self, msg: Message) -> None:
        host = self.host
        if host.faults.active():
            await host.faults.delay()
        try:
            reply = await host.deliver(msg)
        except Exception:  # a failed store: the host has logged it
            return
        if reply is not None and host.failed is None:
            host.input(host.node.step(reply))
