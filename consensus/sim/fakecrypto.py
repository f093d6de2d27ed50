"""An INSECURE, cheap, deterministic signature scheme for simulations only.

signature = sha256(tag | public key | message): anyone who knows the public key can forge it.
It exists so that thousands of simulated heights do not spend their time in ed25519; tests of
sign-bytes, vote sets and certificates use real ed25519 keys.
"""

from __future__ import annotations

import hashlib
from typing import Final

from consensus.crypto import SignRequest

_TAG: Final = b"ita-sim-insecure-sig\x00"


def fake_public_key(seed: bytes) -> bytes:
    return hashlib.sha256(b"ita-sim-key\x00" + seed).digest()


def _signature(public_key: bytes, message: bytes) -> bytes:
    return hashlib.sha256(_TAG + public_key + message).digest()


def fake_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    return signature == _signature(public_key, message)


class FakeSigner:
    __slots__ = ("_public_key",)

    def __init__(self, public_key: bytes) -> None:
        self._public_key = public_key

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign(self, request: SignRequest) -> bytes:
        return _signature(self._public_key, request.sign_bytes)
