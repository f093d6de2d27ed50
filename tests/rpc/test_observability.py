"""The indexer's spans: one indexer.block per block, holding apply, record and publish, made
only when they go somewhere. (Its JSON log lines: tests/rpc/test_cli.py.)"""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp

from node.observability import setup_tracing
from rpc.service import IndexerSettings
from rpc.simchain import SimChain
from rpc.simnode import SimNode
from rpc.source import GrpcBlockSource
from sdk import tx as sdk_tx
from tests.rpc.support import caught_up, run, start_indexer


def test_each_indexed_block_is_one_span_with_its_stages(tmp_path: Path) -> None:
    chain = SimChain(seed=51)
    chain.produce_many(12)
    tracing = setup_tracing(None, service_name="ita-indexer", in_memory=True)

    async def scenario() -> None:
        settings = IndexerSettings(snapshot_interval=5, use_node_snapshot=False)
        service = await start_indexer(chain, tmp_path, settings=settings, tracing=tracing)
        try:
            await caught_up(service, chain)
        finally:
            await service.stop()

    run(scenario())
    assert tracing.memory is not None
    spans = tracing.memory.get_finished_spans()
    blocks = {s.attributes["height"]: s for s in spans if s.name == "indexer.block" and s.attributes}
    assert sorted(blocks) == list(range(1, 13))
    assert all(s.parent is None for s in blocks.values())
    children: dict[int, list[str]] = {}
    by_id = {s.context.span_id: h for h, s in blocks.items()}
    for s in spans:
        if s.parent is not None and s.parent.span_id in by_id:
            children.setdefault(by_id[s.parent.span_id], []).append(s.name)
    assert all(
        sorted(names) == ["indexer.apply", "indexer.publish", "indexer.record"] for names in children.values()
    )
    assert len(children) == 12
    snapshots = [s for s in spans if s.name == "indexer.record" and s.attributes and s.attributes["snapshot"]]
    assert len(snapshots) == 2  # heights 5 and 10
    assert blocks[3].attributes is not None and blocks[3].attributes["txs"] == len(chain.blocks[2].block.txs)
    tracing.shutdown()


def test_a_tracing_that_goes_nowhere_makes_no_spans(tmp_path: Path) -> None:
    chain = SimChain(seed=52)
    chain.produce_many(3)
    tracing = setup_tracing(None)

    async def scenario() -> None:
        service = await start_indexer(chain, tmp_path, tracing=tracing)
        try:
            assert service.indexer.tracing is None
            await caught_up(service, chain)
        finally:
            await service.stop()

    run(scenario())
    tracing.shutdown()


def test_a_forwarded_tx_is_one_trace_from_the_client_to_its_ws_publish(tmp_path: Path) -> None:
    """POST /v1/txs with a W3C traceparent: tx.forward continues it and hands its own to the node
    (gRPC metadata, where the node's tx.submit goes on from it); once the tx's block is indexed and
    published, tx.indexed closes the trace, linked to that block's indexer.block span."""
    chain = SimChain(seed=53)
    chain.produce_many(3)
    tracing = setup_tracing(None, service_name="ita-indexer", in_memory=True)
    trace_id, client_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    node = SimNode(chain)
    forwarded: dict[str, object] = {}

    async def scenario() -> None:
        await node.start()
        source = GrpcBlockSource(node.address, backoff_initial=0.05, status_interval=0.05, call_timeout=5)
        settings = IndexerSettings(use_node_snapshot=False)
        service = await start_indexer(chain, tmp_path, source=source, settings=settings, tracing=tracing)
        try:
            await caught_up(service, chain)
            tx = chain.sign(
                chain.account_keys[0],
                sdk_tx.place_order("ETH-PERP", "buy", price=340_000, size=10),
                chain.state.time_ms,
            )
            headers = {"traceparent": f"00-{trace_id}-{client_span}-01"}
            async with aiohttp.ClientSession() as session:
                body = {"tx": base64.b64encode(tx).decode()}
                async with session.post(f"{service.url}/v1/txs", json=body, headers=headers) as response:
                    forwarded.update(await response.json())
            chain.produce()
            await caught_up(service, chain)
        finally:
            await service.stop()
            await node.stop()

    run(scenario())
    assert forwarded["accepted"] is True
    assert tracing.memory is not None
    spans = tracing.memory.get_finished_spans()
    [forward] = [s for s in spans if s.name == "tx.forward"]
    assert format(forward.context.trace_id, "032x") == trace_id
    assert forward.parent is not None and format(forward.parent.span_id, "016x") == client_span
    [sent] = node.servicer.submit_traceparents  # what the node was handed: the forward span
    assert sent == f"00-{trace_id}-{forward.context.span_id:016x}-01"
    [indexed] = [s for s in spans if s.name == "tx.indexed"]
    assert indexed.context.trace_id == forward.context.trace_id
    assert indexed.parent is not None and indexed.parent.span_id == forward.context.span_id
    assert indexed.attributes is not None and indexed.attributes["tx_hash"] == forwarded["hash"]
    height = indexed.attributes["height"]
    blocks = [s for s in spans if s.name == "indexer.block" and s.attributes]
    [block] = [s for s in blocks if s.attributes is not None and s.attributes["height"] == height]
    assert [link.context.span_id for link in indexed.links] == [block.context.span_id]
    assert [e.name for e in indexed.events] == ["published"]
    assert block.start_time is not None and indexed.start_time is not None
    assert block.start_time <= indexed.start_time and indexed.end_time is not None
    tracing.shutdown()
