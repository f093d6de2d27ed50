"""Commit certificates with real ed25519 keys."""

from __future__ import annotations

import hashlib

import pytest

from consensus import (
    CertificateError,
    CommitCertificate,
    CommitSig,
    DecodeError,
    Ed25519Signer,
    SignRequest,
    Step,
    ValidatorSet,
    Vote,
    VoteType,
    compute_address,
    verify_commit_certificate,
)

CHAIN = "ita-test"
SIGNERS = [Ed25519Signer.from_seed(hashlib.sha256(b"cert-%d" % i).digest()) for i in range(4)]
VSET = ValidatorSet([(s.public_key, p) for s, p in zip(SIGNERS, [1, 1, 1, 2], strict=True)])  # total 5
BID = hashlib.sha256(b"block").digest()


def sig(i: int, block_id: bytes = BID, height: int = 3, round_: int = 1,
        signer: Ed25519Signer | None = None) -> CommitSig:
    s = signer or SIGNERS[i]
    v = Vote(VoteType.PRECOMMIT, height, round_, block_id, compute_address(s.public_key))
    return CommitSig(v.validator, s.sign(SignRequest(height, round_, Step.PRECOMMIT, v.sign_bytes(CHAIN))))


def cert(*sigs: CommitSig) -> CommitCertificate:
    return CommitCertificate(3, 1, BID, tuple(sigs))


def test_valid_certificate_verifies_and_roundtrips() -> None:
    c = cert(sig(0), sig(1), sig(3))  # power 4 of 5
    verify_commit_certificate(c, VSET, CHAIN, 3, BID)
    assert CommitCertificate.decode(c.encode()) == c
    assert [p.vote.type for p in c.precommits()] == [VoteType.PRECOMMIT] * 3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: cert(sig(0), sig(1), sig(2)), "need more than 2/3"),  # 3 of 5 = 60%
        (lambda: cert(sig(3), sig(0)), "need more than 2/3"),  # 3 of 5
        (lambda: cert(sig(0), sig(1), sig(3), sig(3)), "appears twice"),
        (lambda: cert(sig(0), sig(1), sig(3, block_id=hashlib.sha256(b"x").digest())), "bad signature"),
        (lambda: cert(sig(0), sig(1), sig(3, round_=2)), "bad signature"),
        (lambda: cert(sig(0), sig(1), sig(3), sig(9, signer=Ed25519Signer.from_seed(b"\x05" * 32))),
         "not a validator"),
        (lambda: cert(sig(0), sig(1), CommitSig(sig(3).validator, sig(2).signature)), "bad signature"),
    ],
)
def test_invalid_certificates_rejected(make: object, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        verify_commit_certificate(make(), VSET, CHAIN, 3, BID)  # type: ignore[operator]


def test_certificate_bound_to_height_block_and_chain() -> None:
    c = cert(sig(0), sig(1), sig(3))
    with pytest.raises(CertificateError, match="height"):
        verify_commit_certificate(c, VSET, CHAIN, 4, BID)
    with pytest.raises(CertificateError, match="another block"):
        verify_commit_certificate(c, VSET, CHAIN, 3, hashlib.sha256(b"other").digest())
    with pytest.raises(CertificateError, match="bad signature"):
        verify_commit_certificate(c, VSET, "another-chain", 3, BID)
    malformed = CommitCertificate(3, 1, BID, (CommitSig(b"short", b"x"),))
    with pytest.raises(CertificateError, match="malformed"):
        verify_commit_certificate(malformed, VSET, CHAIN, 3, BID)


def test_decode_is_strict() -> None:
    raw = cert(sig(0), sig(1), sig(3)).encode()
    with pytest.raises(DecodeError):
        CommitCertificate.decode(raw + b"\x00")
    with pytest.raises(DecodeError):
        CommitCertificate.decode(raw[:-1])
    with pytest.raises(DecodeError):
        CommitCertificate.decode(CommitCertificate(3, 1, b"short", ()).encode())
