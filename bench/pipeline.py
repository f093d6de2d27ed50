"""Validator pipeline benchmark: a validator's own CPU per tx, stage by stage, in one process.

Prints one JSON object per result on stdout (progress goes to stderr):

- ``validator_pipeline``: the work one validator does for each tx outside signature checks and
  the network, on blocks of ``--block-txs`` place orders (devnet.loadgen's order flow from
  ``--accounts`` funded devnet accounts, signed before timing): ``per_tx_us`` by stage, CPU
  microseconds (``time.process_time``) per tx, best total of ``--runs`` fresh runs:
  - ``admit``: what a node does for a client's verified txs (the mempool's precheck, hold and
    release, remembering the verdict, adding it; node/engine.py's admission path);
  - ``propose``: reaping the mempool and ``Application.prepare_proposal``;
  - ``process``: ``Application.process_proposal`` (every validator checks the proposal);
  - ``finalize``: ``Application.finalize_block``: the STF (txs already verified: no signature
    checks), results, app hash;
  - ``commit``: ``Application.commit``: the block store's write (fsync'd) and the block's record;
  - ``update``: the mempool's eviction of the committed txs and its recheck
    (``node.mempool.update_after_commit``, as the node runs it);
  - ``gc``: the node's GC policy after the block (node/heap.py).
  In the same run it times ``node.verify.verify_batch`` (what a signature worker runs per tx,
  on the very same txs) and reports ``ratio_to_verify`` = total per tx / verification per tx:
  the validator's own work in units of one signature check, which a machine's slow phase
  moves far less than either figure (bench/node.py's ``validator_to_worker`` measures the
  same quantity on a live network, where consensus, gossip and the event loop add to it).

Not included: the cost of a height itself (votes, WAL, guard, gossip: bench/node.py's
``validator_ms_per_height``) and gRPC.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import stf  # noqa: E402
from devnet.loadgen import OrderFactory  # noqa: E402
from genesis.devnet import devnet_genesis_dict  # noqa: E402
from genesis.schema import parse_genesis  # noqa: E402
from node.app import Application  # noqa: E402
from node.blockstore import BlockStore  # noqa: E402
from node.config import MempoolConfig  # noqa: E402
from node.heap import HeapPolicy, HeapSettings  # noqa: E402
from node.mempool import Mempool, check_tx_against_state, update_after_commit  # noqa: E402
from node.verify import Verified, verify_batch  # noqa: E402
from sdk.keys import devnet_account_key, devnet_validator_key  # noqa: E402
from stf.config import ChainConfig  # noqa: E402
from stf.signing import tx_hash  # noqa: E402

BLOCK_MS = 200
SUBMIT_BATCH = 50  # txs per client call, as bench/node.py's load clients send them
STAGES = ("admit", "propose", "process", "finalize", "commit", "update", "gc")


def log(message: str) -> None:
    print(f"[bench/pipeline] {message}", file=sys.stderr, flush=True)


def make_chain(accounts: int) -> ChainConfig:
    """A one-validator devnet chain whose genesis is now: the SDK signs with wall-clock nonces,
    which must fall in the nonce window around the block times."""
    genesis = devnet_genesis_dict(1, accounts)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    genesis["genesis_time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return parse_genesis(genesis)


def make_txs(chain: ChainConfig, accounts: int, count: int) -> list[bytes]:
    factory = OrderFactory(chain, [devnet_account_key(i) for i in range(accounts)], 0, None, True)
    return [factory.next_tx() for _ in range(count)]


def run_pipeline(
    chain: ChainConfig, txs: list[bytes], verdicts: list[Verified], block_txs: int
) -> dict[str, float]:
    """One fresh validator (state, store, mempool) through every block; CPU seconds by stage."""
    spent = dict.fromkeys(STAGES, 0.0)
    with tempfile.TemporaryDirectory(prefix="ita-bench-pipeline-") as home:
        store = BlockStore(Path(home) / "store.db", chain.chain_id)
        app = Application(chain, store, 0)
        mempool = Mempool(MempoolConfig(), lambda v: check_tx_against_state(app.state, v))
        proposer = devnet_validator_key(0).address
        heap = HeapPolicy(HeapSettings())
        heap.install()
        block_time = chain.genesis_time_ms + 1_000
        try:
            for first in range(0, len(txs), block_txs):
                t = time.process_time()
                for k in range(first, min(first + block_txs, len(txs)), SUBMIT_BATCH):
                    raws = txs[k : k + SUBMIT_BATCH]
                    digests = [tx_hash(raw) for raw in raws]
                    fresh = [
                        i
                        for i, (raw, d) in enumerate(zip(raws, digests, strict=True))
                        if mempool.precheck(raw, d) is None
                    ]
                    held = sum(len(raws[i]) for i in fresh)
                    mempool.hold(len(fresh), held)
                    mempool.release(len(fresh), held)
                    for i in fresh:
                        verdict = verdicts[k + i]
                        app.verified.remember(verdict.hash)
                        if not mempool.add_verified(raws[i], verdict, digests[i]).accepted:
                            raise SystemExit(f"tx {k + i} was not admitted")
                t = _clock(spent, "admit", t)
                block_time += BLOCK_MS
                height = app.height + 1
                raw = app.prepare_proposal(height, block_time, proposer, mempool.reap(block_txs, 4 << 20))
                t = _clock(spent, "propose", t)
                app.process_proposal(height, raw, block_time)
                t = _clock(spent, "process", t)
                finalized = app.finalize_block(raw)
                t = _clock(spent, "finalize", t)
                committed = app.commit(finalized, b"")
                t = _clock(spent, "commit", t)
                update_after_commit(mempool, app.state, committed)  # what the node runs
                t = _clock(spent, "update", t)
                heap.after_block()
                _clock(spent, "gc", t)
            if len(mempool):
                raise SystemExit(f"{len(mempool)} txs were never committed")
        finally:
            heap.uninstall()
            store.close()
    return spent


def _clock(spent: dict[str, float], stage: str, since: float) -> float:
    now = time.process_time()
    spent[stage] += now - since
    return now


def bench(block_txs: int, blocks: int, accounts: int, runs: int) -> dict[str, Any]:
    chain = make_chain(accounts)
    count = block_txs * blocks
    log(f"signing {count} place orders from {accounts} accounts")
    txs = make_txs(chain, accounts, count)
    verify_s = []
    verdicts: list[Verified] = []
    for _ in range(3):
        t = time.process_time()
        verdicts = verify_batch(txs, chain.chain_id)
        verify_s.append(time.process_time() - t)
    if not all(v.ok for v in verdicts):
        raise SystemExit("a generated tx did not verify")
    best: dict[str, float] | None = None
    for run in range(runs):
        spent = run_pipeline(chain, txs, verdicts, block_txs)
        log(f"run {run + 1}/{runs}: {sum(spent.values()) / count * 1e6:.1f} us per tx")
        if best is None or sum(spent.values()) < sum(best.values()):
            best = spent
    assert best is not None
    total_us = sum(best.values()) / count * 1e6
    verify_us = min(verify_s) / count * 1e6
    return {
        "bench": "validator_pipeline",
        "block_txs": block_txs,
        "blocks": blocks,
        "accounts": accounts,
        "runs": runs,
        "stf_build": stf.BUILD,
        "per_tx_us": {stage: round(best[stage] / count * 1e6, 2) for stage in STAGES},
        "total_us_per_tx": round(total_us, 2),
        "verify_us_per_tx": round(verify_us, 2),
        "ratio_to_verify": round(total_us / verify_us, 3),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-txs", type=int, default=400, help="txs per block")
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--accounts", type=int, default=400, help="funded devnet accounts placing orders")
    parser.add_argument("--runs", type=int, default=3, help="fresh runs; the lowest total is reported")
    args = parser.parse_args()
    record = bench(args.block_txs, args.blocks, args.accounts, args.runs)
    print(json.dumps(record, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
