"""Signature-verification benchmark: ed25519 per core (PyNaCl vs cryptography) and the worker pool.

Prints one JSON object per result on stdout (progress goes to stderr):

- ``ed25519_pynacl``: verifications/s in one process with PyNaCl (libsodium),
  ``VerifyKey(pk).verify(msg, sig)`` -- a fresh key object per call, as for
  transactions from many accounts.
- ``ed25519_cryptography``: the same with ``cryptography`` (OpenSSL),
  ``Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)``; ``ratio`` is
  pynacl / cryptography (> 1: PyNaCl is faster). Skipped (with a note) if
  ``cryptography`` is not installed.
- ``ed25519_stf_rule``: ``stf.signing.verify_signature`` (PyNaCl plus the
  explicit S < L check): what a node actually runs per tx.
- ``verify_tx_inline``: ``node.verify.verify_batch`` in this process: full
  stateless admission (SignedTx/TxBody decode, chain id, signature) per tx.
- ``verify_pool``: the same txs through ``node.verifier_pool.VerifierPool`` with
  ``--workers`` processes (default 2) in batches of ``--batch`` (default 256),
  pickling and IPC included; ``speedup`` = pool rate / inline rate.
- ``verify_pool_small_jobs``: what a worker request costs whatever its size. One worker
  checks ``--small-n`` txs sent as async jobs of ``--small-job`` txs (default 9, a client
  sending a few txs per call): ``one_at_a_time`` awaits each job before the next (one request
  per job), ``concurrent`` submits them all at once (the pool merges the queued jobs behind
  its busy worker), ``full_jobs`` uses jobs of ``--batch`` txs. Each reports the owner's and
  the worker's CPU microseconds per tx and the requests sent.

Messages are real tx signing messages (domain tag, chain id, a transfer
body), signed by 64 distinct keys. Timing: ``time.perf_counter`` around the
loop, best of ``--runs`` (default 3); signing happens before timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import nacl.signing  # noqa: E402

from node.procstat import cpu_seconds  # noqa: E402
from node.verifier_pool import VerifierPool  # noqa: E402
from node.verify import Verified, verify_batch  # noqa: E402
from proto.ita.v1 import tx_pb2  # noqa: E402
from sdk import tx as sdk_tx  # noqa: E402
from sdk.keys import Key  # noqa: E402
from stf.signing import signing_message, verify_signature  # noqa: E402

CHAIN_ID = "ita-bench-1"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, separators=(",", ":")), flush=True)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_txs(n: int) -> list[bytes]:
    keys = [Key.from_seed(bytes([i]) * 32) for i in range(64)]
    out = []
    for i in range(n):
        key = keys[i % len(keys)]
        action = sdk_tx.transfer(keys[(i + 1) % 64].address, i + 1)
        body = sdk_tx.tx_body(CHAIN_ID, 1_700_000_000_000 + i, action)
        out.append(sdk_tx.sign_tx(key, CHAIN_ID, body))
    return out


def triples(txs: list[bytes]) -> list[tuple[bytes, bytes, bytes]]:
    out = []
    for raw in txs:
        signed = tx_pb2.SignedTx.FromString(raw)
        out.append((signed.public_key, signed.signature, signing_message(CHAIN_ID, signed.body)))
    return out


def best_rate(n: int, runs: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def cpu_parallelism(workers: int) -> float:
    """How many CPU-bound processes really run at once here (1.0 = none in parallel)."""
    import multiprocessing

    n = 3_000_000
    start = time.perf_counter()
    burn(n)
    one = time.perf_counter() - start
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        pool.map(burn, [10] * workers)
        start = time.perf_counter()
        pool.map(burn, [n] * workers)
        many = time.perf_counter() - start
    return workers * one / many


def bench_pynacl(items: list[tuple[bytes, bytes, bytes]]) -> None:
    for pk, sig, msg in items:
        nacl.signing.VerifyKey(pk).verify(msg, sig)


def bench_stf_rule(items: list[tuple[bytes, bytes, bytes]]) -> None:
    for pk, sig, msg in items:
        verify_signature(pk, sig, msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000, help="verifications per single-process run")
    parser.add_argument("--pool-n", type=int, default=20_000, help="txs per pool run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small-n", type=int, default=9_000, help="txs per small-job pool run")
    parser.add_argument("--small-job", type=int, default=9, help="txs per small job")
    args = parser.parse_args()
    env = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}

    progress(f"signing {max(args.n, args.pool_n, args.small_n)} txs ...")
    txs = make_txs(max(args.n, args.pool_n, args.small_n))
    items = triples(txs[: args.n])

    nacl_rate = best_rate(args.n, args.runs, lambda: bench_pynacl(items))
    emit({"name": "ed25519_pynacl", "verifies_per_s": round(nacl_rate), "n": args.n, **env})

    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        emit({"name": "ed25519_cryptography", "skipped": "cryptography is not installed"})
    else:
        import cryptography

        def bench_cryptography() -> None:
            for pk, sig, msg in items:
                Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)

        crypto_rate = best_rate(args.n, args.runs, bench_cryptography)
        emit({
            "name": "ed25519_cryptography", "verifies_per_s": round(crypto_rate), "n": args.n,
            "cryptography": cryptography.__version__, "ratio": round(nacl_rate / crypto_rate, 3),
            "ratio_means": "pynacl / cryptography", **env,
        })

    stf_rate = best_rate(args.n, args.runs, lambda: bench_stf_rule(items))
    emit({"name": "ed25519_stf_rule", "verifies_per_s": round(stf_rate), "n": args.n, **env})

    pool_txs = txs[: args.pool_n]
    inline_rate = best_rate(args.pool_n, args.runs, lambda: verify_batch(pool_txs, CHAIN_ID))
    emit({"name": "verify_tx_inline", "txs_per_s": round(inline_rate), "n": args.pool_n, **env})

    progress(f"starting {args.workers} workers ...")
    parallelism = cpu_parallelism(args.workers)
    emit({
        "name": "cpu_parallelism", "workers": args.workers,
        "effective_parallel_processes": round(parallelism, 2),
        "note": "pure-Python busy loop in N processes vs 1; bounds any pool speedup", **env,
    })
    with VerifierPool(CHAIN_ID, workers=args.workers, batch_max=args.batch) as pool:
        pool.warm_up()
        results: list[object] = []
        parent_cpu: list[float] = []

        def run_pool() -> None:
            cpu = time.process_time()
            results[:] = pool.verify(pool_txs)
            parent_cpu.append(time.process_time() - cpu)

        pool_rate = best_rate(args.pool_n, args.runs, run_pool)
        if not all(getattr(r, "ok", False) for r in results):
            raise SystemExit("the pool rejected a valid tx")
    emit({
        "name": "verify_pool", "txs_per_s": round(pool_rate), "n": args.pool_n, "workers": args.workers,
        "batch": args.batch, "speedup": round(pool_rate / inline_rate, 3),
        "parent_cpu_us_per_tx": round(min(parent_cpu) / args.pool_n * 1e6, 2), **env,
    })

    small_txs = txs[: args.small_n]
    with VerifierPool(CHAIN_ID, workers=1, batch_max=args.batch) as pool:
        pool.warm_up()
        costs = {
            mode: small_job_cost(pool, small_txs, size, concurrent)
            for mode, size, concurrent in (
                ("one_at_a_time", args.small_job, False),
                ("concurrent", args.small_job, True),
                ("full_jobs", args.batch, True),
            )
        }
    emit({"name": "verify_pool_small_jobs", "n": args.small_n, "job_txs": args.small_job, **costs, **env})


def small_job_cost(pool: VerifierPool, txs: list[bytes], size: int, concurrent: bool) -> dict[str, float]:
    """Owner and worker CPU per tx, and requests, for ``txs`` sent as async jobs of ``size``."""
    jobs = [txs[i : i + size] for i in range(0, len(txs), size)]

    async def run() -> list[list[Verified]]:
        if concurrent:
            return list(await asyncio.gather(*(pool.verify_async(job) for job in jobs)))
        return [await pool.verify_async(job) for job in jobs]

    def worker_cpu() -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in pool.worker_pids())

    requests, owner, worker = pool.requests_sent, time.process_time(), worker_cpu()
    results = asyncio.run(run())
    owner, worker = time.process_time() - owner, worker_cpu() - worker
    if not all(v.ok for batch in results for v in batch):
        raise SystemExit("the pool rejected a valid tx")
    return {
        "owner_cpu_us_per_tx": round(owner / len(txs) * 1e6, 2),
        "worker_cpu_us_per_tx": round(worker / len(txs) * 1e6, 2),
        "requests": pool.requests_sent - requests,
    }


if __name__ == "__main__":
    main()
