"""Helpers for indexer tests: start an indexer on loopback, wait for conditions, fetch JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from node.observability import Tracing
from rpc.history import History
from rpc.service import Indexer, IndexerService, IndexerSettings
from rpc.simchain import SimChain
from rpc.source import BlockSource, InProcessSource
from sdk.units import from_units
from stf.state import State

HANG_GUARD_S = 120.0  # only to turn a hang into a failure; no test asserts on elapsed time


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, HANG_GUARD_S))


async def wait_until(
    predicate: Callable[[], bool], what: str = "condition", limit_s: float = HANG_GUARD_S / 2
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.002)


async def start_indexer(
    chain: SimChain,
    home: Path,
    *,
    source: BlockSource | None = None,
    settings: IndexerSettings | None = None,
    tracing: Tracing | None = None,
) -> IndexerService:
    source = source if source is not None else InProcessSource(chain)
    history = History(home / "indexer.db", chain.config)
    service = IndexerService(Indexer(chain.config, source, history, settings, tracing=tracing))
    await service.start("127.0.0.1", 0)
    return service


def indexed_height(service: IndexerService) -> int:
    state = service.indexer._state
    return state.height if state is not None else -1


async def caught_up(service: IndexerService, chain: SimChain) -> None:
    await wait_until(
        lambda: indexed_height(service) >= chain.height and service.indexer.ready, "indexer catch-up"
    )


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json(content_type=None)


def node_book(chain: SimChain, market_id: int) -> tuple[list[list[str]], list[list[str]]]:
    """The node's own book as [[px, sz]] best first."""
    return node_book_of_state(chain.state, market_id)


def node_book_of_state(state: State, market_id: int) -> tuple[list[list[str]], list[list[str]]]:
    """A stf state's book as [[px, sz]] best first, formatted with sdk.units (not rpc.views)."""
    market = state.markets[market_id]
    pd, sd = market.spec.price_decimals, market.spec.size_decimals
    book = market.book
    bids = [[from_units(p, pd), from_units(s, sd)] for p, s in book.depth(True, 10**9)]
    asks = [[from_units(p, pd), from_units(s, sd)] for p, s in book.depth(False, 10**9)]
    return bids, asks
