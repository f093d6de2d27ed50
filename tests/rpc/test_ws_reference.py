"""The reference client rebuilds every book from snapshot + updates over >= 1,000 blocks of random
trading and must equal the HTTP snapshot and the node's own state at the same height."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from rpc.service import IndexerSettings
from rpc.simchain import SimChain
from tests.rpc.refclient import RefClient, connect
from tests.rpc.support import caught_up, get_json, indexed_height, node_book, run, start_indexer, wait_until

BLOCKS = 1_000
MARKETS = ("BTC-PERP", "ETH-PERP", "7203-T-PERP")


async def all_pages(session: aiohttp.ClientSession, url: str, key: str, cursor: str) -> list[Any]:
    out: list[Any] = []
    before = ""
    while True:
        status, body = await get_json(session, f"{url}?limit=1000{before}")
        assert status == 200, body
        out += body[key]
        if body["next"] is None:
            return out
        before = f"&before={body['next']}"


def test_reference_client_over_1000_blocks(tmp_path: Path) -> None:
    run(_reference(tmp_path))


async def _reference(tmp_path: Path) -> None:
    chain = SimChain(seed=11, max_txs=14)
    chain.produce_many(20)
    service = await start_indexer(chain, tmp_path, settings=IndexerSettings(snapshot_interval=250))
    watched = ["0x" + k.address.hex() for k in chain.account_keys[:3]]
    try:
        await caught_up(service, chain)
        async with aiohttp.ClientSession() as session:
            a = RefClient("early")
            task_a = await connect(session, service.url, a)
            for market in MARKETS:
                await a.send({"op": "subscribe", "channel": "book", "market": market})
            await a.send({"op": "subscribe", "channel": "trades", "market": "BTC-PERP"})
            await a.send({"op": "subscribe", "channel": "candles", "market": "BTC-PERP", "interval": "1m"})
            for channel in ("markets", "blocks"):
                await a.send({"op": "subscribe", "channel": channel})
            for address in watched:
                await a.send({"op": "subscribe", "channel": "account", "address": address})
            await wait_until(lambda: a.snapshots == 10, "early snapshots")
            start = chain.height
            b = RefClient("late")
            task_b: asyncio.Task[None] | None = None
            for i in range(BLOCKS):
                chain.produce()
                await wait_until(lambda: indexed_height(service) == chain.height, "indexer")
                if i == 300:  # a client joining mid-stream gets a gap-free snapshot + updates
                    task_b = await connect(session, service.url, b)
                    for market in MARKETS:
                        await b.send({"op": "subscribe", "channel": "book", "market": market})
                    await b.send({"op": "subscribe", "channel": "blocks"})
                if i == 600:  # resubscribing restarts the topic from a fresh snapshot
                    await a.send({"op": "unsubscribe", "channel": "book", "market": "ETH-PERP"})
                    await a.send({"op": "subscribe", "channel": "book", "market": "ETH-PERP"})
            final = chain.height
            assert final - start >= BLOCKS
            await wait_until(lambda: a.blocks[-1:] == [final] and b.blocks[-1:] == [final], "clients at tip")

            assert a.problems == [] and b.problems == [], a.problems + b.problems
            assert a.errors == [] and b.errors == []
            for market_id, market in enumerate(MARKETS):
                bids, asks = node_book(chain, market_id)
                status, http = await get_json(session, f"{service.url}/v1/markets/{market}/book")
                assert status == 200 and http["height"] == final
                for client in (a, b):
                    book = client.books[market]
                    assert book.height <= final and book.seq == http["seq"]
                    assert book.sorted_bids() == http["bids"] == bids
                    assert book.sorted_asks() == http["asks"] == asks
                    assert book.checksum() == http["checksum"]
                assert a.books[market].updates > 100
            # every trade went out exactly once over the trades channel and into history
            history = await all_pages(
                session, f"{service.url}/v1/markets/BTC-PERP/trades", "trades", "trade_id"
            )
            since = [t for t in history if t["height"] > start]
            streamed = [t for t in a.trades["BTC-PERP"] if t["height"] > start]
            assert len(since) > 100
            assert sorted(t["trade_id"] for t in streamed) == sorted(t["trade_id"] for t in since)
            # account mirrors equal the HTTP views at the final height
            for address in watched:
                mirror = a.accounts[address]
                _, orders = await get_json(session, f"{service.url}/v1/accounts/{address}/orders?limit=1000")
                assert sorted(mirror["orders"]) == sorted(o["order_id"] for o in orders["orders"])
                _, account = await get_json(session, f"{service.url}/v1/accounts/{address}")
                assert account["height"] == final
                assert {p["market"]: p["size"] for p in account["positions"]} == {
                    m: p["size"] for m, p in mirror["positions"].items()
                }
                assert mirror["balance"]["collateral"] == account["collateral"]
            assert service.indexer._state is not None
            assert service.indexer._state.stf.app_hash == chain.state.app_hash
            await a.ws.close() if a.ws else None
            await b.ws.close() if b.ws else None
            await task_a
            if task_b is not None:
                await task_b
    finally:
        await service.stop()
