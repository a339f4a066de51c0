"""The local supervisor behind ``python -m paxgos --nodes N``: one process per node.

Like foreman or ``docker compose up``, it starts every node and shows their log lines prefixed
with the node id.  When a node dies it says which one, how, and whether a majority still runs;
the others keep running.  Under ``--restart on-failure`` (the default, Docker's policy of that
name) a node that exited non-zero or was killed by a signal is started again with the very same
command (same id, ports, data dir and cluster id; never ``--fresh``), after Docker's back-off;
a node that exited 0 stays down.  Under ``--restart no`` a dead node stays down.  Once no node
runs and none is due for a restart, the supervisor exits 1.  Ctrl-C or SIGTERM stops them all,
with no more restarts: every node within 5 s, SIGKILL for any that lingers, SIGCONT first so a
SIGSTOPped node can hear the SIGTERM.  A node that does not come up at start stops the cluster
(exit 1).

It also serves the dashboard (``paxgos.dashboard``) on 127.0.0.1, by default on the port below
node 0's (8999 for 9000): it knows every node's address and the cluster secret, and it owns the
processes, so the page can kill -9 and restart nodes, which no node can do to itself.  The
dashboard runs on an event loop in a thread of its own and asks for kills and restarts through
``Commands``, which the supervisor's loop carries out; a node killed from the page stays down
until restarted from it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import queue
import random
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paxgos.dashboard.server import Dashboard, DashboardThread, listen, origins_of, url_of
from paxgos.net.auth import read_secret, secret_path, write_secret
from paxgos.net.server import cluster_id_path, stored_cluster_id

STOP_GRACE = 4.0

# The restart back-off follows Docker's restart policy: the first restart waits 100 ms, each
# consecutive failure doubles the wait, and a node that stayed up 10 s starts over at 100 ms.
# Docker caps the wait at a minute; a local cluster caps it at 10 s.
RESTART_DELAY = 0.1
RESTART_DELAY_MAX = 10.0
RESTART_RESET_AFTER = 10.0


def say(text: str) -> None:
    print(f"paxgos: {text}", file=sys.stderr, flush=True)


#: Where ``free_ports`` looks: the ports just below the kernel's ephemeral range.
FREE_PORT_SPAN = 16384


def ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux's range, else IANA's)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (held together while picking),
    drawn at random from below the ephemeral range: a port the kernel hands out for any
    outgoing connection (a peer's, a test client's) could be taken between this pick and the
    node's bind, which made parallel test runs fail with "Address already in use".  Falls back
    to the kernel's choice when that range is too crowded."""
    low = ephemeral_low()
    candidates = list(range(max(1024, low - FREE_PORT_SPAN), low))
    random.shuffle(candidates)
    held: list[socket.socket] = []
    try:
        for port in candidates[: 64 * count]:
            if len(held) == count:
                break
            sock = socket.socket()
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        while len(held) < count:
            sock = socket.socket()
            sock.bind((host, 0))
            held.append(sock)
        return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


def check_ports(host: str, ports: Iterable[int]) -> str | None:
    """A one-line reason if any port cannot be listened on, else ``None``."""
    for port in ports:
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == 98:
                return f"port {port} is already in use"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
        finally:
            sock.close()
    return None


def pump(node_id: int, stream: Iterable[str]) -> None:
    """Copy one node's output to ours, each line prefixed with the node id."""
    for line in stream:
        sys.stdout.write(f"node {node_id} | {line}")
        sys.stdout.flush()


