from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.config import MempoolConfig
from node.mempool import (
    Admission,
    Mempool,
    MempoolCode,
    check_tx_against_state,
    code_status,
    nonce_ceilings,
)
from node.verifier_pool import VerifierPool
from node.verify import verify_tx
from sdk import tx as sdk_tx
from stf.block import BlockHeader, apply_block, genesis_state
from stf.results import Code
from stf.signing import tx_hash
from stf.state import State
from tests.node.support import CHAIN_ID, account, chain, corrupt_signature, transfer_tx


def make_pool(state: State, **limits: int) -> Mempool:
    return Mempool(MempoolConfig(**limits), lambda v: check_tx_against_state(state, v))


def submit(mp: Mempool, raw: bytes) -> Admission:
    early = mp.precheck(raw)
    return early if early is not None else mp.add_verified(raw, verify_tx(raw, CHAIN_ID))


def nonce_tx(sender: int, nonce: int, amount: int = 1) -> bytes:
    body = sdk_tx.tx_body(CHAIN_ID, nonce, sdk_tx.transfer(account((sender + 1) % 4).address, amount))
    return sdk_tx.sign_tx(account(sender), CHAIN_ID, body)


def test_admission_and_typed_rejections() -> None:
    state = genesis_state(chain())
    mp = make_pool(state)
    good = transfer_tx(0, 1)
    first = submit(mp, good)
    assert first.accepted and first.code == 0 and first.status == "ok" and first.hash == tx_hash(good)
    again = submit(mp, good)
    assert (again.accepted, again.code, again.status) == (False, MempoolCode.DUPLICATE, "duplicate")
    same_nonce = transfer_tx(0, 1, amount=2)  # other bytes, same account and nonce
    assert submit(mp, same_nonce).code == Code.NONCE_USED
    bad = corrupt_signature(transfer_tx(1, 1))
    assert submit(mp, bad).status == "bad_signature"
    assert submit(mp, bad).status == "bad_signature"  # answered from the cache, not as "duplicate"
    assert submit(mp, transfer_tx(1, 1, chain_id="elsewhere")).code == Code.WRONG_CHAIN_ID
    assert submit(mp, b"\x00" * 70_000).code == Code.TX_TOO_LARGE
    now = chain().genesis_time_ms
    pay = sdk_tx.transfer(account(0).address, 1)
    stranger = sdk_tx.sign_tx(account(9), CHAIN_ID, sdk_tx.tx_body(CHAIN_ID, now, pay))
    assert submit(mp, stranger).code == Code.UNKNOWN_ACCOUNT
    faucet = sdk_tx.sign_tx(account(9), CHAIN_ID, sdk_tx.tx_body(CHAIN_ID, now, sdk_tx.faucet(1)))
    assert submit(mp, faucet).accepted  # the STF lets a faucet tx create its account
    future = nonce_tx(2, chain().genesis_time_ms + chain().nonce_window_future_ms + 1)
    assert submit(mp, future).code == Code.NONCE_OUT_OF_WINDOW
    assert submit(mp, future).code == Code.NONCE_OUT_OF_WINDOW  # stateful: not cached as a duplicate
    assert len(mp) == 2 and mp.get(tx_hash(good)) == good and tx_hash(good) in mp
    stats = mp.stats()
    assert stats["size"] == 2 and stats["bytes"] == len(good) + len(faucet) and stats["admitted_total"] == 2
    assert mp.rejected_total[MempoolCode.DUPLICATE] == 1 and mp.rejected_total[Code.BAD_SIGNATURE] == 2


def test_code_status_names() -> None:
    assert code_status(0) == "ok" and code_status(2) == "bad_signature"
    assert code_status(100) == "mempool_full" and code_status(102) == "account_limit"
    assert code_status(999) == "code_999"


def test_code_status_table_matches_the_enums() -> None:
    for code in range(0, 300):
        expected = f"code_{code}"
        for enum in (Code, MempoolCode):
            try:
                expected = enum(code).name.lower()
                break
            except ValueError:
                continue
        assert code_status(code) == expected


def test_bounds_on_count_bytes_and_per_account() -> None:
    state = genesis_state(chain())
    mp = make_pool(state, max_txs=3, max_txs_per_account=2)
    assert [submit(mp, transfer_tx(0, i)).accepted for i in range(1, 4)] == [True, True, False]
    assert submit(mp, transfer_tx(0, 3)).code == MempoolCode.ACCOUNT_LIMIT
    assert submit(mp, transfer_tx(1, 1)).accepted
    full = submit(mp, transfer_tx(2, 1))
    assert full.code == MempoolCode.MEMPOOL_FULL and "maximum" in full.reason
    size = len(transfer_tx(0, 1))
    mp = make_pool(state, max_bytes=2 * size + 10)
    assert [submit(mp, transfer_tx(k, 1)).status for k in range(3)] == ["ok", "ok", "mempool_full"]
    assert mp.size_bytes == 2 * size


