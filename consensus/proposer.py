"""Proposer selection: weighted round-robin by voting power (CometBFT's proposer priority).

Theory of operation. Every validator carries an integer priority, all zero at the initial
height. One *increment* adds each validator's power to its priority, picks the validator with
the highest priority (ties: the smaller address), and subtracts the total power from the
winner. Before each increment the priorities are rescaled if their spread exceeds 2*T and
centred on their average (integer division truncating toward zero, as in Go); for a static set
starting at zero these are no-ops, but they keep the priorities bounded if a set is ever loaded
with arbitrary priorities.

CometBFT increments once per height and r more times (on a copy) for round r; for a fixed set
that is one sequence of winners, so the proposer of (height h, round r) is the winner of
increment number (h - initial_height) + r. Every node computes the same sequence; over any
window of T increments each validator proposes exactly `power` times, after which all
priorities are back to zero - so the sequence is periodic with period T and the core indexes it
modulo T (a node restarting at height 10^7 does not replay 10^7 increments; the tests check the
periodicity against a reference implementation).

``ProposerSelector`` keeps a checkpoint (priorities before the current height's first
increment) plus the winners computed since, so a height with few rounds costs O(n) per round.
"""

from __future__ import annotations

from consensus.validators import ValidatorSet


def _trunc_div(numerator: int, denominator: int) -> int:
    """Integer division rounding toward zero (Go semantics), for a positive denominator."""
    quotient = abs(numerator) // denominator
    return quotient if numerator >= 0 else -quotient


def increment_priorities(vset: ValidatorSet, priorities: list[int]) -> int:
    """Apply one increment in place; return the index of the winner (the proposer)."""
    total = vset.total_power
    n = len(priorities)
    diff = max(priorities) - min(priorities)
    bound = 2 * total
    if diff > bound:
        ratio = -(-diff // bound)  # ceil
        for i in range(n):
            priorities[i] = _trunc_div(priorities[i], ratio)
    average = _trunc_div(sum(priorities), n)
    validators = vset.validators
    best = -1
    best_priority = 0
    for i in range(n):
        p = priorities[i] - average + validators[i].power
        priorities[i] = p
        if (
            best < 0
            or p > best_priority
            or (p == best_priority and validators[i].address < validators[best].address)
        ):
            best = i
            best_priority = p
    priorities[best] -= total
    return best


class ProposerSelector:
    """proposer(height, round) -> validator index, deterministic across nodes."""

    __slots__ = ("_vset", "_initial_height", "_base", "_base_priorities", "_winners", "_cursor")

    def __init__(self, vset: ValidatorSet, initial_height: int = 1) -> None:
        self._vset = vset
        self._initial_height = initial_height
        self._base = 0
        self._base_priorities = [0] * len(vset)
        self._winners: list[int] = []
        self._cursor = list(self._base_priorities)

    def _sequence_index(self, height: int, round_: int) -> int:
        if height < self._initial_height or round_ < 0:
            raise ValueError("height below the initial height or negative round")
        return (height - self._initial_height + round_) % self._vset.total_power

    def _reset(self) -> None:
        self._base = 0
        self._base_priorities = [0] * len(self._vset)
        self._winners = []
        self._cursor = list(self._base_priorities)

    def winner(self, index: int) -> int:
        if index < self._base:
            self._reset()
        offset = index - self._base
        while len(self._winners) <= offset:
            self._winners.append(increment_priorities(self._vset, self._cursor))
        return self._winners[offset]

    def proposer(self, height: int, round_: int) -> int:
        return self.winner(self._sequence_index(height, round_))

    def advance_to(self, height: int) -> None:
        """Move the checkpoint to `height` round 0 (forget earlier winners)."""
        target = self._sequence_index(height, 0)
        if target < self._base:
            self._reset()
        priorities = list(self._base_priorities)
        for _ in range(target - self._base):
            increment_priorities(self._vset, priorities)
        self._base = target
        self._base_priorities = priorities
        self._winners = []
        self._cursor = list(priorities)
