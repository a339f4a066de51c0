"""``GET /metrics`` and ``GET /events`` on real clusters: what a Prometheus scrape and the
dashboard read, parsed as they would parse it (``prometheus_client.parser``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from paxgos.net.buckets import Buckets, cumulative
from paxgos.net.events import GAP, EventLog
from paxgos.testing.http import http_get
from paxgos.testing.procs import LocalNodes

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(nodes: LocalNodes, i: int) -> Samples:
    """Node ``i``'s metrics: ``(sample name, sorted labels) -> value``."""
    code, got, body = nodes.get(i, "/metrics")
    assert code == 200, body
    assert got["Content-Type"].startswith("text/plain"), got
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_every_node_counts_the_commits_rounds_and_fsyncs_of_a_real_cluster(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(5)
    leader = nodes.wait_leader()
    proposed = 0
    for v in range(12):
        code, _, body = nodes.get(leader, f"/propose/{v}")
        assert code == 200, body
        proposed += 1
    code, _, body = nodes.get(leader, "/autopropose?count=40")
    assert code == 200 and body.count("CommandID") == 40, body
    proposed += 40
    nodes.wait_converged(at_least=proposed)
    scraped = [scrape(nodes, i) for i in range(5)]
    for i, samples in enumerate(scraped):
        # A fresh cluster: every slot holds a client's value, on every node.
        assert value(samples, "paxgos_commits_total") == proposed, i
        assert value(samples, "paxgos_commit_index") == proposed, i
        assert value(samples, "paxgos_fsync_duration_seconds_count") > 0, i
        assert value(samples, "paxgos_store_writes_total") > 0, i
        assert value(samples, "paxgos_leader_id") == leader, i
        assert value(samples, "paxgos_storage_failures_total") == 0, i
        assert value(samples, "paxgos_is_leader") == (1 if i == leader else 0), i
        assert value(samples, "paxgos_role", role="leader") == (1 if i == leader else 0), i
        assert value(samples, "process_resident_memory_bytes") > 0, i
    ours = scraped[leader]
    rounds = value(ours, "paxgos_rounds_total")
    assert rounds > 0
    # Every round is one observation of the batch size; the sizes add up to the values sent.
    assert value(ours, "paxgos_batch_size_count") == rounds
    assert value(ours, "paxgos_batch_size_sum") == proposed
    assert value(ours, "paxgos_batch_size_bucket", le="+Inf") == rounds
    assert value(ours, "paxgos_client_requests_total", outcome="committed") == proposed
    assert value(ours, "paxgos_proposal_duration_seconds_count") == proposed
    assert 0 < value(ours, "paxgos_proposal_duration_seconds_sum") < proposed * 5.0
    assert value(ours, "paxgos_elections_total") >= 1
    assert value(ours, "paxgos_proposal_queue_length") == 0
    # Every round reaches at least the two followers of a majority (thrifty rounds skip the
    # other two, which still get Learns).
    peers = [peer for peer in range(5) if peer != leader]
    sent = [value(ours, "paxgos_peer_messages_sent_total", to=str(peer)) for peer in peers]
    assert sum(sent) >= 2 * rounds and min(sent) > 0, sent
    for peer in peers:
        assert value(ours, "paxgos_peer_round_trip_time_seconds_count", to=str(peer)) > 0
        assert value(ours, "paxgos_peer_messages_dropped_total", to=str(peer)) == 0
        assert value(scraped[peer], "paxgos_rounds_total") == 0
        assert value(scraped[peer], "paxgos_leader_changes_seen_total") >= 1


def test_metrics_show_a_dead_peer_a_stalled_node_and_a_catch_up(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(3)
    leader = nodes.wait_leader()
    down, other = [i for i in range(3) if i != leader]
    assert nodes.get(leader, "/propose/1")[0] == 200
    nodes.kill(down)
    before = value(scrape(nodes, leader), "paxgos_peer_send_failures_total", to=str(down))
    code, _, body = nodes.get(leader, "/autopropose?count=30")
    assert code == 200 and body.count("CommandID") == 30, body
    time.sleep(0.5)  # heartbeats to the dead node fail meanwhile
    after = value(scrape(nodes, leader), "paxgos_peer_send_failures_total", to=str(down))
    assert after > before
    nodes.start(down)
    nodes.wait_converged(at_least=31)
    # The restarted node learned the 30 slots it missed by catch-up (or from the Accepts it
    # holds): its commit index is whole, and what catch-up brought is counted.
    back = scrape(nodes, down)
    assert value(back, "paxgos_commit_index") == 31
    assert value(back, "paxgos_catchup_entries_total") > 0
    assert value(scrape(nodes, leader), "paxgos_catchup_served_entries_total") > 0
    assert nodes.control(other, "/fault/stall")[0] == 200
    stalled = scrape(nodes, other)
    assert value(stalled, "paxgos_fault_stalled") == 1
    assert nodes.control(other, "/fault/slow?ms=250")[0] == 200
    assert value(scrape(nodes, other), "paxgos_fault_slow_seconds") == 0.25
    assert nodes.control(other, "/fault/heal")[0] == 200
    assert value(scrape(nodes, other), "paxgos_fault_stalled") == 0


def test_metrics_come_as_openmetrics_when_asked(make_nodes: Callable[..., LocalNodes]) -> None:
    nodes = make_nodes(3)
    code, headers, body = http_get(
        nodes.urls[0] + "/metrics", 10.0, False, "GET",
        {"Accept": "application/openmetrics-text; version=1.0.0"},
    )  # fmt: skip
    assert code == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n") and "paxgos_commits_total" in body


def test_events_need_the_secret_and_show_the_phases_with_ballots_and_slots(
    make_nodes: Callable[..., LocalNodes],
) -> None:
    nodes = make_nodes(3)
    leader = nodes.wait_leader()
    code, _, body = nodes.get(leader, "/events")
    assert code == 401 and "cluster secret" in body, body
    url = nodes.urls[leader] + "/events"
    first = events(nodes, url)
    assert first["node"] == leader and first["events"] == []  # nothing recorded unwatched
    # At most one Accept or Learn exchange is recorded per 100 ms (GAP), and the heartbeat a
    # thrifty round's skipped follower gets every 100 ms may take the place each time: so
    # propose back to back for longer than the gap, when an Accept is nearly always the next
    # exchange, and look for the Accept of any slot proposed.
    slots: set[int] = set()
    accepts: list[dict[str, Any]] = []
    value = 77
    for _ in range(20):
        burst_ends = time.monotonic() + 2.5 * GAP
        for _ in range(200):
            code, _, body = nodes.get(leader, f"/propose/{value}")
            assert code == 200, body
            slots.add(int(body.split(",")[0].split(": ")[1]))
            value += 1
            if time.monotonic() > burst_ends:
                break
        time.sleep(0.05)  # the Accepted answers come back
        seen = events(nodes, url, first["seq"])
        accepts = [e for e in seen["events"] if e["kind"] == "accept" and e["slots"][0] in slots]
        if accepts:
            break
    kinds = {(e["kind"], e["from"], e["to"]) for e in seen["events"]}
    assert accepts, kinds
    peer = accepts[0]["to"]
    assert peer != leader and ("accepted", peer, leader) in kinds, kinds
    accept = accepts[0]
    slot = accept["slots"][0]  # one client, one value a round
    assert accept["slots"] == [slot, slot] and accept["ballot"][1] == leader, accept
    assert seen["seen"] >= seen["recorded"] > 0
    # The latency histogram's counts, as /metrics has them: one per committed proposal.
    assert len(seen["latency"]["counts"]) == len(seen["latency"]["bounds"]) + 1
    assert sum(seen["latency"]["counts"]) == len(slots), (seen["latency"], len(slots))
    assert seen["status"]["role"] == "leader" and seen["status"]["commit_index"] >= slot - 1
    later = events(nodes, url, seen["seq"])
    assert all(e["seq"] > seen["seq"] for e in later["events"])
    code, _, body = http_get(url + "?after=x", 5.0, False, "GET", nodes.auth_headers())
    assert code == 400 and "query parameter after " in body and body.count("\n") == 1, body


def events(nodes: LocalNodes, url: str, after: int = 0) -> dict[str, Any]:
    code, _, body = http_get(f"{url}?after={after}", 5.0, False, "GET", nodes.auth_headers())
    assert code == 200, body
    return json.loads(body)


# --- single-module units ------------------------------------------------------------------------


def test_buckets_count_each_observation_once_at_its_upper_bound() -> None:
    buckets = Buckets((0.1, 1.0))
    for x in (0.05, 0.1, 0.5, 1.0, 3.0):
        buckets.observe(x)
    assert buckets.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert buckets.total == 4.65
    assert cumulative([1, 2, 4], [1, 0, 3]) == [("1.0", 1), ("2.0", 1), ("4.0", 4), ("+Inf", 4)]


def test_the_event_log_samples_whole_exchanges_and_always_keeps_prepares() -> None:
    from paxgos.core.ballot import Ballot
    from paxgos.core.messages import Accept, Accepted, Prepare, Promise

    log = EventLog(0, gap=3600.0)
    ballot = Ballot(2, 0)
    first = Accept(0, ballot, 1, (5, 6), 0)
    log.sent(1, first)  # off: recording is the caller's choice (``on``), the log just counts
    log.sent(2, first)
    log.answered(1, first, Accepted(1, ballot, 1, 2, True, ballot))
    second = Accept(0, ballot, 3, (7,), 2)
    log.sent(1, second)  # within the gap: not sampled, but seen
    prepare = Prepare(0, ballot, 4)
    log.sent(1, prepare)
    log.answered(1, prepare, Promise(1, ballot, True, ballot, 3))
    kinds = [(r["kind"], r["from"], r["to"], r.get("slots")) for r in log.since(0)]
    assert kinds == [
        ("accept", 0, 1, [1, 2]),
        ("accept", 0, 2, [1, 2]),
        ("accepted", 1, 0, [1, 2]),
        ("prepare", 0, 1, [4, None]),
        ("promise", 1, 0, None),
    ]
    assert log.seen == 6 and log.recorded == 5
    assert [r["seq"] for r in log.since(3)] == [4, 5] and log.since(5) == []
    log.watch(100.0)
    log.tick(102.0)
    assert log.on
    log.tick(104.0)
    assert not log.on
