"""Prometheus metrics of one node: what ``GET /metrics`` serves, in the text format.

Names and units follow etcd's (``etcd_disk_wal_fsync_duration_seconds``,
``etcd_network_peer_round_trip_time_seconds``, ``etcd_server_leader_changes_seen_total``...)
with a ``paxgos_`` prefix: counters end in ``_total``, durations are histograms in seconds.

Nothing on the hot path touches ``prometheus_client``.  The core and the host count in plain
integers and lists (``Node.rounds_sent``, ``Node.round_sizes``, ``Transport.sent``, ...), and
durations go into ``paxgos.net.buckets.Buckets``, a list of counts indexed by ``bisect`` (a few
hundred nanoseconds, against microseconds and a lock for a ``prometheus_client.Histogram``).
``NodeCollector`` reads them all when a scrape asks, into the node's own ``CollectorRegistry``
(never the process-global one: tests run several hosts in one process).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from paxgos.core.node import CANDIDATE, FOLLOWER, LEADER, PRECANDIDATE
from paxgos.net.buckets import Buckets, cumulative
from paxgos.net.host import NodeHost

ROLES = (FOLLOWER, PRECANDIDATE, CANDIDATE, LEADER)


class NodeCollector(Collector):
    """Every ``paxgos_`` metric of one node, read from the host, its core and its transport
    when a scrape asks."""

    def __init__(self, host: NodeHost):
        self.host = host

    def collect(self) -> Iterator[Metric]:
        host = self.host
        node = host.node
        transport = host.transport
        peers = [str(p) for p in node.peers]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"paxgos_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"paxgos_{name}", doc, value=value)

        def per_peer(family: CounterMetricFamily | GaugeMetricFamily, values: Sequence[float]):
            for peer in node.peers:
                family.add_metric([str(peer)], values[peer])
            return family

        # --- the log and the rounds -----------------------------------------------------------
        yield counter(
            "commits", "Log slots this node applied (chosen, in slot order) since it started",
            node.commit - host.start_commit,
        )  # fmt: skip
        yield counter("rounds", "Accept rounds (phase 2a batches) this node sent", node.rounds_sent)
        yield counter(
            "rounds_widened",
            "Thrifty rounds sent on to the peers they skipped, a target being late",
            node.rounds_widened,
        )
        # Node.round_sizes[k] counts rounds of 2**(k-1)+1 .. 2**k values: le = 2**k.
        sizes = node.round_sizes
        batch = HistogramMetricFamily(
            "paxgos_batch_size", "Values per Accept round this node sent (re-proposals included)"
        )
        batch.add_metric(
            [], cumulative([2**k for k in range(len(sizes))], sizes), sum_value=node.values_sent
        )
        yield batch
        outcomes = CounterMetricFamily(
            "paxgos_client_requests",
            "Client requests (proposals, linearizable reads) this node ended, by outcome",
            labels=["outcome"],
        )
        for outcome, count in sorted(host.outcome_counts.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        yield histogram(
            "proposal_duration_seconds",
            "From a proposal's arrival at this node to its answer, for committed proposals",
            host.proposal_latency,
        )
        yield gauge(
            "proposal_queue_length", "Proposals waiting for an Accept round", len(node.queue)
        )
        yield gauge(
            "proposals_pending", "Client requests waiting for their outcome", len(host._waiters)
        )
        yield gauge("rounds_in_flight", "Accept rounds sent and not yet chosen", len(node.rounds))

        # --- roles, ballots, commit index -----------------------------------------------------
        role = GaugeMetricFamily("paxgos_role", "1 for this node's current role", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1.0 if node.role == name else 0.0)
        yield role
        yield gauge("is_leader", "1 if this node leads", 1.0 if node.role == LEADER else 0.0)
        leader = node.leader()
        yield gauge("has_leader", "1 if this node knows a live leader", float(leader is not None))
        yield gauge("leader_id", "The node this one knows leads (-1: none)", leader_or(leader))
        yield gauge("ballot_round", "Round of this node's own ballot (0 following)", node.ballot[0])
        yield gauge("promised_round", "Round of the highest ballot promised", node.promised[0])
        yield gauge("leader_ballot_round", "Round of the followed leader's ballot",
                    node.leader_ballot[0])  # fmt: skip
        yield gauge("commit_index", "Highest slot of the log on disk", host.store.commit_index())
        yield gauge("chosen_index", "Highest slot known chosen and applied in memory", node.commit)
        yield gauge("known_commit_index", "Highest commit index heard of", node.known_commit)
        yield counter("elections", "Candidacies this node started (phase 1 runs)", node.elections)
        yield counter(
            "leader_changes_seen", "Times this node saw leadership move to a new ballot",
            node.leader_changes,
        )  # fmt: skip

        # --- peers ------------------------------------------------------------------------------
        yield per_peer(
            CounterMetricFamily(
                "paxgos_peer_messages_sent", "Messages sent to each peer", labels=["to"]
            ),
            transport.sent,
        )
        yield per_peer(
            CounterMetricFamily(
                "paxgos_peer_messages_dropped",
                "Messages to each peer dropped unsent (too many unanswered, or stopping)",
                labels=["to"],
            ),
            transport.dropped_to,
        )
        yield per_peer(
            CounterMetricFamily(
                "paxgos_peer_send_failures",
                "Messages to each peer that got no usable answer (lost, refused, timed out)",
                labels=["to"],
            ),
            transport.failures,
        )
        rtt = HistogramMetricFamily(
            "paxgos_peer_round_trip_time_seconds",
            "From a message's send to its peer's answer",
            labels=["to"],
        )
        for peer in peers:
            buckets = transport.rtt[int(peer)]
            rtt.add_metric([peer], buckets.cumulative(), sum_value=buckets.total)
        yield rtt
        lag = GaugeMetricFamily(
            "paxgos_peer_lag_entries",
            "Slots each peer's commit index trails this node's (as last reported to it)",
            labels=["to"],
        )
        for peer in node.peers:
            commit = node.peer_commit.get(peer)
            if commit is not None:
                lag.add_metric([str(peer)], max(0, node.commit - commit))
        yield lag
        yield counter(
            "refused_messages", "Peer messages dropped by the core's bounds", node.dropped
        )

        # --- catch-up and storage ---------------------------------------------------------------
        yield counter("catchup_entries", "Slots applied from catch-up replies", node.caught_up)
        yield counter(
            "catchup_served_entries", "Chosen entries sent to peers catching up",
            host.catchup_served,
        )  # fmt: skip
        yield histogram(
            "fsync_duration_seconds", "Duration of each group commit's fsync", host.fsync_latency
        )
        yield counter("store_writes", "Group commits (a transaction, an fsync)", host.store_writes)
        yield counter(
            "storage_failures", "Failed writes and damaged reads of this node's store",
            host.storage_failures,
        )  # fmt: skip
        failed = float(bool(host.failed))
        yield gauge("storage_failed", "1 once a failed write stopped this node", failed)

        # --- injected faults --------------------------------------------------------------------
        yield gauge("fault_stalled", "1 while this node holds every protocol message",
                    float(host.faults.stalled))  # fmt: skip
        yield gauge("fault_slow_seconds", "Delay added to every protocol message", host.faults.slow)


def histogram(name: str, doc: str, buckets: Buckets) -> HistogramMetricFamily:
    family = HistogramMetricFamily(f"paxgos_{name}", doc)
    family.add_metric([], buckets.cumulative(), sum_value=buckets.total)
    return family


def leader_or(leader: int | None) -> float:
    return -1.0 if leader is None else float(leader)


def node_registry(host: NodeHost) -> CollectorRegistry:
    """The node's registry: its ``paxgos_`` metrics and the usual ``process_`` and
    ``python_info`` ones."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(host))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and content type, in the format the ``Accept`` header asks for (the
    Prometheus text format by default, OpenMetrics if asked)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
