"""Garbage in, typed results out: apply_block never raises on transaction content."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk import tx as sdk_tx
from stf.block import BlockHeader, apply_block, genesis_state, skip_signature_check
from stf.invariants import find_violations
from stf.results import Code
from tests.stf_support import CHAIN_ID, Chain, keys, make_config, order

A, B = keys(2, b"fuzz")
CONFIG = make_config([A, B])


def seed_txs() -> list[bytes]:
    chain = Chain(CONFIG)
    return [
        chain.tx(A, order("sell", 600_000, 20, client_order_id="c1")),
        chain.tx(B, order("buy", 600_000, 30, tif="ioc")),
        chain.tx(A, sdk_tx.batch([order("buy", 599_000, 20), sdk_tx.cancel_order("BTC-PERP", order_id=1)])),
        chain.tx(A, sdk_tx.transfer(B.address, 5)),
        chain.tx(A, sdk_tx.cancel_all()),
    ]


SEEDS = seed_txs()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] = draw(st.integers(0, 255))
    return bytes(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=300), mutated()), max_size=8), st.booleans())
def test_apply_block_never_raises(txs: list[bytes], check_signatures: bool) -> None:
    state = genesis_state(CONFIG)
    checker = {} if check_signatures else {"check_signature": skip_signature_check}
    result = apply_block(state, BlockHeader(1, state.time_ms + 200), txs, **checker)  # type: ignore[arg-type]
    assert len(result.results) == len(txs)
    assert all(isinstance(r.code, Code) for r in result.results)
    assert find_violations(state) == []


def test_malformed_chain_id_is_a_result_not_a_crash() -> None:
    body = sdk_tx.tx_pb2.TxBody(chain_id="", nonce=1, cancel_all=sdk_tx.cancel_all()).SerializeToString()
    signed = sdk_tx.tx_pb2.SignedTx(body=body, public_key=A.public_key, signature=bytes(64))
    state = genesis_state(CONFIG)
    result = apply_block(state, BlockHeader(1, state.time_ms + 200), [signed.SerializeToString()])
    assert result.results[0].code == Code.WRONG_CHAIN_ID
    assert CHAIN_ID != ""


def test_verified_flags_skip_exactly_the_flagged_signature_checks() -> None:
    txs = SEEDS[:3]
    checked: list[bytes] = []

    def recording(public_key: bytes, signature: bytes, message: bytes) -> None:
        checked.append(signature)

    plain = genesis_state(CONFIG)
    expected = apply_block(plain, BlockHeader(1, plain.time_ms + 200), txs)
    state = genesis_state(CONFIG)
    result = apply_block(state, BlockHeader(1, state.time_ms + 200), txs, recording, [True, False, True])
    assert len(checked) == 1  # only the unflagged tx was checked
    assert result.app_hash == expected.app_hash
    assert [r.to_dict() for r in result.results] == [r.to_dict() for r in expected.results]
    untouched = genesis_state(CONFIG)
    try:
        apply_block(untouched, BlockHeader(1, untouched.time_ms + 200), txs, recording, [True])
    except ValueError as exc:
        assert "3 transactions" in str(exc)
    else:
        raise AssertionError("a flag list of the wrong length must be refused")
    assert untouched.height == 0 and untouched.dirty == {}  # refused before anything changed
