"""A small driver for table-driven tests of one ConsensusCore among 4 ed25519 validators."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from consensus import (
    BlockValidity,
    Broadcast,
    ConsensusConfig,
    ConsensusCore,
    Decide,
    Ed25519Signer,
    EvidenceFound,
    GuardedSigner,
    Input,
    Output,
    Proposal,
    ProposalBlock,
    ProposalMessage,
    ProposerSelector,
    RequestProposal,
    ScheduleTimeout,
    SignedProposal,
    SignedVote,
    SignRequest,
    StartHeight,
    Step,
    Timeout,
    ValidateBlock,
    ValidatorSet,
    Vote,
    VoteType,
    WalAppend,
    compute_block_id,
    ed25519_verify,
)

CHAIN = "ita-test"
CFG = ConsensusConfig(
    timeout_propose_ms=300,
    timeout_propose_delta_ms=100,
    timeout_prevote_ms=150,
    timeout_prevote_delta_ms=50,
    timeout_precommit_ms=150,
    timeout_precommit_delta_ms=50,
)
N = 4
SIGNERS = [Ed25519Signer.from_seed(hashlib.sha256(b"table-validator-%d" % i).digest()) for i in range(N)]
VSET = ValidatorSet([(s.public_key, 1) for s in SIGNERS])
BLOCKS = {"A": b"block-A", "B": b"block-B", "C": b"block-C"}
NAMES = {compute_block_id(b): name for name, b in BLOCKS.items()}
SELECTOR = ProposerSelector(VSET)


def proposer(round_: int, height: int = 1) -> int:
    return SELECTOR.proposer(height, round_)


def role(name: str) -> int:
    """'p0'/'p1'/'p2': proposer of round 0/1/2 at height 1; 'x': the one proposing none of them."""
    if name.startswith("p"):
        return proposer(int(name[1:]))
    taken = {proposer(0), proposer(1), proposer(2)}
    return [i for i in range(N) if i not in taken][0]


def block_name(block_id: bytes) -> str | None:
    return None if block_id == b"" else NAMES.get(block_id, block_id.hex()[:8])


def sign_vote(voter: int, vote_type: VoteType, round_: int, name: str | None, height: int = 1) -> SignedVote:
    block_id = b"" if name is None else compute_block_id(BLOCKS[name])
    vote = Vote(vote_type, height, round_, block_id, VSET.validators[voter].address)
    step = Step.PREVOTE if vote_type == VoteType.PREVOTE else Step.PRECOMMIT
    sig = SIGNERS[voter].sign(SignRequest(height, round_, step, vote.sign_bytes(CHAIN)))
    return SignedVote(vote, sig)


def make_proposal(round_: int, name: str, pol: int = -1, by: int | None = None, height: int = 1,
                  block: bytes | None = None) -> ProposalMessage:
    who = proposer(round_, height) if by is None else by
    body = BLOCKS[name] if block is None else block
    p = Proposal(height, round_, pol, compute_block_id(BLOCKS[name]), VSET.validators[who].address)
    sig = SIGNERS[who].sign(SignRequest(height, round_, Step.PROPOSE, p.sign_bytes(CHAIN)))
    return ProposalMessage(SignedProposal(p, sig), body)


def counting_core(me: int) -> tuple[ConsensusCore, list[bytes]]:
    """A started core (height 1) for validator `me` whose signature checks are recorded: the
    list gets the signed bytes of each message the core verifies."""
    calls: list[bytes] = []

    def counting_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
        calls.append(message)
        return ed25519_verify(public_key, message, signature)

    vset = ValidatorSet([(s.public_key, 1) for s in SIGNERS], verifier=counting_verify)
    core = ConsensusCore(CFG, vset, GuardedSigner(SIGNERS[me]), CHAIN)
    core.step(StartHeight(1))
    return core, calls


@dataclass
class Harness:
    me: int
    core: ConsensusCore = field(init=False)

    def __post_init__(self) -> None:
        self.core = ConsensusCore(CFG, VSET, GuardedSigner(SIGNERS[self.me]), CHAIN)

    def others(self, k: int = N - 1) -> list[int]:
        return [i for i in range(N) if i != self.me][:k]

    def inputs(self, action: tuple[Any, ...]) -> list[Input]:
        kind = action[0]
        if kind == "start":
            return [StartHeight(action[1] if len(action) > 1 else 1)]
        if kind == "proposal":  # ("proposal", round, name, pol)
            return [make_proposal(action[1], action[2], action[3] if len(action) > 3 else -1)]
        if kind == "valid":  # ("valid", name, bool)
            return [BlockValidity(1, self.core.round, compute_block_id(BLOCKS[action[1]]), action[2])]
        if kind in ("prevotes", "precommits"):  # (kind, round, name|None, k others)
            vote_type = VoteType.PREVOTE if kind == "prevotes" else VoteType.PRECOMMIT
            k = action[3] if len(action) > 3 else N - 1
            return [sign_vote(v, vote_type, action[1], action[2]) for v in self.others(k)]
        if kind == "vote":  # ("vote", "prevote"|"precommit", k-th other, round, name|None)
            vote_type = VoteType.PREVOTE if action[1] == "prevote" else VoteType.PRECOMMIT
            return [sign_vote(self.others()[action[2]], vote_type, action[3], action[4])]
        if kind == "proposal_by":  # ("proposal_by", round, name, validator index)
            return [make_proposal(action[1], action[2], by=action[3])]
        if kind == "input":  # ("input", raw Input)
            return [action[1]]
        if kind == "timeout":  # ("timeout", step, round)
            return [Timeout(1, action[2], action[1])]
        if kind == "block":  # ("block", round, name)
            return [ProposalBlock(1, action[1], BLOCKS[action[2]])]
        raise ValueError(kind)

    def run(self, action: tuple[Any, ...]) -> list[Output]:
        out: list[Output] = []
        for inp in self.inputs(action):
            out.extend(self.core.step(inp))
        return out

    def state(self) -> tuple[int, Step, int, int]:
        c = self.core
        return (c.round, c.current_step, c.locked_round, c.valid_round)


def summarize(outputs: list[Output]) -> list[tuple[Any, ...]]:
    """Outputs as short tuples (WAL appends left out; they are tested on their own)."""
    result: list[tuple[Any, ...]] = []
    for o in outputs:
        if isinstance(o, WalAppend):
            continue
        if isinstance(o, Broadcast):
            m = o.message
            if isinstance(m, SignedVote):
                kind = "prevote" if m.vote.type == VoteType.PREVOTE else "precommit"
                result.append((kind, m.vote.round, block_name(m.vote.block_id)))
            else:
                p = m.signed.proposal
                result.append(("proposal", p.round, p.pol_round, block_name(p.block_id)))
        elif isinstance(o, ScheduleTimeout):
            result.append(("timeout", o.step.name, o.round, o.duration_ms))
        elif isinstance(o, RequestProposal):
            result.append(("request", o.round))
        elif isinstance(o, ValidateBlock):
            result.append(("validate", block_name(o.block_id)))
        elif isinstance(o, Decide):
            result.append(("decide", o.round, block_name(o.block_id)))
        elif isinstance(o, EvidenceFound):
            result.append(("evidence", type(o.evidence).__name__))
    return result
