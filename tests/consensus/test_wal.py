"""WAL records and recovery: replaying the logged inputs rebuilds the same core state."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import (
    BlockValidity,
    Broadcast,
    CertifiedBlock,
    CommitCertificate,
    CommitSig,
    ConsensusCore,
    DecodeError,
    GuardedSigner,
    Input,
    Output,
    ProposalBlock,
    StartHeight,
    Step,
    Timeout,
    VoteType,
    WalAppend,
    compute_block_id,
    decode_input,
    encode_input,
    replay,
)
from tests.consensus.harness import CFG, CHAIN, SIGNERS, VSET, Harness, make_proposal, role, sign_vote
from tests.consensus.test_core_table import ROWS

SAMPLE_INPUTS: list[Input] = [
    StartHeight(7),
    Timeout(3, 2, Step.PREVOTE),
    ProposalBlock(3, 1, b"block bytes"),
    BlockValidity(3, 1, compute_block_id(b"x"), True),
    BlockValidity(3, 1, compute_block_id(b"x"), False),
    CertifiedBlock(
        b"blk", CommitCertificate(3, 0, compute_block_id(b"blk"), (CommitSig(bytes(20), b"s" * 64),))
    ),
    make_proposal(0, "A"),
    sign_vote(0, VoteType.PRECOMMIT, 2, None),
]


@pytest.mark.parametrize("inp", SAMPLE_INPUTS, ids=lambda i: type(i).__name__)
def test_input_records_roundtrip(inp: Input) -> None:
    data = encode_input(inp)
    assert decode_input(data) == inp
    with pytest.raises(DecodeError):
        decode_input(data + b"\x00")
    with pytest.raises(DecodeError):
        decode_input(data[:-1])


def test_bad_records_rejected() -> None:
    for bad in [b"", b"\x63", encode_input(Timeout(1, 0, Step.PROPOSE))[:-1] + b"\x07"]:
        with pytest.raises(DecodeError):
            decode_input(bad)


def check_wal_ordering(inp: Input, outputs: list[Output]) -> None:
    """WalAppend(inp) comes first; every Broadcast directly follows the WalAppend of its message."""
    if any(isinstance(o, WalAppend) for o in outputs):
        assert outputs[0] == WalAppend(inp)
    for i, o in enumerate(outputs):
        if isinstance(o, Broadcast):
            assert i > 0 and outputs[i - 1] == WalAppend(o.message)


def logged(outputs: list[Output]) -> list[Input]:
    return [o.input for o in outputs if isinstance(o, WalAppend)]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.line}: {r.what}" for r in ROWS])
def test_replay_of_every_table_row_rebuilds_state(row: object) -> None:
    h = Harness(role(row.me))  # type: ignore[attr-defined]
    wal: list[Input] = []
    for action in [*row.setup, row.action]:  # type: ignore[attr-defined]
        for inp in h.inputs(action):
            outputs = h.core.step(inp)
            check_wal_ordering(inp, outputs)
            wal.extend(logged(outputs))
    records = [decode_input(encode_input(i)) for i in wal]
    # The original guard has signed everything already: replay must not depend on re-signing.
    same_guard = ConsensusCore(CFG, VSET, h.core.signer, CHAIN)
    replay(same_guard, records)
    assert same_guard.snapshot() == h.core.snapshot()
    fresh_guard = ConsensusCore(CFG, VSET, GuardedSigner(SIGNERS[role(row.me)]), CHAIN)  # type: ignore[attr-defined]
    replay(fresh_guard, records)
    assert fresh_guard.snapshot() == h.core.snapshot()


# A pool of inputs for one validator ("x") at height 1; random sequences of them drive the core.
_X = Harness(role("x"))
_OTHERS = _X.others()
POOL: list[Input] = [StartHeight(1)]
for _r in range(3):
    for _step in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT):
        POOL.append(Timeout(1, _r, _step))
    for _name in ("A", "B"):
        POOL.append(make_proposal(_r, _name, pol=-1))
        if _r > 0:
            POOL.append(make_proposal(_r, _name, pol=_r - 1))
        for _o in _OTHERS:
            for _t in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                POOL.append(sign_vote(_o, _t, _r, _name))
    for _o in _OTHERS:
        for _t in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            POOL.append(sign_vote(_o, _t, _r, None))
for _name, _ok in (("A", True), ("B", False)):
    POOL.append(BlockValidity(1, 0, compute_block_id(b"block-" + _name.encode()), _ok))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=60))
def test_replay_of_random_input_sequences(indices: list[int]) -> None:
    core = ConsensusCore(CFG, VSET, GuardedSigner(SIGNERS[role("x")]), CHAIN)
    wal: list[Input] = []
    for inp in [StartHeight(1)] + [POOL[i] for i in indices]:
        outputs = core.step(inp)
        check_wal_ordering(inp, outputs)
        wal.extend(logged(outputs))
    fresh = ConsensusCore(CFG, VSET, core.signer, CHAIN)
    replay(fresh, [decode_input(encode_input(i)) for i in wal])
    assert fresh.snapshot() == core.snapshot()
    # Replaying a prefix gives the state the core had at that point in the log.
    if len(wal) > 2:
        half = len(wal) // 2
        a = ConsensusCore(CFG, VSET, None, CHAIN)
        b = ConsensusCore(CFG, VSET, None, CHAIN)
        replay(a, wal[:half])
        replay(b, wal[:half])
        assert a.snapshot() == b.snapshot()
