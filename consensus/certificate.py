"""Commit certificates: the 2/3+ precommits that decided a block, and their verification.

A certificate names (height, round, block id) once and carries, per signer, only the address
and the signature: each signature is over the sign-bytes of
Vote(PRECOMMIT, height, round, block_id, address). Entries are sorted by validator index of the
set that produced it and addresses are unique, so a certificate has one canonical encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.codec import DecodeError, Reader, Writer
from consensus.messages import SignedVote, Vote
from consensus.types import BLOCK_ID_LEN, VoteType
from consensus.validators import ValidatorSet


class CertificateError(ValueError):
    """A commit certificate does not prove a commit of the claimed block."""


@dataclass(frozen=True, slots=True)
class CommitSig:
    validator: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    height: int
    round: int
    block_id: bytes
    signatures: tuple[CommitSig, ...]

    @staticmethod
    def from_precommits(
        height: int, round_: int, block_id: bytes, votes: list[SignedVote]
    ) -> CommitCertificate:
        sigs = tuple(CommitSig(v.vote.validator, v.signature) for v in votes)
        return CommitCertificate(height, round_, block_id, sigs)

    def precommits(self) -> list[SignedVote]:
        """The certificate expanded back into signed precommit votes."""
        return [
            SignedVote(
                Vote(VoteType.PRECOMMIT, self.height, self.round, self.block_id, s.validator), s.signature
            )
            for s in self.signatures
        ]

    def write(self, w: Writer) -> None:
        w.u64(self.height).u32(self.round).short_bytes(self.block_id).u32(len(self.signatures))
        for sig in self.signatures:
            w.short_bytes(sig.validator).short_bytes(sig.signature)

    @staticmethod
    def read(r: Reader) -> CommitCertificate:
        height, round_, block_id, count = r.u64(), r.u32(), r.short_bytes(), r.u32()
        sigs = tuple(CommitSig(r.short_bytes(), r.short_bytes()) for _ in range(count))
        return CommitCertificate(height, round_, block_id, sigs)

    def encode(self) -> bytes:
        w = Writer()
        self.write(w)
        return w.finish()

    @staticmethod
    def decode(data: bytes) -> CommitCertificate:
        r = Reader(data)
        cert = CommitCertificate.read(r)
        r.done()
        try:
            cert.precommits()  # validates height, round, block id and address lengths
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc
        if len(cert.block_id) != BLOCK_ID_LEN:
            raise DecodeError("certificate block id must be 32 bytes")
        return cert


def verify_commit_certificate(
    cert: CommitCertificate, vset: ValidatorSet, chain_id: str, height: int, block_id: bytes
) -> None:
    """Raise CertificateError unless `cert` holds >2/3 of `vset`'s power precommitting `block_id`."""
    if cert.height != height:
        raise CertificateError(f"certificate is for height {cert.height}, expected {height}")
    if cert.block_id != block_id or len(block_id) != BLOCK_ID_LEN:
        raise CertificateError("certificate is for another block")
    try:
        precommits = cert.precommits()
    except ValueError as exc:
        raise CertificateError(f"malformed certificate: {exc}") from exc
    seen: dict[int, None] = {}
    power = 0
    for signed in precommits:
        index = vset.index_of(signed.vote.validator)
        if index is None:
            raise CertificateError(f"signer {signed.vote.validator.hex()} is not a validator")
        if index in seen:
            raise CertificateError(f"signer {signed.vote.validator.hex()} appears twice")
        if not vset.verify(index, signed.vote.sign_bytes(chain_id), signed.signature):
            raise CertificateError(f"bad signature from {signed.vote.validator.hex()}")
        seen[index] = None
        power += vset.power_of(index)
    if not vset.is_quorum(power):
        raise CertificateError(f"signers hold {power} of {vset.total_power} power, need more than 2/3")

