"""The liquidation trigger index (stf/triggers.py): its bound, and the pass against brute force.

- `test_untriggered_account_is_never_liquidatable`: the bound itself, on random accounts with
  1-3 positions in markets of random scale and maintenance fraction: index at one set of marks,
  move every mark anywhere; if no trigger fired, the account is not liquidatable.
- `MultiMarketStream`: two markets on thin collateral, large oracle moves on both, funding,
  transfers, snapshot round trips (which rebuild the index), compared block by block with a twin
  chain liquidating by brute force; after every block nothing is left liquidatable.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from sdk import tx as sdk_tx
from stf.block import genesis_state
from stf.config import PPM
from stf.events import LIQUIDATION
from stf.invariants import find_violations
from stf.margin import compute_buffer, compute_equity, is_liquidatable, maintenance_requirement
from stf.snapshot import decode_snapshot, encode_snapshot, full_hash
from stf.state import Position, State
from stf.triggers import index_account, pop_crossed
from tests.stf_support import (
    USD,
    Chain,
    assert_same_block,
    keys,
    liquidatable_accounts,
    make_config,
    make_market,
    order,
    reference_chain,
)

OWNER = keys(1, b"trig")[0]


@st.composite
def indexed_account(draw: st.DrawFn) -> tuple[State, list[int]]:
    """A state with one healthy account holding 1-3 positions, indexed; and new marks to try."""
    n = draw(st.integers(1, 3))
    markets = []
    for m in range(n):
        pd = draw(st.integers(0, 3))
        markets.append(
            make_market(
                m,
                f"M{m}-PERP",
                price_decimals=pd,
                size_decimals=draw(st.integers(0, 6 - pd)),
                tick_size=1,
                lot_size=1,
                min_size=1,
                maintenance_margin_ppm=draw(st.integers(1, PPM - 1)),
                initial_oracle_price=draw(st.integers(1, 10**6)),
            )
        )
    state = genesis_state(make_config([OWNER], markets=markets, collateral=0))
    account = state.accounts[OWNER.address]
    for market in state.markets:
        size = draw(st.integers(1, 10**4)) * draw(st.sampled_from([1, -1]))
        entry = draw(st.integers(1, 2 * 10**6))
        position = Position(size, abs(size) * entry * market.spec.notional_scale, 0)
        account.positions[market.spec.market_id] = position
        market.holders[OWNER.address] = None
    without_collateral = compute_buffer(state, account)
    account.collateral = -without_collateral + draw(st.one_of(st.integers(0, 10**6), st.integers(0, 10**12)))
    marks = []
    for market in state.markets:
        near = max(1, market.mark_price + draw(st.integers(-3_000, 3_000)))
        marks.append(draw(st.sampled_from([near, draw(st.integers(1, 2 * 10**6))])))
    return state, marks


def live_triggers(state: State, address: bytes) -> dict[int, int]:
    """market id -> trigger price of the account's current entries (longs stored negated)."""
    index = state.triggers
    seq = index.live[address]
    out: dict[int, int] = {}
    for market_id in range(len(state.markets)):
        for key, entry_seq, _ in index.longs[market_id]:
            if entry_seq == seq:
                out[market_id] = -key
        for key, entry_seq, _ in index.shorts[market_id]:
            if entry_seq == seq:
                out[market_id] = key
    return out


@settings(max_examples=3_000, deadline=None)
@given(indexed_account(), st.data())
def test_untriggered_account_is_never_liquidatable(
    case: tuple[State, list[int]], data: st.DataObject
) -> None:
    """Marks anywhere, or at the last price before each trigger (all at once: the worst case)."""
    state, marks = case
    account = state.accounts[OWNER.address]
    buffer = compute_buffer(state, account)
    assert buffer == compute_equity(state, account) - maintenance_requirement(state, account)
    assert buffer >= 0
    index_account(state, account, buffer)
    triggers = live_triggers(state, OWNER.address)
    at_edge = data.draw(st.booleans())
    for market, mark in zip(state.markets, marks, strict=True):
        market_id = market.spec.market_id
        if at_edge and market_id in triggers:
            is_long = account.positions[market_id].size > 0
            mark = triggers[market_id] + (1 if is_long else -1)
        market.mark_price = mark
    fired = OWNER.address in pop_crossed(state)
    assert fired or not is_liquidatable(state, account)
    if at_edge:
        assert not fired


TRADERS = keys(4, b"trigstream")
VALIDATORS = keys(3, b"trigval")
SYMBOLS = ("AAA-PERP", "BBB-PERP")
MARKETS = [
    make_market(
        0, SYMBOLS[0], price_decimals=1, size_decimals=0, tick_size=1, lot_size=1, min_size=1,
        initial_oracle_price=1000, funding_interval_ms=1_000, interest_rate_ppm=300,
    ),
    make_market(
        1, SYMBOLS[1], price_decimals=2, size_decimals=1, tick_size=1, lot_size=1, min_size=1,
        initial_oracle_price=5000, maintenance_margin_ppm=30_000, initial_margin_ppm=60_000,
        funding_interval_ms=1_400, interest_rate_ppm=-200,
    ),
]


