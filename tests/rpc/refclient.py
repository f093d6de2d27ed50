"""A reference WebSocket client written from DESIGN.md's "Indexer (HTTP + WebSocket, JSON)" alone.

It subscribes, keeps a book per market from the snapshot plus updates (size "0" deletes a
level), checks every ``seq``/``prev_seq`` and every CRC-32 checksum (top 25 levels
interleaved bid_px:bid_sz:ask_px:ask_sz, a missing side skipped, strings exactly as sent),
and records trades, blocks and account updates. Any protocol violation is recorded in
``problems`` (and fails the test that owns the client).
"""

from __future__ import annotations

import asyncio
import zlib
from decimal import Decimal
from typing import Any

import aiohttp
import orjson


def crc_of_levels(bids: list[list[str]], asks: list[list[str]]) -> int:
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    return zlib.crc32(":".join(parts).encode("utf-8")) & 0xFFFFFFFF


class Book:
    def __init__(self, market: str) -> None:
        self.market = market
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq: int | None = None
        self.height = 0
        self.updates = 0

    def sorted_bids(self) -> list[list[str]]:
        return [[p, self.bids[p]] for p in sorted(self.bids, key=Decimal, reverse=True)]

    def sorted_asks(self) -> list[list[str]]:
        return [[p, self.asks[p]] for p in sorted(self.asks, key=Decimal)]

    def checksum(self) -> int:
        return crc_of_levels(self.sorted_bids()[:25], self.sorted_asks()[:25])


class RefClient:
    def __init__(self, name: str = "ref") -> None:
        self.name = name
        self.books: dict[str, Book] = {}
        self.seqs: dict[tuple[str, ...], int] = {}
        self.trades: dict[str, list[dict[str, Any]]] = {}
        self.blocks: list[int] = []
        self.accounts: dict[str, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.snapshots = 0
        self.max_height = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.closed: tuple[int | None, str] | None = None

    def problem(self, text: str) -> None:
        self.problems.append(f"{self.name}: {text}")

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(orjson.dumps(message).decode())

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            self.handle(orjson.loads(msg.data))
        self.closed = (ws.close_code, str(ws.extra) if hasattr(ws, "extra") else "")

    @staticmethod
    def topic(m: dict[str, Any]) -> tuple[str, ...]:
        keys = [m["channel"]]
        for field in ("market", "interval", "address"):
            if field in m:
                keys.append(m[field])
        return tuple(keys)

    def handle(self, m: dict[str, Any]) -> None:
        kind = m.get("type")
        if kind == "error":
            self.errors.append(m)
            return
        if kind in ("pong", "heartbeat", "unsubscribed"):
            return
        if kind not in ("snapshot", "update"):
            self.problem(f"unknown message type {kind!r}")
            return
        self.max_height = max(self.max_height, m["height"])
        topic = self.topic(m)
        if kind == "snapshot":
            self.snapshots += 1
            self.seqs[topic] = m["seq"]
        else:
            if self.seqs.get(topic) is None:
                self.problem(f"update before snapshot on {topic}")
            elif m["prev_seq"] != self.seqs[topic] or m["seq"] != m["prev_seq"] + 1:
                self.problem(f"{topic}: seq {m['seq']} prev_seq {m['prev_seq']} after seq {self.seqs[topic]}")
            self.seqs[topic] = m["seq"]
        handler = getattr(self, "on_" + m["channel"], None)
        if handler is not None:
            handler(m, kind)

    def on_book(self, m: dict[str, Any], kind: str) -> None:
        market = m["market"]
        if kind == "snapshot":
            book = self.books[market] = Book(market)
            for px, sz in m["bids"]:
                book.bids[px] = sz
            for px, sz in m["asks"]:
                book.asks[px] = sz
        else:
            book = self.books[market]
            book.updates += 1
            for side, levels in ((book.bids, m["bids"]), (book.asks, m["asks"])):
                for px, sz in levels:
                    if sz == "0":
                        if px not in side:
                            self.problem(f"{market}: delete of absent level {px}")
                        side.pop(px, None)
                    elif Decimal(sz) <= 0:
                        self.problem(f"{market}: non-positive size {sz} at {px}")
                    else:
                        side[px] = sz
        book.seq = m["seq"]
        book.height = m["height"]
        if book.checksum() != m["checksum"]:
            self.problem(
                f"{market} {kind} at height {m['height']}: checksum {book.checksum()} != {m['checksum']}"
            )
        bids, asks = book.sorted_bids(), book.sorted_asks()
        if bids and asks and Decimal(bids[0][0]) >= Decimal(asks[0][0]):
            self.problem(f"{market}: crossed book at height {m['height']}")

    def on_trades(self, m: dict[str, Any], kind: str) -> None:
        trades = self.trades.setdefault(m["market"], [])
        if kind == "snapshot":
            trades.clear()
        trades.extend(m["trades"])

    def on_blocks(self, m: dict[str, Any], kind: str) -> None:
        block = m["block"]
        if block is None:
            return
        if self.blocks and kind == "update" and block["height"] != self.blocks[-1] + 1:
            self.problem(f"block {block['height']} after {self.blocks[-1]}")
        self.blocks.append(block["height"])

    def on_account(self, m: dict[str, Any], kind: str) -> None:
        address = m["address"]
        if kind == "snapshot":
            self.accounts[address] = {
                "orders": {o["order_id"]: o for o in m["orders"]},
                "positions": {p["market"]: p for p in m["positions"]},
                "balance": m["balance"],
                "fills": [],
            }
            return
        acct = self.accounts[address]
        for order in m["orders"]:
            if order["status"] == "open":
                acct["orders"][order["order_id"]] = order
            else:
                acct["orders"].pop(order["order_id"], None)
        for position in m["positions"]:
            if Decimal(position["size"]) == 0:
                acct["positions"].pop(position["market"], None)
            else:
                acct["positions"][position["market"]] = position
        if m["balance"] is not None:
            acct["balance"] = m["balance"]
        acct["fills"].extend(m["fills"])


async def connect(session: aiohttp.ClientSession, url: str, client: RefClient) -> asyncio.Task[None]:
    ws = await session.ws_connect(url + "/v1/ws", max_msg_size=0)
    client.ws = ws
    return asyncio.create_task(client.run(ws))
