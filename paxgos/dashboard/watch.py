"""The dashboard's view of a cluster: every node polled, one snapshot per tick.

Every ``INTERVAL`` (250 ms) the ``Watcher`` asks each node for ``GET /events?after=N`` (with
the cluster secret: the sampled messages since the last poll, and the node's ``/status``) over a
kept-alive connection, and a node that does not answer within ``POLL_TIMEOUT`` is
shown down.  ``/events`` also carries the counts of the node's proposal-latency histogram (the
buckets of ``paxgos_proposal_duration_seconds``): their growth on the leader over a second
gives the p50 and p99 the chart draws, without the cost of a whole ``/metrics`` scrape on the
leader's event loop.  Once a second, when the leader's log has grown, the watcher also reads
its latest entries.  That is 4 small requests a second per node, 5 on the leader
(``docs/performance.md`` has what watching costs).

A snapshot is plain JSON-ready data: the nodes (role, ballot, commit index, lag behind the
leader, faults, up or down, and the supervisor's view of the process when there is one), the
messages sampled since the previous snapshot, the sampling ratio, the chart's latest point and
the last committed entries.  The server pushes it to every page as it is made.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from paxgos.net.peerclient import PooledHTTPClient

#: Seconds between two snapshots (and two polls of each node).
INTERVAL = 0.25
#: A node that has not answered /status within this long is shown down.
POLL_TIMEOUT = 1.0
#: Seconds between two chart points.
CHART_INTERVAL = 1.0
#: Chart points kept for a page that connects later (two minutes).
CHART_POINTS = 120
#: Last committed entries shown.
ENTRIES = 12
#: Most messages one snapshot carries (the page animates them; more would be a blur).
MAX_EVENTS = 60

ProcessView = Callable[[], list[dict[str, Any]]]
"""The supervisor's view of each node's process (pid, state), in node order."""


def quantile(q: float, bounds: list[float], counts: list[float]) -> float | None:
    """The ``q`` quantile of a histogram with per-bucket ``counts`` (the last one above every
    bound), interpolated linearly inside its bucket as Prometheus's ``histogram_quantile``
    does; ``None`` without observations."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    running = 0.0
    lower = 0.0
    for bound, count in zip(bounds, counts, strict=False):
        if running + count >= rank and count > 0:
            return lower + (bound - lower) * (rank - running) / count
        running += count
        lower = bound
    return bounds[-1] if bounds else None  # in the +Inf bucket: the highest finite bound


class NodeWatch:
    """What the watcher knows of one node."""

    def __init__(self, node_id: int, url: str):
        self.id = node_id
        self.url = url
        self.status: dict[str, Any] | None = None
        self.error: str | None = "not polled yet"
        self.answered_at = 0.0
        self.after: int | None = None  # the last event number read (None: not yet asked)
        self.seen = 0  # the node's own counters at the last poll
        self.recorded = 0
        #: Its proposal-latency histogram at the last poll: bounds (s) and per-bucket counts.
        self.latency: tuple[list[float], list[float]] | None = None
        self.task: asyncio.Future[None] | None = None


