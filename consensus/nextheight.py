"""The next-height buffer: proposals and votes for height h+1 that arrive while the core is at h.

Theory of operation
-------------------
Validators that committed h before us already propose and vote at h+1. Keeping those messages
until ``StartHeight(h+1)`` saves a round timeout, so the buffer is a cache: it is not part of the
replayable state (it is not in the WAL or in ``CoreSnapshot``), and dropping a message only
costs liveness - its sender re-broadcasts when the height stalls.

Its memory and its slots must not be anyone's to take. So a message is kept only if:
- its sender is a validator and its signature verifies (nobody can take a slot in an honest
  validator's name);
- its round is below ``max_future_rounds`` (honest traffic for h+1 that reaches us before we
  finish h is a round or two; a node further behind catches up by block sync);
- it is the first of its kind from its sender: one vote per (validator, round, type) plus one
  conflicting vote (so equivocation found early still becomes evidence at StartHeight), and one
  proposal per round, from that round's proposer at h+1 only;
- for a proposal, the blocks of the kept proposals fit in ``max_future_bytes`` together.

So a Byzantine validator can fill only its own slots: at most 4 * max_future_rounds votes and
the proposals of the rounds it proposes. A third vote for one slot is dropped unchecked (fault
"equivocation"), as the core does.

The signature is checked once: ``drain`` hands the kept messages back for the core to loop
back as inputs, and ``take_verified`` tells the core that a message came from here verified.
"""

from __future__ import annotations

from consensus.config import ConsensusConfig
from consensus.messages import ProposalMessage, SignedProposal, SignedVote
from consensus.proposer import ProposerSelector
from consensus.types import VoteType
from consensus.validators import ValidatorSet


class NextHeightBuffer:
    """Verified height+1 messages, one slot per (sender, round, kind), in arrival order."""

    __slots__ = ("_config", "_vset", "_chain_id", "_proposers", "height", "_messages", "_votes",
                 "_proposal_rounds", "_bytes", "_verified", "fault")

    def __init__(self, config: ConsensusConfig, vset: ValidatorSet, chain_id: str) -> None:
        self._config = config
        self._vset = vset
        self._chain_id = chain_id
        self._proposers = ProposerSelector(vset, config.initial_height)
        self.height = 0  # the height whose messages are kept (0: none yet)
        self._messages: list[ProposalMessage | SignedVote] = []
        # (validator index, round, type) -> block ids of the votes kept for it (at most 2)
        self._votes: dict[tuple[int, int, VoteType], list[bytes]] = {}
        self._proposal_rounds: dict[int, None] = {}
        self._bytes = 0  # block bytes of the kept proposals
        self._verified: dict[SignedVote | SignedProposal, None] = {}
        self.fault: str | None = None  # set by offer

    def __len__(self) -> int:
        return len(self._messages)

    def expect(self, height: int) -> None:
        """Keep messages for `height` from now on (forgets what was kept for another height)."""
        self._proposers.advance_to(height)
        self.height = height
        self._messages = []
        self._votes = {}
        self._proposal_rounds = {}
        self._bytes = 0

    def offer(self, msg: ProposalMessage | SignedVote) -> bool:
        """Keep `msg` if it earns a slot (see the module docstring); True if kept. ``fault`` then
        says whether a refusal was the sender's fault ("bad_signature", "block_mismatch")."""
        self.fault = None
        if isinstance(msg, SignedVote):
            return self._offer_vote(msg)
        return self._offer_proposal(msg)

    def _offer_vote(self, signed: SignedVote) -> bool:
        vote = signed.vote
        if vote.height != self.height or vote.round >= self._config.max_future_rounds:
            return False
        index = self._vset.index_of(vote.validator)
        if index is None:
            return False
        slot = (index, vote.round, vote.type)
        kept = self._votes.get(slot)
        if kept is not None:
            if vote.block_id in kept:
                return False  # a duplicate (or a copy with another signature)
            if len(kept) >= 2:
                self.fault = "equivocation"  # a third vote for the slot: dropped unchecked
                return False
        if not self._vset.verify(index, vote.sign_bytes(self._chain_id), signed.signature):
            self.fault = "bad_signature"
            return False
        self._votes.setdefault(slot, []).append(vote.block_id)
        self._messages.append(signed)
        return True

    def _offer_proposal(self, msg: ProposalMessage) -> bool:
        proposal = msg.signed.proposal
        if proposal.height != self.height or proposal.round >= self._config.max_future_rounds:
            return False
        if proposal.round in self._proposal_rounds:
            return False
        index = self._vset.index_of(proposal.proposer)
        if index is None or index != self._proposers.proposer(proposal.height, proposal.round):
            return False
        size = len(msg.block)
        if self._bytes + size > self._config.max_future_bytes:
            return False
        if not self._vset.verify(index, proposal.sign_bytes(self._chain_id), msg.signed.signature):
            self.fault = "bad_signature"
            return False
        if not msg.block_matches():
            self.fault = "block_mismatch"
            return False
        self._proposal_rounds[proposal.round] = None
        self._bytes += size
        self._messages.append(msg)
        return True

    def drain(self, height: int) -> list[ProposalMessage | SignedVote]:
        """The messages kept for `height` (none if the buffer kept another height), in arrival
        order; they count as verified until the next drain. The buffer then expects height+1."""
        kept = self._messages if height == self.height else []
        self._verified = {
            (m.signed if isinstance(m, ProposalMessage) else m): None for m in kept
        }
        self.expect(height + 1)
        return kept

    def take_verified(self, signed: SignedVote | SignedProposal) -> bool:
        """True (once) if `signed`, with this very signature, was verified when it was kept."""
        if not self._verified:
            return False
        return self._verified.pop(signed, False) is None
