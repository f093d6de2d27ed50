"""The next-height buffer (consensus/nextheight.py): only verified messages take a slot, one
slot per sender and kind, so one Byzantine validator cannot crowd out the honest ones."""

from __future__ import annotations

import dataclasses

from consensus import (
    Ed25519Signer,
    ProposalMessage,
    SignedVote,
    SignRequest,
    StartHeight,
    Step,
    Vote,
    VoteType,
    compute_address,
)
from consensus.nextheight import NextHeightBuffer
from tests.consensus.harness import (
    CFG,
    CHAIN,
    SIGNERS,
    VSET,
    Harness,
    counting_core,
    make_proposal,
    proposer,
    role,
    sign_vote,
    summarize,
)

NEXT = 2  # the buffer tests run with the core at height 1


def _buffer(**config: int) -> NextHeightBuffer:
    buffer = NextHeightBuffer(dataclasses.replace(CFG, **config), VSET, CHAIN)
    buffer.expect(NEXT)
    return buffer


def _forged(voter: int, vote_type: VoteType, round_: int) -> SignedVote:
    """A vote in `voter`'s name signed by someone else (what a Byzantine peer can make)."""
    vote = Vote(vote_type, NEXT, round_, b"", VSET.validators[voter].address)
    other = SIGNERS[(voter + 1) % len(SIGNERS)]
    return SignedVote(vote, other.sign(SignRequest(NEXT, round_, Step.PREVOTE, vote.sign_bytes(CHAIN))))


def test_a_forged_vote_does_not_take_its_victims_slot() -> None:
    buffer = _buffer()
    honest = 1
    assert not buffer.offer(_forged(honest, VoteType.PREVOTE, 0))
    assert buffer.offer(sign_vote(honest, VoteType.PREVOTE, 0, None, height=NEXT))
    assert len(buffer) == 1


def test_a_stranger_or_another_height_gets_no_slot() -> None:
    buffer = _buffer()
    stranger = Ed25519Signer.from_seed(b"\x07" * 32)
    vote = Vote(VoteType.PREVOTE, NEXT, 0, b"", compute_address(stranger.public_key))
    signed = SignedVote(vote, stranger.sign(SignRequest(NEXT, 0, Step.PREVOTE, vote.sign_bytes(CHAIN))))
    assert not buffer.offer(signed)
    assert not buffer.offer(sign_vote(0, VoteType.PREVOTE, 0, None, height=NEXT + 1))
    assert len(buffer) == 0


def test_one_vote_and_one_conflicting_vote_per_validator_round_and_type() -> None:
    buffer = _buffer()
    assert buffer.offer(sign_vote(0, VoteType.PREVOTE, 0, "A", height=NEXT))
    assert not buffer.offer(sign_vote(0, VoteType.PREVOTE, 0, "A", height=NEXT))  # duplicate
    assert buffer.fault is None
    assert buffer.offer(sign_vote(0, VoteType.PREVOTE, 0, "B", height=NEXT))  # equivocation: kept once
    assert not buffer.offer(sign_vote(0, VoteType.PREVOTE, 0, "C", height=NEXT))  # a third: dropped
    assert buffer.fault == "equivocation"
    assert buffer.offer(sign_vote(0, VoteType.PRECOMMIT, 0, "A", height=NEXT))
    assert buffer.offer(sign_vote(0, VoteType.PREVOTE, 1, None, height=NEXT))
    assert len(buffer) == 4


def test_an_equivocation_seen_before_the_height_becomes_evidence_at_start_height() -> None:
    h = Harness(role("x"))
    h.core.step(StartHeight(1))
    voter = next(v for v in range(len(SIGNERS)) if v != h.me)
    h.core.step(sign_vote(voter, VoteType.PREVOTE, 0, "A", height=NEXT))
    h.core.step(sign_vote(voter, VoteType.PREVOTE, 0, "B", height=NEXT))
    assert ("evidence", "DuplicateVoteEvidence") in summarize(h.core.step(StartHeight(NEXT)))


def test_rounds_at_or_beyond_max_future_rounds_are_dropped() -> None:
    buffer = _buffer(max_future_rounds=2)
    assert buffer.offer(sign_vote(0, VoteType.PREVOTE, 1, None, height=NEXT))
    assert not buffer.offer(sign_vote(0, VoteType.PREVOTE, 2, None, height=NEXT))
    assert not buffer.offer(make_proposal(2, "A", height=NEXT))
    assert buffer.offer(make_proposal(1, "A", height=NEXT))


