"""Prometheus metrics of the indexer (``ita_indexer_*``), in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

import stf

__all__ = ["CONTENT_TYPE_LATEST", "IndexerMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class IndexerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.info = Gauge(
            "ita_indexer_info",
            "Constant 1, labelled with the STF build the indexer replays with (pure or compiled).",
            ["stf_build"],
            registry=r,
        )
        self.info.labels(stf_build=stf.BUILD).set(1)
        # ita_indexer_process_cpu_seconds_total, _resident_memory_bytes, _open_fds, ... (Linux)
        ProcessCollector(namespace="ita_indexer", registry=r)
        self.height = Gauge("ita_indexer_height", "Latest block height indexed and served.", registry=r)
        self.node_height = Gauge("ita_indexer_node_height", "Latest height reported by the node.", registry=r)
        self.lag_blocks = Gauge(
            "ita_indexer_lag_blocks",
            "Blocks the indexer is behind the node (last known node height).",
            registry=r,
        )
        self.seconds_since_block = Gauge(
            "ita_indexer_seconds_since_block",
            "Seconds since the last block arrived from the node.",
            registry=r,
        )
        self.node_up = Gauge(
            "ita_indexer_node_connected", "1 when the node's stream is connected.", registry=r
        )
        self.reconnects = Gauge(
            "ita_indexer_node_reconnects", "Times the block stream was re-opened.", registry=r
        )
        self.blocks = Counter("ita_indexer_blocks", "Blocks verified and applied.", registry=r)
        self.txs = Counter("ita_indexer_txs", "Transactions replayed.", registry=r)
        self.apply_seconds = Histogram(
            "ita_indexer_block_apply_seconds",
            "Verify + replay + describe time per block.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ws_connections = Gauge("ita_indexer_ws_connections", "Open WebSocket connections.", registry=r)
        self.ws_subscriptions = Gauge(
            "ita_indexer_ws_subscriptions", "Active WebSocket subscriptions.", registry=r
        )
        self.ws_messages = Counter("ita_indexer_ws_messages_sent", "WebSocket messages sent.", registry=r)
        self.ws_encoded = Counter(
            "ita_indexer_ws_updates_encoded", "Updates encoded for fan-out (once per topic).", registry=r
        )
        self.fanout_seconds = Histogram(
            "ita_indexer_fanout_latency_seconds",
            "From a block's arrival to its updates being queued for every subscriber.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.slow_clients = Counter(
            "ita_indexer_ws_slow_clients", "Slow WebSocket clients by action taken.", ["action"], registry=r
        )
        self.ws_errors = Counter(
            "ita_indexer_ws_errors", "Error replies to WebSocket requests.", ["code"], registry=r
        )
        self.http_requests = Counter(
            "ita_indexer_http_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
