"""The local supervisor survives a node's death: real processes, kill -9, restarts by policy.

Every test runs ``python -m paxgos --nodes 3`` on free ports with its data in tmp_path, reads the
supervisor's output in a thread, waits with a deadline, and kills every process it saw (the
supervisor, each node pid it printed, a node started by hand) in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from paxgos.testing.http import http_get

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


def status(url: str, timeout: float = 2.0) -> dict[str, object]:
    code, _, body = http_get(url + "/status", timeout)
    assert code == 200, (code, body)
    return json.loads(body)


def answers(url: str) -> bool:
    try:
        return http_get(url + "/status", 1.0)[0] == 200
    except OSError:
        return False


def wait_answers(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(url):
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer /status within {timeout}s")


class Supervisor:
    """``python -m paxgos --nodes 3`` in tmp_path; its output collected line by line."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.data = tmp_path / "data"
        command = [sys.executable, "-m", "paxgos", "--nodes", "3", "--starting-port", "0"]
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
        self.wait_for(r"3 nodes up")
        found = [m for m in map(NODE_LINE.search, self.text().splitlines()) if m]
        assert [m.group(1) for m in found] == ["0", "1", "2"], self.text()
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


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    """Start a supervisor and wait until its nodes are up (``supervisor("--restart", "no")``);
    each is stopped, with every node it started, when the test ends."""
    started: list[Supervisor] = []

    def start(*args: str) -> Supervisor:
        sup = Supervisor(tmp_path, *args)
        started.append(sup)
        return sup.up()

    try:
        yield start
    finally:
        for sup in started:
            sup.close()


def test_a_killed_follower_is_restarted_and_the_others_keep_running(
    supervisor: Callable[..., Supervisor],
) -> None:
    sup = supervisor()
    assert http_get(sup.urls[0] + "/propose/7")[0] == 200
    os.kill(sup.pids[2], signal.SIGKILL)
    sup.wait_for(
        rf"paxgos: node 2 \(pid {sup.pids[2]}\) was killed by SIGKILL; "
        r"2 of 3 nodes running, a majority \(2\) holds$"
    )
    sup.wait_for(r"paxgos: restarting node 2 in 0\.1s \(restart 1\)$")
    back = int(sup.wait_for(r"paxgos: node 2 is back \(pid (\d+)\)").group(1))
    assert back != sup.pids[2] and alive(back)
    assert status(sup.urls[2])["id"] == 2  # the same URL, the same node
    # Its log is still pumped with its prefix: two "listening" lines, the second after the kill.
    listening = re.findall(r"^node 2 \| .* node 2 listening on", sup.text(), re.M)
    assert len(listening) == 2, sup.text()
    # It catches up on what it had, and commits go on through it.
    assert http_get(sup.urls[0] + "/propose/8")[0] == 200
    deadline = time.monotonic() + 10
    while status(sup.urls[2])["commit_index"] < 2:
        assert time.monotonic() < deadline, status(sup.urls[2])
        time.sleep(0.05)
    # Nodes 0 and 1 never stopped.
    assert alive(sup.pids[0]) and alive(sup.pids[1])
    assert not re.search(r"node [01] \(pid \d+\)", sup.text()), sup.text()
    assert [status(url)["id"] for url in sup.urls[:2]] == [0, 1]
    assert sup.proc.poll() is None


def test_restart_no_leaves_the_node_down_and_sigterm_still_stops_all(
    supervisor: Callable[..., Supervisor],
) -> None:
    sup = supervisor("--restart", "no")
    os.kill(sup.pids[2], signal.SIGKILL)
    sup.wait_for(rf"node 2 \(pid {sup.pids[2]}\) was killed by SIGKILL; 2 of 3 nodes running")
    time.sleep(1.0)  # ten times the first back-off: time enough for a restart that must not come
    assert "restarting" not in sup.text() and not answers(sup.urls[2])
    assert answers(sup.urls[0]) and answers(sup.urls[1])
    assert http_get(sup.urls[0] + "/propose/9")[0] == 200  # 2 of 3 still commit
    assert sup.proc.poll() is None
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(10) == 0
    # At once: the supervisor waits for its nodes (a node would also stop by itself within
    # 0.5 s of losing its parent, which is not what this checks).
    assert [pid for pid in sup.pids if alive(pid)] == []
    assert "paxgos: all nodes stopped" in sup.text()


def test_restart_no_exits_1_once_every_node_is_down(supervisor: Callable[..., Supervisor]) -> None:
    sup = supervisor("--restart", "no")
    os.kill(sup.pids[1], signal.SIGKILL)
    sup.wait_for(r"node 1 .* 2 of 3 nodes running, a majority \(2\) holds$")
    os.kill(sup.pids[2], signal.SIGTERM)  # a clean exit is reported too
    sup.wait_for(
        rf"node 2 \(pid {sup.pids[2]}\) exited with 0; 1 of 3 nodes running, "
        r"NO majority \(2 needed\): commits stop until nodes return$"
    )
    assert sup.proc.poll() is None
    os.kill(sup.pids[0], signal.SIGKILL)
    assert sup.proc.wait(10) == 1
    assert "no node is running and none will be restarted" in sup.text()


def test_a_node_restarted_by_hand_finds_the_cluster_id(
    supervisor: Callable[..., Supervisor], tmp_path: Path
) -> None:
    sup = supervisor("--restart", "no")
    os.kill(sup.pids[2], signal.SIGKILL)
    sup.wait_for(rf"node 2 \(pid {sup.pids[2]}\) was killed by SIGKILL")
    identity = (sup.data / "cluster-id").read_text().strip()
    by_hand = [sys.executable, "-m", "paxgos", "node", "--id", "2"]
    by_hand += ["--peers", ",".join(sup.urls), "--data-dir", str(sup.data)]

    wrong = subprocess.run(
        [*by_hand, "--cluster-id", "other"], capture_output=True, text=True, timeout=30,
        cwd=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 1
    message = wrong.stderr.strip()
    assert "\n" not in message, message
    assert message.endswith(
        f"node-2/paxgos.db: was made by cluster {identity}, not other; pass --cluster-id {identity}"
    ), message

    with open(tmp_path / "by-hand.log", "wb") as log:
        node = subprocess.Popen(by_hand, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        try:
            wait_answers(sup.urls[2])
        except AssertionError:
            raise AssertionError((tmp_path / "by-hand.log").read_text()) from None
        assert status(sup.urls[2])["id"] == 2
        assert http_get(sup.urls[0] + "/propose/11")[0] == 200
        node.send_signal(signal.SIGTERM)
        assert node.wait(10) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(10)
    assert sup.proc.poll() is None and "restarting" not in sup.text()
