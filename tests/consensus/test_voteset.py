"""Vote sets with real ed25519 signatures: power per block id, rejection, equivocation, evidence."""

from __future__ import annotations

import hashlib

import pytest

from consensus import (
    NIL,
    DuplicateVoteEvidence,
    Ed25519Signer,
    EvidenceError,
    SignedVote,
    SignRequest,
    Step,
    ValidatorSet,
    Vote,
    VoteType,
    compute_address,
    ed25519_verify,
    verify_evidence,
)
from consensus.voteset import AddStatus, HeightVotes

CHAIN = "ita-test"
SIGNERS = [Ed25519Signer.from_seed(hashlib.sha256(b"vs-%d" % i).digest()) for i in range(4)]
POWERS = [1, 2, 3, 4]  # total 10: quorum needs > 20/3, i.e. 7
VSET = ValidatorSet([(s.public_key, p) for s, p in zip(SIGNERS, POWERS, strict=True)])
A = hashlib.sha256(b"A").digest()
B = hashlib.sha256(b"B").digest()


def vote(i: int, block_id: bytes, round_: int = 0, vote_type: VoteType = VoteType.PREVOTE,
         signer: Ed25519Signer | None = None, height: int = 1) -> SignedVote:
    s = signer or SIGNERS[i]
    v = Vote(vote_type, height, round_, block_id, compute_address(s.public_key))
    step = Step.PREVOTE if vote_type == VoteType.PREVOTE else Step.PRECOMMIT
    return SignedVote(v, s.sign(SignRequest(height, round_, step, v.sign_bytes(CHAIN))))


def test_counts_power_per_block_and_detects_quorum() -> None:
    hv = HeightVotes(VSET, CHAIN, 1)
    assert hv.add(vote(3, A)) == (AddStatus.ADDED, 3)  # 4
    assert hv.add(vote(0, NIL)) == (AddStatus.ADDED, 0)  # nil 1
    vs = hv.get(0, VoteType.PREVOTE)
    assert vs is not None
    assert vs.power_by_block == {A: 4, NIL: 1}
    assert not vs.has_quorum_for(A) and not vs.has_quorum_any()
    hv.add(vote(1, A))  # A: 6 -> not yet (needs 7); any: 4+1+2 = 7 > 20/3 -> yes
    assert not vs.has_quorum_for(A) and vs.has_quorum_any()
    hv.add(vote(2, A))  # A: 9
    assert vs.has_quorum_for(A) and vs.has_quorum_any()
    assert [v.vote.validator for v in vs.votes_for(A)] == [VSET.validators[i].address for i in (1, 2, 3)]
    precommits = hv.get(0, VoteType.PRECOMMIT)
    assert precommits is not None and precommits.power_any == 0


def test_quorum_any_counts_each_validator_once() -> None:
    hv = HeightVotes(VSET, CHAIN, 1)
    for i, b in [(3, A), (0, NIL), (1, B)]:
        hv.add(vote(i, b))
    vs = hv.get(0, VoteType.PREVOTE)
    assert vs is not None and vs.power_any == 7 and vs.has_quorum_any()
    assert hv.rounds[0].voter_power == 7


def test_rejects_non_validators_bad_signatures_and_other_heights() -> None:
    hv = HeightVotes(VSET, CHAIN, 1)
    stranger = Ed25519Signer.from_seed(b"\x09" * 32)
    assert hv.add(vote(0, A, signer=stranger))[0] is AddStatus.UNKNOWN_VALIDATOR
    good = vote(0, A)
    forged = SignedVote(good.vote, good.signature[:-1] + bytes([good.signature[-1] ^ 0x80]))
    assert hv.add(forged)[0] is AddStatus.BAD_SIGNATURE
    wrong_chain_sig = SIGNERS[0].sign(SignRequest(1, 0, Step.PREVOTE, good.vote.sign_bytes("x")))
    other_chain = SignedVote(good.vote, wrong_chain_sig)
    assert hv.add(other_chain)[0] is AddStatus.BAD_SIGNATURE
    # A vote signed by validator 1 but claiming to be validator 0.
    stolen = SignedVote(good.vote, vote(1, A).signature)
    assert hv.add(stolen)[0] is AddStatus.BAD_SIGNATURE
    assert hv.add(vote(0, A, height=2))[0] is AddStatus.WRONG_HEIGHT
    assert hv.rounds == {} or all(r.voter_power == 0 for r in hv.rounds.values())


