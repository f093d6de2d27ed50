"""The closed sets of inputs and outputs of ``ConsensusCore.step``.

Inputs (everything the core ever learns):
    StartHeight, ProposalMessage, SignedVote, Timeout, ProposalBlock, BlockValidity, CertifiedBlock
Outputs (everything the core ever asks for):
    WalAppend, Broadcast, ScheduleTimeout, RequestProposal, ValidateBlock, Decide, EvidenceFound

Contract for the driver (the node): feed inputs one at a time from one queue; carry out the
outputs of a step in order; a ``WalAppend`` must be durable (fsync) before any later output of
the same step is acted on. ``WalAppend`` comes first for the input that caused it, and again for
each own signed message the core loops back to itself, just before that message's ``Broadcast``.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.certificate import CommitCertificate
from consensus.evidence import Evidence
from consensus.messages import Message, ProposalMessage, SignedVote
from consensus.types import Step

# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class StartHeight:
    """Begin consensus for `height` (after the previous block is committed by the application)."""

    height: int


@dataclass(frozen=True, slots=True)
class Timeout:
    """A timer scheduled by ScheduleTimeout(height, round, step, _) has fired."""

    height: int
    round: int
    step: Step


@dataclass(frozen=True, slots=True)
class ProposalBlock:
    """The application's answer to RequestProposal: the block to propose (paper: getValue())."""

    height: int
    round: int
    block: bytes


@dataclass(frozen=True, slots=True)
class BlockValidity:
    """The application's answer to ValidateBlock (paper: valid(v))."""

    height: int
    round: int
    block_id: bytes
    valid: bool


@dataclass(frozen=True, slots=True)
class CertifiedBlock:
    """A block with its commit certificate, e.g. from block sync, for the current height."""

    block: bytes
    certificate: CommitCertificate


Input = StartHeight | ProposalMessage | SignedVote | Timeout | ProposalBlock | BlockValidity | CertifiedBlock

# ---------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class WalAppend:
    """Append `input` to the write-ahead log before acting on any later output; the log must be
    durable (fsync) before a later output visible outside the process (Broadcast, Decide)."""

    input: Input


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Gossip `message` to all peers (it is already signed and already counted locally)."""

    message: Message


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Feed Timeout(height, round, step) back after `duration_ms`."""

    height: int
    round: int
    step: Step
    duration_ms: int


@dataclass(frozen=True, slots=True)
class RequestProposal:
    """Ask the application for a block (prepare_proposal); answer with ProposalBlock."""

    height: int
    round: int


@dataclass(frozen=True, slots=True)
class ValidateBlock:
    """Ask the application whether a proposed block is valid (process_proposal); answer with
    BlockValidity."""

    height: int
    round: int
    block_id: bytes
    block: bytes


@dataclass(frozen=True, slots=True)
class Decide:
    """`block` is decided at `height` (paper L51); commit it, then feed StartHeight(height + 1).

    May be emitted again while replaying a WAL; committing must be idempotent per height.
    """

    height: int
    round: int
    block_id: bytes
    block: bytes
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    evidence: Evidence


Output = WalAppend | Broadcast | ScheduleTimeout | RequestProposal | ValidateBlock | Decide | EvidenceFound
