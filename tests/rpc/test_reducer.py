"""The pure reducer: replay equals the node, updates rebuild the books, determinism, lifecycle."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from proto.ita.v1 import tx_pb2
from rpc.reducer import IndexerState, apply_committed, describe_tx
from rpc.simchain import SimChain
from rpc.views import book_checksum
from sdk import tx as sdk_tx
from stf.block import genesis_state
from stf.signing import signing_message
from stf.snapshot import decode_snapshot, encode_snapshot
from tests.rpc.support import node_book


def replay(chain: SimChain, upto: int | None = None) -> tuple[IndexerState, list[list[Any]]]:
    state = IndexerState(genesis_state(chain.config))
    out = []
    for committed in chain.blocks[: upto if upto is not None else len(chain.blocks)]:
        updates = apply_committed(state, committed)
        for u in updates:
            u.materialize()  # the parts for subscribers read the state: before the next block
        out.append(updates)
    return state, out


def test_updates_rebuild_every_book_at_every_height() -> None:
    chain = SimChain(seed=21)
    state = IndexerState(genesis_state(chain.config))
    books: dict[str, tuple[dict[str, str], dict[str, str]]] = {
        m.symbol: ({}, {}) for m in chain.config.markets
    }
    seqs: dict[str, int] = {}
    for _ in range(400):
        committed = chain.produce()
        updates = apply_committed(state, committed)
        assert state.stf.app_hash == chain.state.app_hash
        for u in updates:
            msg = u.materialize()
            assert msg["height"] == chain.height and msg["prev_seq"] == seqs.get(u.topic, 0)
            seqs[u.topic] = msg["seq"]
            if u.channel != "book":
                continue
            bids, asks = books[msg["market"]]
            for side, levels in ((bids, msg["bids"]), (asks, msg["asks"])):
                for px, sz in levels:
                    if sz == "0":
                        del side[px]
                    else:
                        side[px] = sz
            market = state.stf.get_market(msg["market"])
            assert market is not None
            assert msg["checksum"] == book_checksum(market.book, market.spec)
        for market_id, spec in enumerate(chain.config.markets):
            bids, asks = books[spec.symbol]
            want_bids, want_asks = node_book(chain, market_id)
            assert sorted(([p, s] for p, s in bids.items()), key=lambda x: -Decimal(x[0])) == want_bids
            assert sorted(([p, s] for p, s in asks.items()), key=lambda x: Decimal(x[0])) == want_asks
        for market in state.stf.markets:
            longs = sum(
                p.size
                for a in state.stf.accounts.values()
                for m, p in a.positions.items()
                if m == market.spec.market_id and p.size > 0
            )
            assert state.open_interest[market.spec.market_id] == longs


def test_replay_is_deterministic_to_the_byte() -> None:
    chain = SimChain(seed=22)
    chain.produce_many(200)
    _, first = replay(chain)
    _, second = replay(chain)
    assert [orjson.dumps(u.message) for b in first for u in b] == [
        orjson.dumps(u.message) for b in second for u in b
    ]


def test_snapshot_and_metadata_resume_identically() -> None:
    chain = SimChain(seed=23)
    chain.produce_many(300)
    state, _ = replay(chain, 150)
    resumed = IndexerState(decode_snapshot(chain.config, encode_snapshot(state.stf)))
    resumed.load_meta(orjson.loads(orjson.dumps(state.to_meta())))
    for committed in chain.blocks[150:]:
        a = apply_committed(state, committed)
        b = apply_committed(resumed, committed)
        assert [orjson.dumps(u.materialize()) for u in a] == [orjson.dumps(u.materialize()) for u in b]


def by_topic(updates: list[Any], topic: str) -> dict[str, Any]:
    found = [u.materialize() for u in updates if u.topic == topic]
    assert len(found) == 1, topic
    return found[0]


def test_order_lifecycle_fills_and_trades() -> None:
    chain = SimChain(seed=24)
    state = IndexerState(genesis_state(chain.config))
    maker, taker = chain.account_keys[0], chain.account_keys[1]
    m_hex, t_hex = "0x" + maker.address.hex(), "0x" + taker.address.hex()
    time_ms = chain.state.time_ms + 1000
    rest = sdk_tx.place_order("BTC-PERP", "sell", price=650_000, size=100, client_order_id="m1")
    updates = apply_committed(state, chain.produce([chain.sign(maker, rest, time_ms)]))
    placed = by_topic(updates, f"account:{m_hex}")["orders"]
    assert [(o["status"], o["remaining"], o["client_order_id"]) for o in placed] == [("open", "0.0100", "m1")]
    order_id = placed[0]["order_id"]
    book = by_topic(updates, "book:BTC-PERP")
    assert book["asks"] == [["65000.0", "0.0100"]] and book["bids"] == [] and book["seq"] == 1

    take = sdk_tx.place_order("BTC-PERP", "buy", price=650_000, size=40, tif="ioc")
    updates = apply_committed(state, chain.produce([chain.sign(taker, take, time_ms + 1000)]))
    maker_update = by_topic(updates, f"account:{m_hex}")
    taker_update = by_topic(updates, f"account:{t_hex}")
    assert [(o["order_id"], o["status"], o["remaining"], o["filled"]) for o in maker_update["orders"]] == [
        (order_id, "open", "0.0060", "0.0040")
    ]
    assert [(o["status"], o["filled"]) for o in taker_update["orders"]] == [("filled", "0.0040")]
    assert [(f["liquidity"], f["side"], f["price"], f["size"]) for f in maker_update["fills"]] == [
        ("maker", "sell", "65000.0", "0.0040")
    ]
    assert [(f["liquidity"], f["side"]) for f in taker_update["fills"]] == [("taker", "buy")]
    assert (
        maker_update["positions"][0]["size"] == "-0.0040" and taker_update["positions"][0]["size"] == "0.0040"
    )
    trades = by_topic(updates, "trades:BTC-PERP")["trades"]
    assert [(t["price"], t["size"], t["side"], t["maker_order_id"]) for t in trades] == [
        ("65000.0", "0.0040", "buy", order_id)
    ]
    assert by_topic(updates, "book:BTC-PERP")["asks"] == [["65000.0", "0.0060"]]
    candle = by_topic(updates, "candles:BTC-PERP:1m")["candles"][0]
    assert (candle["open"], candle["close"], candle["volume"], candle["trades"]) == (
        "65000.0",
        "65000.0",
        "0.0040",
        1,
    )
    assert state.open_interest[0] == 40

    cancel = sdk_tx.cancel_order("BTC-PERP", client_order_id="m1")
    updates = apply_committed(state, chain.produce([chain.sign(maker, cancel, time_ms + 2000)]))
    closed = by_topic(updates, f"account:{m_hex}")["orders"]
    assert [
        (o["status"], o["reason"], o["remaining"], o["filled"], o["price"], o["size"]) for o in closed
    ] == [("cancelled", "user", "0.0000", "0.0040", "65000.0", "0.0100")]
    assert by_topic(updates, "book:BTC-PERP")["asks"] == [["65000.0", "0"]]
    assert order_id not in state.resting
    txs = by_topic(updates, "_txs")["txs"]
    assert [(t["sender"], t["action"], t["result"]["status"]) for t in txs] == [(m_hex, "cancel_order", "ok")]


def test_level_touched_but_unchanged_is_not_sent() -> None:
    chain = SimChain(seed=25)
    state = IndexerState(genesis_state(chain.config))
    key = chain.account_keys[0]
    t = chain.state.time_ms + 1000
    place = sdk_tx.place_order("ETH-PERP", "buy", price=340_000, size=10, client_order_id="x")
    apply_committed(state, chain.produce([chain.sign(key, place, t)]))
    seq = state.seq("book:ETH-PERP")
    # cancel and re-place the same size at the same price in one block: no net change
    cancel = sdk_tx.cancel_order("ETH-PERP", client_order_id="x")
    again = sdk_tx.place_order("ETH-PERP", "buy", price=340_000, size=10)
    updates = apply_committed(
        state, chain.produce([chain.sign(key, cancel, t + 1000), chain.sign(key, again, t + 1001)])
    )
    assert [u for u in updates if u.topic == "book:ETH-PERP"] == []
    assert state.seq("book:ETH-PERP") == seq


def test_tx_records_describe_every_tx_of_a_block_decoded_or_not() -> None:
    """The replay's decoded txs give the sender/action/nonce of the _txs records; txs it refused
    (garbage, another chain, no action) are described from their bytes, exactly as describe_tx."""
    chain = SimChain(seed=27)
    state = IndexerState(genesis_state(chain.config))
    key = chain.account_keys[0]
    t = chain.state.time_ms + 1000
    good = chain.sign(key, sdk_tx.place_order("BTC-PERP", "buy", price=640_000, size=10), t)
    other_chain = sdk_tx.sign_tx(key, "other-chain", sdk_tx.tx_body("other-chain", t + 1, sdk_tx.faucet(1)))
    empty_body = tx_pb2.TxBody(chain_id=chain.config.chain_id, nonce=t + 2).SerializeToString()
    empty = tx_pb2.SignedTx(
        body=empty_body,
        public_key=key.public_key,
        signature=key.sign(signing_message(chain.config.chain_id, empty_body)),
    ).SerializeToString()
    cancel = chain.sign(key, sdk_tx.cancel_all("BTC-PERP"), t + 3)
    block = [good, b"\x0a\xff garbage", other_chain, empty, cancel]
    updates = apply_committed(state, chain.produce(block, t))
    records = by_topic(updates, "_txs")["txs"]
    assert [r["result"]["status"] for r in records] == [
        "ok",
        "malformed_tx",
        "wrong_chain_id",
        "empty_action",
        "ok",
    ]
    assert [(r["sender"], r["action"], r["nonce"]) for r in records] == [
        tuple(describe_tx(raw).values()) for raw in block
    ]
    sender = "0x" + key.address.hex()
    assert [(r["sender"], r["action"]) for r in records] == [
        (sender, "place_order"),
        (None, None),
        (sender, "faucet"),
        (sender, None),
        (sender, "cancel_all"),
    ]
