"""The dashboard's web server: the page, its Server-Sent Events stream, and its actions.

``GET /dashboard`` is the page (``static/index.html`` and its script and style, shipped in
the package); ``GET /dashboard/stream`` pushes the ``Watcher``'s snapshots as Server-Sent
Events, one per tick (the first one also carries the chart's history); the page's buttons POST
to ``/dashboard/api/...``:

- ``nodes/<i>/slow?ms=N``, ``nodes/<i>/stall``, ``nodes/<i>/heal``: the node's own fault
  controls, sent with the cluster secret, which never leaves this process;
- ``nodes/<i>/kill`` (``kill -9``) and ``nodes/<i>/restart``: only under the supervisor, which
  owns the processes (``ProcessControl``); a node killed here stays down until restarted here;
- ``propose?value=V``: ``GET /propose/V`` at the leader (a redirect is followed once), its
  status and line shown as the node gave them, 504 "outcome unknown" included;
- ``autopropose?count=N`` and ``autopropose/stop``: a batch of N values through the leader's
  ``/autopropose`` every ``AUTOPROPOSE_PAUSE`` until stopped (``AutoProposer``).

It serves 127.0.0.1 by default.  Like a node, it refuses a POST that a browser marks as coming
from another site or origin (``paxgos.net.auth.foreign``), and any request whose ``Host`` is
not an IP address or ``localhost`` (DNS rebinding): a page elsewhere cannot stall the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

from paxgos.core.messages import INT64_MAX, INT64_MIN
from paxgos.dashboard.watch import Watcher, describe_failure
from paxgos.net.answers import BadValue, parse_int64
from paxgos.net.auth import foreign

log = logging.getLogger("paxgos.dashboard")

STATIC = Path(__file__).parent / "static"
#: The wait between two autopropose batches: a steady stream a person can watch.
AUTOPROPOSE_PAUSE = 0.1
#: How long the dashboard waits for a proposal's answer (a node answers within its
#: ``--request-timeout``, 5 s by default, with 504 "outcome unknown" at the latest).
PROPOSE_TIMEOUT = 60.0
MAX_AUTOPROPOSE = 1000


class ProcessControl(Protocol):
    """What the supervisor lets the dashboard do to node processes; each call returns a
    one-line outcome once done."""

    def kill(self, node_id: int) -> Awaitable[str]: ...

    def restart(self, node_id: int) -> Awaitable[str]: ...

    def view(self) -> list[dict[str, Any]]: ...


class ActionError(Exception):
    """An action that cannot be done; the text is a one-line reason for the page."""


class AutoProposer:
    """Batches of ``count`` values through the leader's ``/autopropose``, one every
    ``AUTOPROPOSE_PAUSE`` after the previous one's answer, until stopped."""

    def __init__(self, watcher: Watcher):
        self.watcher = watcher
        self.running = False
        self.count = 20
        self.batches = 0
        self.committed = 0
        self.unknown = 0
        self.refused = 0
        self.last = ""
        self.batch_started: float | None = None
        self._task: asyncio.Future[None] | None = None

    def start(self, count: int) -> None:
        self.count = count
        if not self.running:
            self.running = True
            self.batches = self.committed = self.unknown = self.refused = 0
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        self.running = False

    def view(self) -> dict[str, Any]:
        waiting = None if self.batch_started is None else time.monotonic() - self.batch_started
        return {
            "running": self.running,
            "count": self.count,
            "batches": self.batches,
            "committed": self.committed,
            "unknown": self.unknown,
            "refused": self.refused,
            "last": self.last,
            "waiting_s": None if waiting is None else round(waiting, 1),
        }

    async def _run(self) -> None:
        while self.running:
            self.batch_started = time.monotonic()
            try:
                code, text = await proposal(self.watcher, f"/autopropose?count={self.count}")
            except Exception as exc:  # never end the loop silently
                code, text = 0, f"error: {exc!r}"
            self.batch_started = None
            self.batches += 1
            lines = text.strip().splitlines()
            if code == 200:
                ok = sum(line.startswith("CommandID") for line in lines)
                unknown = sum("outcome unknown" in line for line in lines)
                self.committed += ok
                self.unknown += unknown
                self.refused += len(lines) - ok - unknown
                self.last = f"batch {self.batches}: {ok} committed" + (
                    f", {unknown} outcome unknown" if unknown else ""
                )
                if lines:
                    self.last += f" (last: {lines[-1]})"
            else:
                self.refused += self.count
                self.last = f"batch {self.batches}: {code} {lines[0] if lines else ''}"
            await asyncio.sleep(AUTOPROPOSE_PAUSE)


