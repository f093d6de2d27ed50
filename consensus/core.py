"""Tendermint consensus (Algorithm 1 of "The latest gossip on BFT consensus", Buchman, Kwon,
Milosevic 2018) as a sans-I/O state machine: ``ConsensusCore.step(input) -> list[Output]``.

Theory of operation
-------------------
State is the paper's: h_p (``height``), round_p, step_p, decision_p[h_p], lockedValue/Round,
validValue/Round (values are kept as block ids; the bytes live in ``_blocks``), plus the message
log of the current height (``_proposals`` and the vote sets in ``_votes``). Every branch below
is tagged with the line of Algorithm 1 it implements ("L22").

One input is processed at a time. Handling an input first *records* it (validating it and
updating the message log or step), then runs the "upon" rules to a fixpoint: each rule either
changes step/round/height or sets a first-time flag, so the loop terminates. Stale inputs
(other height, round or step than the guards require) change nothing and produce no output.

Own messages: when a rule says "broadcast", the core asks the signer for a signature and queues
the signed message on an internal loopback; after the current input is done, each looped-back
message is processed exactly like a message from the network (``WalAppend`` first, then
``Broadcast`` when it is accepted for the first time). So own votes enter the state only as
inputs, and whether the signer signs or refuses never changes the state: replaying the WAL
rebuilds the same state even when the double-sign guard refuses to re-sign older messages.

Deviations from the paper, each harmless for safety:
- timeoutPropose is scheduled by the proposer too (CometBFT does the same), so a proposer whose
  application never answers RequestProposal still moves on.
- L49 needs the bytes of v and 2f+1 precommits for id(v); the bytes may come from any accepted
  proposal of this height or from a CertifiedBlock (block sync) - a block id is a hash, so the
  round it was proposed in does not matter.
- After L49 the core waits for StartHeight(h+1) from the driver (the application commits in
  between) instead of incrementing h_p itself (L52-54 run on StartHeight).
- L55 counts votes (prevotes and precommits) from distinct validators, not proposals.
- A message for a round after round_p + 1 that no kept message has opened yet opens it only if
  its sender has opened fewer than max_catchup_rounds such rounds at this height (CometBFT's
  peer catch-up rounds, charged to the signer once its signature verifies). Dropping a message
  never harms safety; honest validators ahead of us still open their round (the first one to
  reach us opens it for all), so L49 and L55 fire as before.
"""

from __future__ import annotations

from collections import deque

from consensus.certificate import CertificateError, CommitCertificate, verify_commit_certificate
from consensus.config import ConsensusConfig
from consensus.crypto import Signer, SignRefused, SignRequest
from consensus.evidence import ConflictingProposalEvidence, DuplicateVoteEvidence
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
from consensus.messages import Message, Proposal, ProposalMessage, SignedProposal, SignedVote, Vote
from consensus.nextheight import NextHeightBuffer
from consensus.proposer import ProposerSelector
from consensus.snapshot import CoreSnapshot
from consensus.types import NIL, Step, VoteType, compute_address, compute_block_id
from consensus.validators import ValidatorSet
from consensus.voteset import AddStatus, HeightVotes, VoteSet


