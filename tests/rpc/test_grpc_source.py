"""The gRPC path against a fake grpc.aio Node server backed by a SimChain: snapshot in chunks,
StreamBlocks catch-up and live, tx forwarding, lag reporting, node loss and recovery."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import aiohttp

from rpc.service import IndexerSettings
from rpc.simchain import SimChain
from rpc.simnode import SimNode
from rpc.source import GrpcBlockSource
from sdk import tx as sdk_tx
from tests.rpc.refclient import RefClient, connect
from tests.rpc.support import caught_up, get_json, indexed_height, run, start_indexer, wait_until


def fast_source(address: str) -> GrpcBlockSource:
    return GrpcBlockSource(
        address, backoff_initial=0.05, backoff_max=0.2, status_interval=0.05, call_timeout=5
    )


def test_grpc_source_end_to_end(tmp_path: Path) -> None:
    run(_grpc(tmp_path))


async def _grpc(tmp_path: Path) -> None:
    chain = SimChain(seed=51, snapshot_interval=50)
    chain.produce_many(150)
    node = SimNode(chain, chunk_size=4096)  # the snapshot comes in many chunks
    await node.start()
    assert len(chain.snapshots[150]) > 4 * 4096
    service = await start_indexer(
        chain, tmp_path, source=fast_source(node.address), settings=IndexerSettings(snapshot_interval=50)
    )
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until(lambda: service.indexer._state is not None, "bootstrap from the node's snapshot")
            chain.produce()  # block 151 confirms the snapshot
            await caught_up(service, chain)
            assert service.indexer.metrics.blocks._value.get() == 1
            client = RefClient("grpc")
            task = await connect(session, service.url, client)
            await client.send({"op": "subscribe", "channel": "book", "market": "BTC-PERP"})
            await client.send({"op": "subscribe", "channel": "blocks"})
            await wait_until(lambda: client.snapshots == 2, "snapshots")

            # POST /v1/txs goes to the node and answers with its verdict
            key = chain.account_keys[0]
            tx = chain.sign(
                key, sdk_tx.place_order("ETH-PERP", "buy", price=340_000, size=10), chain.state.time_ms
            )
            body = {"tx": base64.b64encode(tx).decode()}
            async with session.post(f"{service.url}/v1/txs", json=body) as response:
                verdict = await response.json()
            assert response.status == 200 and verdict["accepted"] is True
            assert verdict["hash"] == hashlib.sha256(tx).hexdigest()
            async with session.post(f"{service.url}/v1/txs", json=body) as response:
                duplicate = await response.json()
            assert (
                duplicate["accepted"] is False
                and duplicate["code"] == 101
                and duplicate["status"] == "duplicate"
            )
            chain.produce()
            await caught_up(service, chain)
            status, record = await get_json(session, f"{service.url}/v1/txs/{verdict['hash']}")
            assert status == 200 and record["height"] == chain.height and record["result"]["status"] == "ok"

            # a lagging link: the node is ahead of what it streams -> lag is reported
            node.servicer.hold_at = chain.height
            chain.produce_many(7)
            await wait_until(lambda: service.indexer.source.status.node_height == chain.height, "node height")
            _, status_body = await get_json(session, f"{service.url}/v1/status")
            assert status_body["node"]["lag_blocks"] == 7 and status_body["node"]["connected"] is True
            metrics = await (await session.get(f"{service.url}/metrics")).text()
            assert "ita_indexer_lag_blocks 7.0" in metrics
            assert "ita_indexer_process_resident_memory_bytes " in metrics  # the process's own
            node.servicer.hold_at = None
            node.servicer.wake()
            await caught_up(service, chain)
            _, status_body = await get_json(session, f"{service.url}/v1/status")
            assert status_body["node"]["lag_blocks"] == 0

            # the node goes away: reported as disconnected, the indexer keeps serving what it has
            await node.stop()
            await wait_until(lambda: not service.indexer.source.status.connected, "disconnect noticed")
            chain.produce_many(10)
            _, status_body = await get_json(session, f"{service.url}/v1/status")
            assert status_body["node"]["connected"] is False and status_body["node"]["last_error"]
            status, _ = await get_json(session, f"{service.url}/v1/markets/BTC-PERP/book")
            assert status == 200
            # ... and comes back on the same address: the indexer reconnects and catches up
            await node.start()
            await caught_up(service, chain)
            assert service.indexer.source.status.connected and service.indexer.source.status.reconnects >= 1
            for _ in range(5):
                chain.produce()
                await wait_until(lambda: indexed_height(service) == chain.height, "live")
            await wait_until(lambda: client.blocks[-1:] == [chain.height], "client at tip")
            assert client.problems == [] and client.errors == []
            assert client.blocks == list(
                range(client.blocks[0], chain.height + 1)
            )  # no gap across the outage
            await client.ws.close() if client.ws else None
            await task
    finally:
        await service.stop()
        await node.stop()
