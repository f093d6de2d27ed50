"""Hostile and broken clients get typed errors or closes; memory stays bounded; others are unaffected."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from rpc.service import IndexerService, IndexerSettings
from rpc.simchain import SimChain
from rpc.ws import WsLimits
from tests.rpc.refclient import RefClient, connect
from tests.rpc.support import caught_up, get_json, indexed_height, run, start_indexer, wait_until

LIMITS = WsLimits(
    max_connections=6,
    max_subscriptions=5,
    max_message_bytes=1024,
    queue_messages=8,
    queue_bytes=64 * 1024,
    max_resyncs=1,
    ops_burst=60,
    ops_per_s=1.0,
    writer_limit=2048,
    socket_send_buffer=4096,
    close_timeout_s=0.2,
)


async def expect(ws: aiohttp.ClientWebSocketResponse, **fields: Any) -> dict[str, Any]:
    while True:
        msg = await ws.receive_json()
        if msg.get("type") != "heartbeat":
            break
    for key, value in fields.items():
        assert msg.get(key) == value, (key, msg)
    return msg


async def closed(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    while True:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return msg


class Observer:
    """A well-behaved reference client that must not notice anything."""

    def __init__(self) -> None:
        self.client = RefClient("observer")
        self.task: asyncio.Task[None] | None = None

    async def start(self, session: aiohttp.ClientSession, url: str) -> None:
        self.task = await connect(session, url, self.client)
        await self.client.send({"op": "subscribe", "channel": "book", "market": "BTC-PERP"})
        await self.client.send({"op": "subscribe", "channel": "blocks"})
        await wait_until(lambda: self.client.snapshots == 2, "observer snapshots")

    async def check(self, chain: SimChain) -> None:
        await wait_until(lambda: self.client.blocks[-1:] == [chain.height], "observer at tip")
        assert self.client.problems == [] and self.client.errors == []
        assert self.client.blocks == list(range(self.client.blocks[0], chain.height + 1))


async def setup(tmp_path: Path) -> tuple[SimChain, IndexerService]:
    chain = SimChain(seed=61)
    chain.produce_many(30)
    service = await start_indexer(chain, tmp_path, settings=IndexerSettings(limits=LIMITS))
    await caught_up(service, chain)
    return chain, service


async def advance(chain: SimChain, service: IndexerService, blocks: int) -> None:
    for _ in range(blocks):
        chain.produce()
        await wait_until(lambda: indexed_height(service) == chain.height, "indexer")


def test_malformed_requests_get_typed_errors(tmp_path: Path) -> None:
    run(_malformed(tmp_path))


async def _malformed(tmp_path: Path) -> None:
    chain, service = await setup(tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            observer = Observer()
            await observer.start(session, service.url)
            ws = await session.ws_connect(f"{service.url}/v1/ws")
            cases: list[tuple[str | bytes, str]] = [
                ("{not json", "bad_json"),
                ("[1, 2]", "bad_request"),
                ('{"op": "dance"}', "unknown_op"),
                ('{"op": "subscribe", "channel": "gossip"}', "unknown_channel"),
                ('{"op": "subscribe", "channel": "book"}', "unknown_market"),
                ('{"op": "subscribe", "channel": "book", "market": "DOGE-PERP"}', "unknown_market"),
                (
                    '{"op": "subscribe", "channel": "candles", "market": "BTC-PERP", "interval": "7m"}',
                    "bad_interval",
                ),
                ('{"op": "subscribe", "channel": "account", "address": "0x12"}', "bad_address"),
                ('{"op": "unsubscribe", "channel": "trades", "market": "BTC-PERP"}', "not_subscribed"),
                (b"\x00\x01binary", "binary_not_supported"),
            ]
            for payload, code in cases:
                if isinstance(payload, bytes):
                    await ws.send_bytes(payload)
                else:
                    await ws.send_str(payload)
                error = await expect(ws, type="error", code=code)
                assert error["message"]
            await ws.send_json({"op": "subscribe", "channel": "trades", "market": "BTC-PERP", "id": "t1"})
            await expect(ws, type="snapshot", channel="trades", id="t1")
            await ws.send_json({"op": "subscribe", "channel": "trades", "market": "BTC-PERP", "id": 2})
            await expect(ws, type="error", code="already_subscribed", id=2)
            await ws.send_json({"op": "ping", "id": 3})
            await expect(ws, type="pong", id=3)  # still connected after all of that
            # subscription flood: the limit holds, each extra request gets a typed error
            addresses = ["0x" + os.urandom(20).hex() for _ in range(8)]
            for address in addresses:
                await ws.send_json({"op": "subscribe", "channel": "account", "address": address})
            replies = [await expect(ws) for _ in addresses]
            assert [r["type"] for r in replies] == ["snapshot"] * 4 + ["error"] * 4
            assert {r.get("code") for r in replies[4:]} == {"too_many_subscriptions"}
            await advance(chain, service, 5)
            await observer.check(chain)
            await ws.close()
    finally:
        await service.stop()


def test_oversized_frames_and_request_floods_close_the_connection(tmp_path: Path) -> None:
    run(_floods(tmp_path))


async def _floods(tmp_path: Path) -> None:
    chain, service = await setup(tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            observer = Observer()
            await observer.start(session, service.url)
            big = await session.ws_connect(f"{service.url}/v1/ws")
            await big.send_str(orjson.dumps({"op": "ping", "pad": "x" * 5000}).decode())
            msg = await closed(big)
            assert big.close_code == 1009 or msg.data == 1009
            flood = await session.ws_connect(f"{service.url}/v1/ws")
            for i in range(200):
                try:
                    await flood.send_json({"op": "ping", "id": i})
                except ConnectionError:
                    break
            msg = await closed(flood)
            # a flood that does not read its replies is cut off either way: rate limit or slow consumer
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
            assert "rate limit" in str(msg.extra) or "slow consumer" in str(msg.extra)
            reader = await session.ws_connect(f"{service.url}/v1/ws")  # reads its replies: the rate limit
            replies = 0
            for i in range(200):
                await reader.send_json({"op": "ping", "id": i})
                msg = await reader.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                replies += 1
            if msg.type == aiohttp.WSMsgType.TEXT:
                msg = await closed(reader)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008 and "rate limit" in str(msg.extra)
            assert LIMITS.ops_burst <= replies + 1 < 200
            await advance(chain, service, 5)
            await observer.check(chain)
            # connection limit: refused at the handshake with 429 and a JSON error
            extra = [
                await session.ws_connect(f"{service.url}/v1/ws") for _ in range(LIMITS.max_connections - 1)
            ]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{service.url}/v1/ws")
            assert refused.value.status == 429
            for ws in extra:
                await ws.close()
            await wait_until(lambda: len(service.indexer.hub.clients) == 1, "connections released")
    finally:
        await service.stop()


async def raw_silent_client(port: int, subscriptions: list[dict[str, Any]]) -> socket.socket:
    """A WebSocket client that subscribes and then never reads (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    for request in subscriptions:
        payload = orjson.dumps(request)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await loop.sock_sendall(sock, struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    return sock


def test_slow_reader_is_resynced_then_closed_and_others_unaffected(tmp_path: Path) -> None:
    run(_slow(tmp_path))


async def _slow(tmp_path: Path) -> None:
    chain, service = await setup(tmp_path)
    hub = service.indexer.hub
    try:
        async with aiohttp.ClientSession() as session:
            observer = Observer()
            await observer.start(session, service.url)
            subs = [
                {"op": "subscribe", "channel": "book", "market": m}
                for m in ("BTC-PERP", "ETH-PERP", "7203-T-PERP")
            ]
            subs += [{"op": "subscribe", "channel": "markets"}, {"op": "subscribe", "channel": "blocks"}]
            sock = await raw_silent_client(service.port, subs)
            await wait_until(
                lambda: len(hub.clients) == 2 and hub.subscriptions == 7, "slow client subscribed"
            )
            slow = hub.metrics.slow_clients
            for _ in range(3000):
                await advance(chain, service, 1)
                for client in hub.clients:  # the send queue never exceeds its bound
                    assert len(client.queue) <= LIMITS.queue_messages + len(client.subs)
                if slow.labels("close")._value.get() >= 1 and len(hub.clients) == 1:
                    break
            assert slow.labels("resync")._value.get() == 1 and slow.labels("close")._value.get() == 1
            assert len(hub.clients) == 1 and hub.subscriptions == 2
            await advance(chain, service, 3)
            await observer.check(chain)
            sock.close()
    finally:
        await service.stop()


def test_http_bad_requests_are_4xx_json(tmp_path: Path) -> None:
    run(_http(tmp_path))


async def _http(tmp_path: Path) -> None:
    chain, service = await setup(tmp_path)
    u = service.url
    cases = [
        ("GET", "/v1/nope", None, 404, "not_found"),
        ("DELETE", "/v1/markets", None, 405, "method_not_allowed"),
        ("GET", "/v1/markets/NOPE", None, 404, "unknown_market"),
        ("GET", "/v1/markets/BTC-PERP/book?depth=0", None, 400, "bad_parameter"),
        ("GET", "/v1/markets/BTC-PERP/book?depth=abc", None, 400, "bad_parameter"),
        ("GET", "/v1/markets/BTC-PERP/trades?limit=100000", None, 400, "bad_parameter"),
        ("GET", "/v1/markets/BTC-PERP/trades?before=-1", None, 400, "bad_parameter"),
        ("GET", "/v1/markets/BTC-PERP/candles?interval=2m", None, 400, "bad_interval"),
        ("GET", "/v1/accounts/0xzz", None, 400, "bad_address"),
        ("GET", "/v1/accounts/0x" + "00" * 20 + "/orders?status=closed", None, 400, "bad_parameter"),
        ("GET", "/v1/blocks/-3", None, 400, "bad_parameter"),
        ("GET", "/v1/blocks/99999999", None, 404, "block_not_found"),
        ("GET", "/v1/txs/1234", None, 400, "bad_hash"),
        ("GET", "/v1/txs/" + "ab" * 32, None, 404, "tx_not_found"),
        ("GET", "/v1/orders/99999999", None, 404, "order_not_found"),
        ("POST", "/v1/txs", b"{nope", 400, "bad_json"),
        ("POST", "/v1/txs", b'{"tx": 5}', 400, "bad_request"),
        ("POST", "/v1/txs", b'{"tx": "***"}', 400, "bad_tx"),
        ("POST", "/v1/txs", b'{"tx": ""}', 400, "bad_tx"),
        (
            "POST",
            "/v1/txs",
            orjson.dumps({"tx": base64.b64encode(b"x" * 70_000).decode()}),
            413,
            "tx_too_large",
        ),
        ("POST", "/v1/txs", b"x" * 400_000, 413, "body_too_large"),
    ]
    try:
        async with aiohttp.ClientSession() as session:
            for method, path, body, status, code in cases:
                async with session.request(method, u + path, data=body) as response:
                    payload = await response.json(content_type=None)
                    assert (response.status, payload["error"]["code"]) == (status, code), (path, payload)
                    assert set(payload["error"]) == {"code", "message"} and "Traceback" not in str(payload)
            status, body = await get_json(session, u + "/v1/markets/BTC-PERP/book?depth=2")
            assert status == 200 and len(body["bids"]) <= 2

            def broken(*args: object) -> None:
                raise RuntimeError("a bug in a handler")

            service.indexer.history.trades = broken  # type: ignore[method-assign,assignment]
            async with session.get(u + "/v1/markets/BTC-PERP/trades") as response:
                payload = await response.json(content_type=None)
            assert response.status == 500  # the last line of defence: typed, logged, no trace
            assert payload == {"error": {"code": "internal", "message": "internal error"}}
            status, body = await get_json(session, u + "/v1/markets/BTC-PERP/book?depth=2")
            assert status == 200  # the server goes on
    finally:
        await service.stop()


def test_server_heartbeats_carry_the_height_and_keep_coming(tmp_path: Path) -> None:
    """DESIGN.md's server heartbeat: a quiet subscriber still hears {"type": "heartbeat"} every
    heartbeat_s, with the indexed height and the server's time, and a ping still gets its pong."""
    run(_heartbeats(tmp_path))


async def _heartbeats(tmp_path: Path) -> None:
    chain = SimChain(seed=23)
    chain.produce_many(5)
    limits = WsLimits(heartbeat_s=0.2)
    service = await start_indexer(chain, tmp_path, settings=IndexerSettings(limits=limits))
    try:
        await caught_up(service, chain)
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{service.url}/v1/ws") as ws:
            beats: list[dict[str, Any]] = []
            while len(beats) < 3:
                msg = await asyncio.wait_for(ws.receive_json(), timeout=5)
                assert msg["type"] == "heartbeat", msg  # nothing else is sent to a client that asked nothing
                beats.append(msg)
            assert all(b["height"] == chain.height for b in beats)
            assert beats[0]["time_ms"] <= beats[1]["time_ms"] <= beats[2]["time_ms"]
            await ws.send_str('{"op": "ping", "id": 7}')
            assert await expect(ws, type="pong", id=7)
    finally:
        await service.stop()
