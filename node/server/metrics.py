"""Prometheus metrics of one node (its own registry, served at /metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class ChainCollector(Collector):
    """The chain client's plain counters (node.chain.rpc.RpcStats, node.chain.tx.TxStats) read at scrape
    time: node/chain stays free of prometheus."""

    def __init__(self, rpc: Any, tx: Any | None) -> None:
        self.rpc, self.tx = rpc, tx

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        r = self.rpc
        yield CounterMetricFamily("node_rpc_requests", "JSON-RPC requests made", value=r.requests)
        retries = CounterMetricFamily("node_rpc_retries", "JSON-RPC tries retried, by failure", labels=["kind"])
        for kind, n in sorted(r.retries.items()):
            retries.add_metric([kind], n)
        yield retries
        yield CounterMetricFamily("node_rpc_failovers", "Switches to the next RPC URL", value=r.failovers)
        yield CounterMetricFamily("node_rpc_unavailable", "Requests failed after every retry", value=r.unavailable)
        yield CounterMetricFamily("node_rpc_errors", "JSON-RPC error answers", value=r.rpc_errors)
        if self.tx is None:
            return
        t = self.tx
        tx = CounterMetricFamily("node_tx", "Transaction sender events", labels=["event"])
        for name in ("sent", "replaced", "resent", "gaps", "nonce_resyncs", "underpriced", "fee_capped",
                     "receipt_timeouts"):
            tx.add_metric([name], getattr(t, name))
        yield tx
        yield GaugeMetricFamily("node_tx_in_flight_at_start", "Own transactions pending when the node started",
                                value=t.in_flight_at_start)


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
        self.aggregate_txs = Counter("node_aggregate_txs", "commitMiniblocks sent as the slot's aggregator",
                                     registry=r)
        self.aggregate_headers = Counter("node_aggregate_headers", "Headers sent as the aggregator (all leaders)",
                                         registry=r)
        self.aggregate_dropped = Counter("node_aggregate_dropped", "Waiting headers left out: the contract would "
                                         "reject them now (stale, or invalid)", registry=r)
        self.aggregate_batch = Histogram("node_aggregate_batch_headers", "Headers per aggregator transaction",
                                         registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.aggregate_wait = Histogram("node_aggregate_wait_seconds", "A hand-off's wait at the aggregator: "
                                        "taken -> its transaction sent", registry=r,
                                        buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 4))
        self.handoffs = Counter("node_handoffs", "Hand-offs of this leader's headers to the aggregator, by outcome",
                                ["result"], registry=r)
        self.gas_spent = Counter("node_gas_spent", "Gas used by this node's transactions", registry=r)
        self.commit_latency = Histogram("node_commit_latency_seconds",
                                        "Event accepted here -> its block applied here", registry=r,
                                        buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
        self.drafts_late = Counter("node_drafts_late", "Drafts dropped past their attempt's send window "
                                   "(node/server/window.py), by the tick stage that found them late", ["stage"],
                                   registry=r)
        self.handoff_not_resent = Counter("node_handoff_not_resent", "Handed-off headers not sent again by the "
                                          "leader: reveal spent, or the aggregator may still send them",
                                          ["why"], registry=r)
        self.tick_seconds = Histogram("node_tick_seconds", "A leader tick that built headers: votes to commit+apply",
                                      registry=r, buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16))
        self.events_committed = Counter("node_events_committed", "Events in applied blocks", registry=r)
        self.peers_reachable = Gauge("node_peers_reachable", "Peers that answered recently", registry=r)
        self.pool_size = Gauge("node_pool_size", "Events in the mini-pool", registry=r)
        self.chain_block = Gauge("node_chain_block", "Last chain block scanned", registry=r)
        self.peer_refused = Counter("node_peer_refused", "Peer requests refused at the edge (401/403)", ["status"],
                                    registry=r)
        self.quota_refused = Counter("node_quota_refused", "Events refused by a mini-pool quota (429)", ["quota"],
                                     registry=r)
        self.final_block = Gauge("node_final_block", "Newest chain block counted final (confirmations/tag)",
                                 registry=r)
        self.reorgs = Counter("node_reorgs", "Chain reorgs detected under the cursor or of own commits", registry=r)
        self.rolled_back_blocks = Counter("node_rolled_back_blocks", "Mini-blocks undone by a reorg", registry=r)
        self.rolled_back_events = Counter("node_rolled_back_events", "Events returned to the pool by a reorg",
                                          registry=r)
        self.state_mismatch = Counter("node_state_mismatch", "Committed blocks whose stateRoot differs from the"
                                      " members computed here (not applied)", registry=r)
        self.streams_behind = Gauge("node_streams_behind", "Streams whose local head is behind the chain", registry=r)
        self.snapshots = Counter("node_snapshots", "Snapshots taken here, installed from a peer, or refused",
                                 ["result"], registry=r)
        self.events_pruned = Counter("node_events_pruned", "Committed events dropped by retain_blocks", registry=r)

    def watch_chain(self, rpc_stats: Any, tx_stats: Any | None) -> None:
        self.registry.register(ChainCollector(rpc_stats, tx_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)
