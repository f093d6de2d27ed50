"""Unit tests: every order type, every rejection reason, block ordering, fees."""

from __future__ import annotations

import pytest

from sdk import tx as sdk_tx
from stf.block import BlockHeader, InvalidBlock, apply_block
from stf.events import ORDER_CANCELLED, TRADE, event_to_dict
from stf.invariants import find_violations
from stf.results import Code
from tests.stf_support import CHAIN_ID, Chain, keys, make_config, make_market, order

A, B, C = keys(3)
MID = 600_000  # 60,000.0 USD in price units (price_decimals=1)


@pytest.fixture
def chain() -> Chain:
    return Chain(make_config([A, B, C]))


def trades(result: object) -> list[dict[str, object]]:
    return [event_to_dict(e) for e in result.events if e[0] == TRADE]  # type: ignore[attr-defined]


def resting(chain: Chain) -> dict[int, tuple[bool, int, int]]:
    return {oid: (o.is_buy, o.price, o.size) for oid, o in chain.state.orders.items()}


# -- order types -------------------------------------------------------------------------------


def test_gtc_rests_then_is_taken_at_maker_price(chain: Chain) -> None:
    sell = chain.run(A, order("sell", MID, 100))
    assert sell.ok and resting(chain) == {sell.order_id: (False, MID, 100)}
    result = chain.block([chain.tx(B, order("buy", MID + 10, 40))])
    assert result.results[0].ok
    [t] = trades(result)
    assert (t["price"], t["size"], t["maker_order_id"]) == (MID, 40, sell.order_id)
    assert resting(chain) == {sell.order_id: (False, MID, 60)}
    assert find_violations(chain.state) == []


def test_gtc_remainder_rests_after_partial_fill(chain: Chain) -> None:
    chain.run(A, order("sell", MID, 30))
    buy = chain.run(B, order("buy", MID, 100))
    assert resting(chain) == {buy.order_id: (True, MID, 70)}


def test_ioc_remainder_is_cancelled(chain: Chain) -> None:
    chain.run(A, order("sell", MID, 30))
    result = chain.block([chain.tx(B, order("buy", MID, 100, tif="ioc"))])
    assert [t["size"] for t in trades(result)] == [30]
    cancels = [event_to_dict(e) for e in result.events if e[0] == ORDER_CANCELLED]
    assert cancels and cancels[0]["remaining"] == 70 and cancels[0]["reason"] == "ioc_remainder"
    assert resting(chain) == {}


def test_post_only_rests_when_it_does_not_cross(chain: Chain) -> None:
    chain.run(A, order("sell", MID, 30))
    result = chain.run(B, order("buy", MID - 5, 30, tif="post_only"))
    assert result.ok and resting(chain)[result.order_id] == (True, MID - 5, 30)


def test_post_only_rejected_when_it_would_take(chain: Chain) -> None:
    chain.run(A, order("sell", MID, 30))
    before = resting(chain)
    result = chain.run(B, order("buy", MID, 30, tif="post_only"))
    assert result.code == Code.POST_ONLY_WOULD_TAKE
    assert resting(chain) == before


def test_market_order_respects_protective_price(chain: Chain) -> None:
    chain.run(A, order("sell", MID, 30))
    chain.run(A, order("sell", MID + 100, 30))
    result = chain.block([chain.tx(B, order("buy", MID + 50, 100, kind="market"))])
    assert [(t["price"], t["size"]) for t in trades(result)] == [(MID, 30)]
    assert all(o.price == MID + 100 for o in chain.state.orders.values())


def test_market_order_with_gtc_is_rejected(chain: Chain) -> None:
    body = order("buy", MID, 10)
    body.kind = sdk_tx.tx_pb2.ORDER_KIND_MARKET
    body.time_in_force = sdk_tx.tx_pb2.TIME_IN_FORCE_GTC
    assert chain.run(B, body).code == Code.BAD_TIME_IN_FORCE


def test_price_time_priority(chain: Chain) -> None:
    first = chain.run(A, order("sell", MID, 20))
    second = chain.run(C, order("sell", MID, 20))
    better = chain.run(C, order("sell", MID - 5, 20))
    result = chain.block([chain.tx(B, order("buy", MID, 50))])
    assert [(t["maker_order_id"], t["size"]) for t in trades(result)] == [
        (better.order_id, 20),
        (first.order_id, 20),
        (second.order_id, 10),
    ]


