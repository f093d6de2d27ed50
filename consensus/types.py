"""Small shared types of the consensus core: heights, rounds, steps, vote types, block ids.

A block id is the sha256 of the opaque block bytes (32 bytes); ``NIL`` (the empty byte string)
stands for the paper's ``nil`` value in votes. An address is the first 20 bytes of
sha256(public key), as everywhere else in ita.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum
from typing import Final

NIL: Final = b""
BLOCK_ID_LEN: Final = 32
ADDRESS_LEN: Final = 20
PUBKEY_LEN: Final = 32
SIGNATURE_MAX_LEN: Final = 128


class VoteType(IntEnum):
    """Type byte of a vote; also used in sign-bytes (values are part of the wire format)."""

    PREVOTE = 1
    PRECOMMIT = 2


class Step(IntEnum):
    """Step of a round (paper: step_p). Ordered: PROPOSE < PREVOTE < PRECOMMIT.

    The values double as the signing step of the double-sign guard (proposal=1, prevote=2,
    precommit=3), as in CometBFT's priv_validator_state.
    """

    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


def step_of_vote(vote_type: VoteType) -> Step:
    return Step.PREVOTE if vote_type == VoteType.PREVOTE else Step.PRECOMMIT


def compute_block_id(block: bytes) -> bytes:
    """The 32-byte id of opaque block bytes: sha256(block)."""
    return hashlib.sha256(block).digest()


def compute_address(public_key: bytes) -> bytes:
    """A validator's address: the first 20 bytes of sha256(public key)."""
    return hashlib.sha256(public_key).digest()[:ADDRESS_LEN]


def is_block_id(value: bytes) -> bool:
    """True for a real block id (32 bytes); False for NIL or anything malformed."""
    return len(value) == BLOCK_ID_LEN
