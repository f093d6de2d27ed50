"""Oracle duty: each validator signs and submits oracle prices at a fixed cadence.

Prices come from a `PriceSource`. The devnet source is a seeded random walk that every
validator computes identically (one step per second since genesis, seeded by the chain id),
plus a little per-validator noise, so the on-chain stake-weighted median moves like a
market while individual submissions differ. A real feed plugs in by implementing
`PriceSource.prices(now_ms)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from sdk import tx as sdk_tx
from sdk.keys import Key
from stf.config import MarketSpec

log = logging.getLogger("ita.oracle")

STEP_MS = 1_000
VOLATILITY_PER_STEP = 0.0008  # ~0.08 % per second, a lively devnet market
MAX_REPLAY_STEPS = 200_000


class PriceSource(Protocol):
    def prices(self, now_ms: int) -> dict[str, int]:
        """Market symbol -> price in that market's price units (on its tick grid)."""


class RandomWalkSource:
    """A shared seeded random walk (one step per second since genesis) with per-validator noise."""

    def __init__(
        self, seed: str, markets: Sequence[MarketSpec], genesis_ms: int, noise_seed: int = 0
    ) -> None:
        self.seed = seed
        self.markets = list(markets)
        self.genesis_step = genesis_ms // STEP_MS
        self.noise_seed = noise_seed
        self._step = self.genesis_step
        self._log_prices = [math.log(spec.initial_oracle_price) for spec in self.markets]

    def _advance(self, step: int) -> None:
        if step - self._step > MAX_REPLAY_STEPS:
            self._step = step - MAX_REPLAY_STEPS
        while self._step < step:
            self._step += 1
            rng = random.Random(hashlib.sha256(f"{self.seed}/{self._step}".encode()).digest())
            self._log_prices = [p + rng.gauss(0.0, VOLATILITY_PER_STEP) for p in self._log_prices]

    def prices(self, now_ms: int) -> dict[str, int]:
        self._advance(max(self.genesis_step, now_ms // STEP_MS))
        noise = random.Random(f"{self.seed}/{self.noise_seed}/{now_ms}")
        out: dict[str, int] = {}
        for spec, log_price in zip(self.markets, self._log_prices, strict=True):
            ticks = max(1, round(math.exp(log_price) / spec.tick_size) + noise.randint(-2, 2))
            out[spec.symbol] = ticks * spec.tick_size
        return out


async def run_oracle_duty(
    key: Key,
    chain_id: str,
    source: PriceSource,
    interval_ms: int,
    submit: Callable[[list[bytes]], Awaitable[object]],
    now_ms: Callable[[], int],
) -> None:
    """Forever: every `interval_ms`, sign the source's prices and submit them to our mempool."""
    signer = sdk_tx.Signer(key, chain_id)
    while True:
        await asyncio.sleep(interval_ms / 1000)
        try:
            prices = source.prices(now_ms())
            await submit([signer.sign(sdk_tx.oracle_prices(prices))])
        except Exception:  # the duty must survive a bad tick; the next one retries
            log.exception("oracle submission failed")
