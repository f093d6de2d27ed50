"""The devnet oracle source: shared walk, per-validator noise, tick grid, deterministic."""

from __future__ import annotations

import asyncio

from node.oracle import RandomWalkSource, run_oracle_duty
from proto.ita.v1 import tx_pb2
from tests.stf_support import keys, make_market

SPECS = [make_market(0), make_market(1, "ETH-PERP", initial_oracle_price=30_000, tick_size=1)]
GENESIS = 1_700_000_000_000


def test_validators_share_the_walk_and_differ_by_small_noise() -> None:
    a = RandomWalkSource("chain-1", SPECS, GENESIS, noise_seed=0)
    b = RandomWalkSource("chain-1", SPECS, GENESIS, noise_seed=1)
    t = GENESIS + 600_000  # ten minutes of one-second steps
    pa, pb = a.prices(t), b.prices(t)
    assert set(pa) == {"BTC-PERP", "ETH-PERP"}
    for spec in SPECS:
        assert pa[spec.symbol] % spec.tick_size == 0 and pa[spec.symbol] > 0
        assert abs(pa[spec.symbol] - pb[spec.symbol]) <= 4 * spec.tick_size
    assert pa["BTC-PERP"] != SPECS[0].initial_oracle_price  # it moved
    again = RandomWalkSource("chain-1", SPECS, GENESIS, noise_seed=0)
    assert again.prices(t) == pa  # a restarted validator computes the same prices
    assert RandomWalkSource("chain-2", SPECS, GENESIS).prices(t) != pa  # seeded by the chain id


def test_duty_signs_oracle_transactions() -> None:
    key = keys(1, b"oracle")[0]
    sent: list[bytes] = []

    async def submit(txs: list[bytes]) -> None:
        sent.extend(txs)

    async def scenario() -> None:
        source = RandomWalkSource("chain-1", SPECS, GENESIS)
        task = asyncio.create_task(
            run_oracle_duty(key, "chain-1", source, 10, submit, lambda: GENESIS + 5_000)
        )
        while len(sent) < 2:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    body = tx_pb2.TxBody.FromString(tx_pb2.SignedTx.FromString(sent[0]).body)
    assert body.chain_id == "chain-1" and body.WhichOneof("action") == "oracle_prices"
    assert [p.market for p in body.oracle_prices.prices] == ["BTC-PERP", "ETH-PERP"]
