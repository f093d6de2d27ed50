"""JSON views of the exchange state: decimal strings, book levels and the book checksum.

Theory of operation
- Every price and size leaves the indexer as a decimal string in the market's precision,
  exactly ``sdk.units.from_units(value, decimals)`` (fixed number of fractional digits);
  USD amounts have 6 decimals, fractions/rates (ppm) 6 decimals. ``fmt`` is a fast
  equivalent of ``from_units`` (tests check they agree) because it runs for every event.
- The book checksum (DESIGN.md): CRC-32 (zlib, unsigned) of the UTF-8 string formed by the
  top 25 levels interleaved ``bid_px:bid_sz:ask_px:ask_sz:...``; a side missing at an index
  is skipped; prices and sizes exactly as sent. An empty book has checksum 0.
- These functions only read the state; they are shared by the HTTP handlers, the WebSocket
  snapshots and the reducer's updates, so a snapshot and an update always agree on format.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any

from proto.ita.v1 import tx_pb2
from stf.book import Book, Order
from stf.config import COLLATERAL_DECIMALS, PPM, MarketSpec
from stf.margin import compute_equity, compute_unrealized, initial_requirement, maintenance_requirement
from stf.state import Account, MarketState, State
from stf.units import decimal_text

CHECKSUM_LEVELS = 25
Level = list[str]  # [price, size]

TIF_NAMES: dict[int, str] = {
    tx_pb2.TIME_IN_FORCE_UNSPECIFIED: "gtc",
    tx_pb2.TIME_IN_FORCE_GTC: "gtc",
    tx_pb2.TIME_IN_FORCE_IOC: "ioc",
    tx_pb2.TIME_IN_FORCE_POST_ONLY: "post_only",
}


_FMT_CACHE_MAX = 100_000  # strings kept per number of decimals


class Formatter(dict[int, str]):
    """``formatter(decimals)[value] == fmt(value, decimals)``: a memo of the strings for one number
    of decimals (a plain dict lookup once seen; bounded, simply dropped when full)."""

    __slots__ = ("decimals",)

    def __init__(self, decimals: int) -> None:
        super().__init__()
        self.decimals = decimals

    def __missing__(self, value: int) -> str:
        if len(self) >= _FMT_CACHE_MAX:
            self.clear()
        text = self[value] = decimal_text(value, self.decimals)
        return text


class _Formatters(dict[int, Formatter]):
    def __missing__(self, decimals: int) -> Formatter:
        memo = self[decimals] = Formatter(decimals)
        return memo


_FORMATTERS = _Formatters()


def formatter(decimals: int) -> Formatter:
    """The memo of decimal strings for ``decimals`` (see ``Formatter``)."""
    return _FORMATTERS[decimals]


def fmt(value: int, decimals: int) -> str:
    """``sdk.units.from_units(value, decimals)`` without the argument checks, memoized (prices and
    sizes repeat a lot)."""
    return _FORMATTERS[decimals][value]


def usd(value: int) -> str:
    return fmt(value, COLLATERAL_DECIMALS)


def ppm(value: int) -> str:
    """A fraction in parts per million as a decimal string ("0.000100")."""
    return fmt(value, 6)


class _AddressHex(dict[bytes, str]):
    """Memo of ``"0x" + address.hex()`` (bounded, dropped when full)."""

    def __missing__(self, address: bytes) -> str:
        if len(self) >= _FMT_CACHE_MAX:
            self.clear()
        text = self[address] = "0x" + address.hex()
        return text


ADDRESS_HEX = _AddressHex()  # ADDRESS_HEX[address] == address_hex(address)


def address_hex(address: bytes) -> str:
    return ADDRESS_HEX[address]


def side_name(is_buy: bool) -> str:
    return "buy" if is_buy else "sell"


def levels(book: Book, is_buy: bool, depth: int | None, spec: MarketSpec) -> list[Level]:
    """Best-first [price, size] pairs; ``depth=None`` means every level."""
    pf, sf = _FORMATTERS[spec.price_decimals], _FORMATTERS[spec.size_decimals]
    if depth is None:
        depth = len(book.bid_keys if is_buy else book.ask_keys)
    return [[pf[p], sf[s]] for p, s in book.depth(is_buy, depth)]


def checksum(bids: list[Level], asks: list[Level]) -> int:
    """CRC-32 of the top 25 levels interleaved bid_px:bid_sz:ask_px:ask_sz (see module doc)."""
    parts: list[str] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts.append(bids[i][0])
            parts.append(bids[i][1])
        if i < len(asks):
            parts.append(asks[i][0])
            parts.append(asks[i][1])
        elif i >= len(bids):
            break
    return zlib.crc32(":".join(parts).encode()) & 0xFFFFFFFF


def book_checksum(book: Book, spec: MarketSpec) -> int:
    return checksum(levels(book, True, CHECKSUM_LEVELS, spec), levels(book, False, CHECKSUM_LEVELS, spec))


def checksum_window(book: Book) -> tuple[int, int]:
    """(lowest bid, highest ask) that can change the checksum: a level change strictly below the
    25th bid and strictly above the 25th ask leaves the top 25 levels, hence the checksum, alone."""
    bid_floor = book.bid_keys[-CHECKSUM_LEVELS] if len(book.bid_keys) >= CHECKSUM_LEVELS else 0
    ask_ceiling = -book.ask_keys[-CHECKSUM_LEVELS] if len(book.ask_keys) >= CHECKSUM_LEVELS else 2**63
    return bid_floor, ask_ceiling


def spec_view(spec: MarketSpec) -> dict[str, Any]:
    """The static part of a market's view (a fresh dict each call; the content is cached)."""
    return dict(_spec_view(spec))


