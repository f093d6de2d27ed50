"""The indexer's account channel on liquidations: the LIQUIDATION, TAKEOVER and ADL events of the
STF's hand-computed margin scenarios (tests/test_stf_margin.py), replayed from certified blocks,
reach the accounts they concern as JSON-ready records in the market's decimals and in USD."""

from __future__ import annotations

from typing import Any

import orjson

from rpc.reducer import IndexerState, apply_committed
from rpc.simchain import SimChain
from sdk import tx as sdk_tx
from sdk.keys import Key
from stf.block import genesis_state
from tests.stf_support import order
from tests.test_stf_margin import M2, SYMBOL, VALIDATORS, B, M, T, X, chain_with


def sim(balances: dict[Key, int]) -> SimChain:
    config = chain_with(balances).config
    return SimChain(
        config, validator_keys=VALIDATORS, account_keys=list(balances), snapshot_interval=0, max_txs=0
    )


def run(chain: SimChain, key: Key, action: sdk_tx.Action) -> None:
    time_ms = chain.state.time_ms + chain.block_ms
    chain.produce([chain.sign(key, action, time_ms)], time_ms)


def set_oracle(chain: SimChain, price: int) -> None:
    time_ms = chain.state.time_ms + chain.block_ms
    txs = [chain.sign(v, sdk_tx.oracle_prices({SYMBOL: price}), time_ms) for v in VALIDATORS]
    chain.produce(txs, time_ms)


def account_events(chain: SimChain) -> dict[str, list[dict[str, Any]]]:
    """Every account-channel event of the last block, by account, as a client would decode it."""
    state = IndexerState(genesis_state(chain.config))
    updates = []
    for committed in chain.blocks:
        updates = apply_committed(state, committed)
    out: dict[str, list[dict[str, Any]]] = {}
    for u in updates:
        if u.channel == "account":
            message = orjson.loads(orjson.dumps(u.materialize()))  # what goes on the wire
            out[message["address"]] = message["events"]
    return out


def hex_of(key: Key) -> str:
    return "0x" + key.address.hex()


def test_liquidation_and_takeover_reach_the_liquidated_account() -> None:
    chain = sim({T: 1_000, M: 1_000_000, B: 1_000_000})
    run(chain, M, order("sell", 1000, 100, market=SYMBOL))
    run(chain, T, order("buy", 1000, 100, market=SYMBOL))
    run(chain, B, order("buy", 935, 40, market=SYMBOL))  # the book can absorb only 40
    set_oracle(chain, 940)  # T's equity 400 < maintenance 470: liquidated; the fund takes 60 at 88.0
    events = account_events(chain)[hex_of(T)]
    liquidation = next(e for e in events if e["type"] == "liquidation")
    assert (liquidation["equity"], liquidation["maintenance"]) == ("400.000000", "470.000000")
    takeover = next(e for e in events if e["type"] == "takeover")
    assert {k: takeover[k] for k in ("market", "account", "size", "price")} == {
        "market": SYMBOL,
        "account": hex_of(T),
        "size": "60",
        "price": "88.0",
    }


def test_adl_reaches_both_the_bankrupt_account_and_its_counterparty() -> None:
    chain = sim({T: 1_000, M: 4_000, M2: 1_000_000, X: 1_000_000})
    run(chain, M2, order("sell", 1000, 60, market=SYMBOL))
    run(chain, T, order("buy", 1000, 60, market=SYMBOL))
    run(chain, M, order("sell", 1000, 40, market=SYMBOL))
    run(chain, X, order("buy", 1000, 40, market=SYMBOL))
    set_oracle(chain, 800)  # T bankrupt, the fund is empty: M then M2 are deleveraged at 83.4
    by_account = account_events(chain)
    adl = {"type": "adl", "market": SYMBOL, "account": hex_of(T), "price": "83.4"}
    expected = [
        {**adl, "counterparty": hex_of(M), "size": "40"},
        {**adl, "counterparty": hex_of(M2), "size": "20"},
    ]
    assert [e for e in by_account[hex_of(T)] if e["type"] == "adl"] == expected
    assert [e for e in by_account[hex_of(M)] if e["type"] == "adl"] == expected[:1]
    assert [e for e in by_account[hex_of(M2)] if e["type"] == "adl"] == expected[1:]
    assert hex_of(X) not in by_account or not [e for e in by_account[hex_of(X)] if e["type"] == "adl"]
