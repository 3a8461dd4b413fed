"""Prometheus metrics of one node (its own registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events_accepted = Counter("node_events_accepted", "Events accepted into the mini-pool",
                                       ["source"], registry=r)
        self.events_rejected = Counter("node_events_rejected", "Events refused", ["reason"], registry=r)
        self.blocks_led = Counter("node_blocks_led", "Headers this node led and submitted", registry=r)
        self.blocks_committed = Counter("node_blocks_committed", "Blocks applied locally (committed on chain)",
                                        registry=r)
        self.blocks_led_committed = Counter("node_blocks_led_committed", "Blocks led here and accepted on chain",
                                            registry=r)
        self.blocks_rejected = Counter("node_blocks_rejected", "Headers led here and rejected", ["reason"],
                                       registry=r)
        self.commit_txs = Counter("node_commit_txs", "commitMiniblocks transactions sent", ["result"], registry=r)
        self.gas_spent = Counter("node_gas_spent", "Gas used by this node's transactions", registry=r)
        self.commit_latency = Histogram("node_commit_latency_seconds",
                                        "Event accepted here -> its block applied here", registry=r,
                                        buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
        self.events_committed = Counter("node_events_committed", "Events in applied blocks", registry=r)
        self.peers_reachable = Gauge("node_peers_reachable", "Peers that answered recently", registry=r)
        self.pool_size = Gauge("node_pool_size", "Events in the mini-pool", registry=r)
        self.chain_block = Gauge("node_chain_block", "Last chain block scanned", registry=r)
        self.peer_refused = Counter("node_peer_refused", "Peer requests refused at the edge (401/403)", ["status"],
                                    registry=r)
        self.quota_refused = Counter("node_quota_refused", "Events refused by a mini-pool quota (429)", ["quota"],
                                     registry=r)
        self.streams_behind = Gauge("node_streams_behind", "Streams whose local head is behind the chain", registry=r)
        self.snapshots = Counter("node_snapshots", "Snapshots taken here, installed from a peer, or refused",
                                 ["result"], registry=r)
        self.events_pruned = Counter("node_events_pruned", "Committed events dropped by retain_blocks", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