def test_self_trade_prevention_cancels_resting_order(chain: Chain) -> None:
    own = chain.run(A, order("sell", MID, 20))
    other = chain.run(C, order("sell", MID, 20))
    result = chain.block([chain.tx(A, order("buy", MID, 20))])
    [t] = trades(result)
    assert t["maker_order_id"] == other.order_id
    cancels = [event_to_dict(e) for e in result.events if e[0] == ORDER_CANCELLED]
    assert [(c["order_id"], c["reason"]) for c in cancels] == [(own.order_id, "self_trade")]
    assert resting(chain) == {}


def test_fees_round_up_into_the_fee_pool(chain: Chain) -> None:
    # 0.0030 BTC at 60,000.5 USD: notional = 600005 * 30 * 10 = 180,001,500 micro-USD
    chain.run(A, order("sell", MID + 5, 30))
    result = chain.block([chain.tx(B, order("buy", MID + 5, 30))])
    [t] = trades(result)
    assert t["taker_fee"] == 90_001  # ceil(180,001,500 * 500 / 1e6) = ceil(90,000.75)
    assert t["maker_fee"] == 36_001  # ceil(180,001,500 * 200 / 1e6) = ceil(36,000.3)
    assert chain.state.fee_pool == 90_001 + 36_001


def test_reduce_only_without_position_is_rejected(chain: Chain) -> None:
    assert chain.run(A, order("sell", MID, 20, reduce_only=True)).code == Code.REDUCE_ONLY_WOULD_INCREASE


def test_reduce_only_never_flips(chain: Chain) -> None:
    chain.run(A, order("sell", MID, 50))
    chain.run(B, order("buy", MID, 50))  # B long 50
    chain.run(C, order("buy", MID, 200))  # bids to hit
    assert chain.run(B, order("buy", MID, 20, reduce_only=True)).code == Code.REDUCE_ONLY_WOULD_INCREASE
    result = chain.block([chain.tx(B, order("sell", MID, 120, reduce_only=True))])
    assert [t["size"] for t in trades(result)] == [50]
    assert B.address not in [a for a, acc in chain.state.accounts.items() if acc.positions]
    assert all(o.account != B.address for o in chain.state.orders.values())


def test_resting_reduce_only_is_cancelled_when_position_is_gone(chain: Chain) -> None:
    chain.run(A, order("sell", MID, 50))
    chain.run(B, order("buy", MID, 50))  # B long 50
    ro = chain.run(B, order("sell", MID + 100, 50, reduce_only=True))
    chain.run(C, order("buy", MID, 50))
    chain.run(B, order("sell", MID, 50))  # B flat through another order
    result = chain.block([chain.tx(C, order("buy", MID + 100, 50))])
    cancels = [event_to_dict(e) for e in result.events if e[0] == ORDER_CANCELLED]
    assert (ro.order_id, "reduce_only") in [(c["order_id"], c["reason"]) for c in cancels]
    assert trades(result) == []


def test_client_order_ids(chain: Chain) -> None:
    placed = chain.run(A, order("sell", MID, 20, client_order_id="abc"))
    assert chain.run(A, order("sell", MID, 20, client_order_id="abc")).code == Code.DUPLICATE_CLIENT_ORDER_ID
    assert chain.run(B, order("sell", MID, 20, client_order_id="abc")).ok  # per account
    cancel = chain.run(A, sdk_tx.cancel_order("BTC-PERP", client_order_id="abc"))
    assert cancel.ok and cancel.order_id == placed.order_id
    assert chain.run(A, order("sell", MID, 20, client_order_id="abc")).ok  # free again


def test_bad_client_order_id() -> None:
    chain = Chain(make_config([A]))
    body = order("sell", MID, 20)
    body.client_order_id = "x" * 37
    assert chain.run(A, body).code == Code.BAD_CLIENT_ORDER_ID


