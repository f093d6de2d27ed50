"""Configuration of the consensus core (frozen; integers only, durations in milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass

from consensus.types import Step


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """Timeouts grow linearly per round: timeout(r) = base + r * delta (paper: timeoutX(round))."""

    timeout_propose_ms: int = 3000
    timeout_propose_delta_ms: int = 500
    timeout_prevote_ms: int = 1000
    timeout_prevote_delta_ms: int = 500
    timeout_precommit_ms: int = 1000
    timeout_precommit_delta_ms: int = 500
    initial_height: int = 1
    # Votes/proposals for rounds further than this above the current round are dropped
    # (bounds the memory a Byzantine validator can make us spend on far-future rounds).
    max_round_lookahead: int = 10_000
    # A vote or proposal for a round after round_p + 1 that nobody has opened yet opens it only
    # if its sender has opened fewer than this many such rounds at this height (CometBFT's
    # "peer catch-up rounds"); otherwise one Byzantine validator could make us verify and keep
    # two votes for each of max_round_lookahead rounds, and walk them all on every input.
    max_catchup_rounds: int = 2
    # Messages for height+1 kept until StartHeight(height+1) (a cache, not replayable state; see
    # consensus/nextheight.py): verified, one per sender and slot, for rounds below
    # max_future_rounds. max_future_bytes bounds the block bytes of the proposals kept ahead of
    # us, separately for height+1 and for the later rounds of this height (a proposal carries its
    # block, up to the peers' message limit: without a byte bound one Byzantine validator could
    # make us hold thousands of blocks). The current round's proposal is always kept.
    max_future_rounds: int = 8
    max_future_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in (
            "timeout_propose_ms", "timeout_propose_delta_ms", "timeout_prevote_ms",
            "timeout_prevote_delta_ms", "timeout_precommit_ms", "timeout_precommit_delta_ms",
            "max_round_lookahead", "max_catchup_rounds", "max_future_rounds", "max_future_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int")
        if self.initial_height < 1:
            raise ValueError("initial_height must be >= 1")

    def timeout_ms(self, step: Step, round_: int) -> int:
        if step == Step.PROPOSE:
            return self.timeout_propose_ms + round_ * self.timeout_propose_delta_ms
        if step == Step.PREVOTE:
            return self.timeout_prevote_ms + round_ * self.timeout_prevote_delta_ms
        return self.timeout_precommit_ms + round_ * self.timeout_precommit_delta_ms
