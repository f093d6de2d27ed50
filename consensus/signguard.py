"""Double-sign guard: the pure decision, a signer wrapper that applies it, and vote recovery.

Theory of operation (CometBFT's priv_validator_state.json): the guard remembers the last thing
it signed as (height, round, step, sign-bytes), ordered lexicographically by (height, round,
step) with step proposal < prevote < precommit. A new request is

- SIGN     if its (height, round, step) is strictly higher than the last one;
- RESIGN   if it is the same (height, round, step) with identical sign-bytes (a retry or replay:
           the stored signature is returned again);
- REFUSE   if it is lower (a regression), or the same position with different sign-bytes
           (that would be equivocation).

``GuardedSigner`` signs in memory, then persists the new state through a callback, and only
then returns the signature: a signature never leaves the process before the state that forbids
its conflicting twin is durable. The node's callback does the fsync + atomic rename. With
``deferred=True`` the signer persists at ``flush()`` instead: the owner of a sans-I/O core calls
it after each ``core.step`` and before carrying out any of the step's outputs, which is still
before a signature can leave the process (signatures leave only through those outputs), and
pays one durable write for all the signatures of a step (a lone validator signs its proposal,
prevote and precommit in one step). The in-memory state decides every request either way; a
crash before the flush loses only signatures nobody else has seen.

The persisted state keeps the few most recent signatures (one step of the core signs at most a
proposal, a prevote and a precommit), not just the last: if the process dies after signing but
before the WAL append of the signed vote, the vote would otherwise be lost for good (the guard
refuses to sign anything else in that slot), which can stall a round. After WAL replay the node
feeds ``recover_signed_votes(...)`` back into the core, so every vote we ever signed is known
to the core and reaches the network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from consensus.crypto import Signer, SignRefused, SignRequest
from consensus.messages import SignedVote, Vote
from consensus.types import Step

RECENT_KEPT: Final = 4


@dataclass(frozen=True, slots=True)
class SignState:
    height: int
    round: int
    step: Step
    sign_bytes: bytes
    signature: bytes = b""

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
    """Wraps a Signer with the double-sign guard.

    ``persist`` receives the most recent signed states (oldest first, the last one is the guard
    position) and must store them durably before returning; if it raises, nothing is signed.
    ``deferred``: ``persist`` runs at ``flush()`` rather than in ``sign`` (see the module doc);
    the caller must flush before any signature made since the last flush leaves the process.
    """

    __slots__ = ("_inner", "_recent", "_persist", "_deferred", "_unpersisted")

    def __init__(
        self,
        inner: Signer,
        recent: Sequence[SignState] = (),
        persist: Callable[[tuple[SignState, ...]], None] | None = None,
        deferred: bool = False,
    ) -> None:
        self._inner = inner
        self._recent = tuple(recent)[-RECENT_KEPT:]
        self._persist = persist
        self._deferred = deferred
        self._unpersisted = False

    @property
    def public_key(self) -> bytes:
        return self._inner.public_key

    @property
    def last(self) -> SignState | None:
        return self._recent[-1] if self._recent else None

    @property
    def recent(self) -> tuple[SignState, ...]:
        return self._recent

    def sign(self, request: SignRequest) -> bytes:
        last = self.last
        decision = check_sign_request(last, request)
        if decision is GuardDecision.RESIGN and last is not None and last.signature:
            return last.signature
        if decision is GuardDecision.REFUSE_REGRESSION or decision is GuardDecision.REFUSE_CONFLICT:
            raise SignRefused(f"{decision.value} at {request.height}/{request.round}/{request.step.name}")
        signature = self._inner.sign(request)
        state = SignState(request.height, request.round, request.step, request.sign_bytes, signature)
        recent = (*self._recent, state)[-RECENT_KEPT:] if decision is GuardDecision.SIGN else self._recent
        if self._persist is not None and recent != self._recent:
            if self._deferred:
                self._unpersisted = True
            else:
                self._persist(recent)
        self._recent = recent
        return signature

    @property
    def unpersisted(self) -> bool:
        """Deferred mode: a signature was made since the last flush."""
        return self._unpersisted

    def flush(self) -> None:
        """Deferred mode: durably store the states signed since the last flush (no-op if none).
        If ``persist`` raises, the signatures stay unpersisted and must not leave the process."""
        if self._unpersisted and self._persist is not None:
            self._persist(self._recent)
            self._unpersisted = False


def recover_signed_votes(recent: Sequence[SignState], chain_id: str, address: bytes) -> list[SignedVote]:
    """The votes among the guard's recent signatures, ready to feed back into the core."""
    votes: list[SignedVote] = []
    for state in recent:
        if state.step == Step.PROPOSE or not state.signature:
            continue
        vote = Vote.from_sign_bytes(state.sign_bytes, chain_id, address)
        if vote is not None:
            votes.append(SignedVote(vote, state.signature))
    return votes
