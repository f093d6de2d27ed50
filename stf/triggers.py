"""Liquidation trigger index: which accounts a mark move may have made liquidatable.

Theory of operation
- Derived state, never hashed: rebuilt from the accounts when a snapshot is
  loaded (`rebuild_index`), and its contents never change a result - they
  only decide which accounts the end-of-block pass looks at
  (stf/liquidation.py), which must be a superset of the liquidatable ones.
- When an account with positions is evaluated at marks p_m, its *buffer*
  B = equity - maintenance requirement (>= 0: not liquidatable) is split
  evenly over its k positions: share = floor(B / k), so sum(share) <= B.
- Bound per market (exact integer reasoning, s = size, c = notional_scale,
  f = maintenance fraction in ppm, f < PPM; a move of delta price units
  against the position, every other input of equity unchanged):
    long,  mark falls by delta:  equity -|s|c*delta,  requirement falls by
           >= floor(|s|c*delta*f/PPM), so B loses <= ceil(delta*|s|c(PPM-f)/PPM);
    short, mark rises by delta:  equity -|s|c*delta,  requirement rises by
           <= ceil(|s|c*delta*f/PPM),  so B loses <= ceil(delta*|s|c(PPM+f)/PPM).
  A move *with* the position never lowers B (unrealized PnL is linear in the
  mark; the requirement grows by at most |s|c*delta*f/PPM rounded up, which
  is <= the gain |s|c*delta when f <= PPM). So B cannot go negative while
  every market's adverse move stays <= d_m = floor(share * PPM / w_m), with
  w_m = |s|c(PPM - f) for longs and |s|c(PPM + f) for shorts
  (ceil(delta*w/PPM) <= share  <=>  delta*w <= share*PPM).
- Triggers: a long fires when mark <= p_m - d_m - 1, a short when
  mark >= p_m + d_m + 1, i.e. at the first move the bound no longer covers:
  early is harmless (one extra evaluation), late never happens. A trigger no
  mark can reach (below 1, above the highest possible mark) is not stored,
  so well-collateralised accounts cost nothing here.
- Per market, longs sit in a max-heap and shorts in a min-heap of
  (trigger, seq, address); `live[address]` is the seq of the account's
  current entries. Re-indexing an account gives it a new seq, which turns
  its older entries stale in O(1); stale entries are dropped when popped or
  when a heap outgrows twice the market's holders (compaction, amortised
  O(1) per push). Push and pop are O(log n), whatever the number of holders.
- The index is valid for an account as long as nothing but marks changed
  since it was indexed: any change to its collateral or positions touches
  it, and funding moves every holder of the market, and the liquidation
  pass evaluates (and re-indexes) all of those. An account with a
  long position in a market whose f > PPM (never valid in genesis) has no
  bound and is kept in `always` (evaluated every block), as is one whose
  buffer was already negative when indexed (only possible for a state that
  was not produced by this code).
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Final

from stf.config import PPM
from stf.margin import compute_buffer
from stf.state import INSURANCE_FUND, Account, Entry, MarketState, State, TriggerIndex

MAX_MARK: Final = (1 << 53) - 1  # stf.matching.MAX_PRICE: no order or oracle price above it is accepted


def compute_mark_ceiling(market: MarketState) -> int:
    """The highest mark this market can ever have (prices above MAX_MARK are refused)."""
    return max(MAX_MARK, market.spec.initial_oracle_price)


def has_bound(state: State, account: Account) -> bool:
    markets = state.markets
    for market_id, position in account.positions.items():
        if position.size > 0 and markets[market_id].spec.maintenance_margin_ppm > PPM:
            return False
    return True


def index_account(state: State, account: Account, buffer: int) -> None:
    """(Re-)index an account just evaluated with this buffer; forgets it if it holds nothing."""
    index = state.triggers
    address = account.address
    index.always.pop(address, None)
    if not account.positions or address == INSURANCE_FUND:
        index.live.pop(address, None)
        return
    if buffer < 0 or not has_bound(state, account):
        index.live.pop(address, None)
        index.always[address] = None
        return
    seq = index.next_seq
    index.next_seq = seq + 1
    index.live[address] = seq
    share = buffer // len(account.positions)
    for market_id, position in account.positions.items():
        push_trigger(index, state.markets[market_id], position.size, share, seq, address)


def push_trigger(
    index: TriggerIndex, market: MarketState, size: int, share: int, seq: int, address: bytes
) -> None:
    """Store the trigger of one position (none when no reachable mark can fire it)."""
    spec = market.spec
    market_id = spec.market_id
    if size > 0:
        weight = size * market.notional_scale * (PPM - spec.maintenance_margin_ppm)
        if weight == 0:
            return  # f == PPM: a falling mark never lowers the buffer
        trigger = market.mark_price - share * PPM // weight - 1
        if trigger >= 1:
            heappush(index.longs[market_id], (-trigger, seq, address))
            compact_if_sparse(index, market, index.longs)
    else:
        weight = -size * market.notional_scale * (PPM + spec.maintenance_margin_ppm)
        trigger = market.mark_price + share * PPM // weight + 1
        if trigger <= compute_mark_ceiling(market):
            heappush(index.shorts[market_id], (trigger, seq, address))
            compact_if_sparse(index, market, index.shorts)


def compact_if_sparse(index: TriggerIndex, market: MarketState, heaps: list[list[Entry]]) -> None:
    """Drop stale entries once they could outnumber live ones (each holder has <= 1 live entry)."""
    market_id = market.spec.market_id
    heap = heaps[market_id]
    if len(heap) <= 2 * len(market.holders) + 64:
        return
    live = index.live
    heap = [entry for entry in heap if live.get(entry[2]) == entry[1]]
    heapify(heap)
    heaps[market_id] = heap


def pop_crossed(state: State) -> list[bytes]:
    """Addresses whose trigger the current marks reached (entries removed), plus `always`."""
    index = state.triggers
    live = index.live
    found: list[bytes] = list(index.always)
    for market in state.markets:
        mark = market.mark_price
        market_id = market.spec.market_id
        longs = index.longs[market_id]
        while longs and -longs[0][0] >= mark:
            _, seq, address = heappop(longs)
            if live.get(address) == seq:
                found.append(address)
        shorts = index.shorts[market_id]
        while shorts and shorts[0][0] <= mark:
            _, seq, address = heappop(shorts)
            if live.get(address) == seq:
                found.append(address)
    return found


def rebuild_index(state: State) -> None:
    """Index every account with positions from scratch (after a snapshot load)."""
    state.triggers = TriggerIndex(len(state.markets))
    for address in sorted(state.accounts):
        account = state.accounts[address]
        if account.positions:
            index_account(state, account, compute_buffer(state, account))
