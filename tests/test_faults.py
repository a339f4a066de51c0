"""A minority of slow or stopped nodes does not stop commits; a stopped majority does, clearly.

Real processes, real SIGSTOP/SIGCONT, real HTTP; every wait is bounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from paxgos.testing.http import http_get
from paxgos.testing.procs import LocalNodes

COMMIT = re.compile(r"CommandID: (\d+), Value (-?\d+)\n")


def timed_propose(nodes: LocalNodes, value: int, timeout: float = 15.0) -> tuple[int, str, float]:
    """Propose ``value`` through node 0 as a client would: follow a redirect to the leader,
    and retry while no leader is known (nothing was proposed then)."""
    started = time.monotonic()
    url = f"{nodes.urls[0]}/propose/{value}"
    while True:
        code, headers, body = http_get(url, timeout)
        took = time.monotonic() - started
        if code == 307:
            url = headers["Location"]
        elif code == 503 and "no leader" in body and took < timeout:
            time.sleep(0.05)
            url = f"{nodes.urls[0]}/propose/{value}"
        else:
            return code, body, took


def assert_commits(nodes: LocalNodes, values: range, slower_than: float = 1.0) -> int:
    """Propose each value; each must commit within ``slower_than`` seconds.  The last slot."""
    slot = 0
    for value in values:
        code, body, took = timed_propose(nodes, value)
        match = COMMIT.fullmatch(body)
        assert code == 200 and match, body
        assert took < slower_than, f"proposal took {took:.2f}s"
        slot = int(match.group(1))
    return slot


def test_two_of_five_stopped_still_commit_fast(make_nodes: Callable[..., LocalNodes]) -> None:
    nodes = make_nodes(5)
    assert_commits(nodes, range(1, 4))
    nodes.pause(3)
    nodes.pause(4)
    try:
        # The leader acts on the fastest majority: a stopped minority adds no wait.
        last = assert_commits(nodes, range(100, 120), slower_than=0.5)
    finally:
        nodes.resume(3)
        nodes.resume(4)
    commit = nodes.wait_converged(timeout=10, at_least=last)
    logs = [nodes.history(i) for i in range(5)]
    assert all(log == logs[0] for log in logs) and len(logs[0]) == commit


def test_three_of_five_stopped_fail_clearly_then_recover(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(5, ["--request-timeout", "1.5s"])
    assert_commits(nodes, range(1, 3))
    for i in (2, 3, 4):
        nodes.pause(i)
    try:
        code, body, took = timed_propose(nodes, 4242)
        # The leader hears from no majority: within an election timeout it steps down and
        # says the outcome is unknown (503), before --request-timeout would (504).
        assert code in (503, 504), body
        assert "outcome unknown" in body and body.count("\n") == 1, body
        assert took < 4.0, took  # never a hang
        code, body, _ = timed_propose(nodes, 4343, timeout=1.0)
        assert code == 503 and "no leader" in body, body  # no majority, no leader: 503
    finally:
        for i in (2, 3, 4):
            nodes.resume(i)
    # The cluster goes on, and the timed-out value, still in flight, may now be chosen.
    last = assert_commits(nodes, range(10, 13), slower_than=3.0)
    nodes.wait_converged(timeout=10, at_least=last)
    values = [v for _, v in nodes.history(1)]
    assert values.count(4242) <= 1


def test_a_leader_without_a_majority_serves_no_linearizable_read(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(3, ["--request-timeout", "3s"])
    assert_commits(nodes, range(1, 3))
    for i in (1, 2):
        nodes.pause(i)
    try:
        started = time.monotonic()
        code, _, text = nodes.get(0, "/?linearizable=true")
        # It cannot confirm that it still leads: it waits, steps down within an election
        # timeout and refuses the read.  A local read still answers from its own log.
        assert code == 503 and "no leader" in text and text.count("\n") == 1, (code, text)
        assert time.monotonic() - started < 2.5
        code, _, text = nodes.get(0, "/")
        assert code == 200 and "id 2 val 2" in text, text
    finally:
        for i in (1, 2):
            nodes.resume(i)
    assert_commits(nodes, range(10, 12), slower_than=3.0)
    leader = next(i for i in range(3) if nodes.status(i)["role"] == "leader")
    code, _, text = nodes.get(leader, "/?linearizable=true")
    assert code == 200 and "val 11" in text, text


def test_runtime_fault_control_slow_stall_heal(make_nodes: Callable[..., LocalNodes]) -> None:
    nodes = make_nodes(5, ["--request-timeout", "1.5s"])
    for i in (3, 4):
        code, _, body = nodes.get(i, "/fault/slow?ms=2000", json_body=True)
        assert code == 405  # a control changes state: POST only
    for i in (3, 4):
        code, _, body = nodes.control(i, "/fault/slow?ms=2000")
        assert code == 200 and '"slow_ms": 2000' in body
    assert_commits(nodes, range(1, 10), slower_than=0.5)  # two slow nodes: a minority
    code, _, body = nodes.control(2, "/fault/stall")
    assert code == 200 and '"stalled": true' in body
    code, body, took = timed_propose(nodes, 77)
    assert code in (503, 504) and "outcome unknown" in body, body  # three of five held back
    for i in (2, 3, 4):
        assert nodes.control(i, "/fault/heal")[0] == 200
        assert nodes.status(i)["faults"]["stalled"] is False
    assert_commits(nodes, range(20, 25), slower_than=3.0)
    assert nodes.control(2, "/fault/explode")[0] == 404


def test_demo_fault_flags_delay_answers(make_nodes: Callable[..., LocalNodes]) -> None:
    nodes = make_nodes(3, ["--failure-rate", "100", "--timeout", "300ms"])
    faults = nodes.status(1)["faults"]
    assert faults["failure_rate"] == 100 and faults["timeout_ms"] == 300
    code, body, took = timed_propose(nodes, 5)
    assert code == 200, body
    assert took >= 0.3  # every acceptor answered only after --timeout
    nodes.close()
    nodes = make_nodes(3, ["--endpoint-random-cap", "200ms"])
    assert nodes.status(2)["faults"]["endpoint_random_cap_ms"] == 200
    assert_commits(nodes, range(1, 4))
