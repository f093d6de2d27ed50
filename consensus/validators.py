"""Validator sets: public keys, voting power, addresses, quorum thresholds.

Quorums are stated on voting power, never on counts: with total power T, "2f+1" means
strictly more than 2/3 of T (3*p > 2*T) and "f+1" means strictly more than 1/3 of T (3*p > T).
Integer arithmetic only. The set is immutable and its order (the genesis order) is the
validator index used everywhere in the core; it is identical on every node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from consensus.crypto import Verifier, ed25519_verify
from consensus.types import PUBKEY_LEN, compute_address

MAX_TOTAL_POWER: Final = (1 << 63) // 8  # CometBFT's MaxTotalVotingPower


@dataclass(frozen=True, slots=True)
class Validator:
    public_key: bytes
    power: int
    address: bytes


class ValidatorSet:
    """An ordered, immutable set of validators with a pluggable signature verifier."""

    __slots__ = ("validators", "total_power", "_by_address", "verifier")

    def __init__(self, members: Sequence[tuple[bytes, int]], verifier: Verifier = ed25519_verify) -> None:
        if not members:
            raise ValueError("validator set must not be empty")
        validators: list[Validator] = []
        by_address: dict[bytes, int] = {}
        total = 0
        for public_key, power in members:
            if len(public_key) != PUBKEY_LEN:
                raise ValueError("validator public key must be 32 bytes")
            if isinstance(power, bool) or not isinstance(power, int) or power <= 0:
                raise ValueError(f"validator power must be a positive int, got {power!r}")
            address = compute_address(public_key)
            if address in by_address:
                raise ValueError(f"duplicate validator {address.hex()}")
            by_address[address] = len(validators)
            validators.append(Validator(bytes(public_key), power, address))
            total += power
        if total > MAX_TOTAL_POWER:
            raise ValueError("total voting power too large")
        self.validators: tuple[Validator, ...] = tuple(validators)
        self.total_power: int = total
        self._by_address = by_address
        self.verifier: Verifier = verifier

    def __len__(self) -> int:
        return len(self.validators)

    def index_of(self, address: bytes) -> int | None:
        return self._by_address.get(address)

    def power_of(self, index: int) -> int:
        return self.validators[index].power

    def is_quorum(self, power: int) -> bool:
        """Strictly more than 2/3 of the total power (the paper's 2f+1)."""
        return 3 * power > 2 * self.total_power

    def is_one_third(self, power: int) -> bool:
        """Strictly more than 1/3 of the total power (the paper's f+1)."""
        return 3 * power > self.total_power

    def verify(self, index: int, message: bytes, signature: bytes) -> bool:
        return self.verifier(self.validators[index].public_key, message, signature)

    def members(self) -> list[tuple[bytes, int]]:
        return [(v.public_key, v.power) for v in self.validators]
