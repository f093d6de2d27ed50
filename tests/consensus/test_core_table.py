"""Table-driven tests of the consensus core: one row per line of Algorithm 1 (and per guard).

Each row: who "me" is (x: a validator proposing none of rounds 0-2 at height 1; p0/p1: the
proposer of round 0/1), the inputs that set the scene, the input under test, the outputs it
must produce (WAL appends left out) and the resulting (round, step, lockedRound, validRound).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from consensus import (
    CertifiedBlock,
    ConflictingProposalEvidence,
    Decide,
    EvidenceError,
    EvidenceFound,
    ProposalMessage,
    SignedVote,
    Step,
    Vote,
    VoteType,
    compute_block_id,
    verify_commit_certificate,
    verify_evidence,
)
from tests.consensus.harness import CHAIN, VSET, Harness, make_proposal, proposer, role, sign_vote, summarize

PROPOSE, PREVOTE, PRECOMMIT = Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT
START = ("start",)
LOCK_A_R0 = [START, ("proposal", 0, "A"), ("valid", "A", True), ("prevotes", 0, "A", 2)]


@dataclass(frozen=True)
class Row:
    line: str
    what: str
    me: str
    setup: list[tuple[Any, ...]]
    action: tuple[Any, ...]
    expect: list[tuple[Any, ...]]
    state: tuple[int, Step, int, int]


def _stranger_vote() -> SignedVote:
    from consensus import Ed25519Signer, SignRequest
    stranger = Ed25519Signer.from_seed(b"\x07" * 32)
    from consensus import compute_address
    vote = Vote(VoteType.PREVOTE, 1, 0, b"", compute_address(stranger.public_key))
    sig = stranger.sign(SignRequest(1, 0, Step.PREVOTE, vote.sign_bytes(CHAIN)))
    return SignedVote(vote, sig)


def _bad_signature_vote() -> SignedVote:
    good = sign_vote(role("p0") if role("p0") != role("x") else role("p1"), VoteType.PREVOTE, 0, None)
    return SignedVote(good.vote, bytes(64))


def _wrong_block_proposal() -> ProposalMessage:
    good = make_proposal(0, "A")
    return ProposalMessage(good.signed, b"not-block-A")


ROWS = [
    Row("L10-21", "start, not proposer: schedule timeoutPropose(0)", "x", [], START,
        [("timeout", "PROPOSE", 0, 300)], (0, PROPOSE, -1, -1)),
    Row("L14-18", "start as proposer without validValue: getValue()", "p0", [], START,
        [("request", 0), ("timeout", "PROPOSE", 0, 300)], (0, PROPOSE, -1, -1)),
    Row("L19+L22", "application block: propose it and prevote it", "p0", [START], ("block", 0, "A"),
        [("proposal", 0, -1, "A"), ("prevote", 0, "A")], (0, PREVOTE, -1, -1)),
    Row("L18 guard", "block for another round is ignored", "p0", [START], ("block", 1, "A"),
        [], (0, PROPOSE, -1, -1)),
    Row("L22 valid(v)", "proposal: ask the application first", "x", [START], ("proposal", 0, "A"),
        [("validate", "A")], (0, PROPOSE, -1, -1)),
    Row("L22-24", "valid proposal, not locked: prevote id(v)", "x", [START, ("proposal", 0, "A")],
        ("valid", "A", True), [("prevote", 0, "A")], (0, PREVOTE, -1, -1)),
    Row("L22-26", "invalid proposal: prevote nil", "x", [START, ("proposal", 0, "A")],
        ("valid", "A", False), [("prevote", 0, None)], (0, PREVOTE, -1, -1)),
    Row("L23-26", "locked on A, proposal B with vr=-1: prevote nil", "x",
        [*LOCK_A_R0, ("timeout", PRECOMMIT, 0), ("proposal", 1, "B")], ("valid", "B", True),
        [("prevote", 1, None)], (1, PREVOTE, 0, 0)),
    Row("L23-24", "locked on A, proposal A again: prevote A", "x",
        [*LOCK_A_R0, ("timeout", PRECOMMIT, 0)], ("proposal", 1, "A"),
        [("prevote", 1, "A")], (1, PREVOTE, 0, 0)),
    Row("L28-30", "proposal B with POL round 1 >= lockedRound 0: prevote B", "x",
        [*LOCK_A_R0, ("timeout", PRECOMMIT, 0), ("prevotes", 1, "B"), ("timeout", PROPOSE, 1),
         ("timeout", PREVOTE, 1), ("timeout", PRECOMMIT, 1), ("proposal", 2, "B", 1)],
        ("valid", "B", True), [("prevote", 2, "B")], (2, PREVOTE, 0, 0)),
    Row("L28-32", "proposal B with POL round 0 < lockedRound 1 (locked on A): prevote nil", "x",
        [START, ("prevotes", 0, "B"), ("timeout", PROPOSE, 0), ("timeout", PREVOTE, 0),
         ("timeout", PRECOMMIT, 0), ("proposal", 1, "A"), ("valid", "A", True), ("prevotes", 1, "A", 2),
         ("timeout", PRECOMMIT, 1), ("proposal", 2, "B", 0)],
        ("valid", "B", True), [("prevote", 2, None)], (2, PREVOTE, 1, 1)),
    Row("L29 lockedRound = vr", "locked on A in round 1, equivocators make a B polka in round 1: prevote B",
        "x",
        [START, ("timeout", PROPOSE, 0), ("timeout", PREVOTE, 0), ("timeout", PRECOMMIT, 0),
         ("proposal", 1, "A"), ("valid", "A", True), ("prevotes", 1, "A", 2), ("prevotes", 1, "B", 3),
         ("timeout", PRECOMMIT, 1), ("proposal", 2, "B", 1)],
        ("valid", "B", True), [("prevote", 2, "B")], (2, PREVOTE, 1, 1)),
    Row("L28 waits", "proposal with vr=0: prevote once 2f+1 prevotes of round 0 arrive", "x",
        [START, ("timeout", PROPOSE, 0), ("timeout", PREVOTE, 0), ("timeout", PRECOMMIT, 0),
         ("proposal", 1, "A", 0), ("valid", "A", True)],
        ("prevotes", 0, "A"), [("prevote", 1, "A")], (1, PREVOTE, -1, -1)),
    Row("L34-35", "2f+1 prevotes of any kind: schedule timeoutPrevote", "x",
        [START, ("proposal", 0, "A"), ("valid", "A", True)], ("prevotes", 0, None, 2),
        [("timeout", "PREVOTE", 0, 150)], (0, PREVOTE, -1, -1)),
    Row("L44-46", "2f+1 prevotes nil: precommit nil (timeoutPrevote not scheduled twice)", "x",
        [START, ("proposal", 0, "A"), ("valid", "A", True), ("prevotes", 0, None, 2)],
        ("vote", "prevote", 2, 0, None), [("precommit", 0, None)], (0, PRECOMMIT, -1, -1)),
    Row("L36-43", "2f+1 prevotes for the valid proposal in prevote step: lock and precommit", "x",
        [START, ("proposal", 0, "A"), ("valid", "A", True)], ("prevotes", 0, "A", 2),
        [("timeout", "PREVOTE", 0, 150), ("precommit", 0, "A")], (0, PRECOMMIT, 0, 0)),
    Row("L36 step>prevote", "polka after precommitting nil: only validValue/validRound", "x",
        [START, ("proposal", 0, "A"), ("valid", "A", True), ("vote", "prevote", 0, 0, None),
         ("timeout", PREVOTE, 0)],
        ("vote", "prevote", 1, 0, "A"), [], (0, PRECOMMIT, -1, -1)),
    Row("L36 step>prevote", "...and the second A prevote completes the polka", "x",
        [START, ("proposal", 0, "A"), ("valid", "A", True), ("vote", "prevote", 0, 0, None),
         ("timeout", PREVOTE, 0), ("vote", "prevote", 1, 0, "A")],
        ("vote", "prevote", 2, 0, "A"), [], (0, PRECOMMIT, -1, 0)),
    Row("L36 needs proposal", "polka for a block we never saw proposed: no lock", "x",
        [START, ("timeout", PROPOSE, 0)], ("prevotes", 0, "A"),
        [("timeout", "PREVOTE", 0, 150)], (0, PREVOTE, -1, -1)),
    Row("L36 needs valid(v)", "polka for an invalid block: no lock", "x",
        [START, ("proposal", 0, "A"), ("valid", "A", False)], ("prevotes", 0, "A"),
        [("timeout", "PREVOTE", 0, 150)], (0, PREVOTE, -1, -1)),
    Row("L47-48", "2f+1 precommits of any kind: schedule timeoutPrecommit", "x", [START],
        ("precommits", 0, None), [("timeout", "PRECOMMIT", 0, 150)], (0, PROPOSE, -1, -1)),
    Row("L49-51", "proposal + 2f+1 precommits for it: decide", "x",
        [START, ("proposal", 0, "A"), ("valid", "A", True)], ("precommits", 0, "A"),
        [("decide", 0, "A")], (0, PREVOTE, -1, -1)),
    Row("L49 any round", "decide on precommits of an earlier round", "x",
        [START, ("proposal", 0, "A"), ("valid", "A", True), ("timeout", PREVOTE, 0),
         ("timeout", PRECOMMIT, 0)],
        ("precommits", 0, "A"), [("decide", 0, "A")], (1, PROPOSE, -1, -1)),
    Row("L50 waits", "decision waits for valid(v)", "x", [START, ("proposal", 0, "A")],
        ("precommits", 0, "A"), [("timeout", "PRECOMMIT", 0, 150)], (0, PROPOSE, -1, -1)),
    Row("L50 valid", "valid(v) arrives: decide", "x",
        [START, ("proposal", 0, "A"), ("precommits", 0, "A")],
        ("valid", "A", True), [("decide", 0, "A")], (0, PROPOSE, -1, -1)),
    Row("L50 invalid", "invalid v is never decided", "x",
        [START, ("proposal", 0, "A"), ("precommits", 0, "A")],
        ("valid", "A", False), [("prevote", 0, None)], (0, PREVOTE, -1, -1)),
    Row("L55-56", "f+1 votes of round 2: StartRound(2)", "x", [START], ("prevotes", 2, None, 2),
        [("timeout", "PROPOSE", 2, 500)], (2, PROPOSE, -1, -1)),
    Row("L55 f+1", "a single vote of a higher round is not enough", "x", [START], ("prevotes", 2, None, 1),
        [], (0, PROPOSE, -1, -1)),
    Row("L57-60", "timeoutPropose in propose step: prevote nil", "x", [START], ("timeout", PROPOSE, 0),
        [("prevote", 0, None)], (0, PREVOTE, -1, -1)),
    Row("L58 guard", "timeoutPropose after prevoting is stale", "x", [START, ("timeout", PROPOSE, 0)],
        ("timeout", PROPOSE, 0), [], (0, PREVOTE, -1, -1)),
    Row("L61-64", "timeoutPrevote in prevote step: precommit nil", "x", [START, ("timeout", PROPOSE, 0)],
        ("timeout", PREVOTE, 0), [("precommit", 0, None)], (0, PRECOMMIT, -1, -1)),
    Row("L62 guard", "timeoutPrevote in propose step is stale", "x", [START],
        ("timeout", PREVOTE, 0), [], (0, PROPOSE, -1, -1)),
    Row("L65-67", "timeoutPrecommit: StartRound(round+1), longer timeout", "x", [START],
        ("timeout", PRECOMMIT, 0), [("timeout", "PROPOSE", 1, 400)], (1, PROPOSE, -1, -1)),
    Row("L66 guard", "timeoutPrecommit of another round is stale", "x", [START],
        ("timeout", PRECOMMIT, 1), [], (0, PROPOSE, -1, -1)),
    Row("L15-16+L19", "proposer of round 1 re-proposes its validValue with validRound", "p1",
        LOCK_A_R0, ("timeout", PRECOMMIT, 0),
        [("timeout", "PROPOSE", 1, 400), ("proposal", 1, 0, "A"), ("prevote", 1, "A")], (1, PREVOTE, 0, 0)),
    Row("L22 from proposer", "proposal signed by a non-proposer is ignored", "x", [START],
        ("proposal_by", 0, "A", proposer(1)), [], (0, PROPOSE, -1, -1)),
    Row("guard", "proposal whose bytes do not hash to its block id is ignored", "x", [START],
        ("input", _wrong_block_proposal()), [], (0, PROPOSE, -1, -1)),
    Row("guard", "vote from a non-validator is ignored", "x", [START], ("input", _stranger_vote()),
        [], (0, PROPOSE, -1, -1)),
    Row("guard", "vote with a bad signature is ignored", "x", [START], ("input", _bad_signature_vote()),
        [], (0, PROPOSE, -1, -1)),
    Row("evidence", "two prevotes of one validator in one round", "x",
        [START, ("vote", "prevote", 0, 0, "A")],
        ("vote", "prevote", 0, 0, "B"), [("evidence", "DuplicateVoteEvidence")], (0, PROPOSE, -1, -1)),
    Row("evidence", "two proposals of the proposer in one round", "x", [START, ("proposal", 0, "A")],
        ("proposal", 0, "B"), [("evidence", "ConflictingProposalEvidence")], (0, PROPOSE, -1, -1)),
]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.line}: {r.what}" for r in ROWS])
def test_algorithm_line(row: Row) -> None:
    h = Harness(role(row.me))
    for action in row.setup:
        h.run(action)
    outputs = h.run(row.action)
    assert summarize(outputs) == row.expect
    assert h.state() == row.state


def test_roles_are_distinct() -> None:
    assert len({role("p0"), role("p1"), role("p2"), role("x")}) == 4


def test_decision_carries_a_verifiable_certificate() -> None:
    h = Harness(role("x"))
    for action in [START, ("proposal", 0, "A"), ("valid", "A", True)]:
        h.run(action)
    decides = [o for o in h.run(("precommits", 0, "A")) if isinstance(o, Decide)]
    assert len(decides) == 1
    d = decides[0]
    assert d.block == b"block-A" and d.height == 1
    verify_commit_certificate(d.certificate, VSET, CHAIN, 1, compute_block_id(b"block-A"))
    # After the decision the height is closed: more votes produce nothing.
    assert h.run(("vote", "prevote", 0, 1, "B")) == []


def _decided_block() -> tuple[bytes, Any]:
    """Block A and its commit certificate, decided by validator x at height 1."""
    h = Harness(role("x"))
    for action in [START, ("proposal", 0, "A"), ("valid", "A", True)]:
        h.run(action)
    [decide] = [o for o in h.run(("precommits", 0, "A")) if isinstance(o, Decide)]
    return decide.block, decide.certificate


def test_a_certified_block_decides_the_height() -> None:
    """Block sync hands the core a block with its commit certificate: once the application finds
    the block valid, the core decides it without a single vote."""
    block, cert = _decided_block()
    h = Harness(role("p1"))
    h.run(START)
    assert ("validate", "A") in summarize(h.core.step(CertifiedBlock(block, cert)))
    [decide] = [o for o in h.run(("valid", "A", True)) if isinstance(o, Decide)]
    assert (decide.height, decide.block, decide.certificate) == (1, block, cert)
    assert h.core.step(CertifiedBlock(block, cert)) == []  # decided: the height is closed


@pytest.mark.parametrize("forgery", ["other_block", "bad_signatures", "too_few_signers", "other_height"])
def test_a_forged_certified_block_is_refused(forgery: str) -> None:
    block, cert = _decided_block()
    if forgery == "other_block":
        block = b"block-B"  # the certificate is for block A
    elif forgery == "bad_signatures":
        cert = dataclasses.replace(
            cert, signatures=tuple(dataclasses.replace(s, signature=bytes(64)) for s in cert.signatures)
        )
    elif forgery == "too_few_signers":
        cert = dataclasses.replace(cert, signatures=cert.signatures[:1])
    else:
        cert = dataclasses.replace(cert, height=2)
    h = Harness(role("p1"))
    h.run(START)
    assert h.core.step(CertifiedBlock(block, cert)) == []
    assert h.core.decided is None
    # the height goes on by the ordinary votes
    h.run(("proposal", 0, "A"))
    h.run(("valid", "A", True))
    assert any(isinstance(o, Decide) for o in h.run(("precommits", 0, "A")))


def test_a_proposal_with_a_bad_signature_is_ignored() -> None:
    h = Harness(role("x"))
    h.run(START)
    good = make_proposal(0, "A")
    forged = ProposalMessage(dataclasses.replace(good.signed, signature=bytes(64)), good.block)
    assert h.core.step(forged) == []
    assert h.core.fault == "bad_signature"
    assert ("validate", "A") in summarize(h.core.step(good))  # the real one still counts


def test_future_height_messages_are_buffered_until_start_height() -> None:
    h = Harness(role("x"))
    h.run(START)
    early = make_proposal(0, "A", height=2)
    assert h.core.step(early) == []
    outputs = h.core.step(__import__("consensus").StartHeight(2))
    summary = summarize(outputs)
    assert ("validate", "A") in summary


def test_the_future_height_buffer_keeps_validators_messages_within_its_block_budget() -> None:
    """Height+1 messages wait for StartHeight only if a validator sent them, and proposals only
    while their blocks fit in max_future_bytes together: one Byzantine validator's proposals for
    the next height cannot make a node hold blocks without bound."""
    import dataclasses

    from consensus import ConsensusCore, GuardedSigner, StartHeight
    from tests.consensus.harness import CFG, SIGNERS

    h = Harness(role("x"))
    config = dataclasses.replace(CFG, max_future_bytes=len(b"block-B"))  # room for one block
    h.core = ConsensusCore(config, VSET, GuardedSigner(SIGNERS[h.me]), CHAIN)
    h.run(START)
    stranger = _stranger_vote()
    future_vote = Vote(VoteType.PREVOTE, 2, 0, b"", stranger.vote.validator)
    future_stranger = SignedVote(future_vote, stranger.signature)
    assert h.core.step(future_stranger) == []
    assert h.core.step(make_proposal(1, "B", height=2)) == []  # fills the budget
    assert h.core.step(make_proposal(0, "A", height=2)) == []  # beyond it: dropped
    assert len(h.core._next) == 1
    summary = summarize(h.core.step(StartHeight(2)))
    assert ("validate", "B") in summary and ("validate", "A") not in summary


def test_proposals_for_later_rounds_are_kept_within_the_block_budget() -> None:
    """A proposal for a round after ours is kept only while the blocks of such proposals fit in
    max_future_bytes (its proposer could otherwise make us hold a block per round it proposes,
    thousands of rounds ahead); the current round's proposal is always kept."""
    import dataclasses

    from consensus import ConsensusCore, GuardedSigner
    from tests.consensus.harness import CFG, SIGNERS

    h = Harness(role("x"))
    config = dataclasses.replace(CFG, max_future_bytes=len(b"block-B"))  # room for one block ahead
    h.core = ConsensusCore(config, VSET, GuardedSigner(SIGNERS[h.me]), CHAIN)
    h.run(START)
    assert ("validate", "B") in summarize(h.core.step(make_proposal(1, "B")))  # round 1: kept
    assert h.core.step(make_proposal(2, "C")) == []  # round 2: beyond the budget
    assert ("validate", "A") in summarize(h.core.step(make_proposal(0, "A")))  # our round: kept


