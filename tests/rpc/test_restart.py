"""Restarts and bootstraps: resume from our own snapshot (never from genesis again), bootstrap from
the node's snapshot only once a certified block confirms it, refuse a forged or corrupt one."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from rpc.reducer import IndexerState, apply_committed
from rpc.service import IndexerSettings, SnapshotRejected
from rpc.simchain import SimChain
from rpc.source import InProcessSource, SnapshotBlob
from stf.block import genesis_state
from tests.rpc.refclient import RefClient, connect
from tests.rpc.support import caught_up, get_json, indexed_height, run, start_indexer, wait_until


def reference_state(chain: SimChain) -> IndexerState:
    """A from-genesis replay of the whole chain."""
    state = IndexerState(genesis_state(chain.config))
    for committed in chain.blocks:
        apply_committed(state, committed)
    return state


def count_btc_trades(chain: SimChain) -> int:
    state = IndexerState(genesis_state(chain.config))
    total = 0
    for committed in chain.blocks:
        for u in apply_committed(state, committed):
            if u.topic == "trades:BTC-PERP":
                total += len(u.message["trades"])
    return total


def test_restart_resumes_from_own_snapshot(tmp_path: Path) -> None:
    run(_restart(tmp_path))


async def _restart(tmp_path: Path) -> None:
    chain = SimChain(seed=41)
    chain.produce_many(350)
    settings = IndexerSettings(snapshot_interval=100, use_node_snapshot=False)
    first = await start_indexer(chain, tmp_path, settings=settings)
    async with aiohttp.ClientSession() as session:
        client = RefClient("before")
        try:
            await caught_up(first, chain)
            assert first.indexer.metrics.blocks._value.get() == 350
            task = await connect(session, first.url, client)
            await client.send({"op": "subscribe", "channel": "book", "market": "BTC-PERP"})
            await wait_until(lambda: client.snapshots == 1, "snapshot")
        finally:
            await first.stop(save_snapshot=False)  # as a crash would: our last snapshot is at 300
        await task
        assert client.closed is not None and client.closed[0] == 1001  # going away: resync elsewhere

        chain.produce_many(100)
        second = await start_indexer(chain, tmp_path, settings=settings)
        try:
            await caught_up(second, chain)
            assert second.indexer.metrics.blocks._value.get() == 150  # 301..450, not from genesis
            reference = reference_state(chain)
            state = second.indexer._state
            assert state is not None and state.stf.app_hash == chain.state.app_hash
            assert state.seqs == reference.seqs  # seq continues as if never restarted
            again = RefClient("after")
            task = await connect(session, second.url, again)
            await again.send({"op": "subscribe", "channel": "book", "market": "BTC-PERP"})
            await wait_until(lambda: again.snapshots == 1, "snapshot after restart")
            assert again.books["BTC-PERP"].seq == reference.seq("book:BTC-PERP")
            for _ in range(30):
                chain.produce()
                await wait_until(lambda: indexed_height(second) == chain.height, "indexer")
            await wait_until(
                lambda: again.max_height == chain.height or again.books["BTC-PERP"].height > 450,
                "client follows",
            )
            assert again.problems == []
            # history survived the restart and replaying 301..350 twice did not duplicate anything
            status, block = await get_json(session, f"{second.url}/v1/blocks/1")
            assert status == 200 and block["height"] == 1
            trades = []
            before = ""
            while True:
                _, page = await get_json(
                    session, f"{second.url}/v1/markets/BTC-PERP/trades?limit=1000{before}"
                )
                trades += page["trades"]
                if page["next"] is None:
                    break
                before = f"&before={page['next']}"
            assert len(trades) == len({t["trade_id"] for t in trades}) == count_btc_trades(chain)
            await again.ws.close() if again.ws else None
            await task
        finally:
            await second.stop()


def test_bootstrap_from_node_snapshot_waits_for_confirmation(tmp_path: Path) -> None:
    run(_node_snapshot(tmp_path))


async def _node_snapshot(tmp_path: Path) -> None:
    chain = SimChain(seed=42, snapshot_interval=100)
    chain.produce_many(200)  # the node's latest snapshot is at 200, and no block 201 yet
    service = await start_indexer(chain, tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until(lambda: service.indexer._state is not None, "bootstrap")
            status, body = await get_json(session, f"{service.url}/v1/markets")
            assert status == 503 and body["error"]["code"] == "not_ready"  # unconfirmed: not served
            chain.produce_many(5)
            await caught_up(service, chain)
            status, body = await get_json(session, f"{service.url}/v1/markets")
            assert status == 200 and body["height"] == 205
            assert service.indexer.metrics.blocks._value.get() == 5  # 201..205 only
            status, _ = await get_json(session, f"{service.url}/v1/blocks/200")
            assert status == 404  # history starts after the snapshot
            status, _ = await get_json(session, f"{service.url}/v1/blocks/201")
            assert status == 200
    finally:
        await service.stop()


class ForgedSource(InProcessSource):
    def __init__(self, chain: SimChain, blob: SnapshotBlob) -> None:
        super().__init__(chain)
        self.blob = blob

    async def latest_snapshot(self) -> SnapshotBlob | None:
        return self.blob


@pytest.mark.parametrize("forgery", ["other_state", "corrupt_bytes"])
def test_forged_or_corrupt_node_snapshot_is_refused(tmp_path: Path, forgery: str) -> None:
    run(_forged(tmp_path, forgery))


async def _forged(tmp_path: Path, forgery: str) -> None:
    chain = SimChain(seed=43, snapshot_interval=100)
    chain.produce_many(210)
    if forgery == "other_state":  # a well-formed, self-consistent snapshot of another history
        other = SimChain(seed=44, snapshot_interval=100)
        other.produce_many(200)
        blob = SnapshotBlob(200, other.block(200).app_hash, other.snapshots[200])
    else:
        data = bytearray(chain.snapshots[200])
        data[-1] ^= 0xFF
        blob = SnapshotBlob(200, chain.block(200).app_hash, bytes(data))
    service = await start_indexer(chain, tmp_path, source=ForgedSource(chain, blob))
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until(lambda: service.task is not None and service.task.done(), "refusal")
            assert service.task is not None
            with pytest.raises(SnapshotRejected):
                service.task.result()
            status, body = await get_json(session, f"{service.url}/v1/markets/BTC-PERP/book")
            assert status == 503
            assert service.indexer.metrics.blocks._value.get() == 0  # nothing was ever served
    finally:
        await service.stop()
