"""OHLCV candles per market and interval, built from trades in block time.

A trade at block time t falls in the candle starting at ``t - t % interval``. Candles are
kept only for intervals with trades (no empty candles are synthesized). Prices are integer
price units, ``volume`` size units, ``quote_volume`` micro-USD notional.
"""

from __future__ import annotations

from typing import Any

from rpc.views import fmt, usd
from stf.config import MarketSpec

INTERVALS: dict[str, int] = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
INTERVAL_INDEX: dict[str, int] = {name: i for i, name in enumerate(INTERVALS)}


class Candle:
    __slots__ = ("start", "open", "high", "low", "close", "volume", "quote_volume", "trades")

    def __init__(self, start: int, price: int) -> None:
        self.start = start
        self.open = self.high = self.low = self.close = price
        self.volume = 0
        self.quote_volume = 0
        self.trades = 0

    def add(self, price: int, size: int, notional: int) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.close = price
        self.volume += size
        self.quote_volume += notional
        self.trades += 1

    def view(self, spec: MarketSpec, interval: str) -> dict[str, Any]:
        pd = spec.price_decimals
        return {
            "start_ms": self.start,
            "end_ms": self.start + INTERVALS[interval],
            "open": fmt(self.open, pd),
            "high": fmt(self.high, pd),
            "low": fmt(self.low, pd),
            "close": fmt(self.close, pd),
            "volume": fmt(self.volume, spec.size_decimals),
            "quote_volume": usd(self.quote_volume),
            "trades": self.trades,
        }

    def to_list(self) -> list[int]:
        return [
            self.start,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.quote_volume,
            self.trades,
        ]

    @staticmethod
    def from_list(values: list[int]) -> Candle:
        candle = Candle(values[0], values[1])
        candle.high, candle.low, candle.close = values[2], values[3], values[4]
        candle.volume, candle.quote_volume, candle.trades = values[5], values[6], values[7]
        return candle


def update_candles(current: dict[str, Candle], time_ms: int, price: int, size: int, notional: int) -> None:
    """Fold one trade into the current candle of every interval (starting a new one when due)."""
    for name, length in INTERVALS.items():
        start = time_ms - time_ms % length
        candle = current.get(name)
        if candle is None or candle.start != start:
            candle = current[name] = Candle(start, price)
        candle.add(price, size, notional)