class MultiMarketStream(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        config = make_config(
            TRADERS, validators=VALIDATORS, markets=MARKETS, collateral=1_500 * USD, insurance_fund=300 * USD
        )
        self.chain = Chain(config, verify=False)
        self.reference = reference_chain(config)
        self.pending: list[bytes] = []
        self.liquidations = 0

    def oracle(self, market: int) -> int:
        return self.chain.state.markets[market].oracle_price

    def size_for(self, market: int, percent: int) -> int:
        """`percent` of the size 1,500 USD opens at the market's maximum leverage, at the oracle."""
        spec = self.chain.state.markets[market].spec
        unit = self.oracle(market) * spec.notional_scale * spec.initial_margin_ppm // PPM
        return max(1, 1_500 * USD * percent // 100 // unit)

    @rule(who=st.integers(0, 3), market=st.integers(0, 1), buy=st.booleans(), offset=st.integers(-30, 30),
          percent=st.integers(1, 40), tif=st.sampled_from(["gtc", "gtc", "ioc"]))
    def place(self, who: int, market: int, buy: bool, offset: int, percent: int, tif: str) -> None:
        price = max(1, self.oracle(market) + offset)
        size = self.size_for(market, percent)
        action = order("buy" if buy else "sell", price, size, market=SYMBOLS[market], tif=tif)
        self.pending.append(self.chain.tx(TRADERS[who], action))

    @rule(who=st.integers(0, 3), market=st.integers(0, 1), buy=st.booleans(), permille=st.integers(10, 95),
          percent=st.integers(30, 100))
    def rest_far(self, who: int, market: int, buy: bool, permille: int, percent: int) -> None:
        """A large resting order away from the oracle: liquidations close into it (cascades)."""
        move = self.oracle(market) * permille // 1000
        price = max(1, self.oracle(market) - move if buy else self.oracle(market) + move)
        size = self.size_for(market, percent)
        action = order("buy" if buy else "sell", price, size, market=SYMBOLS[market])
        self.pending.append(self.chain.tx(TRADERS[who], action))

    @rule(who=st.integers(0, 3), market=st.integers(0, 1), permille=st.integers(5, 60),
          percent=st.integers(10, 60))
    def add_on(self, who: int, market: int, permille: int, percent: int) -> None:
        """A resting order that would grow an existing position: when another account's
        liquidation fills it, this one may fall under maintenance too (a cascade)."""
        position = self.chain.state.accounts[TRADERS[who].address].positions.get(market)
        if position is not None:
            self.rest_far(who, market, position.size > 0, permille, percent)

    @rule(seller=st.integers(0, 3), buyer=st.integers(0, 3), market=st.integers(0, 1),
          percent=st.integers(30, 100))
    def leverage_up(self, seller: int, buyer: int, market: int, percent: int) -> None:
        price, symbol, size = self.oracle(market), SYMBOLS[market], self.size_for(market, percent)
        self.pending.append(self.chain.tx(TRADERS[seller], order("sell", price, size, market=symbol)))
        taker = order("buy", price, size, market=symbol, tif="ioc")
        self.pending.append(self.chain.tx(TRADERS[buyer], taker))

    @rule(src=st.integers(0, 3), dst=st.integers(0, 3), usd=st.integers(1, 1_000))
    def transfer(self, src: int, dst: int, usd: int) -> None:
        self.pending.append(self.chain.tx(TRADERS[src], sdk_tx.transfer(TRADERS[dst].address, usd * USD)))

    @rule(market=st.integers(0, 1), move_permille=st.integers(-200, 200))
    def move_oracle(self, market: int, move_permille: int) -> None:
        price = max(1, self.oracle(market) * (1000 + move_permille) // 1000)
        for v in VALIDATORS:
            self.pending.append(self.chain.tx(v, sdk_tx.oracle_prices({SYMBOLS[market]: price})))

    @rule()
    def snapshot_round_trip(self) -> None:
        """Restart from a snapshot: the trigger index is rebuilt from the loaded accounts."""
        self.chain.state = decode_snapshot(self.chain.config, encode_snapshot(self.chain.state))

    @rule()
    def end_block(self) -> None:
        result = self.chain.block(self.pending)
        assert_same_block(result, self.reference.block(self.pending))
        self.pending = []
        self.liquidations += sum(e[0] == LIQUIDATION for e in result.events)
        state = self.chain.state
        assert liquidatable_accounts(state) == []
        assert find_violations(state) == []
        assert result.app_hash == full_hash(state)


MultiMarketStream.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestMultiMarketStream = MultiMarketStream.TestCase


class LongMultiMarketStream(MultiMarketStream):
    pass


LongMultiMarketStream.TestCase.settings = settings(
    max_examples=1_500, stateful_step_count=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLongMultiMarketStream = pytest.mark.slow(LongMultiMarketStream.TestCase)
