"""Connection limits of a node's HTTP server: a read deadline, a cap on open connections, and
an accept loop that survives running out of file descriptors.

- **Read deadline.** From the moment a connection waits for a request (a new connection, or a
  kept-alive one whose last answer went out) to the moment that request's head and body are
  in, at most ``READ_TIMEOUT`` may pass; then the connection is closed.  This is the idle,
  header and body timeout in one (as Tornado's own ``idle_connection_timeout`` is, but swept
  once a second for every connection instead of a timer armed per request, which costs a
  measurable share of the leader's CPU at thousands of requests a second).  The time a node
  takes to *answer* (a proposal waiting for its majority) does not count.
- **Connection cap.** At most ``connection_cap()`` connections are open at once, derived from
  the file-descriptor limit (which a node raises to its hard limit at start) minus a reserve
  for peers and the store.  A connection beyond the cap evicts the one that has waited longest
  for a request (an idle or half-sent one), so that a flood of half-open connections cannot
  lock out clients.
- **Accept.** When ``accept`` fails for want of descriptors (``EMFILE``/``ENFILE``), Tornado's
  handler raises on every loop turn (a traceback each time: 155 MB of log in 8 s).  Here the
  node says so once per 10 s, evicts its longest-waiting connection and pauses accepting for
  ``ACCEPT_PAUSE``.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
from collections.abc import Callable, Iterable
from typing import Any

from tornado import iostream
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback

from paxgos.net.ratelog import RateLimitedLog

log = logging.getLogger("paxgos.net")
rated = RateLimitedLog(log)

#: Longest wait, in seconds, for a request's head and body (idle time before it included).
READ_TIMEOUT = 30.0
#: Descriptors kept back from the connection cap: peer connections, the store's files, logs.
FD_RESERVE = 256
#: How long accepting pauses after the descriptor table was found full (seconds).
ACCEPT_PAUSE = 0.1
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_fd_limit() -> int:
    """Raise this process's soft file-descriptor limit to its hard limit (as Go programs such
    as etcd do at start); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap() -> int:
    """How many client connections may be open at once under the current descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft - FD_RESERVE)


class ConnectionGuard:
    """Tracks the connections waiting for a request, closes the overdue ones, and evicts the
    longest-waiting one on demand."""

    def __init__(self, read_timeout: float = READ_TIMEOUT):
        self.read_timeout = read_timeout
        #: connection -> loop time since which it waits for its request (insertion ordered,
        #: so the first entry has waited longest).
        self.waiting: dict[Any, float] = {}
        self._sweeper = PeriodicCallback(self.sweep, 1000)

    def start(self) -> None:
        self._sweeper.start()

    def stop(self) -> None:
        self._sweeper.stop()

    def waits(self, connection: Any) -> None:
        """``connection`` (an ``HTTP1Connection``) waits for a request from now on."""
        self.waiting[connection] = IOLoop.current().time()

    def read(self, connection: Any) -> None:
        """``connection``'s request is in (or it closed): its deadline is off."""
        self.waiting.pop(connection, None)

    def sweep(self) -> None:
        """Close every connection that has waited longer than the read timeout."""
        deadline = IOLoop.current().time() - self.read_timeout
        for connection, since in list(self.waiting.items()):
            if since > deadline:
                break  # ordered by waiting time: the rest are younger
            self.waiting.pop(connection, None)
            connection.close()

    def evict(self) -> bool:
        """Close the connection that has waited longest for a request; whether there was one."""
        for connection in self.waiting:
            self.waiting.pop(connection)
            connection.close()
            return True
        return False


class NodeServer(HTTPServer):
    """Tornado's ``HTTPServer`` with the limits of the module docstring.  With a ``lane``
    (``paxgos.net.lane``; plain HTTP only) every accepted connection starts there, and comes
    here through ``serve_in_tornado`` once it asks for more than the lane serves."""

    guard: ConnectionGuard
    cap: int
    lane: Any = None  # a paxgos.net.lane.Lane, set before add_sockets

    def initialize(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(*args, **kwargs)
        self.guard = guard
        self.cap = connection_cap()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        adopt = self.lane.adopt if self.lane is not None else self._handle_connection
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = accept_guarded(sock, adopt, self.guard.evict)

    def open_connections(self) -> int:
        """Connections open now, Tornado's and the lane's."""
        return len(self._connections) + (len(self.lane.connections) if self.lane else 0)

    def room(self) -> bool:
        """Whether one more connection may open: under the cap, after evicting as many of the
        connections that waited longest for a request as it takes (else it says so,
        rate-limited).  An evicted Tornado connection leaves the count only once its request
        loop has unwound, so evictions are counted, not the connections still open."""
        excess = self.open_connections() - self.cap + 1
        while excess > 0 and self.guard.evict():
            excess -= 1
        if excess > 0:  # every connection is busy answering
            rated.warning("cap", "connection cap %d reached; refusing a connection", self.cap)
            return False
        return True

    def serve_in_tornado(self, sock: socket.socket, address: Any) -> None:
        """Serve an accepted connection with Tornado's HTTP/1 server from now on."""
        self._handle_connection(sock, address)

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        # With a lane, the cap was applied when the lane adopted the connection.
        if self.lane is None and not self.room():
            stream.close()
            return
        super().handle_stream(stream, address)


def accept_guarded(
    sock: socket.socket,
    callback: Callable[[socket.socket, Any], None],
    free_one: Callable[[], bool],
    backlog: int = 128,
) -> Callable[[], None]:
    """Tornado's ``add_accept_handler``, except that running out of descriptors pauses
    accepting for ``ACCEPT_PAUSE`` (after ``free_one()`` closed a connection) instead of raising
    on every loop turn; the callable it returns removes the handler."""
    loop = IOLoop.current()
    state = {"removed": False, "paused": False}

    def resume() -> None:
        if not state["removed"] and state["paused"]:
            state["paused"] = False
            loop.add_handler(sock, on_readable, IOLoop.READ)

    def on_readable(fd: Any, events: int) -> None:
        for _ in range(backlog):
            if state["removed"] or state["paused"]:
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _EXHAUSTED:
                    raise
                rated.warning(
                    "accept", "cannot accept connections: %s; closing the longest idle one",
                    exc.strerror,
                )  # fmt: skip
                free_one()
                state["paused"] = True
                loop.remove_handler(sock)
                loop.call_later(ACCEPT_PAUSE, resume)
                return
            callback(connection, address)

    def remove() -> None:
        if not state["paused"]:
            loop.remove_handler(sock)
        state["removed"] = True

    loop.add_handler(sock, on_readable, IOLoop.READ)
    return remove
