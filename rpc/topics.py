"""Subscription topics: parse a subscribe request, build the snapshot a topic starts with.

A topic names one stream of updates with its own ``seq``: ``book:<market>``,
``trades:<market>``, ``candles:<market>:<interval>``, ``markets``, ``blocks``,
``account:<0x address>``. A snapshot carries the topic's current ``seq``; the first update a
subscriber receives after it has ``prev_seq`` equal to that ``seq`` (rpc/ws.py makes the
pair atomic). Snapshots read the reducer's state only; they never touch storage.
"""

from __future__ import annotations

import re
from typing import Any

from rpc.candles import INTERVALS
from rpc.reducer import PUBLIC_CHANNELS, IndexerState
from rpc.views import account_view, book_checksum, levels, market_view, open_orders_view

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class TopicError(ValueError):
    """A subscription request names no valid topic; ``code`` is the WebSocket error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_topic(state: IndexerState, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(topic, key fields echoed in messages) for a subscribe/unsubscribe request."""
    channel = request.get("channel")
    if not isinstance(channel, str) or channel not in PUBLIC_CHANNELS:
        raise TopicError(
            "unknown_channel", f"unknown channel {channel!r}; channels: {', '.join(PUBLIC_CHANNELS)}"
        )
    if channel in ("markets", "blocks"):
        return channel, {}
    if channel == "account":
        address = request.get("address")
        if not isinstance(address, str) or _ADDRESS.fullmatch(address) is None:
            raise TopicError("bad_address", 'account channel needs "address": "0x" + 40 hex digits')
        address = address.lower()
        return f"account:{address}", {"address": address}
    market = request.get("market")
    if not isinstance(market, str) or market not in state.config.market_by_symbol:
        raise TopicError("unknown_market", f"unknown market {str(market)[:40]!r}")
    if channel == "candles":
        interval = request.get("interval")
        if not isinstance(interval, str) or interval not in INTERVALS:
            raise TopicError("bad_interval", f"interval must be one of {', '.join(INTERVALS)}")
        return f"candles:{market}:{interval}", {"market": market, "interval": interval}
    return f"{channel}:{market}", {"market": market}


def book_snapshot(state: IndexerState, symbol: str, depth: int | None = None) -> dict[str, Any]:
    """{market, height, seq, bids, asks, checksum}: the DESIGN.md book snapshot (HTTP and WS)."""
    market = state.stf.get_market(symbol)
    assert market is not None
    spec = market.spec
    return {
        "market": symbol,
        "height": state.height,
        "seq": state.seq(f"book:{symbol}"),
        "bids": levels(market.book, True, depth, spec),
        "asks": levels(market.book, False, depth, spec),
        "checksum": book_checksum(market.book, spec),
    }


def snapshot(state: IndexerState, topic: str, keys: dict[str, Any]) -> dict[str, Any]:
    """The snapshot message that starts a subscription to `topic`."""
    channel = topic.split(":", 1)[0]
    out: dict[str, Any] = {"channel": channel, **keys, "type": "snapshot", "height": state.height}
    out["time_ms"] = state.stf.time_ms
    out["seq"] = state.seq(topic)
    stf_state = state.stf
    if channel == "book":
        book = book_snapshot(state, keys["market"])
        out.update(bids=book["bids"], asks=book["asks"], checksum=book["checksum"])
    elif channel == "trades":
        market = stf_state.get_market(keys["market"])
        assert market is not None
        out["trades"] = list(state.recent_trades[market.spec.market_id])
    elif channel == "candles":
        market = stf_state.get_market(keys["market"])
        assert market is not None
        candle = state.candles[market.spec.market_id].get(keys["interval"])
        out["candles"] = [candle.view(market.spec, keys["interval"])] if candle is not None else []
    elif channel == "markets":
        out["markets"] = [market_view(m, state.open_interest[m.spec.market_id]) for m in stf_state.markets]
    elif channel == "blocks":
        out["block"] = state.last_block
    elif channel == "account":
        address = bytes.fromhex(keys["address"][2:])
        view = account_view(stf_state, address)
        account = stf_state.accounts.get(address)
        out["exists"] = view["exists"]
        out["orders"] = open_orders_view(stf_state, account, state.height) if account is not None else []
        out["positions"] = view["positions"]
        out["balance"] = {
            k: view[k] for k in ("collateral", "equity", "margin_used", "maintenance", "available")
        }
    return out
