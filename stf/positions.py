"""Positions: signed size and cost basis per (account, market).

Theory of operation
- A position keeps its signed `size` and `open_notional`, the micro-USD cost
  of its |size| (sum of fill notionals that opened it, less what was closed).
  Entry price = open_notional / (|size| * notional_scale), derived, never stored.
- Reducing by q of |size| removes floor(open_notional * q / |size|) of cost
  and realizes PnL into collateral: long: fill_notional - removed; short:
  removed - fill_notional. A fill larger than the position closes it and
  opens the rest on the other side at the fill price (a flip).
- Cash is exactly conserved: each trade moves `notional` from buyer to seller
  through realized PnL or cost basis, so collateral + unrealized PnL summed
  over all accounts does not change with trades (only fees move to the pool).
"""

from __future__ import annotations

from stf.events import POSITION, Event
from stf.funding import settle_funding
from stf.keys import K_POSITION
from stf.state import Account, MarketState, Position, State


def signed_position(account: Account, market_id: int) -> int:
    position = account.positions.get(market_id)
    return position.size if position is not None else 0


def apply_fill(
    state: State,
    account: Account,
    market: MarketState,
    is_buy: bool,
    price: int,
    size: int,
    tx: int,
    events: list[Event],
) -> int:
    """Apply a fill to the account's position; returns the PnL realized into collateral."""
    market_id = market.spec.market_id
    scale = market.notional_scale
    position = account.positions.get(market_id)
    if position is None:
        state.touch_absent(K_POSITION + account.address + market_id.to_bytes(2, "big"))
        position = account.positions[market_id] = Position(0, 0, market.funding_index)
        market.holders[account.address] = None
    else:
        state.touch_position(account.address, market_id)
        settle_funding(state, account, position, market)
    old = position.size
    realized = 0
    if old == 0 or (old > 0) == is_buy:
        position.open_notional += price * size * scale
        position.size = old + size if is_buy else old - size
    else:
        held = -old if old < 0 else old
        closing = size if size <= held else held
        removed = position.open_notional * closing // held
        close_notional = price * closing * scale
        realized = close_notional - removed if old > 0 else removed - close_notional
        position.open_notional -= removed
        opening = size - closing
        position.size = old + closing if is_buy else old - closing
        if opening:
            position.size = opening if is_buy else -opening
            position.open_notional = price * opening * scale
    if realized:
        state.touch_account(account.address)
        account.collateral += realized
    if position.size == 0:
        del account.positions[market_id]
        del market.holders[account.address]
    events.append((POSITION, tx, account.address, market_id, position.size, position.open_notional, realized))
    return realized
