"""A local etcd cluster for benchmarks: N members on free 127.0.0.1 ports, killed by PID at the end.

Owned by ``bench/sweep.py`` (the concurrency sweep against etcd), usable on its own::

    with EtcdCluster(5, workdir) as etcd:
        etcd.start()
        url = etcd.urls[etcd.leader()]      # POST {url}/v3/kv/put ...

Each member is ``etcd`` (Debian package ``etcd-server``) started with a static
``--initial-cluster``, its data directory and log file under ``workdir``, and etcd's default
durability (an fsync per batch of the raft log).  ``close()`` (and leaving the ``with``) sends
SIGTERM to every member it started, then SIGKILL after a grace period, and reaps them: nothing
outlives the run.  Every wait has a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from paxgos.cluster import free_ports

INSTALL_HINT = "etcd is not installed: apt-get install etcd-server (Debian/Ubuntu)"


def etcd_binary() -> str | None:
    """The ``etcd`` on PATH, or ``None``."""
    return shutil.which("etcd")


def etcd_version(binary: str | None = None) -> str:
    """``etcd --version``'s version number, or "?"."""
    binary = binary or etcd_binary()
    if binary is None:
        return "?"
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    match = re.search(r"etcd Version:\s*(\S+)", out)
    return match.group(1) if match else "?"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdCluster:
    """``count`` etcd members on 127.0.0.1; see the module docstring."""

    def __init__(self, count: int, workdir: str | Path, binary: str | None = None) -> None:
        found = binary or etcd_binary()
        if found is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.binary = found
        self.count = count
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        ports = free_ports("127.0.0.1", 2 * count)
        self.urls = [f"http://127.0.0.1:{p}" for p in ports[:count]]
        self.peer_urls = [f"http://127.0.0.1:{p}" for p in ports[count:]]
        self.names = [f"m{i}" for i in range(count)]
        self.token = f"paxgos-bench-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count

    def command(self, i: int) -> list[str]:
        initial = ",".join(f"{n}={u}" for n, u in zip(self.names, self.peer_urls, strict=True))
        return [
            self.binary,
            "--name", self.names[i],
            "--data-dir", str(self.workdir / f"{self.names[i]}.etcd"),
            "--listen-peer-urls", self.peer_urls[i],
            "--initial-advertise-peer-urls", self.peer_urls[i],
            "--listen-client-urls", self.urls[i],
            "--advertise-client-urls", self.urls[i],
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    def log_path(self, i: int) -> Path:
        return self.workdir / f"{self.names[i]}.log"

    @property
    def pids(self) -> dict[int, int]:
        """Member index -> PID of every member still running."""
        return {i: p.pid for i, p in enumerate(self.procs) if p is not None and p.poll() is None}

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        """Start every member, then wait (at most ``timeout``) until all are healthy and one
        leads."""
        for i in range(self.count):
            with open(self.log_path(i), "ab") as log:
                self.procs[i] = subprocess.Popen(
                    self.command(i), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
                )
        deadline = time.monotonic() + timeout
        for i in range(self.count):
            self.wait_healthy(i, deadline)
        self.leader(timeout=max(1.0, deadline - time.monotonic()))
        return self

    def wait_healthy(self, i: int, deadline: float) -> None:
        while True:
            proc = self.procs[i]
            if proc is None or proc.poll() is not None:
                tail = self.log_path(i).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"etcd member {i} exited: {tail}")
            try:
                with urllib.request.urlopen(self.urls[i] + "/health", timeout=1.0) as answer:
                    if json.loads(answer.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"etcd member {i} was not healthy in time")
            time.sleep(0.1)

    def post(self, i: int, path: str, body: dict[str, Any], timeout: float = 2.0) -> Any:
        """``POST`` a JSON body to member ``i``'s gateway (``/v3/...``); the decoded answer."""
        request = urllib.request.Request(
            self.urls[i] + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())

    def status(self, i: int, timeout: float = 2.0) -> dict[str, Any]:
        """Member ``i``'s ``/v3/maintenance/status`` (uint64 fields come as strings)."""
        return self.post(i, "/v3/maintenance/status", {}, timeout)

    def leader(self, timeout: float = 10.0) -> int:
        """The index of the member that leads, once one does (at most ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            ids: dict[str, int] = {}
            leaders: set[str] = set()
            for i in self.pids:
                try:
                    status = self.status(i, timeout=1.0)
                except (OSError, ValueError):
                    continue
                ids[status["header"]["member_id"]] = i
                if status.get("leader") not in (None, "0"):
                    leaders.add(status["leader"])
            if len(leaders) == 1 and next(iter(leaders)) in ids:
                return ids[next(iter(leaders))]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no single etcd leader within {timeout}s: {leaders}")
            time.sleep(0.1)

    def revision(self, i: int) -> int:
        """The store's revision as member ``i`` sees it (one more per put)."""
        return int(self.status(i)["header"]["revision"])

    def count_prefix(self, i: int, prefix: str) -> int:
        """How many keys start with ``prefix`` (a range with ``count_only``)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        answer = self.post(
            i, "/v3/kv/range", {"key": b64(prefix), "range_end": b64(end), "count_only": True}
        )
        return int(answer.get("count", 0))

    def close(self, grace: float = 5.0) -> None:
        """SIGTERM every member still running, SIGKILL what is left after ``grace``, reap all."""
        running = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in running:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for proc in self.procs:
            if proc is not None:
                proc.poll()
        self.procs = [None] * self.count

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
