"""Rounds ahead of round_p + 1 are opened within each validator's catch-up budget
(ConsensusConfig.max_catchup_rounds, CometBFT's peer catch-up rounds): one Byzantine validator
cannot make a core verify and keep votes for thousands of rounds, and honest validators that
are ahead still move the core (L55 round skip, L49 decision)."""

from __future__ import annotations

from consensus import (
    Decide,
    SignedVote,
    StartHeight,
    Vote,
    VoteType,
    compute_block_id,
)
from tests.consensus.harness import (
    BLOCKS,
    CFG,
    SIGNERS,
    VSET,
    Harness,
    counting_core,
    make_proposal,
    role,
    sign_vote,
    summarize,
)


def test_one_validator_opens_at_most_its_budget_of_rounds_ahead() -> None:
    me = role("x")
    core, calls = counting_core(me)
    byzantine = next(v for v in range(len(SIGNERS)) if v != me)
    for round_ in range(5, 505):
        for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            core.step(sign_vote(byzantine, vote_type, round_, None))
    budget = CFG.max_catchup_rounds
    assert sorted(core._votes.rounds) == [5, 6][:budget]
    assert len(calls) == 2 * budget  # the rest were dropped before any signature check
    assert core.round == 0


def test_rounds_up_to_round_plus_one_and_opened_rounds_cost_no_budget() -> None:
    me = role("x")
    core, _ = counting_core(me)
    others = [v for v in range(len(SIGNERS)) if v != me]
    byzantine = others[0]
    core.step(sign_vote(byzantine, VoteType.PREVOTE, 1, None))  # round_p + 1: free
    core.step(sign_vote(byzantine, VoteType.PREVOTE, 9, None))  # opens 9
    core.step(sign_vote(others[1], VoteType.PREVOTE, 9, None))  # 9 is open: free for others[1]
    assert core._catchup == {byzantine: {9: None}}


def test_forged_votes_do_not_spend_their_victims_budget() -> None:
    h = Harness(role("x"))
    h.core.step(StartHeight(1))
    victim = next(v for v in range(len(SIGNERS)) if v != h.me)
    address = VSET.validators[victim].address
    for round_ in range(10, 20):
        assert h.core.step(SignedVote(Vote(VoteType.PREVOTE, 1, round_, b"", address), bytes(64))) == []
    assert h.core._catchup == {}
    h.core.step(sign_vote(victim, VoteType.PREVOTE, 30, None))
    assert 30 in h.core._votes.rounds


def test_honest_validators_ahead_still_make_the_core_skip_rounds_after_a_flood() -> None:
    """A Byzantine validator spends its budget on rounds 50 and 51; two honest validators
    (f+1 of 4) at round 7 still open round 7 and the core skips to it (L55)."""
    me = role("x")
    core, _ = counting_core(me)
    others = [v for v in range(len(SIGNERS)) if v != me]
    byzantine, honest = others[0], others[1:]
    for round_ in range(50, 60):
        core.step(sign_vote(byzantine, VoteType.PREVOTE, round_, None))
    for v in honest:
        core.step(sign_vote(v, VoteType.PREVOTE, 7, None))
    assert core.round == 7


def test_a_decision_far_ahead_still_lands() -> None:
    """Three validators decided block A in round 12 while we sat in round 0: the proposal and
    their precommits open round 12 once and the core decides (L49)."""
    h = Harness(role("x"))
    h.core.step(StartHeight(1))
    outputs = h.core.step(make_proposal(12, "A"))
    assert ("validate", "A") in summarize(outputs)
    h.run(("valid", "A", True))
    for v in h.others():
        outputs = h.core.step(sign_vote(v, VoteType.PRECOMMIT, 12, "A"))
    assert h.core.decided == compute_block_id(BLOCKS["A"])
    assert any(isinstance(o, Decide) and o.round == 12 for o in outputs)