def wait_ready(
    urls: list[str],
    procs: list[subprocess.Popen[str]],
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> bool:
    """Whether every node answers /status and names a leader within ``timeout`` seconds (so
    that the first proposal a user sends after "nodes up" commits)."""
    deadline = time.monotonic() + timeout
    pending = set(range(len(urls)))
    while pending and time.monotonic() < deadline:
        for i in sorted(pending):
            if procs[i].poll() is not None:
                return False
            try:
                with open_status(urls[i], tls) as response:
                    if json.load(response).get("leader") is not None:
                        pending.discard(i)
            except (OSError, ValueError):
                pass
        time.sleep(0.05)
    return not pending


def open_status(url: str, tls: ssl.SSLContext | None) -> Any:
    """``GET url/status`` (over HTTPS, ``tls`` verifies the node against ``--tls-ca``)."""
    return urllib.request.urlopen(url + "/status", timeout=0.5, context=tls)


def stop_all(procs: list[subprocess.Popen[str]]) -> None:
    """SIGCONT + SIGTERM every live node, then SIGKILL what is left after the grace period."""
    for proc in procs:
        if proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    pass
    deadline = time.monotonic() + STOP_GRACE
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DataDirError(Exception):
    """The data directory cannot be used as asked; a one-line reason."""


def node_dirs(data_dir: Path) -> list[int]:
    """The ids of the nodes that have a data file under ``data_dir``."""
    found = []
    for entry in data_dir.glob("node-*"):
        suffix = entry.name[len("node-") :]
        if suffix.isdigit() and (entry / "paxgos.db").exists():
            found.append(int(suffix))
    return sorted(found)


def resumed_entries(data_dir: Path) -> dict[int, int]:
    """Each existing node file's commit index (its highest chosen slot), read-only."""
    entries = {}
    for i in node_dirs(data_dir):
        uri = f"file:{data_dir / f'node-{i}' / 'paxgos.db'}?mode=ro"
        try:
            with closing(sqlite3.connect(uri, uri=True, timeout=1.0)) as conn:
                entries[i] = conn.execute("SELECT COALESCE(MAX(slot), 0) FROM chosen").fetchone()[0]
        except sqlite3.Error:
            continue  # the node itself says what is wrong with its file
    return entries


def prepare_data_dir(data_dir: Path, nodes: int, fresh: bool) -> str:
    """Make ``data_dir`` ready for a cluster of ``nodes``: its identity (``data_dir/cluster-id``,
    which a node started by hand on the same directory reads too, so that a restart reuses the
    data and a node never opens another cluster's file), its size (``data_dir/cluster-size``: a
    majority of 3 is not one of 5, so data made for another size is refused) and its secret
    (``data_dir/secret``, mode 0600).  ``fresh`` makes a new identity and secret.  Returns the
    cluster id; ``DataDirError`` when the directory cannot be used."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".paxgos-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DataDirError(f"cannot use data dir {data_dir}: {exc.strerror or exc}") from None
    size_file = data_dir / "cluster-size"
    kept = None if fresh else stored_cluster_id(data_dir)
    existing = [] if fresh else node_dirs(data_dir)
    if kept is None and existing:
        raise DataDirError(
            f"{cluster_id_path(data_dir)} is missing but {data_dir} holds node data "
            f"(node-{existing[0]}/paxgos.db...); restore the file, or pass --fresh to start empty"
        )
    if kept is not None:
        try:
            size = int(size_file.read_text())
        except (OSError, ValueError):
            size = max(existing) + 1 if existing else nodes
        if size != nodes or (existing and max(existing) >= nodes):
            raise DataDirError(
                f"{data_dir} holds a {size}-node cluster; run it with --nodes {size}, "
                "or pass --fresh to start a new one (majorities of different sizes do not overlap)"
            )
        identity = kept
    else:
        identity = uuid.uuid4().hex[:12]
        cluster_id_path(data_dir).write_text(identity + "\n")
        write_secret(secret_path(data_dir))
    if not secret_path(data_dir).exists():
        write_secret(secret_path(data_dir))
    size_file.write_text(f"{nodes}\n")
    return identity


def how_it_ended(status: int) -> str:
    """``was killed by SIGKILL`` or ``exited with 1``, from a ``Popen.returncode``."""
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with {status}"


def majority_line(running: int, nodes: int) -> str:
    """How many nodes run, and whether that is enough to commit."""
    majority = nodes // 2 + 1
    if running >= majority:
        return f"{running} of {nodes} nodes running, a majority ({majority}) holds"
    return (
        f"{running} of {nodes} nodes running, NO majority ({majority} needed): "
        "commits stop until nodes return"
    )


@dataclass
class Member:
    """One supervised node: its commands, its current process and its restart back-off."""

    node_id: int
    url: str
    command: list[str]  # the first start (with --fresh if asked)
    restart_command: list[str]  # every restart: the same, but never --fresh
    proc: subprocess.Popen[str] | None = None  # None while down
    started: float = 0.0
    restarts: int = 0
    delay: float = RESTART_DELAY  # the wait before the next restart
    restart_at: float | None = None  # when a scheduled restart is due
    held: bool = False  # killed from the dashboard: no restart until it asks
    restart_now: bool = False  # killed by the dashboard's restart: start again at once

    def start(self) -> threading.Thread:
        """Start the node's process; the thread that pumps its output."""
        # A session of its own: a Ctrl-C in the terminal reaches only the supervisor, which
        # then stops the nodes in order.
        self.proc = subprocess.Popen(
            self.restart_command if self.restarts else self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.started = time.monotonic()
        thread = threading.Thread(target=pump, args=(self.node_id, self.proc.stdout), daemon=True)
        thread.start()
        return thread

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def schedule_restart(self, now: float) -> float:
        """Plan the next restart with the back-off; its delay."""
        if now - self.started >= RESTART_RESET_AFTER:
            self.delay = RESTART_DELAY
        delay = self.delay
        self.delay = min(delay * 2, RESTART_DELAY_MAX)
        self.restarts += 1
        self.restart_at = now + delay
        return delay


class Commands:
    """The dashboard's requests to the supervisor's loop (kill -9, restart), which owns the
    processes; each comes back as a one-line outcome (``paxgos.dashboard.server.
    ProcessControl``)."""

    def __init__(self, members: list[Member]):
        self.members = members
        self.pending: queue.Queue[tuple[str, int, concurrent.futures.Future[str]]] = queue.Queue()

    def kill(self, node_id: int) -> asyncio.Future[str]:
        return self._ask("kill", node_id)

    def restart(self, node_id: int) -> asyncio.Future[str]:
        return self._ask("restart", node_id)

    def _ask(self, kind: str, node_id: int) -> asyncio.Future[str]:
        done: concurrent.futures.Future[str] = concurrent.futures.Future()
        self.pending.put((kind, node_id, done))
        return asyncio.wrap_future(done)

    def view(self) -> list[dict[str, Any]]:
        """Each node's process as the page shows it: pid and state."""
        views = []
        for member in self.members:
            proc = member.proc  # read once: the loop may replace it meanwhile
            if proc is not None and proc.poll() is None:
                state = "running"
            elif member.held:
                state = "killed"
            elif member.restart_at is not None or member.restart_now:
                state = "restarting"
            else:
                state = "down"
            views.append({"pid": proc.pid if proc is not None else None, "state": state})
        return views

    def serve(self, timeout: float, now: float) -> None:
        """Carry out the requests that arrive within ``timeout`` seconds (in the loop)."""
        try:
            kind, node_id, done = self.pending.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            done.set_result(self._carry_out(kind, self.members[node_id], now))
            try:
                kind, node_id, done = self.pending.get_nowait()
            except queue.Empty:
                return

    def _carry_out(self, kind: str, member: Member, now: float) -> str:
        i = member.node_id
        proc = member.proc
        if kind == "kill":
            if proc is None or proc.poll() is not None:
                return f"node {i} is not running"
            member.held = True
            os.kill(proc.pid, signal.SIGKILL)
            say(f"node {i} (pid {proc.pid}): kill -9 from the dashboard")
            return f"node {i} (pid {proc.pid}) killed with SIGKILL; it stays down until restarted"
        member.held = False
        if proc is not None and proc.poll() is None:
            member.restart_now = True
            os.kill(proc.pid, signal.SIGKILL)
            say(f"node {i} (pid {proc.pid}): restart from the dashboard (kill -9, start again)")
            return f"node {i} (pid {proc.pid}) killed with SIGKILL; starting it again"
        member.restarts += 1
        member.restart_at = now
        say(f"node {i}: start from the dashboard")
        return f"node {i} starting again"


def announce_back(
    member: Member,
    stopping: threading.Event,
    tls: ssl.SSLContext | None = None,
    timeout: float = 15.0,
) -> None:
    """Say when a restarted node answers /status again (nothing if it dies first: the
    supervisor's loop reports that)."""
    proc = member.proc
    assert proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping.is_set():
        if proc.poll() is not None:
            return
        try:
            with open_status(member.url, tls):
                say(f"node {member.node_id} is back (pid {proc.pid})")
                return
        except OSError:
            stopping.wait(0.05)
    if not stopping.is_set() and proc.poll() is None:
        say(f"node {member.node_id} (pid {proc.pid}) does not answer /status after {timeout:g}s")


#: The node options of the supervisor's arguments as command-line words (``cli.passthrough``:
#: the command line owns the options, the supervisor only hands them on).
NodeWords = Callable[[argparse.Namespace], list[str]]


def node_command(
    args: argparse.Namespace, node_id: int, urls: list[str], fresh: bool, words: NodeWords
) -> list[str]:
    """The command that runs node ``node_id`` with the supervisor's node options."""
    cmd = [sys.executable, "-m", "paxgos", "node", "--id", str(node_id), "--peers", ",".join(urls)]
    return [
        *cmd,
        "--exit-with-parent",
        *words(argparse.Namespace(**{**vars(args), "fresh": fresh})),
    ]


def run_cluster(args: argparse.Namespace, words: NodeWords) -> int:
    """Start the cluster and supervise it until a signal, or until no node runs and none will be
    restarted; ``words`` turns the node options of ``args`` into a node's command line."""
    nodes = args.nodes
    if nodes < 3:
        say(f"--nodes {nodes} is too few for a majority to survive a failure; using 3")
        nodes = 3
    if args.starting_port == 0:
        ports = free_ports(args.host, nodes)
    else:
        ports = list(range(args.starting_port, args.starting_port + nodes))
        if ports[-1] > 65535:
            say(f"ports {ports[0]}..{ports[-1]} go past 65535")
            return 2
        problem = check_ports(args.host, ports)
        if problem:
            say(problem)
            return 1
    page: list[socket.socket] = []
    if args.dashboard:
        port = args.dashboard_port
        if port is None:  # the port below node 0's; free ports for free nodes
            port = ports[0] - 1 if args.starting_port else 0
        try:
            page = listen(args.dashboard_host, port)
        except OSError as exc:
            say(
                f"cannot serve the dashboard on {args.dashboard_host}:{port}: "
                f"{exc.strerror or exc}; pass --dashboard-port P (0 picks a free one) or "
                "--no-dashboard"
            )
            return 1
    scheme = "https" if args.tls_cert else "http"
    urls = [f"{scheme}://{args.host}:{port}" for port in ports]
    tls = ssl.create_default_context(cafile=args.tls_ca) if args.tls_cert else None
    data_dir = Path(args.data_dir)
    try:
        identity = prepare_data_dir(data_dir, nodes, args.fresh)
    except DataDirError as exc:
        say(str(exc))
        return 1
    args.cluster_id = identity if args.storage == "sqlite" else "memory"
    args.secret_file = None if args.insecure else str(secret_path(data_dir).resolve())
    if args.storage == "sqlite":
        state = "fresh" if args.fresh else "reused if present; --fresh starts empty"
        say(f"node data in {data_dir.resolve()}/node-<id>/paxgos.db ({state})")
        entries = {} if args.fresh else resumed_entries(data_dir)
        if entries:
            say(
                f"resuming cluster {identity} ({nodes} nodes): up to {max(entries.values())} "
                f"committed entries on {len(entries)} node(s); --fresh starts empty"
            )
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    members = [
        Member(
            i,
            url,
            node_command(args, i, urls, args.fresh, words),
            node_command(args, i, urls, False, words),
        )
        for i, url in enumerate(urls)
    ]
    commands = Commands(members)
    dashboard: DashboardThread | None = None
    pumps: list[threading.Thread] = []
    code = 0
    try:
        for member in members:
            pumps.append(member.start())
        procs = [m.proc for m in members if m.proc is not None]
        for i, (url, proc) in enumerate(zip(urls, procs, strict=True)):
            role = "leader" if i == 0 else "follower"
            print(f"node {i}  {url}  {role}  (pid {proc.pid})", flush=True)
        if not wait_ready(urls, procs, timeout=15.0, tls=tls) and not stopping.is_set():
            say("not every node came up; stopping the cluster")
            code = 1
            stopping.set()
        else:
            say(f"{nodes} nodes up; propose with: curl {urls[0]}/propose/42   (Ctrl-C stops)")
            if args.secret_file:
                say(
                    "fault controls take the cluster secret: curl -X POST -H "
                    f'"Authorization: Bearer $(cat {args.secret_file})" {urls[1]}/fault/slow?ms=500'
                )
            if page:
                secret = read_secret(args.secret_file).decode() if args.secret_file else None
                board = Dashboard(urls, secret, origins_of(page), tls, commands)
                dashboard = DashboardThread(board, page)
                dashboard.start()
                say(f"dashboard: {url_of(page)}   (watch the messages, stall, kill, propose)")
        while not stopping.is_set():
            now = time.monotonic()
            for member in members:
                if member.proc is not None and member.proc.poll() is not None:
                    status, pid = member.proc.returncode, member.proc.pid
                    member.proc = None
                    running = sum(m.running() for m in members)
                    say(f"node {member.node_id} (pid {pid}) {how_it_ended(status)}; "
                        f"{majority_line(running, nodes)}")  # fmt: skip
                    if member.held:
                        say(f"node {member.node_id} stays down until restarted from the dashboard")
                    elif member.restart_now:
                        member.restart_now = False
                        member.restarts += 1
                        member.restart_at = now
                    elif args.restart == "on-failure" and status != 0:
                        delay = member.schedule_restart(now)
                        say(f"restarting node {member.node_id} in {delay:g}s "
                            f"(restart {member.restarts})")  # fmt: skip
                    elif args.restart == "on-failure":
                        say(f"node {member.node_id} exited cleanly; not restarted")
                elif member.restart_at is not None and now >= member.restart_at:
                    member.restart_at = None
                    pumps.append(member.start())
                    threading.Thread(
                        target=announce_back, args=(member, stopping, tls), daemon=True
                    ).start()
            if not any(m.proc is not None or m.restart_at is not None or m.held for m in members):
                say("no node is running and none will be restarted; exiting")
                code = 1
                break
            commands.serve(0.1, now)
    finally:
        if dashboard is not None:
            dashboard.stop()
        for sock in page:
            sock.close()
        stop_all([m.proc for m in members if m.proc is not None])
        for thread in pumps:
            thread.join(timeout=1.0)
        say("all nodes stopped")
    return code
