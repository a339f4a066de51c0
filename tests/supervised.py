"""A supervisor (``python -m paxgos``) under test: started on free ports, its output read in a
thread, every process it printed killed at the end (``tests/test_supervisor.py``,
``tests/test_dashboard.py``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

NODE_LINE = re.compile(r"node (\d+)  (http://127\.0\.0\.1:\d+)  (leader|follower)  \(pid (\d+)\)")
BACK_LINE = re.compile(r"node (\d+) is back \(pid (\d+)\)")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) paxgos process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"paxgos" in cmdline


def kill(pid: int) -> None:
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Supervisor:
    """``python -m paxgos --nodes N`` (3 by default) in tmp_path, on free ports; its output
    collected line by line."""

    def __init__(self, tmp_path: Path, *args: str, nodes: int = 3) -> None:
        self.data = tmp_path / "data"
        self.nodes = nodes
        command = [sys.executable, "-m", "paxgos", "--nodes", str(nodes), "--starting-port", "0"]
        self.proc = subprocess.Popen(
            [*command, "--data-dir", str(self.data), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        )  # fmt: skip
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.urls: list[str] = []
        self.pids: list[int] = []  # the first pid of each node
        self.seen: set[int] = set()  # every node pid it printed, restarts included

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line)
                started = NODE_LINE.search(line)
                back = BACK_LINE.search(line)
                if started:
                    self.seen.add(int(started.group(4)))
                if back:
                    self.seen.add(int(back.group(2)))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def text(self) -> str:
        with self.changed:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first output line matching ``pattern``, waiting up to ``timeout`` seconds."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (not self.reader.is_alive() and self.proc.poll() is not None):
                    raise AssertionError(f"no line matches {pattern!r}:\n{''.join(self.lines)}")
                self.changed.wait(min(left, 0.2))

    def up(self) -> Supervisor:
        """Wait for the "nodes up" line; note each node's URL and pid."""
        self.wait_for(rf"{self.nodes} nodes up")
        found = [m for m in map(NODE_LINE.search, self.text().splitlines()) if m]
        assert [m.group(1) for m in found] == [str(i) for i in range(self.nodes)], self.text()
        self.urls = [m.group(2) for m in found]
        self.pids = [int(m.group(4)) for m in found]
        return self

    def close(self) -> None:
        """SIGTERM, then SIGKILL whatever is left: the supervisor and every node it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in sorted(self.seen):
            kill(pid)
        self.reader.join(5)
