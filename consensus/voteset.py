"""Vote sets: voting power per (height, round, type, block id), with equivocation detection.

Theory of operation. A ``VoteSet`` holds at most one vote per validator for one (height, round,
type). Callers verify membership and signatures first (``HeightVotes.add`` does both through
the validator set), so everything counted here is authentic. A second, identical vote is a
harmless duplicate; a second, *different* vote is equivocation: it is reported once per
validator (the core emits evidence) and kept as that validator's one conflicting vote.

Counting follows the paper's "2f+1 <PRECOMMIT, h, r, id(v)>" literally: a quorum for a block id
is >2/3 of the power among *messages* for that id from distinct validators, so an equivocator's
conflicting vote counts toward its own block id (at most two ids per validator: later conflicts
are dropped, which bounds memory). "2f+1 <*>" (power_any) counts each validator once. Two
different ids can both reach a quorum only if more than 1/3 of the power equivocates. Iteration is over dicts
whose insertion order is the order inputs arrived, so the result is a function of the inputs.
"""

from __future__ import annotations

from enum import Enum

from consensus.messages import SignedVote
from consensus.types import VoteType
from consensus.validators import ValidatorSet


class AddStatus(Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"          # first time this validator equivocates here: report it
    CONFLICT_KNOWN = "conflict-known"  # already reported
    UNKNOWN_VALIDATOR = "unknown-validator"
    BAD_SIGNATURE = "bad-signature"
    WRONG_HEIGHT = "wrong-height"


class VoteSet:
    __slots__ = ("vset", "votes", "conflicts", "power_by_block", "power_any", "quorum_blocks")

    def __init__(self, vset: ValidatorSet) -> None:
        self.vset = vset
        self.votes: dict[int, SignedVote] = {}       # first vote of each validator
        self.conflicts: dict[int, SignedVote] = {}   # first conflicting vote of each equivocator
        self.power_by_block: dict[bytes, int] = {}
        self.power_any = 0
        self.quorum_blocks: dict[bytes, None] = {}   # block ids (NIL included) with >2/3, in order

    def add(self, index: int, signed: SignedVote) -> AddStatus:
        existing = self.votes.get(index)
        if existing is not None:
            if existing.vote.block_id == signed.vote.block_id:
                return AddStatus.DUPLICATE
            known = self.conflicts.get(index)
            if known is not None:
                same = known.vote.block_id == signed.vote.block_id
                return AddStatus.DUPLICATE if same else AddStatus.CONFLICT_KNOWN
            self.conflicts[index] = signed
            self._count(index, signed.vote.block_id)
            return AddStatus.CONFLICT
        self.votes[index] = signed
        self.power_any += self.vset.power_of(index)
        self._count(index, signed.vote.block_id)
        return AddStatus.ADDED

    def _count(self, index: int, block_id: bytes) -> None:
        block_power = self.power_by_block.get(block_id, 0) + self.vset.power_of(index)
        self.power_by_block[block_id] = block_power
        if block_id not in self.quorum_blocks and self.vset.is_quorum(block_power):
            self.quorum_blocks[block_id] = None

    def has_quorum_any(self) -> bool:
        return self.vset.is_quorum(self.power_any)

    def has_quorum_for(self, block_id: bytes) -> bool:
        return block_id in self.quorum_blocks

    def votes_for(self, block_id: bytes) -> list[SignedVote]:
        """The votes for `block_id` (an equivocator's conflicting one included), by validator index."""
        found: dict[int, SignedVote] = {}
        for index, signed in self.votes.items():
            if signed.vote.block_id == block_id:
                found[index] = signed
        for index, signed in self.conflicts.items():
            if signed.vote.block_id == block_id:
                found[index] = signed
        return [found[i] for i in sorted(found)]


class RoundVotes:
    __slots__ = ("prevotes", "precommits", "voters", "voter_power")

    def __init__(self, vset: ValidatorSet) -> None:
        self.prevotes = VoteSet(vset)
        self.precommits = VoteSet(vset)
        self.voters: dict[int, None] = {}
        self.voter_power = 0

    def of_type(self, vote_type: VoteType) -> VoteSet:
        return self.prevotes if vote_type == VoteType.PREVOTE else self.precommits


class HeightVotes:
    """All votes of one height, by round; verifies membership and signatures before counting."""

    __slots__ = ("vset", "chain_id", "height", "rounds")

    def __init__(self, vset: ValidatorSet, chain_id: str, height: int) -> None:
        self.vset = vset
        self.chain_id = chain_id
        self.height = height
        self.rounds: dict[int, RoundVotes] = {}

    def round(self, round_: int) -> RoundVotes:
        rv = self.rounds.get(round_)
        if rv is None:
            rv = RoundVotes(self.vset)
            self.rounds[round_] = rv
        return rv

    def get(self, round_: int, vote_type: VoteType) -> VoteSet | None:
        rv = self.rounds.get(round_)
        return None if rv is None else rv.of_type(vote_type)

    def add(self, signed: SignedVote, verified: bool = False) -> tuple[AddStatus, int]:
        """Add a vote; returns (status, validator index or -1)."""
        vote = signed.vote
        if vote.height != self.height:
            return AddStatus.WRONG_HEIGHT, -1
        index = self.vset.index_of(vote.validator)
        if index is None:
            return AddStatus.UNKNOWN_VALIDATOR, -1
        rv = self.rounds.get(vote.round)
        if rv is not None:
            vote_set = rv.of_type(vote.type)
            existing = vote_set.votes.get(index)
            if existing is not None and existing.signature == signed.signature and existing.vote == vote:
                return AddStatus.DUPLICATE, index
            known = vote_set.conflicts.get(index)
            if known is not None and existing is not None and known.vote != vote and existing.vote != vote:
                # a third vote of an equivocator: dropped whatever its signature (no check to pay for)
                return AddStatus.CONFLICT_KNOWN, index
        if not verified and not self.vset.verify(index, vote.sign_bytes(self.chain_id), signed.signature):
            return AddStatus.BAD_SIGNATURE, index
        rv = self.round(vote.round)
        status = rv.of_type(vote.type).add(index, signed)
        if status is AddStatus.ADDED and index not in rv.voters:
            rv.voters[index] = None
            rv.voter_power += self.vset.power_of(index)
        return status, index