def test_full_is_checked_again_after_verification() -> None:
    state = genesis_state(chain())
    mp = make_pool(state, max_txs=1)
    a, b = transfer_tx(0, 1), transfer_tx(1, 1)
    assert mp.precheck(a) is None and mp.precheck(b) is None  # both in flight to the verifiers
    assert mp.add_verified(a, verify_tx(a, CHAIN_ID)).accepted
    assert mp.add_verified(b, verify_tx(b, CHAIN_ID)).code == MempoolCode.MEMPOOL_FULL
    assert mp.precheck(b) is not None  # ... and a later precheck sees the pool full
    with pytest.raises(ValueError, match="does not belong"):
        mp.add_verified(a, verify_tx(b, CHAIN_ID))


def test_txs_held_for_their_signature_checks_count_against_the_bounds() -> None:
    state = genesis_state(chain())
    mp = make_pool(state, max_txs=3)
    a, b, c = transfer_tx(0, 1), transfer_tx(1, 1), transfer_tx(2, 1)
    assert mp.precheck(a) is None
    mp.hold(2, 2 * len(a))  # two txs went to the workers
    assert mp.stats()["awaiting"] == 2 and mp.stats()["awaiting_bytes"] == 2 * len(a)
    assert mp.precheck(c) is None  # 0 admitted + 2 awaiting < 3
    mp.hold(1, len(c))
    full = mp.precheck(transfer_tx(3, 1))
    assert full is not None and full.code == MempoolCode.MEMPOOL_FULL
    assert "0 txs and 3 more await signature checks" in full.reason and "maximum" in full.reason
    # a proposal's txs are checked whether or not the pool has room (they are not admitted for it)
    assert mp.precheck(transfer_tx(3, 1), bounded=False) is None
    mp.release(3, 2 * len(a) + len(c))  # verdicts back: admission checks the bounds itself
    assert [mp.add_verified(t, verify_tx(t, CHAIN_ID)).accepted for t in (a, b, c)] == [True] * 3
    assert mp.stats()["awaiting"] == 0 and mp.stats()["awaiting_bytes"] == 0
    with pytest.raises(ValueError, match="not held"):
        mp.release(1, 1)
    size = len(a)
    mp = make_pool(state, max_bytes=2 * size + 10)
    mp.hold(1, size)
    assert mp.precheck(a) is None and mp.precheck(b) is None
    mp.hold(1, size)
    refused = mp.precheck(c)
    assert refused is not None and refused.status == "mempool_full" and "awaiting" in refused.reason


def test_reap_is_an_arrival_order_prefix() -> None:
    state = genesis_state(chain())
    mp = make_pool(state)
    txs = [transfer_tx(i % 4, 10 + i) for i in range(8)]
    for raw in txs:
        assert submit(mp, raw).accepted
    assert mp.reap(100, 10**9) == txs
    assert mp.reap(3, 10**9) == txs[:3]
    assert mp.reap(100, len(txs[0]) * 2 + len(txs[2]) - 1) == txs[:2]
    assert mp.reap(0, 10**9) == []


def test_update_removes_committed_and_rechecks() -> None:
    state = genesis_state(chain())
    mp = make_pool(state)
    n = chain().genesis_time_ms
    pending = [nonce_tx(0, n + 1), nonce_tx(0, n + 2), nonce_tx(1, n + 1), nonce_tx(2, n + 1)]
    for raw in pending:
        assert submit(mp, raw).accepted
    # A block from another proposer: pending[0] plus a *different* tx of account 2 with the same nonce.
    rival = nonce_tx(2, n + 1, amount=7)
    block = [pending[0], rival]
    result = apply_block(state, BlockHeader(height=1, time_ms=n + 500), block)
    assert all(r.ok for r in result.results)
    evicted = mp.update([tx_hash(t) for t in block], recheck=True)
    assert evicted == [tx_hash(pending[3])]  # its nonce is now used
    assert mp.reap(100, 10**9) == [pending[1], pending[2]]
    assert mp.account_count(account(0).address) == 1 and mp.account_count(account(2).address) == 0
    assert submit(mp, pending[0]).code == MempoolCode.DUPLICATE  # committed txs are remembered
    assert mp.stats()["committed_removed_total"] == 1 and mp.stats()["recheck_evicted_total"] == 1
    assert mp.update([], recheck=False) == []


