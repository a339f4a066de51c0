"""HTTP handlers: the client API (the original demo's, plus JSON, status and paging), the
internal protocol endpoints, the fault control, and what watchers read (``/metrics`` for
Prometheus, ``/events`` for the dashboard).  ``/propose`` itself is served on the fast
path of ``paxgos.net.fastpath``.

Handlers only translate: a request becomes a core input (through ``NodeHost``), an outcome
becomes a status code and a body.  Every error is one line of text (or ``{"error": ...}`` for
clients that ask for JSON) and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import tornado.web
from prometheus_client import CollectorRegistry

from paxgos.core import Readable, Rejected
from paxgos.core.messages import (
    INT64_MAX,
    INT64_MIN,
    CatchupRequest,
    encode,
)
from paxgos.net.answers import Answer, BadValue, error, outcome_answer, parse_int
from paxgos.net.auth import SIGNATURE, certificate_missing
from paxgos.net.host import NodeHost, StorageFailed
from paxgos.net.metrics import exposition, node_registry
from paxgos.net.ratelog import RateLimitedLog
from paxgos.storage import StorageError

rated = RateLimitedLog(logging.getLogger("paxgos.net"))

#: Largest page of ``GET /`` and largest ``/autopropose`` batch.
MAX_PAGE = 10_000
MAX_AUTOPROPOSE = 1_000
DEFAULT_PAGE = 1_000
DEFAULT_AUTOPROPOSE = 20


class ClientError(tornado.web.HTTPError):
    """An error answer: ``status`` and a one-line ``message`` (user text stays out of the
    status line and the server log)."""

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.message = message


class BaseHandler(tornado.web.RequestHandler):
    """Shared plumbing: the host, content negotiation and one-line errors."""

    host: NodeHost

    def initialize(self, host: NodeHost) -> None:
        self.host = host

    def compute_etag(self) -> None:
        return None  # answers are never cached; hashing every body costs throughput

    def wants_json(self) -> bool:
        return "application/json" in self.request.headers.get("Accept", "")

    def int_arg(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            return parse_int(raw, f"query parameter {name}", low, high)
        except BadValue as exc:
            raise ClientError(400, str(exc)) from None

    def send_json(self, body: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(body))

    def fail(self, status: int, message: str, retry_after: int | None = None) -> None:
        """Finish with ``status`` and a one-line ``message``."""
        self.respond(error(status, message, retry_after))

    def respond(self, answer: Answer) -> None:
        """Finish with ``answer`` (see ``paxgos.net.answers``)."""
        as_json = self.wants_json()
        self.set_status(answer.status)
        for name, value in answer.headers(as_json).items():
            self.set_header(name, value)
        self.finish(answer.body(as_json))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ClientError):
            message = exc.message
        elif isinstance(exc, StorageError):  # a damaged record is never served
            message = str(exc)
        elif status_code == 405:
            message = f"method {self.request.method} not allowed on {self.request.path}"
            self.set_header("Allow", ", ".join(self.allowed()))
        elif status_code == 404:
            message = f"no such path: {self.request.path}"
        elif status_code >= 500:
            message = "internal error (see the node's log)"
        else:
            message = self._reason
        self.fail(status_code, message)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, StorageError):  # one line, not a traceback per read
            self.host.storage_failures += 1
            rated.warning("read", "node %d: %s", self.host.node.id, value)
            return
        super().log_exception(typ, value, tb)

    def allowed(self) -> list[str]:
        """The methods this handler serves (a 405's ``Allow``)."""
        return [
            m for m in ("GET", "POST") if getattr(type(self), m.lower()) is not getattr(
                tornado.web.RequestHandler, m.lower()
            )
        ]  # fmt: skip

    def head(self, *args: str) -> None:
        raise tornado.web.HTTPError(405)  # HEAD is not served; a 405 names what is

    def require_secret(self) -> None:
        """A runtime control: the cluster secret as a bearer token, else 401."""
        refused = self.host.auth.check_token(self.request.headers.get("Authorization"))
        if refused is not None:
            self.set_header("WWW-Authenticate", 'Bearer realm="paxgos"')
            raise ClientError(401, refused)


class _AnyMethod:
    """Contains every method: an unknown path is 404 whatever the method (not 405)."""

    def __contains__(self, method: object) -> bool:
        return True


class NotFoundHandler(BaseHandler):
    """Every unknown path: 404 with a one-line reason, whatever the method."""

    SUPPORTED_METHODS = _AnyMethod()  # type: ignore[assignment]

    def prepare(self) -> None:
        self.fail(404, f"no such path: {self.request.path}")


# --- client API ---------------------------------------------------------------------------------


class AutoProposeHandler(BaseHandler):
    """``GET /autopropose[?count=N]``: propose N random values (default 20) through the same
    batching path as /propose, and stream one line per commit as each lands."""

    async def get(self) -> None:
        count = self.int_arg("count", DEFAULT_AUTOPROPOSE, 1, MAX_AUTOPROPOSE)
        if self.host.failed:
            self.fail(503, self.host.failed, retry_after=5)
            return
        proposals = [
            self.host.propose_future(random.randint(INT64_MIN, INT64_MAX)) for _ in range(count)
        ]
        by_future = {future: request for request, future in proposals}
        first = proposals[0][1]
        # The core turns proposals away at once (a follower names the leader it knows of, an
        # overloaded leader says so); then the whole batch is answered that way.
        if first.done() and first.exception() is None and isinstance(first.result(), Rejected):
            self.respond(outcome_answer(self.host, first.result(), self.request.uri or "/"))
            return
        as_json = self.wants_json()
        self.set_header(
            "Content-Type", "application/x-ndjson" if as_json else "text/plain; charset=utf-8"
        )
        pending = set(by_future)
        try:
            # Every future completes: with an outcome, or with TimeoutError from the host's
            # deadline sweep after --request-timeout.
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                answers = [
                    outcome_answer(self.host, f.exception() or f.result(), self.request.uri or "")
                    for f in done
                ]
                for answer in sorted(answers, key=lambda a: a.command_id or 0):
                    self.write(answer.body(as_json))
                await self.flush()
        finally:
            for request in by_future.values():
                self.host.forget(request)


class HistoryHandler(BaseHandler):
    """``GET /[?from=&limit=&min_commit=&linearizable=true]``: the committed log, a page at a
    time, in slot order, as this node has applied it (etcd's serializable read).

    With ``min_commit=N``, only once this node's log holds slot N (read your writes: N is the
    ``CommandID`` a proposal was answered with).  With ``linearizable=true``, on the leader, only
    once a majority has confirmed that it still leads and its log holds every slot it knew chosen
    when the request arrived (the read index, as etcd's default reads); a follower redirects to the
    leader as for ``/propose``.  Either is 504 after ``--request-timeout`` (a linearizable read
    may wait that long for its confirmation, then again for the log)."""

    async def get(self) -> None:
        start = self.int_arg("from", 1, 1, INT64_MAX)
        limit = self.int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
        wanted = self.int_arg("min_commit", 0, 0, INT64_MAX)
        if self.linearizable():
            request, future = self.host.read_future()
            try:
                result: Any = await future
            except Exception as exc:  # TimeoutError, StorageFailed: answered below
                result = exc
            finally:
                self.host.forget(request)
            if not isinstance(result, Readable):
                self.respond(self.unread(result))
                return
            wanted = max(wanted, result.slot)
        if wanted and not await self.host.applied(wanted):
            raise ClientError(
                504,
                f"this node has not applied slot {wanted} within "
                f"{self.host.request_timeout:g}s (its commit index is "
                f"{self.host.store.commit_index()})",
            )
        commit = self.host.store.commit_index()  # what the log holds, as the reads see it
        entries = await self.host.read_chosen(start, limit) if start <= commit else []
        last = entries[-1][0] if entries else start - 1
        following = last + 1 if entries and len(entries) == limit else None
        if following is not None:
            self.set_header("Link", f'</?from={following}&limit={limit}>; rel="next"')
        if self.wants_json():
            self.send_json(
                {
                    "node": self.host.node.id,
                    "commit_index": commit,
                    "from": start,
                    "limit": limit,
                    "entries": [{"slot": s, "value": v} for s, v in entries],
                    "next": following,
                }
            )
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        lines = ["History:"]
        lines.extend(f"id {s} val {'noop' if v is None else v}" for s, v in entries)
        self.write("\n".join(lines) + "\n")

    def unread(self, result: Any) -> Answer:
        """The answer to a linearizable read that ended without a read index (a read changes
        nothing: every one of these is safe to retry)."""
        if isinstance(result, TimeoutError):
            return error(
                504,
                "no majority confirmed the leadership within "
                f"{self.host.request_timeout:g}s; retry",
            )
        if isinstance(result, Rejected) and result.reason == "overloaded":
            return error(503, "leader overloaded: too many reads waiting", retry_after=1)
        if isinstance(result, StorageFailed):
            return error(503, str(result), retry_after=5)
        return outcome_answer(self.host, result, self.request.uri or "/")

    def linearizable(self) -> bool:
        """The ``linearizable`` query argument: absent, or exactly ``true``."""
        raw = self.get_query_arguments("linearizable")
        if not raw:
            return False
        if raw != ["true"]:
            raise ClientError(400, "linearizable must be 'true' (or left out for a local read)")
        return True


class StatusHandler(BaseHandler):
    """``GET /status``: who this node is and what it knows (JSON)."""

    def get(self) -> None:
        self.send_json(status_of(self.host))


def status_of(host: NodeHost) -> dict[str, Any]:
    """What ``GET /status`` answers (and ``GET /events`` carries along)."""
    status = host.node.status(host.now())
    leader = status["leader"]
    peer_state = status.pop("peer_state")
    assert isinstance(peer_state, dict)
    status.update(
        # The log as ``/`` lists it; the core may know a few more slots chosen whose
        # write is still on its way to disk.
        commit_index=host.store.commit_index(),
        chosen_in_memory=host.node.commit,
        url=host.urls[host.node.id],
        leader_url=host.urls[leader] if isinstance(leader, int) else None,
        peers=[u for i, u in enumerate(host.urls) if i != host.node.id],
        # Per peer, as this node sees it (a leader hears from every peer; a follower only
        # from the leader): last answer, the commit index it reported, and its lag.
        peer_state=[
            {"id": peer, "url": host.urls[peer], **state}
            for peer, state in sorted(peer_state.items())
        ],
        nodes=len(host.urls),
        storage=type(host.store).__name__,
        durable=host.store.durable,
        failed=host.failed,
        faults=host.faults.state(),
        dropped_messages=host.transport.dropped,
        store_writes=host.store_writes,
        # Where fsyncs run and the quickest recent one (None without a disk).
        fsync_on_loop=host.fsync.on_loop if host.store.durable else None,
        fsync_min_ms=round(min(host.fsync.recent) * 1000, 3)
        if host.store.durable and host.fsync.recent
        else None,
        store_records=host.store_records,
        uptime_s=round(time.time() - host.started_at, 3),
    )
    return status


# --- internal protocol endpoints ----------------------------------------------------------------


class CatchupHandler(BaseHandler):
    """``GET /learn``: catch-up reads.  (A peer's messages, ``POST /prepare``, ``/accept`` and
    ``/learn``, and every other method on the first two, are served on the fast path of
    ``paxgos.net.fastpath``.)"""

    async def get(self) -> None:
        """``GET /learn?from=&limit=&sender=``: chosen entries for a peer catching up."""
        signature = self.request.headers.get(SIGNATURE)
        refused = self.host.auth.check_request("GET", self.request.uri or "", b"", signature)
        if refused is None and self.host.peer_cert_required:
            refused = certificate_missing(self.request.connection.stream)  # type: ignore[attr-defined]
        if refused is not None:
            raise ClientError(401, refused)
        start = self.int_arg("from", 1, 1, INT64_MAX)
        limit = self.int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
        sender = self.int_arg("sender", 0, 0, len(self.host.urls) - 1)
        if self.host.faults.active():
            await self.host.faults.delay()
        node = self.host.node
        limit = max(0, min(limit, node.commit - start + 1))
        entries = await self.host.read_chosen(start, limit) if limit else []
        self.host.catchup_served += len(entries)
        reply = node.answer_catchup(CatchupRequest(sender, start, max(limit, 1)), entries)
        body = encode(reply)
        self.set_header("Content-Type", "application/json")
        if self.host.auth.enabled:
            self.set_header(SIGNATURE, self.host.auth.sign_reply(signature or "", 200, body))
        self.write(body)

    def allowed(self) -> list[str]:
        return ["GET", "POST"]  # POST on the fast path


class FaultHandler(BaseHandler):
    """``GET /fault``: the node's injected faults.  ``POST /fault/slow?ms=N`` delays every
    protocol message this node handles by N ms; ``POST /fault/stall`` holds them all;
    ``POST /fault/heal`` removes both.  The POSTs need the cluster secret
    (``Authorization: Bearer <secret>``)."""

    ACTIONS = ("slow", "stall", "heal")

    def allowed(self) -> list[str]:
        # From the path, not ``path_args``: a 405 for an unknown method comes before those are set.
        action = self.request.path.rstrip("/").rpartition("/fault")[2]
        return ["POST"] if action else ["GET"]

    def get(self, action: str = "") -> None:
        if action:
            if action in self.ACTIONS:
                raise tornado.web.HTTPError(405)
            raise ClientError(404, f"no such path: {self.request.path}")
        self.send_json(self.host.faults.state())

    def post(self, action: str = "") -> None:
        if not action:
            raise tornado.web.HTTPError(405)  # POST names an action: /fault/slow, ...
        if action not in self.ACTIONS:
            raise ClientError(404, "fault actions are /fault/slow?ms=N, /fault/stall, /fault/heal")
        self.require_secret()
        faults = self.host.faults
        if action == "slow":
            if self.get_query_argument("ms", None) is None:
                raise ClientError(400, "POST /fault/slow needs ?ms=N, the delay in milliseconds")
            faults.set_slow(self.int_arg("ms", 0, 0, 3_600_000) / 1000)
        elif action == "stall":
            faults.stall()
        elif action == "heal":
            faults.heal()
        else:
            raise ClientError(404, "fault actions are /fault/slow?ms=N, /fault/stall, /fault/heal")
        self.send_json(faults.state())


class MetricsHandler(BaseHandler):
    """``GET /metrics``: the node's metrics for Prometheus (``paxgos.net.metrics``); open to
    every reader, as etcd's."""

    def initialize(self, host: NodeHost, registry: CollectorRegistry) -> None:  # type: ignore[override]
        super().initialize(host)
        self.registry = registry

    def get(self) -> None:
        body, content_type = exposition(self.registry, self.request.headers.get("Accept"))
        self.set_header("Content-Type", content_type)
        self.write(body)


class EventsHandler(BaseHandler):
    """``GET /events?after=N``: the sampled protocol messages numbered above N
    (``paxgos.net.events``), how many were seen and recorded, the counts of the
    proposal-latency histogram, and the node's ``/status``.  Each call keeps recording
    on for a few more seconds.  Needs the cluster secret, like the fault controls: only the
    cluster's own tools (the dashboard) watch."""

    def get(self) -> None:
        self.require_secret()
        after = self.int_arg("after", 0, 0, INT64_MAX)
        events = self.host.events
        events.watch(time.monotonic())
        self.send_json(
            {
                "node": self.host.node.id,
                "seq": events.seq,
                "seen": events.seen,
                "recorded": events.recorded,
                "events": events.since(after),
                # /status too: a watcher asks one request per node and tick, not two.
                "status": status_of(self.host),
                # The proposal-latency histogram (/metrics' paxgos_proposal_duration_seconds),
                # for the dashboard's p50 and p99: far cheaper than a scrape.
                "latency": {
                    "bounds": self.host.proposal_latency.bounds,
                    "counts": self.host.proposal_latency.counts,
                },
            }
        )


def routes(host: NodeHost) -> list[Any]:
    """The URL map of one node."""
    client = {"host": host}
    return [
        (r"/metrics", MetricsHandler, {"host": host, "registry": node_registry(host)}),
        (r"/events", EventsHandler, client),
        (r"/", HistoryHandler, client),
        (r"/status", StatusHandler, client),
        (r"/autopropose", AutoProposeHandler, client),
        (r"/learn", CatchupHandler, client),
        (r"/fault/?([a-z]*)", FaultHandler, client),
    ]