@functools.lru_cache(maxsize=256)
def _spec_view(spec: MarketSpec) -> dict[str, Any]:
    pd, sd = spec.price_decimals, spec.size_decimals
    return {
        "symbol": spec.symbol,
        "market_id": spec.market_id,
        "price_decimals": pd,
        "size_decimals": sd,
        "tick_size": fmt(spec.tick_size, pd),
        "lot_size": fmt(spec.lot_size, sd),
        "min_size": fmt(spec.min_size, sd),
        "initial_margin_fraction": ppm(spec.initial_margin_ppm),
        "maintenance_margin_fraction": ppm(spec.maintenance_margin_ppm),
        "max_leverage": spec.max_leverage,
        "maker_fee": ppm(spec.maker_fee_ppm),
        "taker_fee": ppm(spec.taker_fee_ppm),
        "funding_interval_ms": spec.funding_interval_ms,
        "funding_cap": ppm(spec.funding_cap_ppm),
        "interest_rate": ppm(spec.interest_rate_ppm),
        "price_band": ppm(spec.price_band_ppm),
    }


def market_view(market: MarketState, open_interest: int) -> dict[str, Any]:
    """Oracle, mark, funding, open interest and best prices of one market (spec included)."""
    spec = market.spec
    pd = spec.price_decimals
    book = market.book
    best_bid, best_ask = book.best_bid(), book.best_ask()
    out = spec_view(spec)
    out.update(
        {
            "halted": market.halted,
            "oracle_price": fmt(market.oracle_price, pd),
            "mark_price": fmt(market.mark_price, pd),
            "best_bid": fmt(best_bid, pd) if best_bid else None,
            "best_ask": fmt(best_ask, pd) if best_ask else None,
            "funding_rate": ppm(market.funding_rate),
            "next_funding_ms": market.next_funding_ms,
            "open_interest": fmt(open_interest, spec.size_decimals),
        }
    )
    return out


def order_view(
    order: Order, spec: MarketSpec, status: str, remaining: int, filled: int, height: int, reason: str = ""
) -> dict[str, Any]:
    """An order as the API shows it: ``remaining`` is the size still resting (0 once closed),
    ``filled`` what traded; ``height`` the block of this status."""
    sf = _FORMATTERS[spec.size_decimals]
    out: dict[str, Any] = {
        "order_id": order.order_id,
        "market": spec.symbol,
        "account": ADDRESS_HEX[order.account],
        "side": "buy" if order.is_buy else "sell",
        "price": _FORMATTERS[spec.price_decimals][order.price],
        "size": sf[order.orig_size],
        "remaining": sf[remaining],
        "filled": sf[filled],
        "status": status,
        "time_in_force": TIF_NAMES.get(order.tif, "gtc"),
        "reduce_only": order.reduce_only,
        "client_order_id": order.client_order_id,
        "height": height,
    }
    if reason:
        out["reason"] = reason
    return out


