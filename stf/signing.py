"""Transaction signatures: what is signed, how it is checked, how a tx is named.

Theory of operation
-------------------
A client serializes a ``TxBody`` once and signs

    TX_DOMAIN_TAG || u8(len(chain_id)) || chain_id || body

where ``body`` is the exact serialized bytes carried unchanged in
``SignedTx.body``. Nothing is ever re-encoded before verification, so two
encoders that disagree on field order cannot make a valid tx invalid. The
domain tag separates tx signatures from every other thing a key might sign
(votes, proposals); the length-prefixed chain id makes a tx for one chain
invalid on every other chain.

Acceptance is exactly libsodium's ``crypto_sign_verify_detached`` (PyNaCl's
``VerifyKey.verify``), which rejects non-canonical S, small-order R and A and
non-canonical point encodings, plus an explicit ``S < L`` check done here first
so the rule does not depend on the library version. The (costly) public-key
validity test is only run once verification has failed, to give the precise
reason ``bad_public_key``; the accept/reject decision never depends on it.

The reason codes of ``SignatureError`` are stable strings and may end up in
block results; do not rename them.

This module is part of ``stf/``: it must stay pure and deterministic.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Final

import nacl.bindings
import nacl.exceptions

from stf.config import address_of

__all__ = [
    "ADDRESS_LEN",
    "CHAIN_ID_MAX_LEN",
    "ED25519_L",
    "PUBLIC_KEY_LEN",
    "SIGNATURE_LEN",
    "TX_DOMAIN_TAG",
    "TX_HASH_LEN",
    "SignatureError",
    "address_of",
    "format_address",
    "is_valid_chain_id",
    "is_valid_public_key",
    "parse_address",
    "signing_message",
    "tx_hash",
    "verify_signature",
]

TX_DOMAIN_TAG: Final = b"ita/tx/v1\x00"
PUBLIC_KEY_LEN: Final = 32
SIGNATURE_LEN: Final = 64
ADDRESS_LEN: Final = 20
TX_HASH_LEN: Final = 32
CHAIN_ID_MAX_LEN: Final = 64
# Order of the ed25519 base point (the group order of the prime-order subgroup).
ED25519_L: Final = 2**252 + 27742317777372353535851937790883648493

_CHAIN_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")

if not nacl.bindings.has_crypto_core_ed25519:  # pragma: no cover - PyNaCl wheels always have it
    raise ImportError("stf.signing needs a libsodium build with crypto_core_ed25519")


class SignatureError(ValueError):
    """A signature (or the key it claims) is unacceptable.

    ``reason`` is one of: ``bad_public_key_length``, ``bad_signature_length``,
    ``non_canonical_signature``, ``bad_public_key``, ``bad_signature``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def is_valid_chain_id(chain_id: str) -> bool:
    """1..64 characters of ``[A-Za-z0-9._-]`` (so also 1..64 UTF-8 bytes)."""
    return isinstance(chain_id, str) and _CHAIN_ID_RE.fullmatch(chain_id) is not None


def _message_prefix(chain_id: str) -> bytes:
    """domain tag || u8 len || chain id; ValueError for an invalid chain id."""
    if not is_valid_chain_id(chain_id):
        raise ValueError(f"invalid chain id {chain_id!r}: need 1..64 characters of [A-Za-z0-9._-]")
    encoded = chain_id.encode("ascii")
    return TX_DOMAIN_TAG + bytes((len(encoded),)) + encoded


# A node signs and checks for one chain, tools and tests for a few; errors are never cached.
_cached_message_prefix = functools.lru_cache(maxsize=16)(_message_prefix)


def signing_message(chain_id: str, body: bytes) -> bytes:
    """The exact bytes an account signs for a tx with serialized body ``body``."""
    prefix = _cached_message_prefix(chain_id) if isinstance(chain_id, str) else _message_prefix(chain_id)
    if not isinstance(body, bytes):
        raise TypeError(f"body must be bytes, got {type(body).__name__}")
    return prefix + body


def is_valid_public_key(public_key: bytes) -> bool:
    """True iff ``public_key`` is a canonical encoding of a point of the prime-order subgroup.

    Costs about as much as one verification; use it on cold paths (genesis,
    error classification), not per transaction.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LEN:
        return False
    return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(public_key))


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Return if ``signature`` is a valid ed25519 signature of ``message``; else raise SignatureError."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LEN:
        raise SignatureError("bad_public_key_length", f"public key must be {PUBLIC_KEY_LEN} bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
        raise SignatureError("bad_signature_length", f"signature must be {SIGNATURE_LEN} bytes")
    if int.from_bytes(signature[32:], "little") >= ED25519_L:
        raise SignatureError("non_canonical_signature", "signature scalar S is not below the group order L")
    try:  # what nacl.signing.VerifyKey(public_key).verify(message, signature) runs, minus its wrapper
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        if not is_valid_public_key(public_key):
            raise SignatureError(
                "bad_public_key", "public key is not a valid prime-order ed25519 point"
            ) from None
        raise SignatureError("bad_signature", "signature does not verify") from None


def tx_hash(signed_tx_bytes: bytes) -> bytes:
    """The 32-byte id of a transaction: SHA-256 of the exact SignedTx bytes."""
    if not isinstance(signed_tx_bytes, bytes):
        raise TypeError(f"signed tx must be bytes, got {type(signed_tx_bytes).__name__}")
    return hashlib.sha256(signed_tx_bytes).digest()


def format_address(addr: bytes) -> str:
    """``0x`` followed by 40 lowercase hex digits."""
    if not isinstance(addr, bytes) or len(addr) != ADDRESS_LEN:
        raise ValueError(f"an address is {ADDRESS_LEN} bytes, got {addr!r}")
    return "0x" + addr.hex()


def parse_address(text: str) -> bytes:
    """Parse ``0x`` + exactly 40 hex digits (either case) into 20 bytes; anything else is a ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"address must be a string, got {type(text).__name__}")
    if not text.startswith("0x"):
        raise ValueError(f"address {text!r} must start with '0x'")
    if _ADDRESS_RE.fullmatch(text) is None:
        raise ValueError(f"address {text!r} must be '0x' followed by exactly 40 hex digits")
    return bytes.fromhex(text[2:])
