"""The double-sign guard: the pure rule as a table, and the signer wrapper."""

from __future__ import annotations

import pytest

from consensus import (
    NIL,
    Ed25519Signer,
    GuardDecision,
    GuardedSigner,
    Proposal,
    SignedVote,
    SignRefused,
    SignRequest,
    SignState,
    Step,
    Vote,
    VoteType,
    check_sign_request,
    compute_address,
    ed25519_verify,
    recover_signed_votes,
)

P, V, C = Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT
LAST = SignState(5, 2, V, b"bytes-x")

ROWS = [
    (None, SignRequest(1, 0, P, b"a"), GuardDecision.SIGN),
    (LAST, SignRequest(5, 2, C, b"other"), GuardDecision.SIGN),  # higher step
    (LAST, SignRequest(5, 3, P, b"other"), GuardDecision.SIGN),  # higher round
    (LAST, SignRequest(6, 0, P, b"other"), GuardDecision.SIGN),  # higher height
    (LAST, SignRequest(5, 2, V, b"bytes-x"), GuardDecision.RESIGN),  # identical: re-sign
    (LAST, SignRequest(5, 2, V, b"bytes-y"), GuardDecision.REFUSE_CONFLICT),  # equivocation
    (LAST, SignRequest(5, 2, P, b"bytes-x"), GuardDecision.REFUSE_REGRESSION),  # lower step
    (LAST, SignRequest(5, 1, C, b"bytes-x"), GuardDecision.REFUSE_REGRESSION),  # lower round
    (LAST, SignRequest(4, 9, C, b"bytes-x"), GuardDecision.REFUSE_REGRESSION),  # lower height
]


@pytest.mark.parametrize(("last", "request_", "decision"), ROWS)
def test_guard_rule(last: SignState | None, request_: SignRequest, decision: GuardDecision) -> None:
    assert check_sign_request(last, request_) is decision


def test_guarded_signer_persists_before_returning_and_refuses_conflicts() -> None:
    inner = Ed25519Signer.from_seed(b"\x02" * 32)
    persisted: list[tuple[SignState, ...]] = []
    signer = GuardedSigner(inner, persist=persisted.append)
    first = SignRequest(1, 0, V, b"vote-a")
    sig = signer.sign(first)
    assert persisted == [(SignState(1, 0, V, b"vote-a", sig),)]
    assert signer.sign(first) == sig  # re-sign identical bytes, nothing new persisted
    assert len(persisted) == 1
    with pytest.raises(SignRefused):
        signer.sign(SignRequest(1, 0, V, b"vote-b"))
    commit_sig = signer.sign(SignRequest(1, 0, C, b"commit"))
    with pytest.raises(SignRefused):
        signer.sign(first)  # now a regression
    assert signer.last == SignState(1, 0, C, b"commit", commit_sig)
    for h in range(2, 8):
        signer.sign(SignRequest(h, 0, P, b"p%d" % h))
    assert len(persisted[-1]) == 4 and persisted[-1][-1].height == 7  # a bounded window


def test_persist_failure_means_no_signature() -> None:
    def fail(state: tuple[SignState, ...]) -> None:
        raise OSError("disk full")

    signer = GuardedSigner(Ed25519Signer.from_seed(b"\x03" * 32), persist=fail)
    with pytest.raises(OSError):
        signer.sign(SignRequest(1, 0, V, b"x"))
    assert signer.last is None


def test_guard_restored_from_disk_state_refuses_conflict() -> None:
    signer = GuardedSigner(Ed25519Signer.from_seed(b"\x04" * 32), recent=[SignState(9, 0, C, b"old")])
    with pytest.raises(SignRefused):
        signer.sign(SignRequest(9, 0, C, b"new"))
    signer.sign(SignRequest(9, 0, C, b"old"))


def test_recover_signed_votes_from_guard_state() -> None:
    inner = Ed25519Signer.from_seed(b"\x05" * 32)
    address = compute_address(inner.public_key)
    signer = GuardedSigner(inner)
    block_id = bytes(range(32))
    proposal = Proposal(3, 1, -1, block_id, address)
    prevote = Vote(VoteType.PREVOTE, 3, 1, block_id, address)
    precommit = Vote(VoteType.PRECOMMIT, 3, 1, NIL, address)
    signer.sign(SignRequest(3, 1, P, proposal.sign_bytes("chain")))
    pv_sig = signer.sign(SignRequest(3, 1, V, prevote.sign_bytes("chain")))
    pc_sig = signer.sign(SignRequest(3, 1, C, precommit.sign_bytes("chain")))
    recovered = recover_signed_votes(signer.recent, "chain", address)
    assert recovered == [SignedVote(prevote, pv_sig), SignedVote(precommit, pc_sig)]
    assert ed25519_verify(inner.public_key, prevote.sign_bytes("chain"), recovered[0].signature)
    assert recover_signed_votes(signer.recent, "other-chain", address) == []
    assert Vote.from_sign_bytes(b"garbage", "chain", address) is None
    assert Vote.from_sign_bytes(prevote.sign_bytes("chain") + b"x", "chain", address) is None


def test_deferred_signer_persists_at_flush_once_per_batch() -> None:
    """deferred=True: sign() decides from memory and persists nothing; flush() writes the
    newest window once; a re-sign or an empty flush writes nothing; a failed flush stays due."""
    inner = Ed25519Signer.from_seed(b"\x06" * 32)
    persisted: list[tuple[SignState, ...]] = []
    signer = GuardedSigner(inner, persist=persisted.append, deferred=True)
    p_sig = signer.sign(SignRequest(2, 0, P, b"prop"))
    v_sig = signer.sign(SignRequest(2, 0, V, b"vote"))
    assert persisted == [] and signer.unpersisted
    with pytest.raises(SignRefused):
        signer.sign(SignRequest(2, 0, V, b"twin"))  # refused from the in-memory state
    signer.flush()
    assert persisted == [(SignState(2, 0, P, b"prop", p_sig), SignState(2, 0, V, b"vote", v_sig))]
    assert not signer.unpersisted
    assert signer.sign(SignRequest(2, 0, V, b"vote")) == v_sig  # a re-sign: nothing new to store
    signer.flush()
    assert len(persisted) == 1

    def fail(state: tuple[SignState, ...]) -> None:
        raise OSError("disk full")

    failing = GuardedSigner(inner, persist=fail, deferred=True)
    failing.sign(SignRequest(3, 0, V, b"x"))
    with pytest.raises(OSError):
        failing.flush()
    assert failing.unpersisted  # the owner must not let that signature out
