"""Per-block prices: oracle (stake-weighted median) and mark.

mark = median(oracle, best bid, best ask), a missing side counting as the
oracle price, so an empty or one-sided book marks at the oracle and a single
outlier quote cannot move the mark past the oracle. The mark is computed once
at the end of each block, after trading, and used for PnL, margin, funding and
liquidation until the next block's end.
"""

from __future__ import annotations

from stf.events import MARK_PRICE, ORACLE_PRICE, Event
from stf.oracle import compute_oracle_price
from stf.state import MarketState, State


def refresh_oracle_price(state: State, market: MarketState, events: list[Event]) -> bool:
    """Recompute the market's oracle price from fresh submissions; True if it changed."""
    price = compute_oracle_price(
        market.oracle_subs, state.validator_power, state.time_ms, state.config.oracle_stale_ms
    )
    if not price or price == market.oracle_price:
        return False
    state.touch_market(market.spec.market_id)
    market.oracle_price = price
    events.append((ORACLE_PRICE, market.spec.market_id, price))
    return True


def compute_mark_price(oracle: int, best_bid: int, best_ask: int) -> int:
    trio = sorted((oracle, best_bid or oracle, best_ask or oracle))
    return trio[1]


def refresh_mark_price(state: State, market: MarketState, events: list[Event]) -> bool:
    book = market.book
    mark = compute_mark_price(market.oracle_price, book.best_bid(), book.best_ask())
    if mark == market.mark_price:
        return False
    state.touch_market(market.spec.market_id)
    market.mark_price = mark
    events.append((MARK_PRICE, market.spec.market_id, mark))
    return True