def test_step_rejects_foreign_objects() -> None:
    h = Harness(role("x"))
    with pytest.raises(TypeError):
        h.core.step("not an input")  # type: ignore[arg-type]


def test_the_core_names_the_senders_fault_for_the_driver() -> None:
    """core.fault says why the last input was refused when its sender is to blame (the driver
    reports the peer); stale or duplicate messages are no one's fault."""
    h = Harness(role("x"))
    h.run(START)
    h.core.step(_bad_signature_vote())
    assert h.core.fault == "bad_signature"
    good = sign_vote(h.others()[0], VoteType.PREVOTE, 0, None)
    h.core.step(good)
    assert h.core.fault is None
    h.core.step(good)  # duplicate
    assert h.core.fault is None
    h.core.step(make_proposal(0, "A", block=b"not block A"))
    assert h.core.fault == "block_mismatch"
    late = sign_vote(h.others()[0], VoteType.PREVOTE, 0, None, height=2)
    h.core.step(SignedVote(late.vote, bytes(64)))  # next height: checked before it is kept
    assert h.core.fault == "bad_signature"
    h.core.step(sign_vote(h.others()[0], VoteType.PREVOTE, 0, None, height=5))  # far ahead: dropped
    assert h.core.fault is None


def test_a_third_proposal_for_a_round_is_dropped_unchecked_as_equivocation() -> None:
    """Conflicting proposals for one round give evidence once; a third one is the proposer's
    misbehaviour and is dropped before its signature check (core.fault names it)."""
    h = Harness(role("x"))
    h.run(START)
    h.run(("proposal", 0, "A"))
    assert ("evidence", "ConflictingProposalEvidence") in summarize(h.core.step(make_proposal(0, "B")))
    third = make_proposal(0, "C")
    unsigned = ProposalMessage(dataclasses.replace(third.signed, signature=bytes(64)), third.block)
    assert h.core.step(unsigned) == []
    assert h.core.fault == "equivocation"