class ConsensusCore:
    """One validator's (or full node's, with signer=None) Tendermint state machine."""

    def __init__(
        self, config: ConsensusConfig, validator_set: ValidatorSet, signer: Signer | None, chain_id: str
    ) -> None:
        self.config = config
        self.vset = validator_set
        self.chain_id = chain_id
        self.signer = signer
        self.own_address: bytes | None = None if signer is None else compute_address(signer.public_key)
        self.own_index = None if self.own_address is None else validator_set.index_of(self.own_address)
        self._proposers = ProposerSelector(validator_set, config.initial_height)
        self.started = False
        self._loopback: deque[Message] = deque()
        # Why the last step's input was refused, when that is its sender's fault (a signature
        # that does not verify, a block that does not match its proposal): the driver may hold
        # it against the peer that delivered the message. None otherwise (stale or duplicate
        # messages are not faults). Not replayable state.
        self.fault: str | None = None
        self._next = NextHeightBuffer(config, validator_set, chain_id)  # height+1 messages
        self._reset_height(0)

    # ------------------------------------------------------------------ state

    def _reset_height(self, height: int) -> None:
        """L53: reset locked/valid value and round and empty the message log."""
        self.height = height
        self.round = 0
        self.current_step = Step.PROPOSE
        self.decided: bytes | None = None
        self.locked_round = -1
        self.locked_block_id: bytes | None = None
        self.valid_round = -1
        self.valid_block_id: bytes | None = None
        self._votes = HeightVotes(self.vset, self.chain_id, max(height, 1))
        self._proposals: dict[int, SignedProposal] = {}
        self._proposal_evidence: dict[int, None] = {}
        self._blocks: dict[bytes, bytes] = {}
        self._ahead_bytes = 0  # block bytes of the proposals kept for rounds after ours
        self._catchup: dict[int, dict[int, None]] = {}  # validator index -> rounds it opened ahead
        self._validity: dict[bytes, bool] = {}
        self._validation_requested: dict[bytes, None] = {}
        self._proposed_round = -1
        self._certificate: CommitCertificate | None = None
        self._reset_round_flags()

    def _reset_round_flags(self) -> None:
        self._prevote_timeout_scheduled = False   # L34 "for the first time"
        self._l36_done = False                    # L36 "for the first time"
        self._precommit_timeout_scheduled = False  # L47 "for the first time"

    def proposer(self, height: int, round_: int) -> int:
        """Index of proposer(h, r) in the validator set."""
        return self._proposers.proposer(height, round_)

    def snapshot(self) -> CoreSnapshot:
        """A comparable summary of the replayable state (excludes the future-height cache)."""
        return CoreSnapshot.of(self)

    # ------------------------------------------------------------------ entry point

    def step(self, inp: Input) -> list[Output]:
        """Process one input; return the outputs for the driver to carry out, in order."""
        out: list[Output] = []
        self.fault = None
        self._process(inp, out)
        while self._loopback:
            self._process(self._loopback.popleft(), out)
        return out

    def _process(self, inp: Input, out: list[Output]) -> None:
        local: list[Output] = []
        if self._record(inp, local):
            out.append(WalAppend(inp))
            out.extend(local)
            self._run_rules(out)
        else:
            out.extend(local)

    def _record(self, inp: Input, out: list[Output]) -> bool:
        """Validate and record an input; True if it changed the state (and so must be logged)."""
        if isinstance(inp, SignedVote):
            return self._on_vote(inp, out)
        if isinstance(inp, ProposalMessage):
            return self._on_proposal(inp, out)
        if isinstance(inp, Timeout):
            return self._on_timeout(inp, out)
        if isinstance(inp, BlockValidity):
            return self._on_validity(inp)
        if isinstance(inp, ProposalBlock):
            return self._on_proposal_block(inp)
        if isinstance(inp, StartHeight):
            return self._on_start_height(inp, out)
        if isinstance(inp, CertifiedBlock):
            return self._on_certified_block(inp, out)
        raise TypeError(f"not a consensus input: {type(inp).__name__}")

    # ------------------------------------------------------------------ recording inputs

    def _admit_height_round(self, msg: ProposalMessage | SignedVote, height: int, round_: int) -> bool:
        """Height/round guard for messages; buffers height+1 messages for later."""
        if not self.started:
            return False
        if height == self.height + 1:
            self._next.offer(msg)
            self.fault = self._next.fault
            return False
        if height != self.height or self.decided is not None:
            return False
        return round_ <= self.round + self.config.max_round_lookahead

    def _on_vote(self, signed: SignedVote, out: list[Output]) -> bool:
        vote = signed.vote
        if not self._admit_height_round(signed, vote.height, vote.round):
            return False
        opens = self._opens_catchup_round(vote.round)
        if opens:
            sender = self.vset.index_of(vote.validator)
            if sender is None or not self._may_open_round(sender):
                return False
        status, index = self._votes.add(signed, verified=self._next.take_verified(signed))
        if opens and vote.round in self._votes.rounds:  # verified and counted: charge its sender
            self._charge_catchup_round(index, vote.round)
        if status is AddStatus.ADDED:
            if vote.validator == self.own_address:
                out.append(Broadcast(signed))
            return True
        if status is AddStatus.CONFLICT:
            vote_set = self._votes.get(vote.round, vote.type)
            assert vote_set is not None
            out.append(EvidenceFound(DuplicateVoteEvidence.of(vote_set.votes[index], signed)))
            return True
        if status is AddStatus.BAD_SIGNATURE:
            self.fault = "bad_signature"
        elif status is AddStatus.CONFLICT_KNOWN:
            self.fault = "equivocation"  # a third vote for one slot (dropped before its signature check)
        return False  # duplicate, unknown validator, bad signature

    def _on_proposal(self, msg: ProposalMessage, out: list[Output]) -> bool:
        proposal = msg.signed.proposal
        if not self._admit_height_round(msg, proposal.height, proposal.round):
            return False
        index = self.vset.index_of(proposal.proposer)
        if index is None or index != self.proposer(proposal.height, proposal.round):
            return False  # L22/L28/L36/L49: only "from proposer(h_p, r)" counts
        existing = self._proposals.get(proposal.round)
        if existing is not None and existing.proposal == proposal:
            return False  # duplicate
        if existing is not None and proposal.round in self._proposal_evidence:
            self.fault = "equivocation"  # a third proposal for the round: dropped unchecked
            return False
        opens = self._opens_catchup_round(proposal.round)
        if opens and not self._may_open_round(index):
            return False
        sign_bytes = proposal.sign_bytes(self.chain_id)
        verified = self._next.take_verified(msg.signed)  # kept for this height while we were behind
        if not verified and not self.vset.verify(index, sign_bytes, msg.signed.signature):
            self.fault = "bad_signature"
            return False
        if existing is not None:
            self._proposal_evidence[proposal.round] = None
            out.append(EvidenceFound(ConflictingProposalEvidence.of(existing, msg.signed)))
            return True
        if not msg.block_matches():
            self.fault = "block_mismatch"
            return False
        if proposal.round > self.round:  # ahead of us: bounded, or one proposer could pile up blocks
            size = len(msg.block)
            if self._ahead_bytes + size > self.config.max_future_bytes:
                return False
            self._ahead_bytes += size
        self._proposals[proposal.round] = msg.signed
        if opens:
            self._charge_catchup_round(index, proposal.round)
        own = proposal.proposer == self.own_address
        self._store_block(proposal.round, proposal.block_id, msg.block, own=own, out=out)
        if own:
            out.append(Broadcast(msg))
        return True

    def _opens_catchup_round(self, round_: int) -> bool:
        """True if a message for `round_` would open a round after round_p + 1 (no vote or
        proposal of that round is kept yet)."""
        return round_ > self.round + 1 and round_ not in self._votes.rounds and round_ not in self._proposals

    def _may_open_round(self, index: int) -> bool:
        opened = self._catchup.get(index)
        return opened is None or len(opened) < self.config.max_catchup_rounds

    def _charge_catchup_round(self, index: int, round_: int) -> None:
        self._catchup.setdefault(index, {})[round_] = None

    def _store_block(self, round_: int, block_id: bytes, block: bytes, own: bool, out: list[Output]) -> None:
        self._blocks[block_id] = block
        if own:
            self._validity.setdefault(block_id, True)  # we built it (or it was already valid)
        elif block_id not in self._validity and block_id not in self._validation_requested:
            self._validation_requested[block_id] = None
            out.append(ValidateBlock(self.height, round_, block_id, block))

    def _on_timeout(self, t: Timeout, out: list[Output]) -> bool:
        if not self.started or self.decided is not None or t.height != self.height or t.round != self.round:
            return False
        if t.step == Step.PROPOSE and self.current_step == Step.PROPOSE:
            # L57-60 OnTimeoutPropose: prevote nil
            self._prevote(NIL)
            return True
        if t.step == Step.PREVOTE and self.current_step == Step.PREVOTE:
            # L61-64 OnTimeoutPrevote: precommit nil
            self._precommit(NIL)
            return True
        if t.step == Step.PRECOMMIT:
            # L65-67 OnTimeoutPrecommit: StartRound(round_p + 1)
            self._start_round(self.round + 1, out)
            return True
        return False

    def _on_validity(self, answer: BlockValidity) -> bool:
        if answer.height != self.height or self.decided is not None:
            return False
        if answer.block_id not in self._validation_requested or answer.block_id in self._validity:
            return False
        self._validity[answer.block_id] = answer.valid  # valid(v)
        return True

    def _on_proposal_block(self, pb: ProposalBlock) -> bool:
        # L18 getValue() answered: only for the round we asked in, and only once.
        if not self.started or self.decided is not None or pb.height != self.height or pb.round != self.round:
            return False
        if self._proposed_round == pb.round or self.proposer(pb.height, pb.round) != self.own_index:
            return False
        if pb.round in self._proposals:
            return False
        self._proposed_round = pb.round
        self._sign_proposal(pb.round, -1, pb.block)  # L19 broadcast <PROPOSAL, h_p, round_p, v, -1>
        return True

    def _on_start_height(self, sh: StartHeight, out: list[Output]) -> bool:
        if self.started and sh.height <= self.height:
            return False
        if sh.height < self.config.initial_height:
            return False
        # L52-54: next height, reset, StartRound(0)
        self._reset_height(sh.height)
        self.started = True
        self._proposers.advance_to(sh.height)
        self._start_round(0, out)
        self._loopback.extend(self._next.drain(sh.height))
        return True

    def _on_certified_block(self, cb: CertifiedBlock, out: list[Output]) -> bool:
        cert = cb.certificate
        if not self.started or self.decided is not None or cert.height != self.height:
            return False
        if compute_block_id(cb.block) != cert.block_id:
            return False
        try:
            verify_commit_certificate(cert, self.vset, self.chain_id, self.height, cert.block_id)
        except CertificateError:
            return False
        if self._certificate is not None:
            return False
        self._certificate = cert
        self._store_block(cert.round, cert.block_id, cb.block, own=False, out=out)
        return True

    # ------------------------------------------------------------------ actions

    def _start_round(self, round_: int, out: list[Output]) -> None:
        """L11-21 StartRound(round)."""
        self.round = round_  # L12
        self.current_step = Step.PROPOSE  # L13
        self._reset_round_flags()
        if self.own_index is not None and self.proposer(self.height, round_) == self.own_index:  # L14
            if self.valid_block_id is not None:  # L15-16 proposal <- validValue_p
                self._proposed_round = round_
                self._sign_proposal(round_, self.valid_round, self._blocks[self.valid_block_id])
            else:  # L18 proposal <- getValue()
                out.append(RequestProposal(self.height, round_))
        # L21 (for every node, see the module docstring)
        out.append(self._schedule(Step.PROPOSE))

    def _schedule(self, step: Step) -> ScheduleTimeout:
        return ScheduleTimeout(self.height, self.round, step, self.config.timeout_ms(step, self.round))

    def _sign_proposal(self, round_: int, pol_round: int, block: bytes) -> None:
        """L19: broadcast <PROPOSAL, h_p, round_p, proposal, validRound_p> (via loopback)."""
        if self.signer is None or self.own_address is None:
            return
        proposal = Proposal(self.height, round_, pol_round, compute_block_id(block), self.own_address)
        request = SignRequest(self.height, round_, Step.PROPOSE, proposal.sign_bytes(self.chain_id))
        try:
            signature = self.signer.sign(request)
        except SignRefused:
            return
        self._loopback.append(ProposalMessage(SignedProposal(proposal, signature), block))

    def _sign_vote(self, vote_type: VoteType, block_id: bytes) -> None:
        if self.signer is None or self.own_address is None or self.own_index is None:
            return
        vote = Vote(vote_type, self.height, self.round, block_id, self.own_address)
        step = Step.PREVOTE if vote_type == VoteType.PREVOTE else Step.PRECOMMIT
        try:
            request = SignRequest(self.height, self.round, step, vote.sign_bytes(self.chain_id))
            signature = self.signer.sign(request)
        except SignRefused:
            return
        self._loopback.append(SignedVote(vote, signature))

    def _prevote(self, block_id: bytes) -> None:
        self._sign_vote(VoteType.PREVOTE, block_id)  # broadcast <PREVOTE, h_p, round_p, block_id>
        self.current_step = Step.PREVOTE  # step_p <- prevote

    def _precommit(self, block_id: bytes) -> None:
        self._sign_vote(VoteType.PRECOMMIT, block_id)  # broadcast <PRECOMMIT, h_p, round_p, block_id>
        self.current_step = Step.PRECOMMIT  # step_p <- precommit

    # ------------------------------------------------------------------ upon rules

    def _run_rules(self, out: list[Output]) -> None:
        while self.started and self.decided is None:
            if self._rule_decide(out):
                return
            if self._rule_round_skip(out):
                continue
            if not self._rule_current_round(out):
                return

    def _rule_decide(self, out: list[Output]) -> bool:
        """L49-51: upon <PROPOSAL, h_p, r, v, *> AND 2f+1 <PRECOMMIT, h_p, r, id(v)> while
        decision_p[h_p] = nil: if valid(v) then decision_p[h_p] = v."""
        for round_, rv in self._votes.rounds.items():
            for block_id in rv.precommits.quorum_blocks:
                if block_id == NIL or block_id not in self._blocks:
                    continue
                if self._validity.get(block_id) is not True:  # L50 valid(v) (unknown: wait for the app)
                    continue
                certificate = CommitCertificate.from_precommits(
                    self.height, round_, block_id, rv.precommits.votes_for(block_id)
                )
                return self._decide(block_id, certificate, out)
        cert = self._certificate  # a verified certificate *is* 2f+1 precommits for id(v)
        if cert is not None and self._validity.get(cert.block_id) is True:
            return self._decide(cert.block_id, cert, out)
        return False

    def _decide(self, block_id: bytes, certificate: CommitCertificate, out: list[Output]) -> bool:
        self.decided = block_id  # L51 decision_p[h_p] = v
        out.append(Decide(self.height, certificate.round, block_id, self._blocks[block_id], certificate))
        return True

    def _rule_round_skip(self, out: list[Output]) -> bool:
        """L55-56: upon f+1 <*, h_p, round, *, *> with round > round_p: StartRound(round)."""
        target = -1
        for round_, rv in self._votes.rounds.items():
            if round_ > self.round and round_ > target and self.vset.is_one_third(rv.voter_power):
                target = round_
        if target < 0:
            return False
        self._start_round(target, out)
        return True

    def _rule_current_round(self, out: list[Output]) -> bool:
        r = self.round
        signed = self._proposals.get(r)
        proposal = None if signed is None else signed.proposal
        validity = None if proposal is None else self._validity.get(proposal.block_id)
        prevotes: VoteSet | None = self._votes.get(r, VoteType.PREVOTE)

        if self.current_step == Step.PROPOSE and proposal is not None and validity is not None:
            v = proposal.block_id
            if proposal.pol_round == -1:
                # L22-27: upon <PROPOSAL, h_p, round_p, v, -1> while step_p = propose
                if validity and (self.locked_round == -1 or self.locked_block_id == v):  # L23
                    self._prevote(v)  # L24
                else:
                    self._prevote(NIL)  # L26
                return True
            vr = proposal.pol_round
            pol = self._votes.get(vr, VoteType.PREVOTE)
            if 0 <= vr < r and pol is not None and pol.has_quorum_for(v):
                # L28-33: upon <PROPOSAL, h_p, round_p, v, vr> AND 2f+1 <PREVOTE, h_p, vr, id(v)>
                if validity and (self.locked_round <= vr or self.locked_block_id == v):  # L29
                    self._prevote(v)  # L30
                else:
                    self._prevote(NIL)  # L32
                return True

        step = self.current_step
        if step == Step.PREVOTE and not self._prevote_timeout_scheduled and prevotes is not None \
                and prevotes.has_quorum_any():
            # L34-35: upon 2f+1 <PREVOTE, h_p, round_p, *> while step_p = prevote for the first time
            self._prevote_timeout_scheduled = True
            out.append(self._schedule(Step.PREVOTE))
            return True

        if step >= Step.PREVOTE and not self._l36_done and proposal is not None and validity is True \
                and prevotes is not None and prevotes.has_quorum_for(proposal.block_id):
            # L36-43: upon <PROPOSAL, h_p, round_p, v, *> AND 2f+1 <PREVOTE, h_p, round_p, id(v)>
            #         while valid(v) and step_p >= prevote for the first time
            self._l36_done = True
            v = proposal.block_id
            if self.current_step == Step.PREVOTE:  # L37
                self.locked_block_id = v  # L38
                self.locked_round = r  # L39
                self._precommit(v)  # L40-41
            self.valid_block_id = v  # L42
            self.valid_round = r  # L43
            return True

        if self.current_step == Step.PREVOTE and prevotes is not None and prevotes.has_quorum_for(NIL):
            # L44-46: upon 2f+1 <PREVOTE, h_p, round_p, nil> while step_p = prevote
            self._precommit(NIL)
            return True

        precommits = self._votes.get(r, VoteType.PRECOMMIT)
        if not self._precommit_timeout_scheduled and precommits is not None and precommits.has_quorum_any():
            # L47-48: upon 2f+1 <PRECOMMIT, h_p, round_p, *> for the first time
            self._precommit_timeout_scheduled = True
            out.append(self._schedule(Step.PRECOMMIT))
            return True
        return False