def compute_entry_price(open_notional: int, size: int, spec: MarketSpec) -> int:
    """Average entry price in price units, rounded half up."""
    denominator = abs(size) * spec.notional_scale
    return (2 * open_notional + denominator) // (2 * denominator)


def compute_liquidation_price(state: State, account: Account, market_id: int) -> int | None:
    """Mark price of this market at which the account reaches its maintenance requirement, other
    markets unchanged (cross margin). Rounded towards the mark (long: up, short: down); None
    when no positive price liquidates it."""
    position = account.positions.get(market_id)
    if position is None or position.size == 0:
        return None
    market = state.markets[market_id]
    spec = market.spec
    scale = spec.notional_scale
    size = position.size
    mmf = spec.maintenance_margin_ppm
    own_maintenance = -(-abs(size) * market.mark_price * scale * mmf // PPM)
    rest = compute_equity(state, account) - size * market.mark_price * scale
    rest -= maintenance_requirement(state, account) - own_maintenance
    # rest + size*scale*p == |size|*scale*mmf*p/PPM  =>  p = -rest*PPM / (scale*(size*PPM - |size|*mmf))
    denominator = scale * (size * PPM - abs(size) * mmf)
    numerator = -rest * PPM
    if denominator == 0:
        return None
    price = -(-numerator // denominator) if size > 0 else numerator // denominator
    return price if price > 0 else None


def position_view(state: State, account: Account, market_id: int) -> dict[str, Any]:
    market = state.markets[market_id]
    spec = market.spec
    pd, sd = spec.price_decimals, spec.size_decimals
    position = account.positions.get(market_id)
    if position is None:
        return {
            "market": spec.symbol,
            "size": fmt(0, sd),
            "entry_price": None,
            "open_notional": usd(0),
            "unrealized_pnl": usd(0),
            "liquidation_price": None,
        }
    liquidation = compute_liquidation_price(state, account, market_id)
    return {
        "market": spec.symbol,
        "size": fmt(position.size, sd),
        "entry_price": fmt(compute_entry_price(position.open_notional, position.size, spec), pd),
        "open_notional": usd(position.open_notional),
        "unrealized_pnl": usd(compute_unrealized(position, market.mark_price, spec.notional_scale)),
        "liquidation_price": fmt(liquidation, pd) if liquidation is not None else None,
    }


def balance_view(state: State, account: Account) -> dict[str, Any]:
    equity = compute_equity(state, account)
    initial = initial_requirement(state, account)
    return {
        "collateral": usd(account.collateral),
        "equity": usd(equity),
        "margin_used": usd(initial),
        "maintenance": usd(maintenance_requirement(state, account)),
        "available": usd(max(equity - initial, 0)),
    }


def open_orders_view(state: State, account: Account, height: int) -> list[dict[str, Any]]:
    markets = state.markets
    return [
        order_view(o, markets[o.market_id].spec, "open", o.size, o.orig_size - o.size, height)
        for o in account.orders.values()
    ]


def account_view(state: State, address: bytes) -> dict[str, Any]:
    """Collateral, equity, margin used, maintenance, available and positions of an address."""
    account = state.accounts.get(address)
    out: dict[str, Any] = {"height": state.height, "address": address_hex(address)}
    if account is None:
        out.update({"exists": False, **_empty_balance(), "positions": []})
        return out
    out["exists"] = True
    out.update(balance_view(state, account))
    out["positions"] = [position_view(state, account, m) for m in sorted(account.positions)]
    return out


def _empty_balance() -> dict[str, str]:
    zero = usd(0)
    return {"collateral": zero, "equity": zero, "margin_used": zero, "maintenance": zero, "available": zero}
