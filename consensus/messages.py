"""Proposals and votes: the signed consensus messages, their sign-bytes and wire encoding.

Sign-bytes (what a validator's key signs) are our own canonical encoding, not protobuf's:

    vote:     b"ita/consensus/vote/v1\\0"     | chain_id (u8 len + utf-8) | type u8 | height u64 |
              round u32 | block_id (u8 len + 0 or 32 bytes; empty = nil)
    proposal: b"ita/consensus/proposal/v1\\0" | chain_id | 0x20 | height u64 | round u32 |
              pol_round+1 u32 (0 = none) | block_id (u8 len + 32 bytes)

The domain tags keep a vote signature from ever verifying as a proposal (or as a transaction
signature elsewhere in ita), and the chain id keeps it from verifying on another chain. The
validator's address is not signed (the key already binds it), so two votes of one validator at
one (height, round, type) are equivocation exactly when their sign-bytes differ.

Wire encoding (gossip and WAL): ``encode()``/``decode()`` on each message, strict and canonical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from consensus.codec import MAX_U32, MAX_U64, DecodeError, Reader, Writer
from consensus.types import ADDRESS_LEN, BLOCK_ID_LEN, NIL, SIGNATURE_MAX_LEN, VoteType, compute_block_id

VOTE_DOMAIN: Final = b"ita/consensus/vote/v1\x00"
PROPOSAL_DOMAIN: Final = b"ita/consensus/proposal/v1\x00"
PROPOSAL_TYPE_BYTE: Final = 0x20

MSG_PROPOSAL: Final = 1
MSG_VOTE: Final = 2


def _chain_id_bytes(chain_id: str) -> bytes:
    raw = chain_id.encode("utf-8")
    if not 0 < len(raw) <= 64:
        raise ValueError("chain id must be 1..64 bytes of utf-8")
    return raw


def _check_height_round(height: int, round_: int) -> None:
    if not 1 <= height <= MAX_U64:
        raise ValueError(f"height out of range: {height}")
    if not 0 <= round_ < MAX_U32:
        raise ValueError(f"round out of range: {round_}")


def _check_address(address: bytes) -> None:
    if len(address) != ADDRESS_LEN:
        raise ValueError("validator address must be 20 bytes")


def _check_signature(signature: bytes) -> None:
    if len(signature) > SIGNATURE_MAX_LEN:
        raise ValueError("signature too long")


@dataclass(frozen=True, slots=True)
class Vote:
    """An unsigned prevote or precommit (paper: <PREVOTE, h, r, id(v)>); NIL block id = nil."""

    type: VoteType
    height: int
    round: int
    block_id: bytes
    validator: bytes

    def __post_init__(self) -> None:
        _check_height_round(self.height, self.round)
        if self.block_id != NIL and len(self.block_id) != BLOCK_ID_LEN:
            raise ValueError("vote block id must be empty (nil) or 32 bytes")
        _check_address(self.validator)
        if self.type not in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            raise ValueError(f"bad vote type {self.type}")

    def sign_bytes(self, chain_id: str) -> bytes:
        return (
            Writer()
            .raw(VOTE_DOMAIN)
            .short_bytes(_chain_id_bytes(chain_id))
            .u8(int(self.type))
            .u64(self.height)
            .u32(self.round)
            .short_bytes(self.block_id)
            .finish()
        )

    @staticmethod
    def from_sign_bytes(data: bytes, chain_id: str, validator: bytes) -> Vote | None:
        """The vote whose sign-bytes are `data` (for `chain_id`), or None if `data` is not one."""
        if not data.startswith(VOTE_DOMAIN):
            return None
        r = Reader(data[len(VOTE_DOMAIN):])
        try:
            if r.short_bytes() != _chain_id_bytes(chain_id):
                return None
            raw_type, height, round_, block_id = r.u8(), r.u64(), r.u32(), r.short_bytes()
            r.done()
            vote = Vote(VoteType(raw_type), height, round_, block_id, validator)
        except ValueError:  # DecodeError included
            return None
        return vote if vote.sign_bytes(chain_id) == data else None

    def write(self, w: Writer) -> None:
        w.u8(int(self.type)).u64(self.height).u32(self.round).short_bytes(self.block_id)
        w.short_bytes(self.validator)

    @staticmethod
    def read(r: Reader) -> Vote:
        raw_type = r.u8()
        if raw_type not in (1, 2):
            raise DecodeError(f"bad vote type {raw_type}")
        try:
            return Vote(VoteType(raw_type), r.u64(), r.u32(), r.short_bytes(), r.short_bytes())
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class SignedVote:
    """A vote with its signature: the gossip message for prevotes and precommits."""

    vote: Vote
    signature: bytes

    def __post_init__(self) -> None:
        _check_signature(self.signature)

    def write(self, w: Writer) -> None:
        self.vote.write(w)
        w.short_bytes(self.signature)

    @staticmethod
    def read(r: Reader) -> SignedVote:
        vote = Vote.read(r)
        try:
            return SignedVote(vote, r.short_bytes())
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc

    def encode(self) -> bytes:
        w = Writer().u8(MSG_VOTE)
        self.write(w)
        return w.finish()

    @staticmethod
    def decode(data: bytes) -> SignedVote:
        msg = decode_message(data)
        if not isinstance(msg, SignedVote):
            raise DecodeError("not a vote")
        return msg


@dataclass(frozen=True, slots=True)
class Proposal:
    """An unsigned proposal (paper: <PROPOSAL, h, r, v, vr>); v is carried by its id."""

    height: int
    round: int
    pol_round: int
    block_id: bytes
    proposer: bytes

    def __post_init__(self) -> None:
        _check_height_round(self.height, self.round)
        if not -1 <= self.pol_round < self.round:
            raise ValueError("pol_round must be -1 or lower than the proposal round")
        if len(self.block_id) != BLOCK_ID_LEN:
            raise ValueError("proposal block id must be 32 bytes")
        _check_address(self.proposer)

    def sign_bytes(self, chain_id: str) -> bytes:
        return (
            Writer()
            .raw(PROPOSAL_DOMAIN)
            .short_bytes(_chain_id_bytes(chain_id))
            .u8(PROPOSAL_TYPE_BYTE)
            .u64(self.height)
            .u32(self.round)
            .u32(self.pol_round + 1)
            .short_bytes(self.block_id)
            .finish()
        )

    def write(self, w: Writer) -> None:
        w.u64(self.height).u32(self.round).u32(self.pol_round + 1).short_bytes(self.block_id)
        w.short_bytes(self.proposer)

    @staticmethod
    def read(r: Reader) -> Proposal:
        try:
            return Proposal(r.u64(), r.u32(), r.u32() - 1, r.short_bytes(), r.short_bytes())
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class SignedProposal:
    proposal: Proposal
    signature: bytes

    def __post_init__(self) -> None:
        _check_signature(self.signature)

    def write(self, w: Writer) -> None:
        self.proposal.write(w)
        w.short_bytes(self.signature)

    @staticmethod
    def read(r: Reader) -> SignedProposal:
        proposal = Proposal.read(r)
        try:
            return SignedProposal(proposal, r.short_bytes())
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ProposalMessage:
    """The gossip message for a proposal: the signed proposal plus the block bytes it names."""

    signed: SignedProposal
    block: bytes

    def block_matches(self) -> bool:
        return compute_block_id(self.block) == self.signed.proposal.block_id

    def encode(self) -> bytes:
        w = Writer().u8(MSG_PROPOSAL)
        self.signed.write(w)
        w.long_bytes(self.block)
        return w.finish()

    @staticmethod
    def decode(data: bytes) -> ProposalMessage:
        msg = decode_message(data)
        if not isinstance(msg, ProposalMessage):
            raise DecodeError("not a proposal")
        return msg


Message = ProposalMessage | SignedVote


def message_signer(msg: Message) -> bytes:
    """The address the message claims as its signer (the proposer or the voter)."""
    return msg.signed.proposal.proposer if isinstance(msg, ProposalMessage) else msg.vote.validator


def encode_message(msg: Message) -> bytes:
    return msg.encode()


def decode_message(data: bytes) -> Message:
    """Decode a gossip message (proposal or vote); raises DecodeError on any malformation."""
    r = Reader(data)
    kind = r.u8()
    msg: Message
    if kind == MSG_PROPOSAL:
        msg = ProposalMessage(SignedProposal.read(r), r.long_bytes())
    elif kind == MSG_VOTE:
        msg = SignedVote.read(r)
    else:
        raise DecodeError(f"unknown message kind {kind}")
    r.done()
    return msg
