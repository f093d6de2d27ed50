"""The indexer's spans: one indexer.block per block, holding apply, record and publish, made
only when they go somewhere. (Its JSON log lines: tests/rpc/test_cli.py.)"""

from __future__ import annotations

from pathlib import Path

from node.observability import setup_tracing
from rpc.service import IndexerSettings
from rpc.simchain import SimChain
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