class Watcher:
    """Polls every node and keeps the latest snapshot; see the module docstring."""

    def __init__(
        self,
        urls: list[str],
        secret: str | None,
        tls: ssl.SSLContext | None = None,
        processes: ProcessView | None = None,
        interval: float = INTERVAL,
    ):
        self.urls = urls
        self.secret = secret
        self.tls = tls
        self.processes = processes
        self.interval = interval
        self.nodes = [NodeWatch(i, url) for i, url in enumerate(urls)]
        self.http: PooledHTTPClient | None = None
        self.asker: SimpleAsyncHTTPClient | None = None
        self.snapshot: dict[str, Any] = {}
        self.snapshot_json = "{}"
        self.number = 0  # snapshots made so far
        self.changed = asyncio.Event()
        self.chart: deque[dict[str, Any]] = deque(maxlen=CHART_POINTS)
        self.entries: list[list[Any]] = []
        self._events: list[dict[str, Any]] = []
        # (seen, recorded) per node poll over the last second: the sampling ratio shown.
        self._sampling: deque[tuple[int, int]] = deque(
            maxlen=len(urls) * max(1, round(1 / interval))
        )
        self._latency: tuple[int, list[float], list[float]] | None = None  # node, bounds, counts
        self._chart_at = 0.0
        self._commits_at: tuple[float, int] | None = None
        self._entries_commit = -1
        self._side: asyncio.Future[None] | None = None
        self.extra: Callable[[], dict[str, Any]] | None = None  # more fields (autopropose)
        self.closed = False

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"} if self.secret else {}

    async def get(self, url: str, timeout: float = POLL_TIMEOUT, **kwargs: Any) -> HTTPResponse:
        """One request to a node over the kept-alive pool; failures are 599 answers."""
        if self.http is None:
            self.http = PooledHTTPClient(force_instance=True, ssl_context=self.tls)
        request = HTTPRequest(url, request_timeout=timeout, connect_timeout=timeout, **kwargs)
        return await fetch(self.http, request)

    async def ask(self, url: str, timeout: float) -> HTTPResponse:
        """A client's request (``/propose``, ``/autopropose``, whose answer is streamed in
        chunks), following a redirect to the leader; failures are 599 answers."""
        if self.asker is None:
            self.asker = SimpleAsyncHTTPClient(force_instance=True, max_clients=16)
        request = HTTPRequest(
            url, request_timeout=timeout, connect_timeout=POLL_TIMEOUT, follow_redirects=True,
            max_redirects=2, ssl_options=self.tls,
        )  # fmt: skip
        return await fetch(self.asker, request)

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll and snapshot every ``interval`` until ``close``."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            started = loop.time()
            for node in self.nodes:
                if node.task is None or node.task.done():
                    node.task = asyncio.ensure_future(self._poll(node))
            busy = [n.task for n in self.nodes if n.task is not None and not n.task.done()]
            if busy:
                await asyncio.wait(busy, timeout=self.interval * 0.8)
            if self._side is None or self._side.done():
                self._side = asyncio.ensure_future(self._leader_side())
            self._publish()
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    def close(self) -> None:
        self.closed = True
        self.changed.set()
        for node in self.nodes:
            if node.task is not None:
                node.task.cancel()
        for client in (self.http, self.asker):
            if client is not None:
                client.close()
        self.http = self.asker = None

    async def _poll(self, node: NodeWatch) -> None:
        """One request: ``/events``, which carries the node's ``/status`` too (only ``/status``
        when the node refuses the secret, so the page still shows it)."""
        after = node.after if node.after is not None else 2**62
        answer = await self.get(f"{node.url}/events?after={after}", headers=self.auth())
        now = time.monotonic()
        data: dict[str, Any] | None = None
        if answer.code == 200:
            try:
                data = json.loads(answer.body)
                node.status = data["status"]
            except (ValueError, KeyError):
                data = None
        elif answer.code == 401:
            answer = await self.get(node.url + "/status")
            if answer.code == 200:
                try:
                    node.status = json.loads(answer.body)
                except ValueError:
                    node.status = None
        if answer.code != 200 or node.status is None:
            node.error = describe_failure(answer) if answer.code != 200 else "unreadable answer"
            if now - node.answered_at > POLL_TIMEOUT:
                node.status = None
            return
        node.error = None
        node.answered_at = now
        if data is None:
            return
        if node.after is not None and data["seq"] >= node.after:
            self._events.extend(data["events"])
        # A restarted node numbers its events from 0 again: read from there next time.
        node.after = data["seq"] if node.after is None or data["seq"] >= node.after else 0
        self._sampling.append(
            (max(0, data["seen"] - node.seen), max(0, data["recorded"] - node.recorded))
        )
        node.seen, node.recorded = data["seen"], data["recorded"]
        latency = data["latency"]
        node.latency = (latency["bounds"], latency["counts"])

    def leader(self) -> NodeWatch | None:
        """The node that says it leads (the highest ballot, if two say so for a moment)."""
        leaders = [
            n for n in self.nodes if n.status is not None and n.status.get("role") == "leader"
        ]
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.status.get("ballot") or [0, 0])  # type: ignore[union-attr]

    async def _leader_side(self) -> None:
        """Once a second: the chart point (commits/s from the commit index, p50 and p99 from
        the leader's latency histogram) and, when the leader's log grew, its latest entries."""
        leader = self.leader()
        now = time.monotonic()
        commit = max(
            (n.status.get("chosen_in_memory", 0) for n in self.nodes if n.status), default=0
        )
        if now - self._chart_at < CHART_INTERVAL:
            return
        self._chart_at = now
        # The leader's log as ``/`` serves it (its commit index on disk, which may trail the
        # one in memory by a write): read again until the page shows its last slot.
        logged = leader.status.get("commit_index", 0) if leader and leader.status else 0
        if leader is not None and logged > self._entries_commit:
            start = max(1, logged - ENTRIES + 1)
            answer = await self.get(
                f"{leader.url}/?from={start}&limit={ENTRIES}",
                headers={"Accept": "application/json"},
            )
            if answer.code == 200:
                entries = json.loads(answer.body).get("entries", [])
                self.entries = [[e["slot"], e["value"]] for e in reversed(entries)]
                self._entries_commit = max([self._entries_commit, *(e["slot"] for e in entries)])
        point: dict[str, Any] = {"t": round(time.time(), 3), "commits_per_s": None}
        if self._commits_at is not None and commit >= self._commits_at[1]:
            span = now - self._commits_at[0]
            point["commits_per_s"] = round((commit - self._commits_at[1]) / span, 1)
        self._commits_at = (now, commit)
        point["p50_ms"] = point["p99_ms"] = None
        if leader is not None and leader.latency is not None:
            bounds, counts = leader.latency
            previous = self._latency
            if previous is not None and previous[0] == leader.id:
                delta = [c - p for c, p in zip(counts, previous[2], strict=False)]
                if all(d >= 0 for d in delta):  # not a restarted node's fresh counts
                    for q, name in ((0.5, "p50_ms"), (0.99, "p99_ms")):
                        value = quantile(q, bounds, delta)
                        point[name] = None if value is None else round(value * 1000, 2)
            self._latency = (leader.id, bounds, counts)
        self.chart.append(point)

    # --- the snapshot -------------------------------------------------------------------------

    def _publish(self) -> None:
        leader = self.leader()
        top = leader.status if leader is not None and leader.status else None
        leader_commit = top.get("chosen_in_memory") if top else None
        processes = self.processes() if self.processes is not None else None
        views = []
        for node in self.nodes:
            s = node.status
            view: dict[str, Any] = {"id": node.id, "url": node.url, "up": s is not None,
                                    "error": node.error}  # fmt: skip
            if s is not None:
                commit = s.get("chosen_in_memory", s.get("commit_index"))
                view.update(
                    role=s.get("role"), ballot=s.get("ballot"), promised=s.get("promised"),
                    leader=s.get("leader"), leader_ballot=s.get("leader_ballot"),
                    commit=commit, disk_commit=s.get("commit_index"),
                    lag=None if leader_commit is None else max(0, leader_commit - commit),
                    faults=s.get("faults"), failed=s.get("failed"), queued=s.get("queued"),
                    elections=s.get("elections"), since_leader_s=s.get("since_leader_s"),
                )  # fmt: skip
            if processes is not None:
                view["process"] = processes[node.id]
            views.append(view)
        events = sorted(self._events, key=lambda e: e["t"])
        self._events = []
        seen = sum(s for s, _ in self._sampling)
        recorded = sum(r for _, r in self._sampling)
        self.number += 1
        majority = len(self.nodes) // 2 + 1
        self.snapshot = {
            "n": self.number,
            "t": round(time.time(), 3),
            "nodes": views,
            "leader": None if leader is None else leader.id,
            "majority": majority,
            "controls": self.processes is not None,
            "events": events[-MAX_EVENTS:],
            "skipped_events": max(0, len(events) - MAX_EVENTS),
            "sampling": {"seen_per_s": seen, "recorded_per_s": recorded},
            "chart": self.chart[-1] if self.chart else None,
            "entries": self.entries,
        }
        if self.extra is not None:
            self.snapshot.update(self.extra())
        self.snapshot_json = json.dumps(self.snapshot)
        self.changed.set()
        self.changed = asyncio.Event()

    async def next_snapshot(self, after: int) -> str:
        """The JSON of the first snapshot numbered above ``after`` (waits for it)."""
        while self.number <= after and not self.closed:
            await self.changed.wait()
        return self.snapshot_json


async def fetch(client: AsyncHTTPClient, request: HTTPRequest) -> HTTPResponse:
    """``client.fetch(request)``, with every failure as an answer: ``raise_error=False`` still
    raises for a refused connection or a timeout, which become a 599 carrying the error."""
    try:
        return await client.fetch(request, raise_error=False)
    except Exception as exc:
        return HTTPResponse(request, 599, error=exc)


def describe_failure(response: HTTPResponse) -> str:
    """One line for a poll that failed: the status and its text, or the network error."""
    if response.code == 599:
        error = response.error
        return f"no answer: {error}" if error is not None else "no answer"
    body = response.body.decode(errors="replace").strip().splitlines()
    return f"{response.code}: {body[0] if body else ''}"