def test_duplicates_are_harmless() -> None:
    hv = HeightVotes(VSET, CHAIN, 1)
    v = vote(2, A)
    assert hv.add(v)[0] is AddStatus.ADDED
    assert hv.add(v)[0] is AddStatus.DUPLICATE
    vs = hv.get(0, VoteType.PREVOTE)
    assert vs is not None and vs.power_by_block[A] == 3


def test_an_equivocators_third_vote_is_dropped_without_a_signature_check() -> None:
    """Once a validator has a vote and a conflicting vote for a slot, any other vote for that
    slot is dropped: checking its signature would only let an equivocator make us pay ~55 us
    per message it sends."""
    calls: list[bytes] = []

    def counting_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
        calls.append(message)
        return ed25519_verify(public_key, message, signature)

    counting = ValidatorSet([(s.public_key, p) for s, p in zip(SIGNERS, POWERS, strict=True)],
                            verifier=counting_verify)
    hv = HeightVotes(counting, CHAIN, 1)
    assert hv.add(vote(3, A))[0] is AddStatus.ADDED
    assert hv.add(vote(3, B))[0] is AddStatus.CONFLICT
    assert len(calls) == 2
    for block_id in (NIL, bytes([7]) * 32, bytes([8]) * 32):
        assert hv.add(vote(3, block_id))[0] is AddStatus.CONFLICT_KNOWN
    third = vote(3, NIL)
    assert hv.add(SignedVote(third.vote, bytes(64)))[0] is AddStatus.CONFLICT_KNOWN  # even unsigned
    assert len(calls) == 2
    assert hv.add(SignedVote(vote(3, B).vote, bytes(64)))[0] is AddStatus.BAD_SIGNATURE  # a copy: checked


def test_equivocation_is_recorded_once_and_yields_verifiable_evidence() -> None:
    hv = HeightVotes(VSET, CHAIN, 1)
    first, second, third = vote(3, A), vote(3, B), vote(3, NIL)
    assert hv.add(first)[0] is AddStatus.ADDED
    assert hv.add(second)[0] is AddStatus.CONFLICT
    assert hv.add(second)[0] is AddStatus.DUPLICATE
    assert hv.add(third)[0] is AddStatus.CONFLICT_KNOWN
    vs = hv.get(0, VoteType.PREVOTE)
    assert vs is not None
    assert vs.power_any == 4  # counted once for "any"
    assert vs.power_by_block == {A: 4, B: 4}  # each message counts for its own block id
    assert NIL not in vs.power_by_block  # third and later conflicts are dropped
    ev = DuplicateVoteEvidence.of(vs.votes[3], vs.conflicts[3])
    assert ev == DuplicateVoteEvidence.of(second, first)  # canonical order
    verify_evidence(ev, VSET, CHAIN)
    with pytest.raises(EvidenceError):
        verify_evidence(ev, VSET, "another-chain")
    with pytest.raises(EvidenceError):
        verify_evidence(DuplicateVoteEvidence.of(first, first), VSET, CHAIN)
    with pytest.raises(EvidenceError):
        verify_evidence(DuplicateVoteEvidence.of(first, vote(3, B, round_=1)), VSET, CHAIN)


def test_same_validator_different_type_or_round_is_not_equivocation() -> None:
    hv = HeightVotes(VSET, CHAIN, 1)
    assert hv.add(vote(1, A))[0] is AddStatus.ADDED
    assert hv.add(vote(1, B, vote_type=VoteType.PRECOMMIT))[0] is AddStatus.ADDED
    assert hv.add(vote(1, B, round_=1))[0] is AddStatus.ADDED
