"""sdk/tx.py: every action builder, the decimal convenience builders, signing and nonces."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.ita.v1 import tx_pb2
from sdk import tx
from sdk.keys import Key, devnet_account_key
from sdk.tx import NonceClock, Signer, TxBuildError
from sdk.units import from_units
from stf.config import MarketSpec
from stf.signing import SignatureError, signing_message, tx_hash, verify_signature

CHAIN = "ita-test-1"
KEY = devnet_account_key(0)
OTHER = devnet_account_key(1)


def _spec(**changes: object) -> MarketSpec:
    fields: dict[str, object] = dict(
        market_id=0,
        symbol="BTC-PERP",
        price_decimals=1,
        size_decimals=4,
        tick_size=5,  # 0.5
        lot_size=10,  # 0.0010
        min_size=20,  # 0.0020
        initial_margin_ppm=50_000,
        maintenance_margin_ppm=30_000,
        max_leverage=20,
        maker_fee_ppm=200,
        taker_fee_ppm=500,
        funding_interval_ms=3_600_000,
        funding_cap_ppm=40_000,
        interest_rate_ppm=10,
        price_band_ppm=100_000,
        initial_oracle_price=650_000,
    )
    fields.update(changes)
    return MarketSpec(**fields)  # type: ignore[arg-type]


BTC = _spec()


def _decode(signed: bytes) -> tuple[tx_pb2.SignedTx, tx_pb2.TxBody]:
    envelope = tx_pb2.SignedTx.FromString(signed)
    return envelope, tx_pb2.TxBody.FromString(envelope.body)


# --- signing --------------------------------------------------------------------------------------


def test_sign_tx_signs_and_embeds_the_exact_body_bytes() -> None:
    body = tx.tx_body(CHAIN, 1_700_000_000_000, tx.faucet(5))
    signed = tx.sign_tx(KEY, CHAIN, body)
    envelope, decoded = _decode(signed)
    assert envelope.body == body.SerializeToString(deterministic=True)
    assert envelope.public_key == KEY.public_key
    verify_signature(envelope.public_key, envelope.signature, signing_message(CHAIN, envelope.body))
    assert decoded == body
    assert decoded.chain_id == CHAIN and decoded.nonce == 1_700_000_000_000
    assert decoded.WhichOneof("action") == "faucet" and decoded.faucet.amount == 5


def test_signature_is_bound_to_chain_and_body() -> None:
    envelope, _ = _decode(tx.sign_tx(KEY, CHAIN, tx.tx_body(CHAIN, 7, tx.faucet(5))))
    for chain, body in [("ita-other-1", envelope.body), (CHAIN, envelope.body + b"\x00")]:
        with pytest.raises(SignatureError) as info:
            verify_signature(envelope.public_key, envelope.signature, signing_message(chain, body))
        assert info.value.reason == "bad_signature"


def test_signing_is_deterministic_and_nonce_changes_the_hash() -> None:
    a = tx.sign_tx(KEY, CHAIN, tx.tx_body(CHAIN, 7, tx.faucet(5)))
    assert a == tx.sign_tx(KEY, CHAIN, tx.tx_body(CHAIN, 7, tx.faucet(5)))
    b = tx.sign_tx(KEY, CHAIN, tx.tx_body(CHAIN, 8, tx.faucet(5)))
    assert tx_hash(a) != tx_hash(b)
    assert tx_hash(a) != tx_hash(tx.sign_tx(OTHER, CHAIN, tx.tx_body(CHAIN, 7, tx.faucet(5))))


def test_sign_tx_refuses_mismatched_chain_id() -> None:
    with pytest.raises(TxBuildError, match="differs from the signing chain id"):
        tx.sign_tx(KEY, "ita-other-1", tx.tx_body(CHAIN, 1, tx.faucet(5)))


def test_sign_tx_refuses_invalid_chain_id() -> None:
    with pytest.raises(TxBuildError, match="invalid chain id"):
        tx.sign_tx(KEY, "bad chain", tx.tx_body("bad chain", 1, tx.faucet(5)))


def test_sign_tx_refuses_body_without_action_or_nonce() -> None:
    with pytest.raises(TxBuildError, match="no action"):
        tx.sign_tx(KEY, CHAIN, tx_pb2.TxBody(chain_id=CHAIN, nonce=1))
    with pytest.raises(TxBuildError, match="nonce"):
        tx.sign_tx(KEY, CHAIN, tx_pb2.TxBody(chain_id=CHAIN, faucet=tx_pb2.Faucet(amount=1)))


@pytest.mark.parametrize("nonce", [0, -1, 2**64, True])
def test_tx_body_refuses_bad_nonces(nonce: int) -> None:
    with pytest.raises(TxBuildError, match="nonce"):
        tx.tx_body(CHAIN, nonce, tx.faucet(5))


def test_tx_body_refuses_non_actions() -> None:
    with pytest.raises(TxBuildError, match="not a tx action"):
        tx.tx_body(CHAIN, 1, tx_pb2.OraclePrice(market="X", price=1))  # type: ignore[arg-type]


ACTIONS: dict[str, tx.Action] = {
    "place_order": tx.place_order("BTC-PERP", "buy", price=650_005, size=100),
    "cancel_order": tx.cancel_order("BTC-PERP", order_id=3),
    "cancel_all": tx.cancel_all(),
    "batch": tx.batch([tx.cancel_order("BTC-PERP", order_id=3)]),
    "transfer": tx.transfer(OTHER.address, 1),
    "oracle_prices": tx.oracle_prices({"BTC-PERP": 650_000}),
    "faucet": tx.faucet(1),
    "set_market_halt": tx.set_market_halt("BTC-PERP", True),
}


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_every_action_signs_into_its_oneof_field(name: str) -> None:
    envelope, body = _decode(tx.sign_tx(KEY, CHAIN, tx.tx_body(CHAIN, 42, ACTIONS[name])))
    assert body.WhichOneof("action") == name
    assert getattr(body, name) == ACTIONS[name]
    verify_signature(envelope.public_key, envelope.signature, signing_message(CHAIN, envelope.body))


def test_actions_cover_the_whole_oneof() -> None:
    oneof = tx_pb2.TxBody.DESCRIPTOR.oneofs_by_name["action"]
    assert sorted(f.name for f in oneof.fields) == sorted(ACTIONS)


# --- place / cancel builders ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tif", "expected"),
    [
        ("gtc", tx_pb2.TIME_IN_FORCE_GTC),
        ("ioc", tx_pb2.TIME_IN_FORCE_IOC),
        ("post_only", tx_pb2.TIME_IN_FORCE_POST_ONLY),
    ],
)
def test_limit_order_time_in_force(tif: tx.TifName, expected: int) -> None:
    order = tx.place_order("ETH-PERP", "sell", price=350_000, size=10, tif=tif)
    assert order.kind == tx_pb2.ORDER_KIND_LIMIT
    assert order.time_in_force == expected
    assert order.side == tx_pb2.SIDE_SELL
    assert (order.market, order.price, order.size) == ("ETH-PERP", 350_000, 10)
    assert not order.reduce_only and order.client_order_id == ""


def test_limit_order_defaults_to_gtc() -> None:
    assert tx.place_order("M", "buy", price=1, size=1).time_in_force == tx_pb2.TIME_IN_FORCE_GTC


def test_market_order_is_kind_market_with_protective_price() -> None:
    order = tx.place_order(
        "BTC-PERP",
        tx_pb2.SIDE_BUY,
        price=700_000,
        size=10,
        kind="market",
        reduce_only=True,
        client_order_id="c-1",
    )
    assert order.kind == tx_pb2.ORDER_KIND_MARKET
    assert order.time_in_force == tx_pb2.TIME_IN_FORCE_UNSPECIFIED
    assert order.side == tx_pb2.SIDE_BUY and order.price == 700_000
    assert order.reduce_only and order.client_order_id == "c-1"


def test_client_order_id_length_limit_is_in_bytes() -> None:
    assert tx.place_order("M", "buy", price=1, size=1, client_order_id="x" * 36).client_order_id == "x" * 36
    with pytest.raises(TxBuildError, match="longer than 36 bytes"):
        tx.place_order("M", "buy", price=1, size=1, client_order_id="x" * 37)
    with pytest.raises(TxBuildError, match="longer than 36 bytes"):
        tx.place_order("M", "buy", price=1, size=1, client_order_id="あ" * 13)  # 39 bytes


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"side": "BUY"}, "side must be 'buy' or 'sell'"),
        ({"side": 0}, "side must be"),
        ({"side": True}, "side must be"),
        ({"market": ""}, "market must be a non-empty symbol"),
        ({"price": 0}, "price must be in 1..2^64-1"),
        ({"price": 2**64}, "price must be in"),
        ({"price": 1.5}, "price must be an int"),
        ({"price": True}, "price must be an int"),
        ({"size": 0}, "size must be in"),
        ({"size": -1}, "size must be in"),
        ({"tif": "fok"}, "tif must be one of"),
        ({"kind": "stop"}, "kind must be 'limit' or 'market'"),
        ({"kind": "market", "tif": "post_only"}, "a market order takes no tif"),
        ({"kind": "market", "tif": "gtc"}, "a market order takes no tif"),
        ({"reduce_only": 1}, "reduce_only must be a bool"),
        ({"client_order_id": 5}, "client_order_id must be a str"),
    ],
)
def test_place_order_refusals(kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {"market": "BTC-PERP", "side": "buy", "price": 1, "size": 1}
    args.update(kwargs)
    with pytest.raises(TxBuildError) as info:
        tx.place_order(**args)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_cancel_order_targets() -> None:
    by_id = tx.cancel_order("BTC-PERP", order_id=0)
    assert by_id.WhichOneof("target") == "order_id" and by_id.order_id == 0
    by_coid = tx.cancel_order("BTC-PERP", client_order_id="c-1")
    assert by_coid.WhichOneof("target") == "client_order_id" and by_coid.client_order_id == "c-1"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "exactly one of"),
        ({"order_id": 1, "client_order_id": "c"}, "exactly one of"),
        ({"client_order_id": ""}, "must not be empty"),
        ({"order_id": -1}, "order_id must be in 0..2^64-1"),
        ({"order_id": 1, "market": ""}, "market must be"),
    ],
)
def test_cancel_order_refusals(kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {"market": "BTC-PERP"}
    args.update(kwargs)
    with pytest.raises(TxBuildError) as info:
        tx.cancel_order(**args)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_cancel_all() -> None:
    assert tx.cancel_all().market == ""
    assert tx.cancel_all("ETH-PERP").market == "ETH-PERP"
    with pytest.raises(TxBuildError):
        tx.cancel_all(None)  # type: ignore[arg-type]


def test_batch_keeps_order_and_kinds() -> None:
    place = tx.place_order("BTC-PERP", "buy", price=10, size=10)
    cancel = tx.cancel_order("BTC-PERP", client_order_id="old")
    out = tx.batch([cancel, place, cancel])
    assert [item.WhichOneof("item") for item in out.items] == ["cancel", "place", "cancel"]
    assert out.items[1].place == place and out.items[0].cancel == cancel


def test_batch_refusals() -> None:
    with pytest.raises(TxBuildError, match="at least one item"):
        tx.batch([])
    with pytest.raises(TxBuildError, match="batch item 1 must be a PlaceOrder or CancelOrder"):
        tx.batch([tx.cancel_order("X", order_id=1), tx.faucet(1)])  # type: ignore[list-item]


# --- other actions --------------------------------------------------------------------------------


def test_transfer_accepts_bytes_and_text_addresses() -> None:
    assert tx.transfer(OTHER.address, 5) == tx.transfer(OTHER.address_hex, 5)
    assert tx.transfer(OTHER.address, 5).to == OTHER.address


@pytest.mark.parametrize(
    ("to", "amount", "fragment"),
    [
        ("0x1234", 1, "transfer destination: address"),
        ("ab" * 20, 1, "must start with '0x'"),
        (b"\x00" * 19, 1, "20-byte address"),
        (OTHER.address, 0, "amount must be in 1..2^64-1"),
        (OTHER.address, 2**64, "amount must be in"),
    ],
)
def test_transfer_refusals(to: bytes | str, amount: int, fragment: str) -> None:
    with pytest.raises(TxBuildError) as info:
        tx.transfer(to, amount)
    assert fragment in str(info.value)


def test_oracle_prices_from_dict_or_pairs_preserve_order() -> None:
    from_pairs = tx.oracle_prices([("ETH-PERP", 350_000), ("BTC-PERP", 650_000)])
    assert [(p.market, p.price) for p in from_pairs.prices] == [("ETH-PERP", 350_000), ("BTC-PERP", 650_000)]
    assert tx.oracle_prices({"ETH-PERP": 350_000, "BTC-PERP": 650_000}) == from_pairs


@pytest.mark.parametrize(
    ("prices", "fragment"),
    [
        ([], "at least one price"),
        ([("BTC-PERP", 1), ("BTC-PERP", 2)], "given twice"),
        ([("BTC-PERP", 0)], "oracle price of BTC-PERP must be in 1.."),
        ([("", 1)], "market must be"),
    ],
)
def test_oracle_prices_refusals(prices: list[tuple[str, int]], fragment: str) -> None:
    with pytest.raises(TxBuildError) as info:
        tx.oracle_prices(prices)
    assert fragment in str(info.value)


def test_faucet_and_halt() -> None:
    assert tx.faucet(10).amount == 10
    with pytest.raises(TxBuildError, match="amount"):
        tx.faucet(0)
    halt = tx.set_market_halt("BTC-PERP", True)
    assert halt.market == "BTC-PERP" and halt.halted
    assert not tx.set_market_halt("BTC-PERP", False).halted
    with pytest.raises(TxBuildError, match="halted must be a bool"):
        tx.set_market_halt("BTC-PERP", 1)  # type: ignore[arg-type]
    with pytest.raises(TxBuildError, match="market must be"):
        tx.set_market_halt("", True)


# --- decimal convenience builders -----------------------------------------------------------------


def test_limit_order_from_decimal_strings() -> None:
    order = tx.limit_order(
        BTC, side="buy", price="65000.5", size="0.01", tif="post_only", client_order_id="a"
    )
    assert (order.market, order.price, order.size) == ("BTC-PERP", 650_005, 100)
    assert order.time_in_force == tx_pb2.TIME_IN_FORCE_POST_ONLY and order.client_order_id == "a"


def test_market_order_from_decimal_strings() -> None:
    order = tx.market_order(BTC, side="sell", size="0.0020", worst_price="60000", reduce_only=True)
    assert order.kind == tx_pb2.ORDER_KIND_MARKET and order.side == tx_pb2.SIDE_SELL
    assert (order.price, order.size, order.reduce_only) == (600_000, 20, True)


@pytest.mark.parametrize(
    ("price", "size", "fragment"),
    [
        (
            "65000.3",
            "0.01",
            "price '65000.3' is not on the BTC-PERP grid of 0.5: "
            "nearest valid values are 65000.0 and 65000.5",
        ),
        ("65000.55", "0.01", "has 2 decimals but at most 1"),
        ("0", "0.01", "price must be positive"),
        ("-1", "0.01", "negative values are not allowed"),
        ("6.5e4", "0.01", "exponent"),
        (
            "65000.5",
            "0.0015",
            "size '0.0015' is not on the BTC-PERP grid of 0.0010: nearest valid values are 0.0010 and 0.0020",
        ),
        ("65000.5", "0.0010", "below the minimum size 0.0020"),
        ("65000.5", "0", "below the minimum size"),
        ("65000.5", "0.00001", "has 5 decimals but at most 4"),
        ("65000.5", " 0.01", "whitespace"),
    ],
)
def test_convenience_builders_refuse_off_grid_and_lossy_input(price: str, size: str, fragment: str) -> None:
    with pytest.raises(TxBuildError) as info:
        tx.limit_order(BTC, side="buy", price=price, size=size)
    assert fragment in str(info.value)


def test_market_order_worst_price_must_be_on_grid() -> None:
    with pytest.raises(TxBuildError, match="worst price '60000.1' is not on the BTC-PERP grid"):
        tx.market_order(BTC, side="buy", size="0.01", worst_price="60000.1")


def test_oracle_price_and_usd() -> None:
    assert tx.oracle_price(BTC, "65000.3") == ("BTC-PERP", 650_003)  # oracle need not be on the tick grid
    with pytest.raises(TxBuildError, match="must be positive"):
        tx.oracle_price(BTC, "0.0")
    with pytest.raises(TxBuildError, match="has 2 decimals"):
        tx.oracle_price(BTC, "1.25")
    assert tx.usd("1000000.00") == 1_000_000_000_000
    assert tx.usd("0.000001") == 1
    with pytest.raises(TxBuildError, match="USD amount"):
        tx.usd("0.0000001")


@settings(max_examples=50)
@given(
    st.integers(1, 10**9),
    st.integers(2, 10**6),
    st.sampled_from(["buy", "sell"]),
    st.sampled_from(["gtc", "ioc", "post_only"]),
)
def test_grid_prices_and_sizes_round_trip_through_signing(ticks: int, lots: int, side: str, tif: str) -> None:
    price = from_units(ticks * BTC.tick_size, BTC.price_decimals)
    size = from_units(lots * BTC.lot_size, BTC.size_decimals)
    order = tx.limit_order(BTC, side=side, price=price, size=size, tif=tif)  # type: ignore[arg-type]
    assert (order.price, order.size) == (ticks * BTC.tick_size, lots * BTC.lot_size)
    envelope, body = _decode(tx.sign_tx(KEY, CHAIN, tx.tx_body(CHAIN, 1, order)))
    assert body.place_order == order
    verify_signature(envelope.public_key, envelope.signature, signing_message(CHAIN, envelope.body))


# --- nonces ----------------------------------------------------------------------------------------


def _clock(values: list[int]) -> tuple[NonceClock, Iterator[int]]:
    it = iter(values)
    return NonceClock(lambda: next(it)), it


def test_nonce_clock_is_strictly_increasing_even_when_time_stalls_or_goes_back() -> None:
    clock, _ = _clock([1000, 1000, 1000, 990, 2000, 1500])
    assert [clock.next() for _ in range(6)] == [1000, 1001, 1002, 1003, 2000, 2001]
    assert clock.last == 2001


def test_nonce_clock_respects_a_persisted_floor() -> None:
    clock = NonceClock(lambda: 100, last=500)
    assert clock.next() == 501


def test_nonce_clock_default_is_wall_clock_milliseconds() -> None:
    import time

    before = time.time_ns() // 1_000_000
    nonce = NonceClock().next()
    assert before <= nonce <= time.time_ns() // 1_000_000 + 1


def test_nonce_clock_refuses_non_integer_clocks() -> None:
    with pytest.raises(TypeError, match="int milliseconds"):
        NonceClock(lambda: 1.5).next()  # type: ignore[arg-type,return-value]


def test_nonce_clock_is_thread_safe() -> None:
    clock = NonceClock(lambda: 7)
    seen: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        got = [clock.next() for _ in range(500)]
        with lock:
            seen.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(7, 7 + 4000))


def test_signer_uses_increasing_nonces() -> None:
    signer = Signer(KEY, CHAIN, NonceClock(lambda: 10))
    first, second = (_decode(signer.sign(tx.faucet(1)))[1] for _ in range(2))
    assert (first.nonce, second.nonce) == (10, 11)
    assert first.chain_id == second.chain_id == CHAIN


def test_nothing_is_signed_or_nonce_spent_when_a_builder_refuses() -> None:
    clock = NonceClock(lambda: 10)
    signer = Signer(Key.generate(), CHAIN, clock)
    with pytest.raises(TxBuildError):
        signer.sign(tx.limit_order(BTC, side="buy", price="1.3", size="0.01"))
    assert clock.last == 0
