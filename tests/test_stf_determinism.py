"""Determinism: same blocks -> same app hash across PYTHONHASHSEEDs; stf/ stays free of
non-deterministic constructs; snapshots restore to the same hash and replay identically."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdk import tx as sdk_tx
from stf.events import FUNDING, LIQUIDATION, TAKEOVER, TRADE
from stf.snapshot import SnapshotError, decode_snapshot, encode_snapshot, full_hash
from tests.stf_support import USD, Chain, keys, make_config, make_market, order

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = keys(6, b"det")
VALIDATORS = keys(3, b"detval")
MARKETS = [
    make_market(0, funding_interval_ms=2_000),
    make_market(
        1,
        "ETH-PERP",
        initial_oracle_price=30_000,
        tick_size=1,
        lot_size=1,
        min_size=1,
        price_decimals=1,
        size_decimals=3,
        funding_interval_ms=3_000,
    ),
]
# (collateral, oracle swing in ticks, order size multiplier, seed): deep pockets; thin collateral with a
# drifting oracle, which liquidates (checked below so the workload keeps covering the risk engine)
WORKLOADS = ((1_000_000 * USD, 20, 1, 7), (3_000 * USD, 4_000, 40, 3))


def build_chain(collateral: int = 1_000_000 * USD) -> Chain:
    config = make_config(ACCOUNTS, validators=VALIDATORS, markets=MARKETS, collateral=collateral)
    return Chain(config, verify=False)


def random_blocks(
    chain: Chain, n_blocks: int, seed: int = 7, swing: int = 20, size_mult: int = 1
) -> list[list[bytes]]:
    """Pre-signed blocks of mixed actions (applied by the caller)."""
    rng = random.Random(seed)
    blocks: list[list[bytes]] = []
    next_id = 1
    mids = {"BTC-PERP": 600_000, "ETH-PERP": 30_000}  # drifts with the validators' submissions
    for _ in range(n_blocks):
        txs = []
        for _ in range(rng.randint(0, 12)):
            who = rng.choice(ACCOUNTS)
            roll = rng.random()
            market, tick = rng.choice([("BTC-PERP", 5), ("ETH-PERP", 1)])
            mid = mids[market]
            lot = 10 if market == "BTC-PERP" else 1
            if roll < 0.1:
                action = order(
                    rng.choice(["buy", "sell"]), mid, rng.randint(50, 400) * lot, market=market, tif="ioc"
                )
            elif roll < 0.6:
                tif = rng.choice(["gtc", "gtc", "ioc", "post_only"])
                action: sdk_tx.Action = order(
                    rng.choice(["buy", "sell"]),
                    mid + rng.randint(-8, 8) * tick,
                    rng.randint(2, 9) * lot * size_mult,
                    market=market,
                    tif=tif,
                    client_order_id=rng.choice(["", "", "x", "y"]),
                )
                next_id += 1
            elif roll < 0.8:
                action = sdk_tx.cancel_order(market, order_id=rng.randint(1, max(1, next_id)))
            elif roll < 0.85:
                action = sdk_tx.cancel_all(rng.choice(["", market]))
            elif roll < 0.9:
                action = sdk_tx.transfer(rng.choice(ACCOUNTS).address, rng.randint(1, 100) * USD)
            elif roll < 0.93:
                action = sdk_tx.faucet(rng.randint(1, 50) * USD)
            else:
                who = rng.choice(VALIDATORS)
                mids[market] = max(100 * tick, mid + rng.randint(-swing, swing) * tick)
                action = sdk_tx.oracle_prices({market: mids[market]})
            txs.append(chain.tx(who, action))
        blocks.append(txs)
    return blocks


def replay_hash(n_blocks: int = 150) -> str:
    """Two workloads: deep pockets, and thin collateral with large oracle swings (liquidations)."""
    out = []
    for collateral, swing, size_mult, seed in WORKLOADS:
        chain = build_chain(collateral)
        for txs in random_blocks(chain, n_blocks, seed=seed, swing=swing, size_mult=size_mult):
            chain.block(txs)
        out.append(chain.state.app_hash.hex())
    return ",".join(out)


def test_workloads_cover_funding_and_liquidation() -> None:
    collateral, swing, size_mult, seed = WORKLOADS[1]
    chain = build_chain(collateral)
    seen: set[int] = set()
    for txs in random_blocks(chain, 150, seed=seed, swing=swing, size_mult=size_mult):
        seen.update(e[0] for e in chain.block(txs).events)
    assert {LIQUIDATION, TAKEOVER, FUNDING, TRADE} <= seen


def test_same_blocks_same_hash_across_hash_seeds() -> None:
    hashes = []
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from tests.test_stf_determinism import replay_hash; print(replay_hash())",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        hashes.append(out.stdout.strip())
    assert len(hashes[0]) == 129
    assert hashes[0] == hashes[1] == hashes[2]


FORBIDDEN = [
    (re.compile(r"\bfloat\b"), "float"),
    (re.compile(r"\bDecimal\b|^\s*(import|from)\s+decimal\b", re.M), "Decimal"),
    (
        re.compile(r"^\s*(import|from)\s+(random|time|datetime|secrets|uuid)\b", re.M),
        "clock/randomness import",
    ),
    (re.compile(r"(?<![\w.])hash\("), "hash()"),
    (re.compile(r"\bset\(|\bfrozenset\(|:\s*set\[|\{\s*[^:{}]+\s*for\s"), "set"),
    (re.compile(r"\bos\.urandom|\bperf_counter|\bmonotonic\("), "non-deterministic call"),
]


def forbidden_constructs(source: str) -> list[str]:
    code = re.sub(r'"""[\s\S]*?"""', "", source)  # docstrings may mention the words
    code = re.sub(r"#.*", "", code)
    return [name for pattern, name in FORBIDDEN if pattern.search(code)]


def test_stf_has_no_nondeterministic_constructs() -> None:
    offenders = {p.name: forbidden_constructs(p.read_text()) for p in sorted((ROOT / "stf").glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize(
    "snippet",
    [
        "x = float(3)",
        "from decimal import Decimal",
        "import random",
        "import time",
        "h = hash(b'x')",
        "s = set()",
        "for k in {a for a in b}: pass",
    ],
)
def test_the_grep_catches_each_construct(snippet: str) -> None:
    assert forbidden_constructs(snippet) != []


@pytest.mark.parametrize("workload", WORKLOADS)
def test_snapshot_restore_then_replay_equals_straight_replay(workload: tuple[int, int, int, int]) -> None:
    """Also rebuilds derived indexes (books, liquidation triggers) on the thin-collateral workload."""
    collateral, swing, size_mult, seed = workload
    straight = build_chain(collateral)
    blocks = random_blocks(straight, 120, seed=seed, swing=swing, size_mult=size_mult)
    for txs in blocks[:60]:
        straight.block(txs)
    snapshot = encode_snapshot(straight.state)
    restored = decode_snapshot(straight.config, snapshot)
    assert restored.app_hash == straight.state.app_hash == full_hash(straight.state)
    assert encode_snapshot(restored) == snapshot  # canonical
    resumed = Chain(straight.config, verify=False)
    resumed.state = restored
    for txs in blocks[60:]:
        a = straight.block(txs)
        b = resumed.block(txs)
        assert [r.to_dict() for r in a.results] == [r.to_dict() for r in b.results]
        assert a.events == b.events
        assert a.app_hash == b.app_hash


def test_corrupt_snapshots_are_refused() -> None:
    chain = build_chain()
    for txs in random_blocks(chain, 30):
        chain.block(txs)
    good = encode_snapshot(chain.state)
    flipped = bytearray(good)
    flipped[-3] ^= 0x01
    with pytest.raises(SnapshotError, match="hash mismatch|malformed"):
        decode_snapshot(chain.config, bytes(flipped))
    with pytest.raises(SnapshotError, match="truncated"):
        decode_snapshot(chain.config, good[:-10])
    with pytest.raises(SnapshotError, match="trailing"):
        decode_snapshot(chain.config, good + b"\x00")
    with pytest.raises(SnapshotError, match="magic"):
        decode_snapshot(chain.config, b"NOTASNAP" + good[8:])
    other = make_config(ACCOUNTS, validators=VALIDATORS, markets=MARKETS, chain_id="other-1")
    with pytest.raises(SnapshotError, match="chain"):
        decode_snapshot(other, good)


def test_the_element_cache_only_saves_work() -> None:
    """stf.apphash.ElementCache: the same app hash at every block whether removed elements come
    from the cache (default size) or are hashed again (a cache of 2 that forgets at once), and the
    hash a from-scratch recomputation gives."""
    from stf.apphash import ElementCache

    cached = build_chain(3_000 * USD)
    forgetful = build_chain(3_000 * USD)
    forgetful.state.elements = ElementCache(2)
    blocks = random_blocks(cached, 80, seed=3, swing=4_000, size_mult=40)
    for txs in blocks:
        assert cached.block(txs).app_hash == forgetful.block(txs).app_hash
    assert len(cached.state.elements) > 100 and len(forgetful.state.elements) <= 2
    assert cached.state.app_hash == full_hash(cached.state)


def test_element_cache_answers_like_the_hash_and_stays_bounded() -> None:
    from stf.apphash import ElementCache, element_of_input

    cache = ElementCache(8)
    inputs = [bytes([i]) * (i + 1) for i in range(20)]
    assert [cache.added(d) for d in inputs] == [element_of_input(d) for d in inputs]
    assert len(cache) <= 8
    assert [cache.removed(d) for d in inputs] == [element_of_input(d) for d in inputs]  # hits and misses
    assert len(cache) == 0  # a removed input is forgotten (its entry no longer holds that value)
    with pytest.raises(ValueError):
        ElementCache(1)