async def proposal(watcher: Watcher, path: str) -> tuple[int, str]:
    """``GET path`` at the leader the watcher knows (else any node that answers, which
    redirects to the leader it knows of): the final status and body."""
    leader = watcher.leader()
    up = [n for n in watcher.nodes if n.status is not None]
    target = leader or (up[0] if up else None)
    if target is None:
        return 503, "error: no node answers; nothing was proposed"
    answer = await watcher.ask(target.url + path, PROPOSE_TIMEOUT)
    if answer.code == 599:
        return 599, f"error: {describe_failure(answer)}"
    return answer.code, answer.body.decode(errors="replace")


# --- handlers -----------------------------------------------------------------------------------


class Base(tornado.web.RequestHandler):
    """Shared checks: a loopback ``Host`` on every request, same-origin POSTs."""

    def initialize(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def compute_etag(self) -> None:
        return None

    def prepare(self) -> None:
        headers = self.request.headers
        origin = headers.get("Origin") if self.request.method == "POST" else None
        fetch_site = headers.get("Sec-Fetch-Site") if self.request.method == "POST" else None
        reasons = [
            foreign(origin, fetch_site, headers.get("Host"), own) for own in self.dashboard.origins
        ]
        if all(reasons):
            self.set_status(403)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"error: {reasons[0]}\n")

    def answer(self, ok: bool, text: str, **more: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"ok": ok, "text": " ".join(text.split()), **more}))


class PageHandler(Base):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish((STATIC / "index.html").read_bytes())


class StaticHandler(tornado.web.StaticFileHandler):
    """The page's script and style, with the same checks as every other request."""

    def initialize(self, path: str, dashboard: Dashboard) -> None:  # type: ignore[override]
        super().initialize(path)
        self.dashboard = dashboard

    def prepare(self) -> None:
        Base.prepare(self)  # type: ignore[arg-type]

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")


class StreamHandler(Base):
    """``GET /dashboard/stream``: a snapshot per tick as Server-Sent Events."""

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        watcher = self.dashboard.watcher
        hello = {"chart": list(watcher.chart), "interval_s": watcher.interval}
        self.write(f"retry: 1000\nevent: hello\ndata: {json.dumps(hello)}\n\n")
        number = watcher.number - 1  # the latest snapshot at once
        try:
            while not watcher.closed:
                data = await watcher.next_snapshot(number)
                number = watcher.number
                self.write(f"data: {data}\n\n")
                await self.flush()
        except StreamClosedError:
            pass  # the page went away


class ActionHandler(Base):
    """``POST /dashboard/api/...``: see the module docstring.  Every answer is JSON:
    ``{"ok": ..., "text": "<one line>"}`` (and the node's ``status`` for proposals)."""

    async def post(self, path: str) -> None:
        try:
            await self.dispatch(path.strip("/").split("/"))
        except ActionError as exc:
            self.set_status(400)
            self.answer(False, str(exc))

    async def dispatch(self, parts: list[str]) -> None:
        dashboard = self.dashboard
        if parts[0] == "nodes" and len(parts) == 3:
            node = self.node_id(parts[1])
            action = parts[2]
            if action in ("slow", "stall", "heal"):
                code, text = await dashboard.fault(node, action, self.get_query_argument("ms", ""))
                self.answer(code == 200, text, status=code)
                return
            if action in ("kill", "restart"):
                control = dashboard.control
                if control is None:
                    raise ActionError(
                        f"{action} needs the supervisor (python -m paxgos --nodes N): this "
                        "dashboard watches nodes it did not start"
                    )
                call = control.kill if action == "kill" else control.restart
                self.answer(True, await call(node))
                return
        elif parts == ["propose"]:
            raw = self.get_query_argument("value", "")
            if raw == "":
                raw = str(random.randint(INT64_MIN, INT64_MAX))
            try:
                value = parse_int64(raw)
            except BadValue as exc:
                raise ActionError(str(exc)) from None
            started = time.monotonic()
            code, text = await proposal(dashboard.watcher, f"/propose/{value}")
            took = round(time.monotonic() - started, 3)
            self.answer(code == 200, text.strip(), status=code, seconds=took, value=value)
            return
        elif parts == ["autopropose"]:
            raw = self.get_query_argument("count", "20")
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUTOPROPOSE:
                raise ActionError(f"count must be a whole number from 1 to {MAX_AUTOPROPOSE}")
            dashboard.autoproposer.start(int(raw))
            self.answer(True, f"autopropose: batches of {raw} until stopped")
            return
        elif parts == ["autopropose", "stop"]:
            dashboard.autoproposer.stop()
            self.answer(True, "autopropose stopped")
            return
        self.set_status(404)
        self.answer(False, f"no such action: {'/'.join(parts)}")

    def node_id(self, raw: str) -> int:
        if not raw.isdigit() or int(raw) >= len(self.dashboard.watcher.nodes):
            raise ActionError(f"no node {raw[:20]}")
        return int(raw)


class Redirect(Base):
    def get(self) -> None:
        self.redirect("/dashboard")


# --- the application ----------------------------------------------------------------------------


