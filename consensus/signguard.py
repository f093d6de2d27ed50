"""Double-sign guard: the pure decision, and a signer wrapper that applies it.

Theory of operation (CometBFT's priv_validator_state.json): the guard remembers the last thing
it signed as (height, round, step, sign-bytes), ordered lexicographically by (height, round,
step) with step proposal < prevote < precommit. A new request is

- SIGN     if its (height, round, step) is strictly higher than the last one;
- RESIGN   if it is the same (height, round, step) with identical sign-bytes (a retry or replay:
           ed25519 is deterministic, so the same signature comes out again);
- REFUSE   if it is lower (a regression), or the same position with different sign-bytes
           (that would be equivocation).

``GuardedSigner`` persists the new state through a callback *before* signing, so a signature can
never leave the process without the state that forbids its conflicting twin being durable. The
node's callback does the fsync + atomic rename; the decision itself lives here and is pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from consensus.crypto import Signer, SignRefused, SignRequest
from consensus.types import Step


@dataclass(frozen=True, slots=True)
class SignState:
    height: int
    round: int
    step: Step
    sign_bytes: bytes

    def position(self) -> tuple[int, int, int]:
        return (self.height, self.round, int(self.step))


class GuardDecision(Enum):
    SIGN = "sign"
    RESIGN = "resign"
    REFUSE_REGRESSION = "refuse-regression"
    REFUSE_CONFLICT = "refuse-conflict"


def check_sign_request(last: SignState | None, request: SignRequest) -> GuardDecision:
    """The pure double-sign rule: may ``request`` be signed given the last signed state?"""
    if last is None:
        return GuardDecision.SIGN
    position = (request.height, request.round, int(request.step))
    if position > last.position():
        return GuardDecision.SIGN
    if position < last.position():
        return GuardDecision.REFUSE_REGRESSION
    if request.sign_bytes == last.sign_bytes:
        return GuardDecision.RESIGN
    return GuardDecision.REFUSE_CONFLICT


class GuardedSigner:
    """Wraps a Signer with the double-sign guard; ``persist`` must durably store the new state."""

    __slots__ = ("_inner", "_last", "_persist")

    def __init__(
        self,
        inner: Signer,
        last: SignState | None = None,
        persist: Callable[[SignState], None] | None = None,
    ) -> None:
        self._inner = inner
        self._last = last
        self._persist = persist

    @property
    def public_key(self) -> bytes:
        return self._inner.public_key

    @property
    def last(self) -> SignState | None:
        return self._last

    def sign(self, request: SignRequest) -> bytes:
        decision = check_sign_request(self._last, request)
        if decision is GuardDecision.REFUSE_REGRESSION or decision is GuardDecision.REFUSE_CONFLICT:
            raise SignRefused(f"{decision.value} at {request.height}/{request.round}/{request.step.name}")
        if decision is GuardDecision.SIGN:
            state = SignState(request.height, request.round, request.step, request.sign_bytes)
            if self._persist is not None:
                self._persist(state)
            self._last = state
        return self._inner.sign(request)
