"""Liquidation: book first, then the insurance fund, then auto-deleveraging.

Theory of operation
- At the end of every block, after prices and funding, the pass repeatedly
  liquidates the liquidatable account (equity < maintenance requirement,
  stf/margin.py) with the lowest address, until none is left. So nothing
  liquidatable survives a block, including an account pushed under by
  another's liquidation (a filled resting order, a fee). Fast path: the
  candidates are the accounts whose trigger the marks crossed
  (stf/triggers.py), every account touched in the block that holds a
  position, and every holder of a market whose funding index moved; they
  are examined lowest address first (a heap), and whoever a liquidation
  changes (its POSITION events) goes back in. Nothing else can have become
  liquidatable: marks and funding are fixed during the pass and untouched
  accounts are covered by their triggers. Evaluated survivors are re-indexed
  with their final buffer. `liquidate_accounts_brute_force` is the plain
  reference (scan everything after each liquidation), checked against this
  pass by the tests. Each liquidation is, in full:
  1. its open orders are cancelled (reason "liquidation");
  2. per market (ascending id), an IOC reduce-only order closes the position
     into the book, limited to the market's price band around the oracle; it
     pays the liquidation fee (instead of the taker fee) to the insurance fund;
  3. what is left is taken over by the insurance fund (an account at a
     reserved address) at the *bankruptcy price* - the price at which the
     account's equity is exactly zero (rounded so it is not negative) - if
     the fund's equity stays >= 0 with the new position at mark;
  4. otherwise auto-deleveraging: the opposite positions in that market are
     ranked by profit x leverage (highest first, ties by address) and reduced
     against the liquidated position at the bankruptcy price, no fees;
  5. a negative balance left with no position is paid back to zero by the fund.
- After the pass, every other account left with no position and a negative
  balance is paid back to zero by the fund as well, ascending address: an
  ADL counterparty or a maker filled beyond its bankruptcy price (during the
  block or by a liquidation) ends flat and owing, and is not liquidatable,
  so step 5 never reaches it. Such an account changed in this block (the
  previous block's sweep left none): the fast path looks at the touched
  accounts that were flat and owing when the pass began and at every account
  the pass evaluated (whatever the pass changes gets a POSITION event and is
  evaluated); the reference scans them all.
- Every step moves value between accounts through fills and explicit
  transfers, so the conserved total of stf/invariants.py holds exactly.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Final

from stf.events import (
    ADL,
    CANCEL_LIQUIDATION,
    DEFICIT_COVERED,
    END_OF_BLOCK,
    LIQUIDATION,
    POSITION,
    TAKEOVER,
    Event,
)
from stf.funding import settle_funding
from stf.keys import KIND_ACCOUNT, KIND_POSITION
from stf.margin import (
    compute_buffer,
    compute_equity,
    compute_unrealized,
    is_liquidatable,
    maintenance_requirement,
)
from stf.matching import TIF_IOC, OrderRequest, cancel_resting, compute_band, execute_order
from stf.positions import apply_fill
from stf.state import INSURANCE_FUND, Account, MarketState, State
from stf.triggers import index_account, pop_crossed

NO_EQUITY_LEVERAGE: Final = 1 << 62  # leverage rank of an account whose equity is <= 0


def collect_candidates(state: State, funded_markets: list[int], flat_owing: list[bytes]) -> list[bytes]:
    """Accounts that may be liquidatable now (a superset of those that are), unordered. Touched
    accounts without a position that owe (collateral < 0) are appended to `flat_owing`."""
    found = dict.fromkeys(pop_crossed(state))
    for market_id in funded_markets:
        found.update(state.markets[market_id].holders)
    accounts = state.accounts
    for key in state.dirty:
        kind = key[0]
        if kind == KIND_ACCOUNT or kind == KIND_POSITION:
            address = key[1:21]
            account = accounts.get(address)
            if account is None:
                continue
            if account.positions:
                found[address] = None
            elif account.collateral < 0:
                flat_owing.append(address)
    found.pop(INSURANCE_FUND, None)
    return list(found)


def liquidate_accounts(state: State, funded_markets: list[int], events: list[Event]) -> None:
    """Liquidate, lowest address first, until no account is liquidatable; re-index the rest."""
    if state.reference_liquidations:
        liquidate_accounts_brute_force(state, events)
        return
    flat_owing: list[bytes] = []
    queue = collect_candidates(state, funded_markets, flat_owing)
    queued = dict.fromkeys(queue)
    heapify(queue)
    buffers: dict[bytes, int] = {}  # evaluated accounts -> buffer after their last change
    while queue:
        address = heappop(queue)
        del queued[address]
        account = state.accounts[address]
        buffer = compute_buffer(state, account)
        buffers[address] = buffer
        if buffer >= 0 or not account.positions:
            continue
        start = len(events)
        liquidate(state, account, events)
        for event in events[start:]:
            other = event[2]
            if event[0] == POSITION and other not in queued and other != INSURANCE_FUND:
                queued[other] = None
                heappush(queue, other)
    # Flat and owing now: owing already when the pass began, or changed by it (then evaluated).
    flat_owing.extend(buffers)
    cover_flat_deficits(state, flat_owing, events)
    for address, buffer in buffers.items():
        index_account(state, state.accounts[address], buffer)


def cover_flat_deficits(state: State, addresses: list[bytes], events: list[Event]) -> None:
    """The fund pays back every negative balance left without a position, ascending address."""
    accounts = state.accounts
    for address in sorted(dict.fromkeys(addresses)):
        account = accounts.get(address)
        if account is None or address == INSURANCE_FUND:
            continue
        if account.collateral < 0 and not account.positions:
            cover_deficit(state, account, events)


def liquidate_accounts_brute_force(state: State, events: list[Event]) -> None:
    """The reference: liquidate the lowest-address liquidatable account, rescan everything, repeat."""
    while True:
        victim = next(
            (
                account
                for address, account in sorted(state.accounts.items())
                if address != INSURANCE_FUND and is_liquidatable(state, account)
            ),
            None,
        )
        if victim is None:
            cover_flat_deficits(state, list(state.accounts), events)
            return
        liquidate(state, victim, events)


def liquidate(state: State, account: Account, events: list[Event]) -> None:
    events.append(
        (
            LIQUIDATION,
            account.address,
            compute_equity(state, account),
            maintenance_requirement(state, account),
        )
    )
    for order in list(account.orders.values()):
        cancel_resting(state, order, state.markets[order.market_id], CANCEL_LIQUIDATION, END_OF_BLOCK, events)
    for market_id in sorted(account.positions):
        close_into_book(state, account, state.markets[market_id], events)
    for market_id in sorted(account.positions):
        market = state.markets[market_id]
        settle_funding(state, account, account.positions[market_id], market)
        price = compute_bankruptcy_price(state, account, market)
        if not take_over(state, account, market, price, events):
            deleverage(state, account, market, price, events)
    if not account.positions and account.collateral < 0:
        cover_deficit(state, account, events)


def close_into_book(state: State, account: Account, market: MarketState, events: list[Event]) -> None:
    size = account.positions[market.spec.market_id].size
    is_buy = size < 0
    low, high = compute_band(market.oracle_price, market.spec.price_band_ppm)
    request = OrderRequest(market, is_buy, high if is_buy else low, abs(size), TIF_IOC, True, "", True)
    execute_order(state, account, request, END_OF_BLOCK, events)


def compute_bankruptcy_price(state: State, account: Account, market: MarketState) -> int:
    """Price closing this position at which the account's equity is zero (not below), >= 1."""
    position = account.positions[market.spec.market_id]
    scale = market.notional_scale
    other = compute_equity(state, account) - compute_unrealized(position, market.mark_price, scale)
    held = abs(position.size) * scale
    if position.size > 0:  # sells: equity = other + held*p - open_notional >= 0
        price = -(-(position.open_notional - other) // held)
    else:  # buys back: equity = other + open_notional - held*p >= 0
        price = (other + position.open_notional) // held
    return max(price, 1)


def trade_at(
    state: State,
    market: MarketState,
    seller_or_buyer: Account,
    counterparty: Account,
    is_buy: bool,
    price: int,
    size: int,
    events: list[Event],
) -> None:
    """A fee-less transfer of `size` between two positions at `price` (the first side buys if is_buy)."""
    apply_fill(state, seller_or_buyer, market, is_buy, price, size, END_OF_BLOCK, events)
    apply_fill(state, counterparty, market, not is_buy, price, size, END_OF_BLOCK, events)


def take_over(state: State, account: Account, market: MarketState, price: int, events: list[Event]) -> bool:
    fund = state.insurance
    size = account.positions[market.spec.market_id].size
    scale = market.notional_scale
    gain = (market.mark_price - price) * size * scale  # the fund's unrealized on the new position
    if compute_equity(state, fund) + gain < 0:
        return False
    trade_at(state, market, account, fund, size < 0, price, abs(size), events)
    events.append((TAKEOVER, market.spec.market_id, account.address, size, price))
    return True


def compute_adl_rank(state: State, holder: Account, market: MarketState) -> int:
    position = holder.positions[market.spec.market_id]
    scale = market.notional_scale
    pnl_ppm = (
        compute_unrealized(position, market.mark_price, scale) * 1_000_000 // max(position.open_notional, 1)
    )
    equity = compute_equity(state, holder)
    notional = abs(position.size) * market.mark_price * scale
    leverage_ppm = notional * 1_000_000 // equity if equity > 0 else NO_EQUITY_LEVERAGE
    return pnl_ppm * leverage_ppm


def deleverage(state: State, account: Account, market: MarketState, price: int, events: list[Event]) -> None:
    market_id = market.spec.market_id
    size = account.positions[market_id].size
    opposite = [
        address
        for address in sorted(market.holders)
        if address != account.address
        and (state.accounts[address].positions[market_id].size > 0) != (size > 0)
    ]
    ranked = sorted(opposite, key=lambda a: (-compute_adl_rank(state, state.accounts[a], market), a))
    remaining = abs(size)
    for address in ranked:
        if remaining == 0:
            break
        counterparty = state.accounts[address]
        quantity = min(remaining, abs(counterparty.positions[market_id].size))
        trade_at(state, market, account, counterparty, size < 0, price, quantity, events)
        events.append((ADL, market_id, account.address, address, quantity, price))
        remaining -= quantity


def cover_deficit(state: State, account: Account, events: list[Event]) -> None:
    deficit = -account.collateral
    state.touch_account(account.address)
    state.touch_account(INSURANCE_FUND)
    account.collateral = 0
    state.insurance.collateral -= deficit
    events.append((DEFICIT_COVERED, account.address, deficit))