class Dashboard:
    """The dashboard of one cluster: its watcher, its actions and its web application."""

    def __init__(
        self,
        urls: list[str],
        secret: str | None,
        origins: list[str],
        tls: ssl.SSLContext | None = None,
        control: ProcessControl | None = None,
    ):
        self.watcher = Watcher(urls, secret, tls, control.view if control else None)
        self.origins = origins
        self.control = control
        self.autoproposer = AutoProposer(self.watcher)
        self.watcher.extra = lambda: {"autopropose": self.autoproposer.view()}

    def application(self) -> tornado.web.Application:
        me = {"dashboard": self}
        return tornado.web.Application(
            [
                (r"/", Redirect, me),
                (r"/dashboard/?", PageHandler, me),
                (r"/dashboard/stream", StreamHandler, me),
                (r"/dashboard/api/(.+)", ActionHandler, me),
                (r"/dashboard/static/(.+)", StaticHandler, {"path": str(STATIC), **me}),
            ]
        )

    async def fault(self, node: int, action: str, ms: str) -> tuple[int, str]:
        """The node's ``POST /fault/<action>``, with the secret: its status and a line."""
        query = f"?ms={ms}" if action == "slow" else ""
        answer = await self.watcher.get(
            f"{self.watcher.urls[node]}/fault/{action}{query}",
            method="POST",
            body=b"",
            headers=self.watcher.auth(),
        )
        if answer.code != 200:
            return answer.code, f"node {node}: {describe_failure(answer)}"
        state = json.loads(answer.body)
        done = {"slow": f"slowed by {state.get('slow_ms')} ms", "stall": "stalled",
                "heal": "healed"}[action]  # fmt: skip
        return 200, f"node {node} {done}"

    def close(self) -> None:
        self.autoproposer.stop()
        self.watcher.close()


def origins_of(sockets: list[socket.socket], scheme: str = "http") -> list[str]:
    """The origins a page of this server may have: ``http://<address>:<port>`` of each socket,
    and ``http://localhost:<port>`` for a loopback one."""
    found = []
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        name = f"[{host}]" if ":" in host else host
        found.append(f"{scheme}://{name}:{port}")
        if host in ("127.0.0.1", "::1"):
            found.append(f"{scheme}://localhost:{port}")
    return list(dict.fromkeys(found))


def listen(host: str, port: int) -> list[socket.socket]:
    """The dashboard's listening sockets, or ``OSError`` with the reason."""
    return bind_sockets(port, host)


def url_of(sockets: list[socket.socket]) -> str:
    return origins_of(sockets)[0] + "/dashboard"


class DashboardThread:
    """The dashboard on an event loop in a thread of its own (the supervisor's main thread
    watches the node processes)."""

    def __init__(self, dashboard: Dashboard, sockets: list[socket.socket]):
        self.dashboard = dashboard
        self.sockets = sockets
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="paxgos-dashboard", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._ready.wait(10.0)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = HTTPServer(self.dashboard.application())
        server.add_sockets(self.sockets)
        watching = asyncio.ensure_future(self.dashboard.watcher.run())
        self._ready.set()
        await self._stop.wait()
        server.stop()
        self.dashboard.close()
        watching.cancel()

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(5.0)


# --- ``paxgos dashboard``: watch nodes started elsewhere ----------------------------------------


def dashboard_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paxgos dashboard",
        description="Serve the dashboard of running nodes (the supervisor, python -m paxgos, "
        "serves its own, with kill and restart).",
    )
    parser.add_argument("--peers", required=True, help="comma-separated base URLs of every node")
    parser.add_argument(
        "--secret-file", default=None, metavar="FILE",
        help="the cluster secret (for /events and the fault controls); none: --insecure nodes",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one)")
    parser.add_argument("--tls-ca", default=None, metavar="FILE", help="CA of https:// nodes")
    return parser


def run_standalone(argv: list[str]) -> int:
    from paxgos.net.auth import SecretError, read_secret

    args = dashboard_parser().parse_args(argv)
    urls = [u.strip().rstrip("/") for u in args.peers.split(",") if u.strip()]
    if any(urlsplit(u).scheme not in ("http", "https") for u in urls) or not urls:
        print("paxgos dashboard: --peers takes http:// or https:// URLs", file=sys.stderr)
        return 2
    secret = None
    if args.secret_file:
        try:
            secret = read_secret(args.secret_file).decode()
        except SecretError as exc:
            print(f"paxgos dashboard: {exc}", file=sys.stderr)
            return 1
    try:
        sockets = listen(args.host, args.port)
    except OSError as exc:
        print(f"paxgos dashboard: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    tls = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
    dashboard = Dashboard(urls, secret, origins_of(sockets), tls)
    print(f"paxgos: dashboard on {url_of(sockets)}", file=sys.stderr, flush=True)

    async def main() -> None:
        server = HTTPServer(dashboard.application())
        server.add_sockets(sockets)
        await dashboard.watcher.run()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0
