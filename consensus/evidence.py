"""Evidence of Byzantine behaviour found by the core: equivocating votes and proposals.

A piece of evidence is two signed messages by one validator for the same (height, round, type)
that differ. Both are kept in a canonical order (by encoding) so that every node that sees the
same pair produces byte-identical evidence. ``verify_evidence`` re-checks it against a validator
set (what the application would do before punishing anyone).
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.codec import Writer
from consensus.messages import SignedProposal, SignedVote
from consensus.validators import ValidatorSet


class EvidenceError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DuplicateVoteEvidence:
    vote_a: SignedVote
    vote_b: SignedVote

    @staticmethod
    def of(first: SignedVote, second: SignedVote) -> DuplicateVoteEvidence:
        a, b = sorted((first, second), key=lambda s: s.encode())
        return DuplicateVoteEvidence(a, b)

    @property
    def height(self) -> int:
        return self.vote_a.vote.height

    @property
    def validator(self) -> bytes:
        return self.vote_a.vote.validator


@dataclass(frozen=True, slots=True)
class ConflictingProposalEvidence:
    proposal_a: SignedProposal
    proposal_b: SignedProposal

    @staticmethod
    def of(first: SignedProposal, second: SignedProposal) -> ConflictingProposalEvidence:
        def key(s: SignedProposal) -> bytes:
            w = Writer()
            s.write(w)
            return w.finish()

        a, b = sorted((first, second), key=key)
        return ConflictingProposalEvidence(a, b)

    @property
    def height(self) -> int:
        return self.proposal_a.proposal.height

    @property
    def validator(self) -> bytes:
        return self.proposal_a.proposal.proposer


Evidence = DuplicateVoteEvidence | ConflictingProposalEvidence


def verify_evidence(evidence: Evidence, vset: ValidatorSet, chain_id: str) -> None:
    """Raise EvidenceError unless `evidence` proves a validator of `vset` signed two conflicts."""
    if isinstance(evidence, DuplicateVoteEvidence):
        a, b = evidence.vote_a.vote, evidence.vote_b.vote
        same_slot = (a.type, a.height, a.round, a.validator) == (b.type, b.height, b.round, b.validator)
        pairs = (
            (a.sign_bytes(chain_id), evidence.vote_a.signature),
            (b.sign_bytes(chain_id), evidence.vote_b.signature),
        )
    else:
        pa, pb = evidence.proposal_a.proposal, evidence.proposal_b.proposal
        same_slot = (pa.height, pa.round, pa.proposer) == (pb.height, pb.round, pb.proposer)
        a_bytes, b_bytes = pa.sign_bytes(chain_id), pb.sign_bytes(chain_id)
        pairs = ((a_bytes, evidence.proposal_a.signature), (b_bytes, evidence.proposal_b.signature))
    if not same_slot:
        raise EvidenceError("messages are not for the same validator, height, round and type")
    if pairs[0][0] == pairs[1][0]:
        raise EvidenceError("messages do not conflict")
    index = vset.index_of(evidence.validator)
    if index is None:
        raise EvidenceError("not a validator")
    for message, signature in pairs:
        if not vset.verify(index, message, signature):
            raise EvidenceError("bad signature")
