"""ita consensus: Tendermint BFT as a sans-I/O state machine (see consensus/README.md).

The node drives one ``ConsensusCore`` per process: it feeds ``Input`` values to ``step`` from a
single queue and carries out the returned ``Output`` values in order.
"""

from consensus.certificate import CertificateError, CommitCertificate, CommitSig, verify_commit_certificate
from consensus.codec import DecodeError
from consensus.config import ConsensusConfig
from consensus.core import ConsensusCore
from consensus.crypto import Ed25519Signer, Signer, SignRefused, SignRequest, Verifier, ed25519_verify
from consensus.evidence import (
    ConflictingProposalEvidence,
    DuplicateVoteEvidence,
    Evidence,
    EvidenceError,
    verify_evidence,
)
from consensus.inout import (
    BlockValidity,
    Broadcast,
    CertifiedBlock,
    Decide,
    EvidenceFound,
    Input,
    Output,
    ProposalBlock,
    RequestProposal,
    ScheduleTimeout,
    StartHeight,
    Timeout,
    ValidateBlock,
    WalAppend,
)
from consensus.messages import (
    Message,
    Proposal,
    ProposalMessage,
    SignedProposal,
    SignedVote,
    Vote,
    decode_message,
    encode_message,
    message_signer,
)
from consensus.proposer import ProposerSelector
from consensus.signguard import (
    GuardDecision,
    GuardedSigner,
    SignState,
    check_sign_request,
    recover_signed_votes,
)
from consensus.snapshot import CoreSnapshot
from consensus.types import NIL, Step, VoteType, compute_address, compute_block_id
from consensus.validators import Validator, ValidatorSet
from consensus.wal import decode_input, encode_input, replay

__all__ = [
    "NIL", "BlockValidity", "Broadcast", "CertificateError", "CertifiedBlock", "CommitCertificate",
    "CommitSig", "ConflictingProposalEvidence", "ConsensusConfig", "ConsensusCore", "CoreSnapshot",
    "DecodeError", "Decide",
    "DuplicateVoteEvidence", "Ed25519Signer", "Evidence", "EvidenceError", "EvidenceFound", "GuardDecision",
    "GuardedSigner", "Input", "Message", "Output", "Proposal", "ProposalBlock", "ProposalMessage",
    "ProposerSelector", "RequestProposal", "ScheduleTimeout", "SignRefused", "SignRequest", "SignState",
    "SignedProposal", "SignedVote", "Signer", "StartHeight", "Step", "Timeout", "ValidateBlock", "Validator",
    "ValidatorSet", "Verifier", "Vote", "VoteType", "WalAppend", "check_sign_request", "compute_address",
    "compute_block_id", "decode_input", "decode_message", "encode_input", "encode_message", "ed25519_verify",
    "message_signer",
    "recover_signed_votes", "replay", "verify_commit_certificate", "verify_evidence",
]
