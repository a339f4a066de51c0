"""The local supervisor behind ``python -m paxgos --nodes N``: one process per node.

Like foreman or ``docker compose up``, it starts every node, shows their log lines prefixed with
the node id, and stops them all together: on Ctrl-C or SIGTERM (every node within 5 s, SIGKILL
for any that lingers, SIGCONT first so a SIGSTOPped node can hear the SIGTERM), and when any node
exits on its own (a half cluster is not what the user started, so the supervisor says which node
died and how, stops the rest and exits non-zero).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

from paxgos.cli import passthrough

STOP_GRACE = 4.0


def say(text: str) -> None:
    print(f"paxgos: {text}", file=sys.stderr, flush=True)


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (held together while picking)."""
    held = []
    try:
        for _ in range(count):
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


def wait_ready(urls: list[str], procs: list[subprocess.Popen[str]], timeout: float) -> bool:
    """Whether every node answers /status within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pending = set(range(len(urls)))
    while pending and time.monotonic() < deadline:
        for i in sorted(pending):
            if procs[i].poll() is not None:
                return False
            try:
                with urllib.request.urlopen(urls[i] + "/status", timeout=0.5):
                    pending.discard(i)
            except OSError:
                pass
        time.sleep(0.05)
    return not pending


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


def cluster_id(data_dir: Path, fresh: bool) -> str:
    """The cluster's identity, kept in ``data_dir/cluster-id`` so that a restart reuses the
    data and a node never opens another cluster's file; ``fresh`` makes a new one."""
    path = data_dir / "cluster-id"
    if path.exists() and not fresh:
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = uuid.uuid4().hex[:12]
    path.write_text(identity + "\n")
    return identity


def run_cluster(args: argparse.Namespace) -> int:
    """Start the cluster and supervise it until a signal or a node's death."""
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
    urls = [f"http://{args.host}:{port}" for port in ports]
    args.cluster_id = "memory"
    if args.storage == "sqlite":
        args.cluster_id = cluster_id(Path(args.data_dir), args.fresh)
        state = "fresh" if args.fresh else "reused if present; --fresh starts empty"
        say(f"node data in {Path(args.data_dir).resolve()}/node-<id>/paxgos.db ({state})")
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    procs: list[subprocess.Popen[str]] = []
    pumps: list[threading.Thread] = []
    for i in range(nodes):
        cmd = [sys.executable, "-m", "paxgos", "node", "--id", str(i), "--peers", ",".join(urls)]
        cmd += ["--exit-with-parent", *passthrough(args)]
        # A session of its own: a Ctrl-C in the terminal reaches only the supervisor, which
        # then stops the nodes in order.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        procs.append(proc)
        thread = threading.Thread(target=pump, args=(i, proc.stdout), daemon=True)
        thread.start()
        pumps.append(thread)
    for i, url in enumerate(urls):
        role = "leader" if i == 0 else "follower"
        print(f"node {i}  {url}  {role}  (pid {procs[i].pid})", flush=True)

    code = 0
    if not wait_ready(urls, procs, timeout=15.0) and not stopping.is_set():
        say("not every node came up; stopping the cluster")
        code = 1
        stopping.set()
    else:
        say(f"{nodes} nodes up; propose with: curl {urls[0]}/propose/42   (Ctrl-C stops)")
    while not stopping.is_set():
        for i, proc in enumerate(procs):
            status = proc.poll()
            if status is not None:
                how = f"was killed by signal {-status}" if status < 0 else f"exited with {status}"
                say(f"node {i} (pid {proc.pid}) {how}; stopping the cluster")
                code = 1
                stopping.set()
                break
        stopping.wait(0.1)
    stop_all(procs)
    for thread in pumps:
        thread.join(timeout=1.0)
    say("all nodes stopped")
    return code
