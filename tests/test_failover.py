"""Failover on real node processes: a killed leader is replaced, clients are told where to go
(307 to a leader heard from, 503 with Retry-After when none), /status and the logs show it."""

from __future__ import annotations

import time
from collections.abc import Callable

from paxgos.testing.procs import LocalNodes


def test_a_killed_leader_is_replaced_and_the_election_is_logged(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(3, ["--log-level", "debug"])
    assert nodes.wait_leader() == 0  # the distinguished proposer leads at start
    assert nodes.get(0, "/propose/1")[0] == 200
    nodes.kill(0)
    new = nodes.wait_leader(timeout=5.0, nodes=[1, 2])
    other = 3 - new
    code, headers, body = nodes.get(other, "/propose/2")
    assert code == 307 and headers["Location"] == f"{nodes.urls[new]}/propose/2", body
    code, _, body = nodes.get(new, "/propose/3")
    assert code == 200 and body.startswith("CommandID: 2, Value 3"), body
    log = nodes.log_path(new).read_text()
    for phrase in (
        "election timeout: no word from a leader",
        "probe for ballot",
        "would promise for",
        "prepare ballot",
        "promise for",
        f"node {new}: leading with ballot",
    ):
        assert phrase in log, phrase
    assert f"node {other}: following node {new}" in nodes.log_path(other).read_text()
    # /status: who leads and where, how long since this node heard from it, and per peer.
    status = nodes.status(other)
    assert status["role"] == "follower" and status["leader"] == new
    assert status["leader_url"] == nodes.urls[new]
    assert 0 <= status["since_leader_s"] < status["election_timeout_s"]
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # the next heartbeat's answer reports the last slot
        peers = {p["id"]: p for p in nodes.status(new)["peer_state"]}
        if peers[other]["lag"] == 0:
            break
        time.sleep(0.05)
    assert peers[other]["reachable"] and peers[other]["lag"] == 0, peers
    assert not peers[0]["reachable"] and peers[0]["url"] == nodes.urls[0]


def test_without_a_majority_no_leader_is_named_and_proposals_get_503(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(3)
    nodes.kill(0)
    nodes.kill(1)
    time.sleep(1.2)  # over an election timeout: node 2 has heard from no leader since
    code, headers, body = nodes.get(2, "/propose/5")
    assert code == 503 and headers["Retry-After"] == "1", body
    assert body.startswith("error: no leader is known") and body.count("\n") == 1, body
    status = nodes.status(2)
    assert status["leader"] is None and status["leader_url"] is None


def test_the_default_log_says_one_line_per_leader_change(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(3)
    nodes.wait_leader()
    sizes = [nodes.log_path(i).stat().st_size for i in range(3)]
    nodes.kill(0)
    new = nodes.wait_leader(timeout=5.0, nodes=[1, 2])
    for i in (1, 2):
        nodes.get(new, f"/propose/{i}")
        with open(nodes.log_path(i)) as log:
            log.seek(sizes[i])
            lines = log.read().splitlines()
        expected = "leading with ballot" if i == new else f"following node {new}"
        about_leaders = [
            line
            for line in lines
            if any(w in line for w in ("leading", "following", "outbid", "stepping down"))
        ]
        assert len(about_leaders) == 1 and expected in about_leaders[0], lines


def test_the_election_timeout_is_an_option(make_nodes: Callable[..., LocalNodes]) -> None:
    nodes = make_nodes(3, ["--election-timeout", "2s"])
    assert nodes.status(1)["election_timeout_s"] == 2.0


def test_a_follower_back_from_a_pause_does_not_depose_the_leader(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(3)
    leader = nodes.wait_leader()
    ballot = nodes.status(leader)["ballot"]
    follower = (leader + 1) % 3
    nodes.pause(follower)  # SIGSTOP: its election timer is overdue when it wakes
    time.sleep(1.5)
    nodes.resume(follower)
    time.sleep(1.5)
    assert nodes.wait_leader() == leader and nodes.status(leader)["ballot"] == ballot
    assert all(nodes.status(i)["elections"] == (1 if i == leader else 0) for i in range(3))
    assert nodes.get(follower, "/propose/9")[0] == 307
