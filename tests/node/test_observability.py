"""node/observability.py: metrics exposition, the /metrics endpoint, JSON logs, tracing."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from node.observability import (
    SPAN_BLOCK_COMMIT,
    SPAN_HEIGHT,
    SPAN_TX_SUBMIT,
    JsonFormatter,
    MetricsServer,
    NodeMetrics,
    setup_tracing,
)

EXPECTED = {
    "ita_node_info": "gauge",
    "ita_consensus_height": "gauge",
    "ita_consensus_round": "gauge",
    "ita_consensus_rounds": "counter",
    "ita_block_interval_seconds": "histogram",
    "ita_commit_latency_seconds": "histogram",
    "ita_block_txs": "histogram",
    "ita_evidence": "counter",
    "ita_syncing": "gauge",
    "ita_mempool_txs": "gauge",
    "ita_mempool_bytes": "gauge",
    "ita_verify_backlog_txs": "gauge",
    "ita_tx_verify_latency_seconds": "histogram",
    "ita_txs_verified": "counter",
    "ita_verify_requests": "counter",
    "ita_block_apply_latency_seconds": "histogram",
    "ita_block_stage_seconds": "histogram",
    "ita_block_txs_verified_inline": "counter",
    "ita_tx_admissions": "counter",
    "ita_peers_connected": "gauge",
    "ita_peer_messages_received": "counter",
    "ita_peer_messages_sent": "counter",
    "ita_peer_messages_dropped": "counter",
    "ita_peer_handshake_failures": "counter",
    "ita_peer_disconnects": "counter",
    "ita_stream_blocks_subscribers": "gauge",
    "ita_process_cpu_seconds": "counter",
    "ita_process_resident_memory_bytes": "gauge",
    "ita_verify_worker_cpu_seconds": "counter",
}


def exercised_metrics() -> NodeMetrics:
    m = NodeMetrics()
    m.set_info("ita-devnet", "node0", "pure")
    m.height.set(12)
    m.round.set(1)
    m.rounds.inc(3)
    m.block_interval.observe(0.6)
    m.commit_latency.observe(0.4)
    m.block_txs.observe(250)
    m.evidence.labels(kind="duplicate_vote").inc()
    m.mempool_txs.set(10)
    m.mempool_bytes.set(4096)
    m.verify_backlog.labels(state="queued").set(300)
    m.tx_verify_latency.observe(0.002)
    m.block_apply_latency.observe(0.01)
    m.block_stage_latency.labels(stage="execute").observe(0.008)
    m.txs_verified_inline.inc(7)
    m.tx_admissions.labels(status="ok").inc()
    m.peers_connected.set(2)
    m.peer_messages_received.labels(kind="consensus").inc()
    m.peer_messages_sent.labels(kind="txs").inc()
    m.peer_messages_dropped.labels(reason="garbage").inc()
    m.peer_handshake_failures.labels(reason="wrong_chain").inc()
    m.peer_disconnects.labels(reason="closed").inc()
    m.watch_verify_workers(lambda: [os.getpid()])  # a live process standing in for a worker
    return m


def test_exposition_parses_with_every_metric_typed_and_documented() -> None:
    text = exercised_metrics().exposition().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in EXPECTED.items():
        assert name in families, name
        assert families[name].type == kind, name
        assert families[name].documentation, name
    assert all(name.startswith("ita_") for name in families)
    # HELP and TYPE lines precede every family; counters are exposed with _total
    for name in EXPECTED:
        assert f"# HELP {name}" in text and f"# TYPE {name}" in text
    assert "ita_consensus_rounds_total 3.0" in text
    assert 'ita_peer_handshake_failures_total{reason="wrong_chain"} 1.0' in text
    assert "ita_block_interval_seconds_bucket" in text
    assert 'ita_block_stage_seconds_count{stage="execute"} 1.0' in text
    assert "ita_block_txs_verified_inline_total 7.0" in text
    assert "_created" not in text  # no creation-timestamp series


def test_two_metric_sets_do_not_collide() -> None:
    a, b = NodeMetrics(), NodeMetrics()
    a.height.set(5)
    assert b"ita_consensus_height 0.0" in b.exposition()


def test_metrics_server_serves_the_exposition() -> None:
    async def main() -> tuple[int, str, str]:
        metrics = exercised_metrics()
        server = MetricsServer(metrics, "127.0.0.1:0")
        await server.start()
        try:
            assert server.port != 0
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{server.port}/metrics") as resp:
                    return resp.status, resp.headers["Content-Type"], await resp.text()
        finally:
            await server.stop()

    status, content_type, body = asyncio.run(main())
    assert status == 200 and content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body)}
    assert {"ita_consensus_height", "ita_peers_connected"} <= names


def test_json_log_lines_parse_with_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ita.test.json")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("committed block %d", 7, extra={"height": 7, "round": 0, "tx_hash": b"\x01\xab"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("apply failed", extra={"height": 8})
        logger.warning('quote " and \n newline')
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["msg"] == "committed block 7" and first["level"] == "info"
    assert first["logger"] == "ita.test.json" and first["ts"].endswith("Z")
    assert (first["height"], first["round"], first["tx_hash"]) == (7, 0, "01ab")
    assert second["level"] == "error" and "ValueError: boom" in second["exc"] and second["height"] == 8
    assert third["msg"] == 'quote " and \n newline'


def test_tracing_in_memory_records_nested_spans() -> None:
    tracing = setup_tracing(None, moniker="node0", in_memory=True)
    with tracing.span(SPAN_HEIGHT, height=3):
        with tracing.span(SPAN_TX_SUBMIT, tx_hash=b"\xaa\xbb", skipped=None):
            pass
        with tracing.span(SPAN_BLOCK_COMMIT, height=3, txs=2):
            pass
    assert tracing.memory is not None and not tracing.exporting and tracing.recording
    spans = {s.name: s for s in tracing.memory.get_finished_spans()}
    assert set(spans) == {SPAN_HEIGHT, SPAN_TX_SUBMIT, SPAN_BLOCK_COMMIT}
    submit = spans[SPAN_TX_SUBMIT]
    assert submit.attributes is not None and submit.attributes["tx_hash"] == "aabb"
    assert "skipped" not in submit.attributes
    assert submit.parent is not None and submit.parent.span_id == spans[SPAN_HEIGHT].context.span_id
    tracing.shutdown()


def test_tracing_that_goes_nowhere_is_not_recording() -> None:
    """node/main.py and the indexer then make no spans at all (each would cost ~18 us)."""
    tracing = setup_tracing(None)
    assert not tracing.recording and not tracing.exporting and tracing.memory is None
    tracing.shutdown()


def test_tracing_without_exporter_package_still_works() -> None:
    tracing = setup_tracing("http://127.0.0.1:4318")
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError:
        assert not tracing.exporting and not tracing.recording
    else:
        assert tracing.exporting and tracing.recording
    with tracing.span(SPAN_TX_SUBMIT):
        pass
    tracing.shutdown()
