"""On a real devnet (4 validators, random load): the reference client follows >= 1,000 blocks with
every seq and checksum checked, survives the followed node being killed and restarted, and its
books equal the HTTP snapshot and the node's own state (blocks fetched from a validator and
replayed through stf, app hash checked against the node) at the same height. Slow: minutes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from genesis.schema import load_genesis
from proto.ita.v1 import node_pb2, node_pb2_grpc
from stf.block import BlockHeader, apply_block, genesis_state, skip_signature_check
from tests.rpc.refclient import RefClient, connect
from tests.rpc.support import get_json, node_book_of_state, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
MARKETS = ("BTC-PERP", "ETH-PERP", "7203-T-PERP")
BLOCKS = 1_000


def manifest(home: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((home / "manifest.json").read_text()))
    except (OSError, ValueError):
        return {}


def proc_of(m: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in m.get("processes", []) if p["name"] == name)


def test_reference_client_on_a_real_devnet(tmp_path: Path) -> None:
    home = tmp_path / "devnet"
    devnet = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli",
            "devnet",
            "up",
            "--validators",
            "4",
            "--home",
            str(home),
            "--load",
            "40",
            "--restart-after",
            "2",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(600):
            m = manifest(home)
            if m and any(p["kind"] == "indexer" for p in m.get("processes", [])):
                break
            time.sleep(0.1)
        asyncio.run(asyncio.wait_for(_follow(home), 900))
    finally:
        devnet.send_signal(signal.SIGTERM)
        try:
            devnet.wait(timeout=60)
        except subprocess.TimeoutExpired:
            devnet.kill()


async def _follow(home: Path) -> None:
    m = manifest(home)
    url = proc_of(m, "indexer")["url"]
    async with aiohttp.ClientSession() as session:
        for _ in range(3000):
            try:
                status, _ = await get_json(session, f"{url}/healthz")
                if status == 200:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        client = RefClient("devnet")
        task = await connect(session, url, client)
        for market in MARKETS:
            await client.send({"op": "subscribe", "channel": "book", "market": market})
        await client.send({"op": "subscribe", "channel": "blocks"})
        await client.send({"op": "subscribe", "channel": "trades", "market": "BTC-PERP"})
        await wait_until(lambda: len(client.blocks) >= 300, "300 blocks", limit_s=300)

        # kill the node the indexer follows: lag/disconnect is reported, then it recovers
        followed = proc_of(m, "validator-0")
        os.kill(followed["pid"], signal.SIGKILL)

        async def node_state() -> dict[str, Any]:
            _, body = await get_json(session, f"{url}/v1/status")
            return dict(body["node"])

        down = False
        for _ in range(2000):
            if not (await node_state())["connected"]:
                down = True
                break
            await asyncio.sleep(0.01)
        assert down, "the indexer never reported the node as disconnected"
        for _ in range(6000):
            link = await node_state()
            if link["connected"] and link["lag_blocks"] == 0 and link["reconnects"] >= 1:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the indexer did not recover after the node came back")

        await wait_until(lambda: len(client.blocks) >= BLOCKS, f"{BLOCKS} blocks", limit_s=700)
        os.kill(proc_of(manifest(home), "loadgen")["pid"], signal.SIGTERM)  # let the books settle
        await asyncio.sleep(3)
        # one consistent observation: HTTP book height == the client's last block
        for _ in range(200):
            books = {mk: (await get_json(session, f"{url}/v1/markets/{mk}/book"))[1] for mk in MARKETS}
            heights = {b["height"] for b in books.values()}
            if len(heights) == 1 and client.blocks and client.blocks[-1] == next(iter(heights)):
                break
            await asyncio.sleep(0.05)
        height = next(iter(heights))
        assert client.problems == [] and client.errors == []
        assert client.blocks == list(range(client.blocks[0], client.blocks[-1] + 1))  # no gap, ever

        # the node's own state at that height: blocks from a validator, replayed through stf
        config = load_genesis(home / "genesis.json")
        replayed = genesis_state(config)
        async with grpc.aio.insecure_channel(proc_of(m, "validator-1")["grpc"]) as channel:
            stub = node_pb2_grpc.NodeStub(channel)
            for h in range(1, height + 1):
                committed = await stub.GetBlock(node_pb2.GetBlockRequest(height=h))
                header = committed.block.header
                apply_block(
                    replayed,
                    BlockHeader(h, header.time_ms, header.proposer),
                    list(committed.block.txs),
                    skip_signature_check,
                )
                assert replayed.app_hash == committed.app_hash
        for market_id, market in enumerate(MARKETS):
            bids, asks = node_book_of_state(replayed, market_id)
            book = client.books[market]
            assert book.sorted_bids() == books[market]["bids"] == bids
            assert book.sorted_asks() == books[market]["asks"] == asks
            assert book.checksum() == books[market]["checksum"]
        await client.ws.close() if client.ws else None
        await task