def test_duplicate_cache_is_bounded() -> None:
    state = genesis_state(chain())
    mp = make_pool(state, cache_size=2)
    txs = [transfer_tx(0, i) for i in range(1, 4)]
    for raw in txs:
        assert submit(mp, raw).accepted
    mp.update([tx_hash(t) for t in txs], recheck=False)
    assert mp.stats()["cache_size"] == 2
    assert mp.seen(tx_hash(txs[2])) and not mp.seen(tx_hash(txs[0]))


def test_worker_pool_feeds_the_mempool_sanity() -> None:
    """Benchmark-ish sanity check: a few hundred txs through real workers; prints rates, asserts no timing."""
    state = genesis_state(chain())
    mp = make_pool(state)
    txs = [transfer_tx(i % 4, 100 + i) for i in range(400)]
    txs[123] = corrupt_signature(txs[123])
    with VerifierPool(CHAIN_ID, workers=2, batch_max=64) as pool:
        pool.warm_up()
        start = time.perf_counter()
        fresh = [raw for raw in txs if mp.precheck(raw) is None]
        verdicts = pool.verify(fresh)
        admissions = [mp.add_verified(raw, v) for raw, v in zip(fresh, verdicts, strict=True)]
        elapsed = time.perf_counter() - start
    assert sum(a.accepted for a in admissions) == 399 and admissions[123].status == "bad_signature"
    assert len(mp) == 399
    rate = round(len(txs) / elapsed)
    print(json.dumps({"name": "mempool_admission_sanity", "txs": len(txs), "tx_per_s": rate}))


# ---------------------------------------------------------------------------- incremental recheck

_PAST = chain().nonce_window_past_ms
_FUTURE = chain().nonce_window_future_ms
_OFFSETS = st.sampled_from([-_PAST, -_PAST + 1, -_PAST // 2, 1, 2, 3, 5, 1000, _FUTURE])


def _pool_tx(sender: int, nonce: int, amount: int) -> bytes:
    if sender >= 6:  # no such account at genesis: only a faucet tx is admitted
        body = sdk_tx.tx_body(CHAIN_ID, nonce, sdk_tx.faucet(amount))
        return sdk_tx.sign_tx(account(sender), CHAIN_ID, body)
    return nonce_tx(sender, nonce, amount)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pending=st.lists(st.tuples(st.integers(0, 7), _OFFSETS, st.integers(1, 3)), max_size=14),
    rivals=st.lists(st.tuples(st.integers(0, 7), _OFFSETS, st.integers(4, 6)), max_size=5),
    included=st.lists(st.integers(0, 13), max_size=8),
    time_step=st.sampled_from([1, 2, 1000, _PAST // 2, _PAST, _PAST + 2, _PAST + 1000, 3 * _PAST]),
    blocks=st.integers(1, 2),
)
def test_incremental_recheck_evicts_exactly_what_a_full_recheck_evicts(
    pending: list[tuple[int, int, int]],
    rivals: list[tuple[int, int, int]],
    included: list[int],
    time_step: int,
    blocks: int,
) -> None:
    state = genesis_state(chain())
    full, incremental = make_pool(state), make_pool(state)
    start = state.time_ms
    raws = [_pool_tx(s, start + off, amount) for s, off, amount in pending]
    for raw in raws:
        assert submit(full, raw) == submit(incremental, raw)
    assert full.reap(100, 10**9) == incremental.reap(100, 10**9)
    for height in range(1, blocks + 1):
        # a block of some pending txs plus txs that never reached this node (other nonces/bytes)
        admitted = full.reap(100, 10**9)
        block = [admitted[i] for i in dict.fromkeys(included) if i < len(admitted)]
        block += [_pool_tx(s, start + off, amount) for s, off, amount in rivals]
        time_ms = state.time_ms + time_step
        apply_block(state, BlockHeader(height=height, time_ms=time_ms), block)
        hashes = [tx_hash(t) for t in block]
        ceilings = nonce_ceilings(state, incremental.committed_senders(block, hashes))
        floor = state.time_ms - state.config.nonce_window_past_ms
        assert incremental.update(hashes, ceilings=ceilings, nonce_floor=floor) == full.update(hashes)
        assert incremental.reap(100, 10**9) == full.reap(100, 10**9)
        assert incremental.stats() == full.stats()


def test_incremental_recheck_heap_stays_bounded() -> None:
    state = genesis_state(chain())
    mp = make_pool(state)
    n = state.time_ms
    for round_ in range(3):
        txs = [nonce_tx(k % 4, n + round_ * 1000 + k) for k in range(600)]
        for raw in txs:
            assert submit(mp, raw).accepted
        mp.update([tx_hash(t) for t in txs], ceilings={}, nonce_floor=0)
        assert len(mp) == 0
    assert len(mp._by_nonce) <= 1024 + 1800  # rebuilt once it outgrows twice the pool (+ slack)
    assert mp.committed_senders([b"\xff\xff"], [tx_hash(b"\xff\xff")]) == set()
