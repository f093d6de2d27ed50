"""Margin ledger scenarios with hand-computed numbers (the arithmetic is in the comments).

Market "TEST-PERP": price_decimals=1 (price unit 0.1 USD), size_decimals=0, so the notional of
`size` at `price` is price * size * 10^5 micro-USD. Initial margin 10 %, maintenance 5 %,
no trading fees (to keep the numbers readable), liquidation fee 0.5 %, oracle 100.0 USD.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sdk import tx as sdk_tx
from sdk.keys import Key
from stf.events import ADL, DEFICIT_COVERED, FUNDING, LIQUIDATION, TAKEOVER, TRADE, event_to_dict
from stf.invariants import find_violations, total_value
from stf.margin import compute_requirement, market_initial_requirement
from stf.results import Code
from stf.state import INSURANCE_FUND, MarketState
from tests.stf_support import USD, Chain, keys, liquidatable_accounts, make_config, make_market, order

T, M, B, M2, X = keys(5, b"margin")
VALIDATORS = keys(3, b"marginval")
SYMBOL = "TEST-PERP"


def market(**overrides: int) -> object:
    fields = dict(
        symbol=SYMBOL,
        price_decimals=1,
        size_decimals=0,
        tick_size=1,
        lot_size=1,
        min_size=1,
        initial_margin_ppm=100_000,
        maintenance_margin_ppm=50_000,
        max_leverage=10,
        maker_fee_ppm=0,
        taker_fee_ppm=0,
        funding_interval_ms=3_600_000,
        funding_cap_ppm=10_000,
        interest_rate_ppm=0,
        price_band_ppm=100_000,
        initial_oracle_price=1000,
    )
    fields.update(overrides)
    return make_market(0, **fields)  # type: ignore[arg-type]


def chain_with(balances: dict[Key, int], insurance: int = 0, **market_overrides: int) -> Chain:
    config = make_config(
        [],
        validators=VALIDATORS,
        markets=[market(**market_overrides)],
        liquidation_fee_ppm=5_000,
        insurance_fund=insurance * USD,
        accounts=tuple((k.address, usd * USD) for k, usd in balances.items()),
    )
    return Chain(config)


def buy(price: int, size: int, **kw: object) -> object:
    return order("buy", price, size, market=SYMBOL, **kw)


def sell(price: int, size: int, **kw: object) -> object:
    return order("sell", price, size, market=SYMBOL, **kw)


def set_oracle(chain: Chain, price: int) -> object:
    txs = [chain.tx(v, sdk_tx.oracle_prices({SYMBOL: price})) for v in VALIDATORS]
    return chain.block(txs)


def kinds(result: object, kind: int) -> list[dict[str, object]]:
    return [event_to_dict(e) for e in result.events if e[0] == kind]  # type: ignore[attr-defined]


def collateral(chain: Chain, key: Key | bytes) -> int:
    address = key if isinstance(key, bytes) else key.address
    return chain.state.accounts[address].collateral


def size_of(chain: Chain, key: Key | bytes) -> int:
    address = key if isinstance(key, bytes) else key.address
    position = chain.state.accounts[address].positions.get(0)
    return position.size if position else 0


def open_long_at_10x(chain: Chain, maker: Key = M, size: int = 100) -> None:
    # T has 1,000 USD; 100 units at 100.0 = 10,000 USD notional: exactly 10x, IM = 1,000 USD.
    assert chain.run(maker, sell(1000, size)).ok
    assert chain.run(T, buy(1000, size)).ok
    assert size_of(chain, T) == size


def test_long_at_10x_pays_funding_then_is_liquidated_into_the_book() -> None:
    # funding every 1,000 ms (5 blocks of 200 ms); interest 0.1 % per interval, premium 0 (mark == oracle)
    chain = chain_with(
        {T: 1_000, M: 1_000_000, B: 1_000_000}, funding_interval_ms=1_000, interest_rate_ppm=1_000
    )
    value = total_value(chain.state)
    open_long_at_10x(chain)  # blocks 1, 2
    assert chain.run(B, buy(935, 100)).ok  # block 3: a bid at 93.5
    chain.block([])  # block 4
    funded = chain.block([])  # block 5, t = 1,000 ms: funding applied
    # index += oracle 1000 * scale 10^5 * 1000 ppm = 10^11; T owes 100 * 10^11 / 10^6 = 10^7 micro = 10 USD
    assert [(f["rate_ppm"], f["index"]) for f in kinds(funded, FUNDING)] == [(1_000, 10**11)]
    # oracle falls to 94.0. T's equity = 1,000 - 10 + 100 * (94 - 100) = 390 USD
    # < maintenance 5 % * 100 * 94 = 470 USD -> liquidated
    result = set_oracle(chain, 940)
    [liq] = kinds(result, LIQUIDATION)
    assert (liq["equity"], liq["maintenance"]) == (390 * USD, 470 * USD)
    assert [(t["price"], t["size"]) for t in kinds(result, TRADE)] == [(935, 100)]
    # realized 100 * (93.5 - 100) = -650; liquidation fee 0.5 % * 9,350 = 46.75 USD
    assert collateral(chain, T) == (1_000 - 10 - 650) * USD - 46_750_000
    assert collateral(chain, INSURANCE_FUND) == 46_750_000
    assert size_of(chain, T) == 0 and size_of(chain, B) == 100 and size_of(chain, M) == -100
    assert find_violations(chain.state) == []
    assert total_value(chain.state) == value


def test_book_absorbs_part_and_the_insurance_fund_takes_the_rest_at_bankruptcy_price() -> None:
    chain = chain_with({T: 1_000, M: 1_000_000, B: 1_000_000})
    value = total_value(chain.state)
    open_long_at_10x(chain)
    assert chain.run(B, buy(935, 40)).ok  # the book can absorb only 40
    result = set_oracle(chain, 940)  # equity 1,000 - 600 = 400 < 470: liquidated
    assert [(t["price"], t["size"]) for t in kinds(result, TRADE)] == [(935, 40)]
    # 40 sold at 93.5: realized 40 * -6.5 = -260, fee 0.5 % * 3,740 = 18.70 -> collateral 721.30
    # left: 60 long, cost 6,000. Bankruptcy price p: 721.30 + 60 p - 6,000 = 0 -> p = 87.98...
    # rounded up to the tick: 88.0 (price 880); T keeps 721.30 + 5,280 - 6,000 = 1.30 USD
    [takeover] = kinds(result, TAKEOVER)
    assert (takeover["size"], takeover["price"]) == (60, 880)
    assert collateral(chain, T) == 1_300_000
    assert size_of(chain, T) == 0 and size_of(chain, INSURANCE_FUND) == 60
    assert collateral(chain, INSURANCE_FUND) == 18_700_000
    assert find_violations(chain.state) == []
    assert total_value(chain.state) == value


def test_insurance_fund_too_small_triggers_adl_ranked_by_profit_and_leverage() -> None:
    # T long 60 against M2 (short 60, rich); X long 40 against M (short 40, 4,000 USD: higher leverage)
    chain = chain_with({T: 1_000, M: 4_000, M2: 1_000_000, X: 1_000_000})
    value = total_value(chain.state)
    assert chain.run(M2, sell(1000, 60)).ok
    assert chain.run(T, buy(1000, 60)).ok
    assert chain.run(M, sell(1000, 40)).ok
    assert chain.run(X, buy(1000, 40)).ok
    # gap down to 80.0 with an empty book: T's equity = 1,000 + 60 * (80 - 100) = -200: bankrupt.
    # Bankruptcy price: 1,000 + 60 p - 6,000 = 0 -> p = 83.33.. -> 83.4 (834), above the mark,
    # so the fund (0 USD) would lose (80 - 83.4) * 60 = -204: ADL instead.
    result = set_oracle(chain, 800)
    assert kinds(result, TAKEOVER) == []
    # ranks: M pnl 20 %, leverage 40*80/(4,000+800) = 0.67x; M2 pnl 20 %, leverage ~0.005x -> M first
    assert [(a["counterparty"], a["size"], a["price"]) for a in kinds(result, ADL)] == [
        ("0x" + M.address.hex(), 40, 834),
        ("0x" + M2.address.hex(), 20, 834),
    ]
    assert (size_of(chain, T), size_of(chain, M), size_of(chain, M2), size_of(chain, X)) == (0, 0, -40, 40)
    # T: 1,000 + 60 * (83.4 - 100) = 4.00 USD left; M realizes 40 * (100 - 83.4) = 664 USD
    assert collateral(chain, T) == 4 * USD
    assert collateral(chain, M) == (4_000 + 664) * USD
    assert kinds(result, DEFICIT_COVERED) == []
    assert find_violations(chain.state) == []
    assert total_value(chain.state) == value


def test_deficit_after_a_gap_is_covered_by_the_insurance_fund() -> None:
    chain = chain_with({T: 1_000, M: 1_000_000, B: 1_000_000}, insurance=10_000)
    value = total_value(chain.state)
    open_long_at_10x(chain)
    assert chain.run(B, buy(900, 100)).ok
    # oracle 89.0: T's equity 1,000 - 1,100 = -100. The band (10 %) allows selling down to 80.1,
    # so the book takes all 100 at 90.0: realized -1,000, fee 45 USD -> collateral -45 USD,
    # which the fund pays back: fund = 10,000 + 45 (fee) - 45 (deficit)
    result = set_oracle(chain, 890)
    assert [(t["price"], t["size"]) for t in kinds(result, TRADE)] == [(900, 100)]
    [covered] = kinds(result, DEFICIT_COVERED)
    assert covered["amount"] == 45 * USD
    assert collateral(chain, T) == 0
    assert collateral(chain, INSURANCE_FUND) == 10_000 * USD
    assert total_value(chain.state) == value


def test_orders_and_transfers_are_blocked_by_initial_margin() -> None:
    chain = chain_with({T: 1_000, M: 1_000_000})
    assert chain.run(M, sell(1000, 200)).ok
    # 101 units at 100.0 need 1,010 USD of initial margin: T has 1,000
    assert chain.run(T, buy(1000, 101)).code == Code.INSUFFICIENT_MARGIN
    assert chain.run(T, buy(1000, 100)).ok  # exactly 1,000
    result = chain.run(T, sdk_tx.transfer(X.address, 1 * USD))
    assert result.code == Code.INSUFFICIENT_MARGIN
    # a resting buy of 1 at 99.0 also needs margin: worst case 101 long -> refused
    assert chain.run(T, buy(990, 1)).code == Code.INSUFFICIENT_MARGIN
    # reducing is always allowed, even with no free margin
    assert chain.run(T, sell(1000, 50)).ok  # rests (no bids), worst case long 50
    assert chain.run(M, buy(1000, 50)).ok  # fills T's sell
    assert size_of(chain, T) == 50
    # now IM = 500 USD: 500 USD are free to move
    assert chain.run(T, sdk_tx.transfer(X.address, 500 * USD)).ok
    assert chain.run(T, sdk_tx.transfer(X.address, 1)).code == Code.INSUFFICIENT_MARGIN


def test_reduce_only_cannot_flip_or_grow() -> None:
    chain = chain_with({T: 1_000, M: 1_000_000, B: 1_000_000})
    open_long_at_10x(chain, size=50)
    assert chain.run(T, buy(1000, 10, reduce_only=True)).code == Code.REDUCE_ONLY_WOULD_INCREASE
    assert chain.run(B, buy(1000, 500)).ok
    # a reduce-only sell of 80 against a 50 long fills 50 and stops at flat
    result = chain.block([chain.tx(T, sell(1000, 80, reduce_only=True))])
    assert [t["size"] for t in kinds(result, TRADE)] == [50]
    assert size_of(chain, T) == 0
    assert chain.run(T, sell(1000, 10, reduce_only=True)).code == Code.REDUCE_ONLY_WOULD_INCREASE


def test_oracle_median_ignores_stale_and_outlier_validators() -> None:
    config = make_config(
        [],
        validators=VALIDATORS + [keys(1, b"stale")[0]],
        markets=[market()],
        oracle_stale_ms=1_000,
    )
    chain = Chain(config)
    v1, v2, v3 = VALIDATORS
    stale = keys(1, b"stale")[0]
    chain.block([chain.tx(stale, sdk_tx.oracle_prices({SYMBOL: 500}))])  # t = 200
    for _ in range(5):
        chain.block([])  # t = 1,200: the 500 is now older than 1,000 ms
    chain.block(
        [
            chain.tx(v1, sdk_tx.oracle_prices({SYMBOL: 1000})),
            chain.tx(v2, sdk_tx.oracle_prices({SYMBOL: 1002})),
            chain.tx(v3, sdk_tx.oracle_prices({SYMBOL: 99_999})),  # outlier
        ]
    )
    # fresh: 1000, 1002, 99999 at power 10 each; half of 30 is reached at 1002.
    # (with the stale 500 counted, the median would be 1000)
    assert chain.state.markets[0].oracle_price == 1002
    assert chain.run(T, sdk_tx.oracle_prices({SYMBOL: 1})).code in (
        Code.UNKNOWN_ACCOUNT,
        Code.NOT_A_VALIDATOR,
    )


def test_mark_price_is_median_of_oracle_bid_ask() -> None:
    chain = chain_with({M: 1_000_000, B: 1_000_000})
    chain.run(B, buy(1010, 1))  # bid 101.0 above the oracle 100.0; no ask counts as the oracle
    assert chain.state.markets[0].mark_price == 1000  # median(1000, 1010, 1000)
    chain.run(M, sell(1020, 1))
    assert chain.state.markets[0].mark_price == 1010  # median(1000, 1010, 1020)


def test_a_maker_pushed_under_by_a_liquidation_is_liquidated_in_the_same_block() -> None:
    chain = chain_with({T: 1_000, M: 1_000, B: 1_000_000})
    value = total_value(chain.state)
    assert chain.run(T, sell(1000, 100)).ok
    assert chain.run(B, buy(1000, 100, tif="ioc")).ok  # T short 100 at 100.0 (10x)
    assert chain.run(M, sell(1000, 100)).ok  # M rests a sell with exactly its initial margin
    # oracle 110.0, no bids: mark = median(1100, 1100, 1000) = 110.0. T: equity 1,000 - 1,000 = 0
    # < maintenance 550: T's close buys M's ask at 100.0 (T flat, pays the 50 USD fee); now M is short
    # 100 at 100.0 with equity 0 < 550 and is liquidated in the same pass: the book has nothing left,
    # so the fund takes M's short over at the bankruptcy price 110.0 (M's equity exactly zero).
    result = set_oracle(chain, 1100)
    assert [(liq["account"], liq["equity"]) for liq in kinds(result, LIQUIDATION)] == [
        ("0x" + T.address.hex(), 0),
        ("0x" + M.address.hex(), 0),
    ]
    [takeover] = kinds(result, TAKEOVER)
    assert (takeover["account"], takeover["size"], takeover["price"]) == ("0x" + M.address.hex(), -100, 1100)
    assert collateral(chain, T) == 950 * USD and collateral(chain, M) == 0
    assert size_of(chain, INSURANCE_FUND) == -100 and size_of(chain, B) == 100
    assert liquidatable_accounts(chain.state) == []
    assert find_violations(chain.state) == []
    assert total_value(chain.state) == value


def test_a_maker_filled_beyond_its_bankruptcy_price_is_paid_back_to_zero_by_the_fund() -> None:
    chain = chain_with({T: 1_000_000, M: 1_000, B: 1_000_000}, insurance=10_000)
    value = total_value(chain.state)
    assert chain.run(T, sell(1000, 100)).ok
    assert chain.run(M, buy(1000, 100, tif="ioc")).ok  # M long 100 at 100.0 (10x)
    set_oracle(chain, 950)  # M's equity 1,000 - 500 = 500 >= maintenance 475: not liquidatable
    assert chain.run(M, sell(880, 100)).ok  # M closes with an ask at 88.0 (inside the band 85.5..104.5)
    # B takes it during a block: M realizes 100 * (88 - 100) = -1,200 and is flat with -200 USD.
    # Flat, M is not liquidatable; the end-of-block sweep has the fund pay the 200 back.
    result = chain.block([chain.tx(B, buy(880, 100, tif="ioc"))])
    assert [(t["price"], t["size"]) for t in kinds(result, TRADE)] == [(880, 100)]
    assert kinds(result, LIQUIDATION) == []
    [covered] = kinds(result, DEFICIT_COVERED)
    assert (covered["account"], covered["amount"]) == ("0x" + M.address.hex(), 200 * USD)
    assert collateral(chain, M) == 0 and size_of(chain, M) == 0
    assert collateral(chain, INSURANCE_FUND) == (10_000 - 200) * USD
    assert find_violations(chain.state) == []
    assert total_value(chain.state) == value


def test_a_maker_filled_beyond_its_bankruptcy_price_by_a_liquidation_is_paid_back_too() -> None:
    chain = chain_with({T: 1_000, M: 1_100, B: 1_000_000}, insurance=10_000)
    value = total_value(chain.state)
    open_long_at_10x(chain, maker=B)  # T long 100 at 100.0 against B
    assert chain.run(M, sell(1000, 100)).ok
    assert chain.run(B, buy(1000, 100, tif="ioc")).ok  # M short 100 at 100.0
    set_oracle(chain, 1050)  # M's equity 1,100 - 500 = 600 >= maintenance 525
    assert chain.run(M, buy(1120, 100)).ok  # M rests a closing bid at 112.0 (band 94.5..115.5)
    # oracle 94.0: T's equity 1,000 - 600 = 400 < maintenance 470, so T is liquidated and its close
    # sells into the only bid, M's, at 112.0: T realizes +1,200 and pays the 0.5 % fee (56 USD).
    # M buys back at 112.0: realizes -1,200 and is left flat with -100 USD, which the fund pays.
    result = set_oracle(chain, 940)
    assert [liq["account"] for liq in kinds(result, LIQUIDATION)] == ["0x" + T.address.hex()]
    assert [(t["price"], t["size"]) for t in kinds(result, TRADE)] == [(1120, 100)]
    [covered] = kinds(result, DEFICIT_COVERED)
    assert (covered["account"], covered["amount"]) == ("0x" + M.address.hex(), 100 * USD)
    assert collateral(chain, T) == (1_000 + 1_200 - 56) * USD and size_of(chain, T) == 0
    assert collateral(chain, M) == 0 and size_of(chain, M) == 0
    assert collateral(chain, INSURANCE_FUND) == (10_000 + 56 - 100) * USD
    assert liquidatable_accounts(chain.state) == []
    assert find_violations(chain.state) == []
    assert total_value(chain.state) == value


@given(
    mark=st.integers(1, 10**9),
    im_ppm=st.integers(1, 1_000_000),
    size=st.integers(-(10**12), 10**12),
    buy=st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)),
    sell=st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)),
)
def test_initial_requirement_is_the_worst_fill_scenario_of_the_module_doc(
    mark: int, im_ppm: int, size: int, buy: tuple[int, int], sell: tuple[int, int]
) -> None:
    # market_initial_requirement regroups the products for speed; this is the rule as written
    state = MarketState(market(initial_margin_ppm=im_ppm), 0)  # type: ignore[arg-type]
    state.mark_price = mark
    scale = state.notional_scale
    (b, b_price), (s, s_price) = buy, sell
    bv, sv = b * b_price, s * s_price

    def im(n: int) -> int:
        return compute_requirement(n, mark, scale, im_ppm)

    expected = im(size)
    if b:
        expected = max(expected, im(size + b) + (bv - b * mark) * scale)
    if s:
        expected = max(expected, im(size - s) + (s * mark - sv) * scale)
    assert market_initial_requirement(state, size, b, bv, s, sv) == expected
