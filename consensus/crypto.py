"""Signing and verification seams of the core.

The core never touches key material directly: it asks a ``Signer`` to sign a ``SignRequest``
(height, round, step, sign-bytes) and checks others' signatures through the validator set's
``Verifier``. Production uses ed25519 (PyNaCl) for both; the node wraps its signer in the
double-sign guard (consensus.signguard) whose state it persists. The simulator plugs in a cheap
insecure scheme (consensus.sim.fakecrypto) so that thousands of seeded runs stay fast.

A signer may refuse (raise ``SignRefused``); the core then simply does not send that message.
Whether a signature was produced never changes the core's state (own messages re-enter the core
as ordinary inputs), which is what makes WAL replay deterministic even when the guard refuses
to re-sign an older message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from consensus.types import PUBKEY_LEN, Step


class SignRefused(Exception):
    """A signer declined to sign (double-sign guard, remote signer unavailable, ...)."""


@dataclass(frozen=True, slots=True)
class SignRequest:
    height: int
    round: int
    step: Step
    sign_bytes: bytes


class Signer(Protocol):
    @property
    def public_key(self) -> bytes: ...

    def sign(self, request: SignRequest) -> bytes:
        """Return a signature over ``request.sign_bytes`` or raise SignRefused."""
        ...


class Verifier(Protocol):
    def __call__(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Verify an ed25519 signature; never raises for malformed keys or signatures."""
    if len(public_key) != PUBKEY_LEN or len(signature) != 64:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


class Ed25519Signer:
    """An unguarded ed25519 signer (wrap it in signguard.GuardedSigner in a validator)."""

    __slots__ = ("_key", "_public_key")

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self._public_key = bytes(key.verify_key)

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        return cls(SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign(self, request: SignRequest) -> bytes:
        return bytes(self._key.sign(request.sign_bytes).signature)
