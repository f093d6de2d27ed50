"""Funding: premium sampled every block, applied every interval, settled lazily.

Theory of operation
- Each block samples premium_ppm = floor((mark - oracle) * PPM / oracle) per
  market (after trading, with the block's final prices) into a running sum.
- When block time reaches `next_funding_ms`, the interval's rate is
  clamp(floor(sum / samples) + interest, -cap, +cap) ppm, and the market's
  cumulative index grows by oracle * notional_scale * rate: micro-USD x PPM
  per size unit. Positive rates make longs pay shorts. Missed intervals (a
  long gap between blocks) are applied once; the schedule then continues
  from the next boundary after the block time.
- A position stores the index at its last settlement. Its funding owed is
  size * (index - stored) / PPM micro-USD (positive: it pays). Settlement is
  lazy: before the position changes, or when an account is liquidated. A
  payer pays ceil(owed) and a receiver gets floor(-owed): rounding never
  favours the account. Both go through the market's `funding_pool`, so
  collateral + funding pools is exactly conserved; once every position has
  settled, the pool holds only the rounding dust (>= 0), which stays there
  (documented in stf/README.md).
- Between settlements, margin uses the pending amount with the same rounding.
"""

from __future__ import annotations

from stf.config import PPM
from stf.events import FUNDING, Event
from stf.state import Account, MarketState, Position, State


def compute_premium_ppm(mark: int, oracle: int) -> int:
    return (mark - oracle) * PPM // oracle


def compute_owed(position: Position, index: int) -> int:
    """Micro-USD this position owes (> 0) or is owed (< 0) since its last settlement, rounded
    against the account: ceil when paying, floor when receiving."""
    scaled = position.size * (index - position.funding_index)
    return -(-scaled // PPM)


def settle_funding(state: State, account: Account, position: Position, market: MarketState) -> None:
    if position.funding_index == market.funding_index:
        return
    owed = compute_owed(position, market.funding_index)
    state.touch_position(account.address, market.spec.market_id)
    position.funding_index = market.funding_index
    if owed:
        state.touch_account(account.address)
        state.touch_market(market.spec.market_id)
        account.collateral -= owed
        market.funding_pool += owed


def sample_and_apply(state: State, market: MarketState, events: list[Event]) -> None:
    spec = market.spec
    state.touch_market(spec.market_id)
    market.premium_sum += compute_premium_ppm(market.mark_price, market.oracle_price)
    market.premium_samples += 1
    if state.time_ms < market.next_funding_ms:
        return
    average = market.premium_sum // market.premium_samples
    rate = max(-spec.funding_cap_ppm, min(spec.funding_cap_ppm, average + spec.interest_rate_ppm))
    market.funding_rate = rate
    market.funding_index += market.oracle_price * market.notional_scale * rate
    market.premium_sum = 0
    market.premium_samples = 0
    interval = spec.funding_interval_ms
    behind = state.time_ms - market.next_funding_ms
    market.next_funding_ms += (behind // interval + 1) * interval
    events.append((FUNDING, spec.market_id, rate, market.funding_index))
