"""Property test: orders, cancels, transfers, faucet, oracle moves and funding on thin collateral.

Invariants after every block: the book and index invariants, long == short per market,
conservation of value (changes only by faucet mints), incremental app hash == full recompute,
no flat account left with negative collateral (a liquidation deficit is always covered), no
account left liquidatable, and the same block (results, events, hash) as a twin chain whose
liquidations use the brute-force reference scan instead of the trigger index.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sdk import tx as sdk_tx
from stf.events import FUNDING, LIQUIDATION
from stf.invariants import find_violations, total_value
from stf.snapshot import full_hash
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

TRADERS = keys(5, b"mprop")
VALIDATORS = keys(3, b"mpropval")
SYMBOL = "TEST-PERP"
ORACLE = 1000
SPEC = make_market(
    0,
    symbol=SYMBOL,
    price_decimals=1,
    size_decimals=0,
    tick_size=1,
    lot_size=1,
    min_size=1,
    initial_margin_ppm=100_000,
    maintenance_margin_ppm=50_000,
    max_leverage=10,
    maker_fee_ppm=200,
    taker_fee_ppm=500,
    funding_interval_ms=1_000,
    funding_cap_ppm=5_000,
    interest_rate_ppm=300,
    price_band_ppm=100_000,
    initial_oracle_price=ORACLE,
)


class MarginStream(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        config = make_config(
            TRADERS,
            validators=VALIDATORS,
            markets=[SPEC],
            collateral=2_000 * USD,
            insurance_fund=500 * USD,
            liquidation_fee_ppm=5_000,
        )
        self.chain = Chain(config, verify=False)
        self.reference = reference_chain(config)
        self.pending: list[bytes] = []
        self.value = total_value(self.chain.state)
        self.minted = 0
        self.seen: dict[str, int] = {"liquidations": 0, "funding": 0}

    @rule(
        who=st.integers(0, 4),
        buy=st.booleans(),
        offset=st.integers(-40, 40),
        size=st.integers(1, 220),
        tif=st.sampled_from(["gtc", "ioc", "post_only"]),
        reduce_only=st.booleans(),
    )
    def place(self, who: int, buy: bool, offset: int, size: int, tif: str, reduce_only: bool) -> None:
        price = self.chain.state.markets[0].oracle_price + offset
        action = order("buy" if buy else "sell", price, size, market=SYMBOL, tif=tif, reduce_only=reduce_only)
        self.pending.append(self.chain.tx(TRADERS[who], action))

    @rule(who=st.integers(0, 4), buy=st.booleans(), offset=st.integers(-40, 40), size=st.integers(1, 220))
    def place_more(self, who: int, buy: bool, offset: int, size: int) -> None:
        self.place(who, buy, offset, size, "gtc", False)  # a second rule doubles the order flow

    @rule(who=st.integers(0, 4), buy=st.booleans(), size=st.integers(1, 220))
    def take(self, who: int, buy: bool, size: int) -> None:
        self.place(who, buy, 90 if buy else -90, size, "ioc", False)  # aggressive, within the band

    @rule(seller=st.integers(0, 4), buyer=st.integers(0, 4), size=st.integers(100, 200))
    def leverage_up(self, seller: int, buyer: int, size: int) -> None:
        price = self.chain.state.markets[0].oracle_price
        self.pending.append(self.chain.tx(TRADERS[seller], order("sell", price, size, market=SYMBOL)))
        self.pending.append(
            self.chain.tx(TRADERS[buyer], order("buy", price, size, market=SYMBOL, tif="ioc"))
        )

    @precondition(lambda self: bool(self.chain.state.orders))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        target = self.chain.state.orders[data.draw(st.sampled_from(sorted(self.chain.state.orders)))]
        owner = next(k for k in TRADERS if k.address == target.account)
        self.pending.append(self.chain.tx(owner, sdk_tx.cancel_order(SYMBOL, order_id=target.order_id)))

    @rule(src=st.integers(0, 4), dst=st.integers(0, 4), usd=st.integers(1, 1_500))
    def transfer(self, src: int, dst: int, usd: int) -> None:
        self.pending.append(self.chain.tx(TRADERS[src], sdk_tx.transfer(TRADERS[dst].address, usd * USD)))

    @rule(who=st.integers(0, 4), usd=st.integers(1, 500))
    def faucet(self, who: int, usd: int) -> None:
        self.pending.append(self.chain.tx(TRADERS[who], sdk_tx.faucet(usd * USD)))

    @rule(move_permille=st.integers(-80, 80))
    def move_oracle(self, move_permille: int) -> None:
        price = max(1, self.chain.state.markets[0].oracle_price * (1000 + move_permille) // 1000)
        for v in VALIDATORS:
            self.pending.append(self.chain.tx(v, sdk_tx.oracle_prices({SYMBOL: price})))

    @rule()
    def end_block(self) -> None:
        result = self.chain.block(self.pending)
        assert_same_block(result, self.reference.block(self.pending))
        self.pending = []
        self.minted += sum(e[3] for e in result.events if e[0] == 8)  # FAUCET amounts
        self.seen["liquidations"] += sum(e[0] == LIQUIDATION for e in result.events)
        self.seen["funding"] += sum(e[0] == FUNDING for e in result.events)
        state = self.chain.state
        assert find_violations(state) == []
        assert total_value(state) == self.value + self.minted
        assert result.app_hash == full_hash(state)
        assert liquidatable_accounts(state) == []  # find_violations: no flat account owes anything

    @invariant()
    def nothing_pending_is_applied(self) -> None:
        assert self.chain.state.dirty == {}


MarginStream.TestCase.settings = settings(
    max_examples=200, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestMarginStream = MarginStream.TestCase


class LongMarginStream(MarginStream):
    pass


LongMarginStream.TestCase.settings = settings(
    max_examples=1_500, stateful_step_count=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLongMarginStream = pytest.mark.slow(LongMarginStream.TestCase)