def test_open_order_cap() -> None:
    chain = Chain(make_config([A], max_open_orders_per_account=2))
    assert chain.run(A, order("sell", MID, 20)).ok
    assert chain.run(A, order("sell", MID, 20)).ok
    assert chain.run(A, order("sell", MID, 20)).code == Code.TOO_MANY_OPEN_ORDERS
    assert chain.run(A, order("buy", MID - 50, 20, tif="ioc")).ok  # IOC never rests


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda o: setattr(o, "market", "NOPE-PERP"), Code.UNKNOWN_MARKET),
        (lambda o: setattr(o, "side", 0), Code.BAD_SIDE),
        (lambda o: setattr(o, "kind", 0), Code.BAD_ORDER_KIND),
        (lambda o: setattr(o, "time_in_force", 9), Code.BAD_TIME_IN_FORCE),
        (lambda o: setattr(o, "price", 0), Code.ZERO_PRICE),
        (lambda o: setattr(o, "price", MID + 1), Code.PRICE_NOT_ON_TICK),
        (lambda o: setattr(o, "size", 25), Code.SIZE_NOT_ON_LOT),
        (lambda o: setattr(o, "size", 10), Code.SIZE_BELOW_MIN),
        (lambda o: setattr(o, "size", 1 << 60), Code.SIZE_TOO_LARGE),
        (lambda o: setattr(o, "price", MID * 12 // 10), Code.PRICE_OUT_OF_BAND),
        (lambda o: setattr(o, "price", MID * 8 // 10), Code.PRICE_OUT_OF_BAND),
    ],
)
def test_order_rejections_change_nothing_but_the_nonce(chain: Chain, mutate: object, code: Code) -> None:
    body = order("buy", MID, 20)
    mutate(body)  # type: ignore[operator]
    twin = Chain(make_config([A, B, C]))
    result = chain.block([chain.tx(A, body)])
    assert result.results[0].code == code
    assert result.results[0].reason
    assert resting(chain) == {} and chain.state.next_order_id == 1
    # the same block with a valid no-op tx from A under the same nonce consumes it the same way
    twin.block([twin.tx(A, sdk_tx.cancel_all())])
    assert twin.state.app_hash == chain.state.app_hash


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda o: setattr(o, "price", MID + 1), "price 60000.1 is not a multiple of the tick 0.5"),
        (lambda o: setattr(o, "size", 25), "size 0.0025 is not a positive multiple of the lot 0.0010"),
        (lambda o: setattr(o, "size", 10), "size 0.0010 is below the minimum 0.0020"),
        (
            lambda o: setattr(o, "price", 1 << 53),
            "price 900719925474099.2 exceeds the maximum 900719925474099.1",
        ),
        (
            lambda o: setattr(o, "price", MID * 12 // 10),
            "price 72000.0 is outside the band [54000.0, 66000.0] around the oracle price 60000.0",
        ),
    ],
)
def test_rejection_reasons_speak_in_the_market_s_decimals(chain: Chain, mutate: object, reason: str) -> None:
    """Traders submit "60000.1", not 600001 price units: reasons say what they submitted."""
    body = order("buy", MID, 20)
    mutate(body)  # type: ignore[operator]
    assert chain.block([chain.tx(A, body)]).results[0].reason == reason


def test_post_only_reason_shows_both_prices(chain: Chain) -> None:
    chain.run(B, order("sell", MID, 20))
    result = chain.run(A, order("buy", MID + 5, 20, tif="post_only"))
    assert (result.code, result.reason) == (
        Code.POST_ONLY_WOULD_TAKE,
        "post-only order at 60000.5 would take at 60000.0",
    )


