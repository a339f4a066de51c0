"""Real node processes on 127.0.0.1 for tests and benchmarks: start, stop, kill, pause, restart.

``LocalNodes`` starts each node with ``python -m paxgos node`` on a free port, its output in a
log file per node, and knows every PID, so a test can ``kill -9`` or ``SIGSTOP`` one node and
restart it with the very same command.  ``close()`` kills whatever is left (by PID): nothing
outlives the test that started it.  Everything waits with a deadline.

Given ``urls`` (node ``i`` listens on ``urls[i]``) and a ``prefix`` (node ``i``'s command is
``prefix(i)`` followed by the usual one), the same lifecycle runs nodes elsewhere: on separate
network namespaces with ``ip netns exec`` (``paxgos.testing.netns.nodes_in``).  A prefix must
exec the node (as ``ip netns exec`` does), so that the PID kept is the node's own.

The cluster is a real, authenticated one: its secret (``secret``, kept in ``WORKDIR/secret``)
and cluster id (``WORKDIR/cluster-id``) are made once per work directory and passed to every
node, unless ``extra_args`` say ``--insecure`` or name their own.  ``control(i, path)`` sends a
runtime control (``POST /fault/...``) with the secret.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from paxgos.check.fetch import fetch_log
from paxgos.cluster import free_ports
from paxgos.net.auth import SIGNATURE, PeerAuth, read_secret, write_secret
from paxgos.testing.http import http_get


class LocalNodes:
    """A cluster of real node processes; see the module docstring."""

    def __init__(
        self,
        count: int,
        workdir: str | Path,
        extra_args: list[str] | None = None,
        urls: Sequence[str] | None = None,
        prefix: Callable[[int], Sequence[str]] | None = None,
        identity: bool = True,
        python: str = sys.executable,
    ):
        self.count = count
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args or [])
        secret = self.workdir / "secret"
        if not secret.exists():
            write_secret(secret)
        kept = self.workdir / "cluster-id"
        if not kept.exists():
            kept.write_text(uuid.uuid4().hex[:12] + "\n")
        self.cluster_id = kept.read_text().strip()
        self.secret_file = str(secret)
        #: Whether ``command`` adds the cluster id and secret (off for revisions of Paxgos
        #: older than both, which ``bench/ab.py`` may compare against).
        self.identity = identity
        self.python = python  # the interpreter that runs the nodes
        if urls is None:
            ports = free_ports("127.0.0.1", count)
            urls = [f"http://127.0.0.1:{port}" for port in ports]
        elif len(urls) != count:
            raise ValueError(f"{len(urls)} urls for {count} nodes")
        self.urls = list(urls)
        self.prefix = prefix
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def secret(self) -> str | None:
        """The cluster secret the nodes run with (``None`` under ``--insecure``)."""
        if "--insecure" in self.extra_args or not self.identity:
            return None
        return read_secret(self.workdir / self._arg("--secret-file", self.secret_file)).decode()

    def _arg(self, name: str, default: str) -> str:
        args = self.extra_args
        return args[args.index(name) + 1] if name in args else default

    def command(self, i: int) -> list[str]:
        identity = ["--cluster-id", self._arg("--cluster-id", self.cluster_id)]
        if "--insecure" not in self.extra_args:
            identity += ["--secret-file", self._arg("--secret-file", self.secret_file)]
        if not self.identity:
            identity = []
        return [
            *(self.prefix(i) if self.prefix else []),
            self.python, "-m", "paxgos", "node", "--id", str(i),
            "--peers", ",".join(self.urls), *self.extra_args, *identity,
        ]  # fmt: skip

    def log_path(self, i: int) -> Path:
        return self.workdir / f"node-{i}.log"

    def start(self, i: int | None = None, wait: float = 15.0) -> LocalNodes:
        """Start node ``i`` (or all), then wait until it answers /status (all: until every
        node names the same leader)."""
        ids = range(self.count) if i is None else [i]
        for n in ids:
            log = open(self.log_path(n), "ab")  # noqa: SIM115 - owned by the child from here
            self.procs[n] = subprocess.Popen(
                self.command(n), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
            log.close()
        for n in ids:
            self.wait_up(n, wait)
        if i is None:
            self.wait_leader(timeout=wait)
        return self

    def wait_leader(self, timeout: float = 15.0, nodes: list[int] | None = None) -> int:
        """Wait until the given nodes (default: all) name one of them leader, and it says it
        leads; return its id."""
        ids = nodes if nodes is not None else list(range(self.count))
        deadline = time.monotonic() + timeout
        named: list[Any] = []
        while time.monotonic() < deadline:
            try:
                statuses = [self.status(n, timeout=1.0) for n in ids]
            except OSError:
                statuses = []
            named = [s["leader"] for s in statuses]
            if named and len(set(named)) == 1 and named[0] is not None:
                leader = named[0]
                if leader in ids and statuses[ids.index(leader)]["role"] == "leader":
                    return int(leader)
            time.sleep(0.05)
        raise TimeoutError(f"nodes {ids} named no single leader within {timeout}s: {named}")

    def wait_up(self, i: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[i]
            if proc is None or proc.poll() is not None:
                raise RuntimeError(f"node {i} exited: {self.log_path(i).read_text()[-2000:]}")
            try:
                self.status(i, timeout=0.5)
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"node {i} did not answer within {timeout}s")

    def signal(self, i: int, sig: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)

    def pause(self, i: int) -> None:
        self.signal(i, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.signal(i, signal.SIGCONT)

    def kill(self, i: int) -> None:
        """``kill -9`` node ``i`` and reap it."""
        proc = self.procs[i]
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            self.procs[i] = None

    def stop(self, i: int, grace: float = 5.0) -> int | None:
        """SIGTERM node ``i`` and wait (SIGKILL after ``grace``); its exit code."""
        proc = self.procs[i]
        if proc is None:
            return None
        self.signal(i, signal.SIGCONT)
        self.signal(i, signal.SIGTERM)
        try:
            code = proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        self.procs[i] = None
        return code

    def close(self) -> None:
        """Stop every node that still runs (by PID); leaves nothing behind."""
        for i in range(self.count):
            self.stop(i, grace=3.0)

    def __enter__(self) -> LocalNodes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- HTTP ---------------------------------------------------------------------------------

    def get(
        self, i: int, path: str, timeout: float = 10.0, json_body: bool = False
    ) -> tuple[int, dict[str, str], str]:
        """``GET`` a path on node ``i``: status, headers, body (redirects not followed)."""
        return http_get(self.urls[i] + path, timeout, json_body)

    def control(self, i: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], str]:
        """``POST`` a runtime control (``/fault/slow?ms=N``, ...) to node ``i``, with the
        cluster secret: status, headers, body."""
        return http_get(self.urls[i] + path, timeout, True, "POST", self.auth_headers())

    def as_peer(
        self, i: int, target: str, body: bytes = b"", method: str = "POST", timeout: float = 5.0
    ) -> tuple[int, dict[str, str], str]:
        """Send node ``i`` a request as a member would, signed with the cluster secret
        (``POST /accept`` with a message body, ``GET /learn?...``): status, headers, body."""
        signature = PeerAuth(self.secret.encode() if self.secret else None).sign_request(
            method, target, body
        )
        headers = {SIGNATURE: signature, "Content-Type": "application/json"} if signature else {}
        data = body if method == "POST" else None
        return http_get(self.urls[i] + target, timeout, False, method, headers, data)

    def auth_headers(self) -> dict[str, str]:
        """The header that carries the cluster secret to a runtime control (none if insecure)."""
        return {"Authorization": f"Bearer {self.secret}"} if self.secret else {}

    def status(self, i: int, timeout: float = 2.0) -> dict[str, Any]:
        code, _, body = self.get(i, "/status", timeout)
        if code != 200:
            raise OSError(f"status {code}")
        return json.loads(body)

    def history(self, i: int) -> list[tuple[int, int | None]]:
        """Node ``i``'s whole committed log, fetched page by page."""
        return fetch_log(self.urls[i])

    def wait_converged(
        self, timeout: float = 10.0, nodes: list[int] | None = None, at_least: int = 0
    ) -> int:
        """Wait until the given nodes (default: all) report the same commit index, at least
        ``at_least`` (the highest slot a client was told, say); return it."""
        ids = nodes if nodes is not None else list(range(self.count))
        deadline = time.monotonic() + timeout
        seen: list[int] = []
        while time.monotonic() < deadline:
            try:
                seen = [self.status(i)["commit_index"] for i in ids]
            except OSError:
                seen = []
            if seen and len(set(seen)) == 1 and seen[0] >= at_least:
                return seen[0]
            time.sleep(0.05)
        raise TimeoutError(f"nodes {ids} did not converge within {timeout}s: {seen}")