def test_a_proposal_needs_that_rounds_proposer_a_good_signature_and_a_matching_block() -> None:
    buffer = _buffer()
    rightful = proposer(0, NEXT)
    other = (rightful + 1) % len(SIGNERS)
    assert not buffer.offer(make_proposal(0, "A", by=other, height=NEXT))
    good = make_proposal(0, "A", height=NEXT)
    forged = ProposalMessage(dataclasses.replace(good.signed, signature=bytes(64)), good.block)
    assert not buffer.offer(forged)
    assert not buffer.offer(make_proposal(0, "A", height=NEXT, block=b"not block A"))
    assert buffer.offer(good)  # the slot was still free
    assert not buffer.offer(make_proposal(0, "B", height=NEXT))  # one proposal per round
    assert len(buffer) == 1


def test_a_flooding_validator_fills_only_its_own_slots() -> None:
    """Validator 0 sends every vote it can for height+1 and forges votes in the others' names;
    the honest validators' round-0 votes all still find room."""
    rounds = 4
    buffer = _buffer(max_future_rounds=rounds)
    byzantine = 0
    for round_ in range(100):
        for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            buffer.offer(sign_vote(byzantine, vote_type, round_, "A", height=NEXT))
            for victim in range(1, len(SIGNERS)):
                buffer.offer(_forged(victim, vote_type, round_ % rounds))
    for round_ in range(100):  # and conflicting votes for each slot
        for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            buffer.offer(sign_vote(byzantine, vote_type, round_, "B", height=NEXT))
            buffer.offer(sign_vote(byzantine, vote_type, round_, None, height=NEXT))
    assert len(buffer) == 4 * rounds
    for honest in range(1, len(SIGNERS)):
        assert buffer.offer(sign_vote(honest, VoteType.PREVOTE, 0, "A", height=NEXT))
        assert buffer.offer(sign_vote(honest, VoteType.PRECOMMIT, 0, "A", height=NEXT))
    assert len(buffer) == 4 * rounds + 2 * (len(SIGNERS) - 1)


def test_drain_hands_back_the_kept_height_only_and_moves_on() -> None:
    buffer = _buffer()
    vote = sign_vote(0, VoteType.PREVOTE, 0, None, height=NEXT)
    assert buffer.offer(vote)
    assert buffer.drain(NEXT + 1) == []  # the core skipped a height (block sync): nothing fits
    assert buffer.height == NEXT + 2
    buffer.expect(NEXT)
    assert buffer.offer(vote)
    assert buffer.drain(NEXT) == [vote]
    assert buffer.height == NEXT + 1 and len(buffer) == 0
    assert buffer.take_verified(vote) and not buffer.take_verified(vote)


def test_the_core_checks_a_buffered_messages_signature_once() -> None:
    """Votes and the proposal kept for height 2 are verified when they arrive and are not
    verified again when StartHeight(2) replays them; they then count as usual."""
    me = role("x")
    core, calls = counting_core(me)
    early = [make_proposal(0, "A", height=NEXT)] + [
        sign_vote(v, VoteType.PREVOTE, 0, "A", height=NEXT) for v in range(len(SIGNERS)) if v != me
    ]
    for msg in early:
        assert core.step(msg) == []
    assert len(calls) == len(early)
    outputs = core.step(StartHeight(NEXT))
    assert len(calls) == len(early)  # none verified again
    assert ("validate", "A") in summarize(outputs)
    prevotes = core._votes.get(0, VoteType.PREVOTE)
    assert prevotes is not None and len(prevotes.votes) == len(SIGNERS) - 1


def test_only_the_very_message_kept_passes_as_verified() -> None:
    buffer = _buffer()
    vote = sign_vote(0, VoteType.PREVOTE, 0, None, height=NEXT)
    assert buffer.offer(vote)
    assert buffer.drain(NEXT) == [vote]
    assert not buffer.take_verified(SignedVote(vote.vote, bytes(64)))  # same vote, other signature
    assert buffer.take_verified(vote)


def test_a_flood_of_forged_next_height_votes_leaves_the_honest_ones_their_place() -> None:
    """10,001 votes for height 2 in the validators' names with bad signatures (more than the
    10,000 messages the old buffer held, unverified) reach a core at height 1; the honest
    proposal and prevotes that follow are still there at StartHeight(2)."""
    h = Harness(role("x"))
    h.core.step(StartHeight(1))
    others = [v for v in range(len(SIGNERS)) if v != h.me]
    for i in range(10_001):
        voter = others[i % len(others)]
        vote = Vote(VoteType.PREVOTE, NEXT, i % CFG.max_future_rounds, b"", VSET.validators[voter].address)
        assert h.core.step(SignedVote(vote, bytes(64))) == []
    assert len(h.core._next) == 0
    assert h.core.step(make_proposal(0, "A", height=NEXT)) == []
    for v in others:
        assert h.core.step(sign_vote(v, VoteType.PREVOTE, 0, "A", height=NEXT)) == []
    summary = summarize(h.core.step(StartHeight(NEXT)))
    assert ("validate", "A") in summary
    prevotes = h.core._votes.get(0, VoteType.PREVOTE)
    assert prevotes is not None and len(prevotes.votes) == len(others)
