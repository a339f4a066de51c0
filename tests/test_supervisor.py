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
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from supervised import Supervisor, alive

from paxgos.testing.http import http_get


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