def test_conflicting_proposal_evidence_verifies_and_forgeries_do_not() -> None:
    """What the core reports for two proposals of one round passes verify_evidence (what an
    application would check before punishing); a pair that is not a real conflict does not."""
    h = Harness(role("x"))
    h.run(START)
    h.run(("proposal", 0, "A"))
    [found] = [o for o in h.core.step(make_proposal(0, "B")) if isinstance(o, EvidenceFound)]
    evidence = found.evidence
    assert isinstance(evidence, ConflictingProposalEvidence)
    first, second = make_proposal(0, "B").signed, make_proposal(0, "A").signed
    in_other_order = ConflictingProposalEvidence.of(first, second)
    assert evidence == in_other_order  # canonical: every node that sees the pair reports the same
    verify_evidence(evidence, VSET, CHAIN)
    a, b = evidence.proposal_a, evidence.proposal_b
    forged_b = dataclasses.replace(b, signature=bytes(64))
    forgeries = [  # (evidence, chain id, why it fails)
        (evidence, "another-chain", "bad signature"),
        (ConflictingProposalEvidence.of(a, a), CHAIN, "do not conflict"),
        (ConflictingProposalEvidence.of(a, make_proposal(1, "B").signed), CHAIN, "not for the same"),
        (ConflictingProposalEvidence.of(a, forged_b), CHAIN, "bad signature"),
    ]
    for forged, chain_id, why in forgeries:
        with pytest.raises(EvidenceError, match=why):
            verify_evidence(forged, VSET, chain_id)