def test_band_edges_are_inclusive(chain: Chain) -> None:
    assert chain.run(A, order("sell", MID * 11 // 10, 20)).ok
    assert chain.run(A, order("buy", MID * 9 // 10, 20)).ok


def test_halted_market_rejects_orders_but_allows_cancels() -> None:
    v = keys(1, b"val")[0]
    chain = Chain(make_config([A, v], validators=[v]))
    placed = chain.run(A, order("sell", MID, 20))
    assert chain.run(A, sdk_tx.set_market_halt("BTC-PERP", True)).code == Code.NOT_A_VALIDATOR
    assert chain.run(v, sdk_tx.set_market_halt("BTC-PERP", True)).ok
    assert chain.run(A, order("sell", MID, 20)).code == Code.MARKET_HALTED
    assert chain.run(A, sdk_tx.cancel_order("BTC-PERP", order_id=placed.order_id)).ok
    assert chain.run(v, sdk_tx.set_market_halt("BTC-PERP", False)).ok
    assert chain.run(A, order("sell", MID, 20)).ok


# -- cancels and batches -----------------------------------------------------------------------


def test_cancel_errors(chain: Chain) -> None:
    other = chain.run(B, order("sell", MID, 20))
    assert chain.run(A, sdk_tx.cancel_order("BTC-PERP", order_id=other.order_id)).code == Code.ORDER_NOT_FOUND
    assert chain.run(A, sdk_tx.cancel_order("BTC-PERP", order_id=999)).code == Code.ORDER_NOT_FOUND
    assert chain.run(A, sdk_tx.cancel_order("BTC-PERP", client_order_id="zz")).code == Code.ORDER_NOT_FOUND
    assert chain.run(A, sdk_tx.cancel_order("ETH-PERP", order_id=1)).code == Code.UNKNOWN_MARKET
    no_target = chain.run(A, sdk_tx.tx_pb2.CancelOrder(market="BTC-PERP"))  # the SDK refuses to build it
    assert (no_target.code, no_target.reason) == (
        Code.ORDER_NOT_FOUND,
        "cancel needs an order id or a client order id",
    )
    assert resting(chain) == {other.order_id: (False, MID, 20)}


def test_cancel_in_wrong_market_is_not_found() -> None:
    chain = Chain(make_config([A], markets=[make_market(0), make_market(1, "ETH-PERP")]))
    placed = chain.run(A, order("sell", MID, 20))
    result = chain.run(A, sdk_tx.cancel_order("ETH-PERP", order_id=placed.order_id))
    assert result.code == Code.ORDER_NOT_FOUND


def test_cancel_all_per_market_and_everywhere() -> None:
    chain = Chain(make_config([A], markets=[make_market(0), make_market(1, "ETH-PERP")]))
    for market in ("BTC-PERP", "ETH-PERP", "BTC-PERP"):
        chain.run(A, order("sell", MID, 20, market=market))
    assert chain.run(A, sdk_tx.cancel_all("BTC-PERP")).ok
    assert [o.market_id for o in chain.state.orders.values()] == [1]
    assert chain.run(A, sdk_tx.cancel_all()).ok and chain.state.orders == {}
    assert chain.run(A, sdk_tx.cancel_all("NOPE")).code == Code.UNKNOWN_MARKET


def test_batch_items_have_their_own_results(chain: Chain) -> None:
    items = [order("sell", MID, 20), order("sell", MID + 1, 20), sdk_tx.cancel_order("BTC-PERP", order_id=1)]
    result = chain.run(A, sdk_tx.batch(items))
    assert result.ok
    assert [r.code for r in result.items] == [Code.OK, Code.PRICE_NOT_ON_TICK, Code.OK]
    assert chain.state.orders == {}


def test_batch_limits(chain: Chain) -> None:
    assert chain.run(A, sdk_tx.tx_pb2.Batch()).code == Code.NESTED_OR_EMPTY_BATCH_ITEM
    many = sdk_tx.tx_pb2.Batch(items=[sdk_tx.tx_pb2.BatchItem(place=order("sell", MID, 20))] * 51)
    assert chain.run(A, many).code == Code.BATCH_TOO_LARGE
    empty_item = sdk_tx.tx_pb2.Batch(items=[sdk_tx.tx_pb2.BatchItem()])
    assert chain.run(A, empty_item).items[0].code == Code.NESTED_OR_EMPTY_BATCH_ITEM


def test_block_order_cancels_then_post_only_then_rest(chain: Chain) -> None:
    resting_sell = chain.run(A, order("sell", MID, 20))
    txs = [
        chain.tx(B, order("buy", MID, 20)),  # would take A's order if it ran first
        chain.tx(C, order("sell", MID - 5, 20, tif="post_only")),  # rests before B's buy arrives
        chain.tx(A, sdk_tx.cancel_order("BTC-PERP", order_id=resting_sell.order_id)),  # runs first
    ]
    result = chain.block(txs)
    assert [r.ok for r in result.results] == [True, True, True]
    [t] = trades(result)
    assert t["maker"] == "0x" + C.address.hex() and t["price"] == MID - 5


# -- envelope ----------------------------------------------------------------------------------


def test_envelope_rejections_change_nothing(chain: Chain) -> None:
    twin = Chain(make_config([A, B, C]))
    good = chain.tx(A, order("sell", MID, 20))
    signed = sdk_tx.tx_pb2.SignedTx.FromString(good)
    bad_sig = sdk_tx.tx_pb2.SignedTx(body=signed.body, public_key=signed.public_key, signature=bytes(64))
    short_key = sdk_tx.tx_pb2.SignedTx(body=signed.body, public_key=b"\x01" * 31, signature=signed.signature)
    other_chain = chain.tx(A, order("sell", MID, 20), chain_id="other-chain")
    stranger = chain.tx(keys(1, b"nobody")[0], order("sell", MID, 20))
    txs = [
        b"\xff\x00garbage",
        bad_sig.SerializeToString(),
        short_key.SerializeToString(),
        other_chain,
        stranger,
        b"\x0a" * 70_000,
    ]
    result = chain.block(txs)
    assert [r.code for r in result.results] == [
        Code.MALFORMED_TX,
        Code.BAD_SIGNATURE,
        Code.BAD_SIGNATURE,
        Code.WRONG_CHAIN_ID,
        Code.UNKNOWN_ACCOUNT,
        Code.TX_TOO_LARGE,
    ]
    twin.block([])
    assert chain.state.app_hash == twin.state.app_hash


def test_empty_action_is_rejected(chain: Chain) -> None:
    body = sdk_tx.tx_pb2.TxBody(chain_id=CHAIN_ID, nonce=chain.nonce + 1).SerializeToString()
    from stf.signing import signing_message

    signature = A.sign(signing_message(CHAIN_ID, body))
    signed = sdk_tx.tx_pb2.SignedTx(body=body, public_key=A.public_key, signature=signature)
    assert chain.block([signed.SerializeToString()]).results[0].code == Code.EMPTY_ACTION


def test_nonces(chain: Chain) -> None:
    now = chain.state.time_ms
    first = chain.tx(A, sdk_tx.cancel_all(), nonce=now + 10)
    assert chain.block([first]).results[0].ok
    assert chain.block([first]).results[0].code == Code.NONCE_USED  # replay
    # parallel submissions: an older unused nonce is still fine while fewer than 100 are kept
    assert chain.block([chain.tx(A, sdk_tx.cancel_all(), nonce=now + 5)]).results[0].ok
    far = now + chain.config.nonce_window_future_ms + 10_000
    assert (
        chain.block([chain.tx(A, sdk_tx.cancel_all(), nonce=far)]).results[0].code == Code.NONCE_OUT_OF_WINDOW
    )
    old = now - chain.config.nonce_window_past_ms - 1
    assert (
        chain.block([chain.tx(A, sdk_tx.cancel_all(), nonce=old)]).results[0].code == Code.NONCE_OUT_OF_WINDOW
    )
    for i in range(100):
        chain.block([chain.tx(A, sdk_tx.cancel_all(), nonce=now + 1000 + i)])
    kept = chain.state.accounts[A.address].nonces
    assert len(kept) == 100 and kept[0] == now + 1000
    result = chain.block([chain.tx(A, sdk_tx.cancel_all(), nonce=now + 999)])
    assert result.results[0].code == Code.NONCE_TOO_OLD


def test_invalid_block_headers(chain: Chain) -> None:
    with pytest.raises(InvalidBlock):
        apply_block(chain.state, BlockHeader(chain.state.height + 2, chain.state.time_ms + 1), [])
    with pytest.raises(InvalidBlock):
        apply_block(chain.state, BlockHeader(chain.state.height + 1, chain.state.time_ms - 1), [])


def test_config_replace_keeps_each_market_index() -> None:
    import dataclasses

    base = make_config([A])
    other = dataclasses.replace(base, markets=(make_market(0, "ETH-PERP"),))
    assert list(base.market_by_symbol) == ["BTC-PERP"]
    assert list(other.market_by_symbol) == ["ETH-PERP"]
