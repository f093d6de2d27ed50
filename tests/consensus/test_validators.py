"""Validator sets, quorum thresholds and proposer selection."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import ProposerSelector, ValidatorSet, compute_address
from consensus.proposer import increment_priorities


def keys(n: int) -> list[bytes]:
    return [hashlib.sha256(b"pk%d" % i).digest() for i in range(n)]


def test_address_is_sha256_prefix() -> None:
    pk = keys(1)[0]
    assert compute_address(pk) == hashlib.sha256(pk).digest()[:20]
    vset = ValidatorSet([(pk, 5)])
    assert vset.validators[0].address == compute_address(pk)
    assert vset.index_of(compute_address(pk)) == 0
    assert vset.index_of(bytes(20)) is None


@pytest.mark.parametrize(
    "members",
    [[], [(b"short", 1)], [(keys(1)[0], 0)], [(keys(1)[0], -1)], [(keys(1)[0], True)],
     [(keys(1)[0], 1), (keys(1)[0], 2)]],
)
def test_bad_sets_rejected(members: list[tuple[bytes, int]]) -> None:
    with pytest.raises(ValueError):
        ValidatorSet(members)


def test_quorum_thresholds_are_strict() -> None:
    vset = ValidatorSet([(k, 1) for k in keys(4)])
    assert not vset.is_quorum(2) and vset.is_quorum(3)
    assert not vset.is_one_third(1) and vset.is_one_third(2)
    vset = ValidatorSet([(k, 1) for k in keys(3)])  # total 3: 2/3 exactly is not enough
    assert not vset.is_quorum(2) and vset.is_quorum(3)
    weighted = ValidatorSet([(keys(3)[0], 10), (keys(3)[1], 1), (keys(3)[2], 4)])
    assert not weighted.is_quorum(10) and weighted.is_quorum(11)


def naive_swrr(powers: list[int], addresses: list[bytes], count: int) -> list[int]:
    """Reference: smooth weighted round-robin without centring/rescaling."""
    total = sum(powers)
    prio = [0] * len(powers)
    winners = []
    for _ in range(count):
        prio = [p + w for p, w in zip(prio, powers, strict=True)]
        best = max(range(len(prio)), key=lambda i: (prio[i], [-b for b in addresses[i]]))
        prio[best] -= total
        winners.append(best)
    return winners


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=8))
def test_proposer_matches_reference_and_is_proportional(powers: list[int]) -> None:
    vset = ValidatorSet(list(zip(keys(len(powers)), powers, strict=True)))
    sel = ProposerSelector(vset)
    total = sum(powers)
    reference = naive_swrr(powers, [v.address for v in vset.validators], 3 * total)
    assert reference[:total] == reference[total:2 * total] == reference[2 * total:]  # period T
    seq = [sel.proposer(1, r) for r in range(2 * total)]
    assert seq == reference[:2 * total]
    assert [sel.proposer(h, 0) for h in range(1, 2 * total + 1)] == reference[:2 * total]
    window = seq[:total]
    assert [window.count(i) for i in range(len(powers))] == powers


def test_proposer_is_one_sequence_over_heights_and_rounds() -> None:
    vset = ValidatorSet([(k, p) for k, p in zip(keys(5), [3, 1, 4, 1, 5], strict=True)])
    sel = ProposerSelector(vset)
    fresh = ProposerSelector(vset)
    for h in range(1, 30):
        sel.advance_to(h)
        for r in range(4):
            assert sel.proposer(h, r) == fresh.proposer(h + r, 0) == ProposerSelector(vset).proposer(h, r)
    sel.advance_to(3)  # going back recomputes from scratch
    assert sel.proposer(3, 1) == fresh.proposer(4, 0)


def test_equal_powers_rotate_through_everyone() -> None:
    vset = ValidatorSet([(k, 7) for k in keys(4)])
    sel = ProposerSelector(vset)
    assert sorted(sel.proposer(1, r) for r in range(4)) == [0, 1, 2, 3]


def test_priorities_are_centred_and_rescaled() -> None:
    vset = ValidatorSet([(k, 1) for k in keys(3)])
    prio = [1000, -5, 0]  # far outside 2 * total: rescaled first
    winner = increment_priorities(vset, prio)
    assert winner == 0
    assert max(prio) - min(prio) <= 2 * vset.total_power + vset.total_power
