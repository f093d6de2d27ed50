"""A comparable, immutable summary of a core's replayable state (used to check WAL recovery)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from consensus.codec import Writer
from consensus.types import Step

if TYPE_CHECKING:
    from consensus.core import ConsensusCore


@dataclass(frozen=True, slots=True)
class CoreSnapshot:
    started: bool
    height: int
    round: int
    step: Step
    decided: bytes | None
    locked_round: int
    locked_block_id: bytes | None
    valid_round: int
    valid_block_id: bytes | None
    proposals: tuple[bytes, ...]
    votes: tuple[bytes, ...]
    conflicts: tuple[bytes, ...]
    validity: tuple[tuple[bytes, bool], ...]
    flags: tuple[bool, bool, bool, int]
    certificate: bytes | None

    @staticmethod
    def of(core: ConsensusCore) -> CoreSnapshot:
        proposals = []
        for round_ in sorted(core._proposals):
            w = Writer()
            core._proposals[round_].write(w)
            proposals.append(w.finish())
        votes: list[bytes] = []
        conflicts: list[bytes] = []
        for round_ in sorted(core._votes.rounds):
            rv = core._votes.rounds[round_]
            for vote_set in (rv.prevotes, rv.precommits):
                votes.extend(vote_set.votes[i].encode() for i in sorted(vote_set.votes))
                conflicts.extend(vote_set.conflicts[i].encode() for i in sorted(vote_set.conflicts))
        return CoreSnapshot(
            started=core.started,
            height=core.height,
            round=core.round,
            step=core.current_step,
            decided=core.decided,
            locked_round=core.locked_round,
            locked_block_id=core.locked_block_id,
            valid_round=core.valid_round,
            valid_block_id=core.valid_block_id,
            proposals=tuple(proposals),
            votes=tuple(votes),
            conflicts=tuple(conflicts),
            validity=tuple(sorted(core._validity.items())),
            flags=(
                core._prevote_timeout_scheduled,
                core._l36_done,
                core._precommit_timeout_scheduled,
                core._proposed_round,
            ),
            certificate=None if core._certificate is None else core._certificate.encode(),
        )
