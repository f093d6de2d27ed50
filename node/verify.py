"""Stateless transaction checks, run in batches in worker processes.

Theory of operation
- ``verify_tx`` is the stateless part of admission: size, SignedTx/TxBody
  decoding, chain id, ed25519 signature (exactly stf.signing's rule, domain
  tag and chain id included), non-empty action. It never raises: every
  outcome is a ``Verified`` with a stable stf.results.Code.
- The chain id is compared *before* the signature is checked: it is cheaper,
  and stf.signing.signing_message refuses malformed chain ids with a
  ValueError, so such a tx must never reach it.
- Signature verification is CPU-bound and the GIL serializes threads, so
  ``VerifierPool`` runs ``verify_batch`` in worker *processes*
  (ProcessPoolExecutor, forkserver context where available, else spawn --
  never fork, which would copy the node's threads and locks). Work is sent
  in batches to amortize pickling and IPC; results come back in order.
- Workers can run ``nice`` (config ``mempool.verify_nice``, default 0) below the node, so
  that when the cores are busy the owner thread (consensus, STF, admission) gets a core
  first: at 9,500 tx/s on 2 cores that thread spent ~21% of its time in the run queue. A/B on
  bench/node.py (1 validator, 9,000-9,500 tx/s, 5 pairs) showed no clear gain on this shared
  machine (p99 418-1,040 ms either way), so it stays off by default.
- Workers hold no state but the imported modules; a crashed worker surfaces
  as ``VerifierUnavailable`` and the pool must be recreated by the owner.
- A passing ``Verified``'s ``hash`` (the tx hash) is what node.app.VerifiedTxs
  remembers: the hash fixes the key, signature and signed bytes the worker verified.
  ``Verified`` is a NamedTuple: it pickles as a tuple and unpickles without a Python
  ``__init__`` (0.39 us per tx in the owner's result-handling thread; a frozen
  dataclass with a constructor ``__reduce__`` took 1.47 us).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple, TypeVar

from google.protobuf.message import DecodeError

from proto.ita.v1 import tx_pb2
from stf.block import MAX_TX_BYTES
from stf.config import address_of
from stf.results import Code
from stf.signing import SignatureError, signing_message, tx_hash, verify_signature

__all__ = [
    "Verified",
    "VerifierPool",
    "VerifierUnavailable",
    "verify_batch",
    "verify_tx",
]


_T = TypeVar("_T")


class VerifierUnavailable(RuntimeError):
    """The worker pool is broken or closed."""


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


def _noop() -> int:
    return 0


ORPHAN_CHECK_S = 1.0


def _init_worker(owner_pid: int, nice: int) -> None:
    """Worker initializer: lower the worker's priority by `nice` (the node's consensus/STF
    thread must not wait for a core behind signature checks), and exit when the node process
    that owns the pool is gone (kill -9 leaves forkserver children behind otherwise)."""
    if nice > 0:
        os.nice(nice)

    def watch() -> None:
        while True:
            time.sleep(ORPHAN_CHECK_S)
            try:
                os.kill(owner_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # the pid was reused by another user's process: the owner is gone
                os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class VerifierPool:
    """Batches of txs verified in ``workers`` processes."""

    def __init__(self, chain_id: str, workers: int = 2, batch_max: int = 256, nice: int = 0) -> None:
        if workers < 1 or batch_max < 1:
            raise ValueError("workers and batch_max must be >= 1")
        if not 0 <= nice <= 19:
            raise ValueError("nice must be 0..19")
        self.chain_id = chain_id
        self.workers = workers
        self.batch_max = batch_max
        self._executor: ProcessPoolExecutor | None = ProcessPoolExecutor(
            workers, mp_context=_context(), initializer=_init_worker, initargs=(os.getpid(), nice)
        )

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            raise VerifierUnavailable("the verifier pool is closed")
        return self._executor

    def warm_up(self) -> None:
        """Start every worker now rather than on the first batch."""
        futures = [self._pool().submit(_noop) for _ in range(self.workers)]
        self._collect(futures)

    def _submit(self, txs: Sequence[bytes]) -> list[Future[list[Verified]]]:
        pool = self._pool()
        try:
            return [
                pool.submit(verify_batch, list(txs[i : i + self.batch_max]), self.chain_id)
                for i in range(0, len(txs), self.batch_max)
            ]
        except (BrokenProcessPool, RuntimeError) as exc:
            raise VerifierUnavailable(f"verifier pool unavailable: {exc}") from exc

    @staticmethod
    def _collect(futures: Sequence[Future[_T]]) -> list[_T]:
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as exc:
            raise VerifierUnavailable(f"a verifier worker died: {exc}") from exc

    def verify(self, txs: Sequence[bytes]) -> list[Verified]:
        """Blocking: results in the order of ``txs``."""
        futures = self._submit(txs)
        out: list[Verified] = []
        for batch in self._collect(futures):
            out.extend(batch)
        return out

    async def verify_async(self, txs: Sequence[bytes]) -> list[Verified]:
        """For the asyncio node: awaits the batches without blocking the event loop."""
        futures = self._submit(txs)
        try:
            batches = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except BrokenProcessPool as exc:
            raise VerifierUnavailable(f"a verifier worker died: {exc}") from exc
        return [v for batch in batches for v in batch]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
