"""Stateless transaction checks: what a worker process runs (node/verifier_pool.py).

Theory of operation
- ``verify_tx`` is the stateless part of admission: size, SignedTx/TxBody
  decoding, chain id, ed25519 signature (exactly stf.signing's rule, domain
  tag and chain id included), non-empty action. It never raises: every
  outcome is a ``Verified`` with a stable stf.results.Code.
- The chain id is compared *before* the signature is checked: it is cheaper,
  and stf.signing.signing_message refuses malformed chain ids with a
  ValueError, so such a tx must never reach it.
- ``verify_batch`` is the unit of work of a worker process; node.verifier_pool
  runs it off the node's event loop.
- A passing ``Verified``'s ``hash`` (the tx hash) is what node.app.VerifiedTxs
  remembers: the hash fixes the key, signature and signed bytes the worker verified.
  ``Verified`` is a NamedTuple: it pickles as a tuple and unpickles without a Python
  ``__init__`` (0.39 us per tx in the owner; a frozen dataclass with a constructor
  ``__reduce__`` took 1.47 us).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from google.protobuf.message import DecodeError

from proto.ita.v1 import tx_pb2
from stf.block import MAX_TX_BYTES
from stf.config import address_of
from stf.results import Code
from stf.signing import SignatureError, signing_message, tx_hash, verify_signature

__all__ = ["Verified", "verify_batch", "verify_tx"]


class Verified(NamedTuple):
    """Outcome of the stateless checks of one tx (``code == Code.OK`` when it passed)."""

    hash: bytes
    size: int
    code: int
    reason: str = ""
    sender: bytes = b""  # 20-byte address, when decoded
    nonce: int = 0
    action: str = ""  # TxBody oneof name, e.g. "place_order"

    @property
    def ok(self) -> bool:
        return self.code == Code.OK


def _reject(raw: bytes, digest: bytes, code: Code, reason: str) -> Verified:
    return Verified(digest, len(raw), int(code), reason)


def verify_tx(raw: bytes, chain_id: str) -> Verified:
    """Stateless checks of one serialized SignedTx; never raises."""
    digest = tx_hash(raw)
    if len(raw) > MAX_TX_BYTES:
        reason = f"transaction is {len(raw)} bytes; at most {MAX_TX_BYTES}"
        return _reject(raw, digest, Code.TX_TOO_LARGE, reason)
    try:
        signed = tx_pb2.SignedTx.FromString(raw)
        body = tx_pb2.TxBody.FromString(signed.body)
    except DecodeError as exc:
        return _reject(raw, digest, Code.MALFORMED_TX, f"not a SignedTx/TxBody protobuf: {exc}")
    if body.chain_id != chain_id:
        reason = f"transaction is for chain {body.chain_id!r}, this is {chain_id!r}"
        return _reject(raw, digest, Code.WRONG_CHAIN_ID, reason)
    message = signing_message(chain_id, signed.body)
    try:
        verify_signature(signed.public_key, signed.signature, message)
    except SignatureError as exc:
        return _reject(raw, digest, Code.BAD_SIGNATURE, f"signature rejected: {exc.reason}")
    action = body.WhichOneof("action")
    if action is None:
        return _reject(raw, digest, Code.EMPTY_ACTION, "transaction carries no action")
    return Verified(digest, len(raw), int(Code.OK), "", address_of(signed.public_key), body.nonce, action)


def verify_batch(txs: Sequence[bytes], chain_id: str) -> list[Verified]:
    """``verify_tx`` over a batch, in order (the unit of work of a worker process)."""
    out = []
    for raw in txs:
        try:
            out.append(verify_tx(raw, chain_id))
        except Exception as exc:  # a worker must survive any input
            out.append(_reject(raw, tx_hash(raw), Code.MALFORMED_TX, f"unverifiable: {type(exc).__name__}"))
    return out
