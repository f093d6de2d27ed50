"""Byzantine behaviours for simulated validators.

A Byzantine node runs an ordinary core (without the double-sign guard, with an application that
accepts every block) and lies on the way out: ``outgoing`` turns each message its core
broadcasts into what the adversary actually sends, possibly different messages to different
peers. Kinds:

- SILENT: sends nothing at all (crash-like; also serves no gossip).
- EQUIVOCATE: as proposer, signs two different blocks for the same round and sends one to each
  half of the peers (split at random per message).
- DOUBLE_VOTE: for every prevote/precommit, also signs a conflicting one (nil <-> a block) and
  sends each to a different half of the peers.
- INVALID: proposes blocks the honest application rejects, and turns its nil votes into votes
  for its latest invalid block.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from consensus.crypto import SignRequest
from consensus.messages import Message, Proposal, ProposalMessage, SignedProposal, SignedVote, Vote
from consensus.types import NIL, Step, VoteType, compute_block_id

if TYPE_CHECKING:
    from consensus.sim.node import SimNode


Send = tuple[list["SimNode"], Message]


class Kind(Enum):
    SILENT = "silent"
    EQUIVOCATE = "equivocate"
    DOUBLE_VOTE = "double_vote"
    INVALID = "invalid"


@dataclass(slots=True)
class Behaviour:
    kind: Kind
    last_invalid_block_id: bytes = NIL

    @property
    def silent(self) -> bool:
        return self.kind is Kind.SILENT

    def build_block(self, node: SimNode, height: int, round_: int) -> bytes:
        nonce = node.world.net.rng.randrange(1 << 30)
        if self.kind is Kind.INVALID:
            block = b"INVALID|%d|%d|node%d|%d" % (height, round_, node.node_id, nonce)
            self.last_invalid_block_id = compute_block_id(block)
            return block
        return b"byz|%d|%d|node%d|%d" % (height, round_, node.node_id, nonce)

    def outgoing(self, node: SimNode, msg: Message, peers: list[SimNode]) -> list[Send]:
        """What to send to whom instead of broadcasting `msg` to `peers`."""
        if self.kind is Kind.SILENT:
            return []
        if self.kind is Kind.EQUIVOCATE and isinstance(msg, ProposalMessage):
            return _split(node, peers, msg, _other_proposal(node, msg))
        if self.kind is Kind.DOUBLE_VOTE and isinstance(msg, SignedVote):
            return _split(node, peers, msg, _other_vote(node, msg))
        if self.kind is Kind.INVALID and isinstance(msg, SignedVote) and msg.vote.block_id == NIL \
                and self.last_invalid_block_id != NIL:
            return [(peers, _resign_vote(node, msg.vote, self.last_invalid_block_id))]
        return [(peers, msg)]


def _split(node: SimNode, peers: list[SimNode], a: Message, b: Message) -> list[Send]:
    shuffled = list(peers)
    node.world.net.rng.shuffle(shuffled)
    half = len(shuffled) // 2
    return [(shuffled[:half], a), (shuffled[half:], b)]


def _other_proposal(node: SimNode, msg: ProposalMessage) -> ProposalMessage:
    p = msg.signed.proposal
    block = b"twin-of|" + msg.block
    proposal = Proposal(p.height, p.round, p.pol_round, compute_block_id(block), p.proposer)
    request = SignRequest(p.height, p.round, Step.PROPOSE, proposal.sign_bytes(node.chain_id))
    return ProposalMessage(SignedProposal(proposal, node.raw_signer.sign(request)), block)


def _other_vote(node: SimNode, msg: SignedVote) -> SignedVote:
    vote = msg.vote
    if vote.block_id != NIL:
        return _resign_vote(node, vote, NIL)
    current = node.core._proposals.get(vote.round)
    other = current.proposal.block_id if current is not None else compute_block_id(b"phantom|%d" % vote.round)
    return _resign_vote(node, vote, other)


def _resign_vote(node: SimNode, vote: Vote, block_id: bytes) -> SignedVote:
    forged = Vote(vote.type, vote.height, vote.round, block_id, vote.validator)
    step = Step.PREVOTE if vote.type == VoteType.PREVOTE else Step.PRECOMMIT
    request = SignRequest(vote.height, vote.round, step, forged.sign_bytes(node.chain_id))
    return SignedVote(forged, node.raw_signer.sign(request))
