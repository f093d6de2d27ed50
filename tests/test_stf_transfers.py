"""Unit tests: transfer, faucet, oracle-price and market-halt rejections (each changes nothing but
the nonce), their reasons in USD and in the market's decimals, and the integer formatter behind
them."""

from __future__ import annotations

import pytest

from proto.ita.v1 import tx_pb2
from stf.results import Code
from stf.units import decimal_text, usd_text
from tests.stf_support import USD, Chain, keys, make_config

A, B, V = keys(3)


@pytest.fixture
def chain() -> Chain:
    return Chain(make_config([A, B], validators=[V], collateral=1_000 * USD))


def collateral(chain: Chain, key: object) -> int:
    return chain.state.accounts[key.address].collateral  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "decimals", "text"),
    [
        (644632, 1, "64463.2"),
        (5, 4, "0.0005"),
        (0, 2, "0.00"),
        (-1_500_000, 6, "-1.500000"),
        (42, 0, "42"),
        (10**30, 6, "1000000000000000000000000.000000"),
    ],
)
def test_decimal_text(value: int, decimals: int, text: str) -> None:
    assert decimal_text(value, decimals) == text


def test_usd_text() -> None:
    assert usd_text(12_500_000) == "12.500000 USD"


@pytest.mark.parametrize(
    ("to", "amount", "code", "reason"),
    [
        (b"\x01" * 19, 1, Code.BAD_ADDRESS, "recipient must be a 20-byte address"),
        (None, 1, Code.SELF_TRANSFER, "cannot transfer to the sending account"),
        (B.address, 0, Code.ZERO_AMOUNT, "amount must be positive"),
        (
            B.address,
            1_000 * USD + 1,
            Code.INSUFFICIENT_FUNDS,
            "collateral 1000.000000 USD is less than the amount 1000.000001 USD",
        ),
    ],
)
def test_transfer_rejections_change_nothing(
    chain: Chain, to: bytes | None, amount: int, code: Code, reason: str
) -> None:
    before = chain.state.app_hash
    result = chain.run(A, tx_pb2.Transfer(to=A.address if to is None else to, amount=amount))
    assert (result.code, result.reason) == (code, reason)
    assert collateral(chain, A) == collateral(chain, B) == 1_000 * USD
    assert chain.state.app_hash != before  # only the nonce was consumed
    assert chain.run(A, tx_pb2.Transfer(to=B.address, amount=USD)).ok
    assert (collateral(chain, A), collateral(chain, B)) == (999 * USD, 1_001 * USD)


def test_faucet_rejections() -> None:
    chain = Chain(make_config([A], faucet_max_per_account=100 * USD))
    assert chain.run(A, tx_pb2.Faucet(amount=0)).code == Code.ZERO_AMOUNT
    assert chain.run(A, tx_pb2.Faucet(amount=60 * USD)).ok
    result = chain.run(A, tx_pb2.Faucet(amount=41 * USD))
    assert (result.code, result.reason) == (
        Code.FAUCET_LIMIT,
        "faucet allows 40.000000 USD more for this account",
    )
    assert chain.run(A, tx_pb2.Faucet(amount=40 * USD)).ok
    off = Chain(make_config([A], faucet_enabled=False))
    result = off.run(A, tx_pb2.Faucet(amount=1))
    assert (result.code, result.reason) == (Code.FAUCET_DISABLED, "the faucet is disabled on this chain")
    assert off.state.accounts[A.address].collateral == 1_000_000 * USD


@pytest.mark.parametrize(
    ("prices", "reason"),
    [
        ([("BTC-PERP", 0)], "oracle price for BTC-PERP must be in [0.1, 900719925474099.1]"),
        ([("BTC-PERP", 1 << 53)], "oracle price for BTC-PERP must be in [0.1, 900719925474099.1]"),
        ([("BTC-PERP", 600_000), ("BTC-PERP", 600_005)], "BTC-PERP appears twice"),
        ([], "no prices given"),
    ],
)
def test_oracle_price_rejections(chain: Chain, prices: list[tuple[str, int]], reason: str) -> None:
    action = tx_pb2.OraclePrices(prices=[tx_pb2.OraclePrice(market=m, price=p) for m, p in prices])
    result = chain.run(V, action)
    assert (result.code, result.reason) == (Code.BAD_ORACLE_PRICE, reason)
    assert chain.state.markets[0].oracle_subs == {}


def test_oracle_prices_and_halts_need_a_validator_and_a_known_market(chain: Chain) -> None:
    price = tx_pb2.OraclePrices(prices=[tx_pb2.OraclePrice(market="BTC-PERP", price=600_000)])
    result = chain.run(A, price)
    assert (result.code, result.reason) == (Code.NOT_A_VALIDATOR, "only validators may submit oracle prices")
    unknown = tx_pb2.OraclePrices(prices=[tx_pb2.OraclePrice(market="NOPE-PERP", price=600_000)])
    assert chain.run(V, unknown).code == Code.UNKNOWN_MARKET
    assert chain.state.markets[0].oracle_subs == {}
    result = chain.run(V, tx_pb2.SetMarketHalt(market="NOPE-PERP", halted=True))
    assert (result.code, result.reason) == (Code.UNKNOWN_MARKET, "unknown market 'NOPE-PERP'")
    assert not chain.state.markets[0].halted
