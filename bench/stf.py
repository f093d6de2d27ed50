"""STF benchmark: apply throughput against orderly-chaos, and memory for 1M resting orders.

Prints one JSON object per result on stdout (progress goes to stderr):

- ``stf_apply``: one seeded workload of N operations on one market (default
  200,000: ~70% limit orders on an integer tick grid, sells mid-10..mid+50 and
  buys mid-50..mid+10 ticks, sizes 1-100 lots; ~25% cancels of orders resting
  at that moment; ~5% market orders) applied through ``stf.block.apply_block``
  (protobuf decode, nonces, fees, positions, events, app-hash commit at every
  block end; signatures excluded via ``skip_signature_check``), and the same
  operations applied to ``orderly_chaos.LimitOrderBook`` (price-time matching,
  C++ core behind ctypes). ``ratio = ops_per_s / peer_ops_per_s``.
- ``stf_memory``: resident memory of a fresh process holding a state with 1M
  resting orders built through the same apply path.

How the workload stays identical on both sides
- ita applies, within a block, cancels first and then the other transactions
  (DESIGN.md). The generator therefore only aims a block's cancels at orders
  that rest when the block *starts*, and the peer replays the *effective*
  order ita uses (per block: its cancels, then its orders, each in proposer
  order). ita's blocks carry the transactions in proposer order (cancels mixed
  in). The generator simulates every block on a reference orderly-chaos book to
  know which orders rest.
- ita assigns order ids itself (``state.next_order_id``, +1 per executed order,
  market orders included, in execution order); the peer is given the same ids.
- Buy orders come only from even-numbered accounts and sell orders only from
  odd-numbered ones, so an order can never meet one of its own account's orders
  and ita's self-trade prevention never fires.
- After timing, the fill counts (ita TRADE events vs peer trade callbacks) must
  agree, and the resting orders (id, price, size) of both books must be equal.

Builds: ``build`` says which STF ran in this process: ``pure`` (stf/) or ``compiled`` (the
mypyc build in build/fast from ``make fast``, chosen with ``ITA_FAST=1``). A pure run also times
the compiled build, when a fresh one exists, in a child process on the very same signed blocks
(it must reach the same app hash and fills) and reports it under ``compiled`` in both records.

Timing: ``time.perf_counter`` around the whole apply loop, best of ``--runs``
(default 3), fresh state/book each run; transactions are built and signed
before timing. Before each timed run: ``gc.collect()`` then ``gc.freeze()``
(what a node does after loading its state), automatic GC stays enabled. ita's
side runs under the GC policy of the processes that run the STF
(node/heap.py ``HeapPolicy`` with the default ``HeapSettings``: young threshold
10,000, collect + freeze after a block at most every 100 ms; its collections are
inside the timed loop). Under CPython's defaults young collections re-scanned each
block's live containers ~every 700 allocations: 0.40-0.54 s of a ~4.2 s compiled
run, against 0.05 s under the policy.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import pickle
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# `python bench/stf.py` puts bench/ first on sys.path, where this very file would shadow the `stf` package.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


# stf/__init__.py picks the build at first import: pure here unless ITA_FAST=1 asks for the compiled one
# (importing stf then fails with the reason if build/fast is missing or stale: run `make fast`).
os.environ["ITA_STF"] = "compiled" if os.environ.get("ITA_FAST") == "1" else "pure"
import orderly_chaos  # noqa: E402
from orderly_chaos import LimitOrderBook, Side, Trade  # noqa: E402

import stf  # noqa: E402
import stf.block  # noqa: E402  (which build: an extension module when compiled)
from node.heap import HeapPolicy, HeapSettings  # noqa: E402
from proto.ita.v1 import tx_pb2  # noqa: E402
from sdk import tx as sdk_tx  # noqa: E402
from sdk.keys import Key  # noqa: E402
from stf.block import BlockHeader, apply_block, genesis_state, skip_signature_check  # noqa: E402
from stf.config import ChainConfig, MarketSpec, address_of  # noqa: E402
from stf.events import TRADE  # noqa: E402
from stf.matching import compute_band  # noqa: E402
from stf.state import State  # noqa: E402

BUILD = "compiled" if str(stf.block.__file__).endswith(".so") else "pure"

CHAIN_ID = "ita-bench-1"
SYMBOL = "BENCH-PERP"
GENESIS_MS = 1_700_000_000_000
BLOCK_MS = 1_000
MID = 100_000  # price units (2 decimals: 1,000.00 USD); tick = 1 price unit
BAND_PPM = 500_000  # oracle +- 50 %: every price of the workload is inside
COLLATERAL = 10**18  # micro-USD per account: margin never limits the workload
MAX_OPEN_ORDERS = 1_000
SEED = 20240611

LIMIT, MARKET, CANCEL = 0, 1, 2
# (kind, is_buy, order_id, size, price, account); cancels: size = price = 0, account = the order's owner
Op = tuple[int, bool, int, int, int, int]


def log(message: str) -> None:
    print(f"[bench/stf] {message}", file=sys.stderr, flush=True)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, separators=(",", ":")), flush=True)


# -- chain set-up ----------------------------------------------------------------------------------

def bench_market() -> MarketSpec:
    return MarketSpec(
        market_id=0, symbol=SYMBOL, price_decimals=2, size_decimals=2, tick_size=1, lot_size=1, min_size=1,
        initial_margin_ppm=100_000, maintenance_margin_ppm=50_000, max_leverage=10, maker_fee_ppm=200,
        taker_fee_ppm=500, funding_interval_ms=3_600_000, funding_cap_ppm=5_000, interest_rate_ppm=10,
        price_band_ppm=BAND_PPM, initial_oracle_price=MID,
    )


def account_keys(n: int) -> list[Key]:
    return [Key.from_seed(hashlib.sha256(b"ita-bench-stf/%d" % i).digest()) for i in range(n)]


def bench_config(addresses: Sequence[bytes]) -> ChainConfig:
    return ChainConfig(
        chain_id=CHAIN_ID, genesis_time_ms=GENESIS_MS, validators=(), markets=(bench_market(),),
        accounts=tuple((a, COLLATERAL) for a in addresses), max_open_orders_per_account=MAX_OPEN_ORDERS,
    )


def header(height: int) -> BlockHeader:
    return BlockHeader(height, GENESIS_MS + height * BLOCK_MS)


# -- workload --------------------------------------------------------------------------------------

@dataclass
class Workload:
    blocks: list[list[Op]]  # proposer order (what ita receives)
    effective: list[Op]  # execution order (what the peer receives)
    fills: int  # trades seen by the reference simulation
    counts: dict[str, int]
    crossing_limits: int  # limit orders that traded on arrival
    crossing_markets: int  # market orders that traded at all
    resting_at_end: int
    max_open_per_account: int


class RestingSet:
    """Resting order ids with O(1) add, discard and uniform random choice (deterministic order)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, order_id: int) -> None:
        self.pos[order_id] = len(self.ids)
        self.ids.append(order_id)

    def discard(self, order_id: int) -> None:
        i = self.pos.pop(order_id)
        last = self.ids.pop()
        if last != order_id:
            self.ids[i] = last
            self.pos[last] = i

    def pick(self, rng: random.Random) -> int:
        order_id = self.ids[rng.randrange(len(self.ids))]
        self.discard(order_id)
        return order_id


def generate(n_ops: int, block_size: int, n_accounts: int, seed: int) -> Workload:
    """The op stream, block by block, simulated on a reference orderly-chaos book."""
    rng = random.Random(seed)
    resting = RestingSet()
    owner: dict[int, int] = {}
    open_count = [0] * n_accounts
    state = {"fills": 0, "max_open": 0}

    def on_trade(trade: Trade) -> None:
        state["fills"] += 1
        if trade.maker_remaining == 0:
            resting.discard(trade.maker_id)
            open_count[owner.pop(trade.maker_id)] -= 1

    book = LimitOrderBook(on_trade=on_trade)
    half = n_accounts // 2
    next_id = 1
    next_buyer = next_seller = 0
    blocks: list[list[Op]] = []
    effective: list[Op] = []
    counts = {"limit": 0, "cancel": 0, "market": 0}
    crossing = crossing_markets = 0
    done = 0
    while done < n_ops:
        block: list[Op] = []
        for _ in range(min(block_size, n_ops - done)):
            r = rng.random()
            if r < 0.25 and len(resting):  # a cancel of an order resting at block start
                order_id = resting.pick(rng)
                block.append((CANCEL, False, order_id, 0, 0, owner[order_id]))
                continue
            is_buy = rng.random() < 0.5
            if is_buy:
                account = 2 * (next_buyer % half)
                next_buyer += 1
            else:
                account = 2 * (next_seller % half) + 1
                next_seller += 1
            size = rng.randint(1, 100)
            if r < 0.30:
                block.append((MARKET, is_buy, next_id, size, 0, account))
            else:
                price = MID + (rng.randint(-50, 10) if is_buy else rng.randint(-10, 50))
                block.append((LIMIT, is_buy, next_id, size, price, account))
            next_id += 1
        done += len(block)
        blocks.append(block)
        ordered = [op for op in block if op[0] == CANCEL] + [op for op in block if op[0] != CANCEL]
        effective.extend(ordered)
        for kind, is_buy, order_id, size, price, account in ordered:
            side = Side.BUY if is_buy else Side.SELL
            if kind == CANCEL:
                counts["cancel"] += 1
                book.cancel(order_id)
                open_count[owner.pop(order_id)] -= 1
            elif kind == MARKET:
                counts["market"] += 1
                crossing_markets += book.market(side, order_id, size) > 0
            else:
                counts["limit"] += 1
                filled = book.limit(side, order_id, size, price)
                crossing += filled > 0
                if filled < size:
                    resting.add(order_id)
                    owner[order_id] = account
                    open_count[account] += 1
                    state["max_open"] = max(state["max_open"], open_count[account])
    if state["max_open"] >= MAX_OPEN_ORDERS:
        raise SystemExit(f"workload needs {state['max_open']} open orders per account; use more accounts")
    return Workload(
        blocks, effective, state["fills"], counts, crossing, crossing_markets, len(resting), state["max_open"]
    )


def build_blocks(work: Workload, keys: Sequence[Key]) -> list[tuple[BlockHeader, list[bytes]]]:
    """Signed transactions (proposer order), nonces = genesis ms + running tx number (inside the window)."""
    low, high = compute_band(MID, BAND_PPM)
    nonce = GENESIS_MS
    out: list[tuple[BlockHeader, list[bytes]]] = []
    for height, block in enumerate(work.blocks, start=1):
        txs: list[bytes] = []
        for kind, is_buy, order_id, size, price, account in block:
            side = tx_pb2.SIDE_BUY if is_buy else tx_pb2.SIDE_SELL
            if kind == CANCEL:
                action: sdk_tx.Action = sdk_tx.cancel_order(SYMBOL, order_id=order_id)
            elif kind == MARKET:  # protective price: the band edge
                worst = high if is_buy else low
                action = sdk_tx.place_order(SYMBOL, side, price=worst, size=size, kind="market")
            else:
                action = sdk_tx.place_order(SYMBOL, side, price=price, size=size)
            nonce += 1
            txs.append(sdk_tx.sign_tx(keys[account], CHAIN_ID, sdk_tx.tx_body(CHAIN_ID, nonce, action)))
        out.append((header(height), txs))
    assert nonce <= GENESIS_MS + len(work.blocks) * BLOCK_MS, "nonces must not run ahead of block time"
    return out


# -- timed runs ------------------------------------------------------------------------------------

def prepare_gc() -> None:
    gc.collect()
    gc.freeze()


Blocks = Sequence[tuple[BlockHeader, list[bytes]]]


def run_ita(config: ChainConfig, blocks: Blocks) -> tuple[float, float, int, State]:
    """(wall seconds, cpu seconds, fills, final state) of one run from genesis."""
    state = genesis_state(config)
    prepare_gc()
    heap = HeapPolicy(HeapSettings())  # what `ita start` and `ita indexer` run the STF under
    heap.install()
    fills = 0
    cpu = time.process_time()
    start = time.perf_counter()
    for head, txs in blocks:
        for event in apply_block(state, head, txs, skip_signature_check).events:
            if event[0] == TRADE:
                fills += 1
        heap.after_block()  # as the node does after each committed block
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    heap.uninstall()
    gc.unfreeze()
    return elapsed, cpu, fills, state


def run_peer(ops: Sequence[Op]) -> tuple[float, float, int, LimitOrderBook]:
    """(wall seconds, cpu seconds, fills, final book) of one run from an empty book."""
    fills = [0]

    def on_trade(trade: Trade) -> None:
        fills[0] += 1

    book = LimitOrderBook(on_trade=on_trade)
    limit, market, cancel = book.limit, book.market, book.cancel
    buy, sell = Side.BUY, Side.SELL
    prepare_gc()
    cpu = time.process_time()
    start = time.perf_counter()
    for kind, is_buy, order_id, size, price, _account in ops:
        if kind == LIMIT:
            limit(buy if is_buy else sell, order_id, size, price)
        elif kind == CANCEL:
            cancel(order_id)
        else:
            market(buy if is_buy else sell, order_id, size)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    gc.unfreeze()
    return elapsed, cpu, fills[0], book


def compare_books(state: State, book: LimitOrderBook) -> None:
    """Both engines must end with the same resting orders (id, side, price, size)."""
    if book.count() != len(state.orders):
        raise SystemExit(f"resting orders differ: ita {len(state.orders)}, peer {book.count()}")
    for order_id, order in state.orders.items():
        peer = book.get(order_id)
        if (peer.price, peer.quantity, peer.side == Side.BUY) != (order.price, order.size, order.is_buy):
            raise SystemExit(f"order {order_id} differs: ita {order}, peer {peer}")


def run_child(flag: str, args: list[str]) -> dict[str, Any]:
    """Run this script with the compiled build in a fresh interpreter; its last JSON line."""
    cmd = [sys.executable, os.path.abspath(__file__), flag, *args]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, ITA_FAST="1"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    record: dict[str, Any] = json.loads(lines[-1])
    return record


def apply_child(path: str) -> dict[str, Any]:
    """Time the pickled blocks (``--apply-child``): what the parent compares with its own run."""
    with open(path, "rb") as f:
        job = pickle.load(f)
    config = bench_config([k.address for k in account_keys(job["accounts"])])
    blocks = [(header(height), txs) for height, txs in job["blocks"]]
    times, cpus = [], []
    fills, app_hash = -1, ""
    for _ in range(job["runs"]):
        elapsed, cpu, fills, state = run_ita(config, blocks)
        times.append(elapsed)
        cpus.append(cpu)
        app_hash = state.app_hash.hex()
        del state
    return {"build": BUILD, "times": times, "cpu": cpus, "fills": fills, "app_hash": app_hash}


def time_compiled(blocks: Blocks, n_accounts: int, runs: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".pkl") as f:
        job = {"accounts": n_accounts, "runs": runs, "blocks": [(h.height, txs) for h, txs in blocks]}
        pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        return run_child("--apply-child", [f.name])


def bench_compiled(
    blocks: Blocks, n_accounts: int, runs: int, pure: State, pure_fills: int, pure_best: float
) -> dict[str, Any]:
    """The compiled build on the same blocks, in a child; it must end in the same state hash."""
    log(f"timing the compiled build (build/fast), {runs} run(s)")
    child = time_compiled(blocks, n_accounts, runs)
    expected = ("compiled", pure_fills, pure.app_hash.hex())
    if (child["build"], child["fills"], child["app_hash"]) != expected:
        raise SystemExit(f"compiled build disagrees: {child} vs fills {pure_fills}, {pure.app_hash.hex()}")
    ops = sum(len(txs) for _, txs in blocks)
    return {
        "ops_per_s": round(ops / min(child["times"])),
        "ops_per_s_exact": ops / min(child["times"]),
        "best_s": round(min(child["times"]), 4),
        "best_cpu_s": min(child["cpu"]),
        "speedup_vs_pure": round(pure_best / min(child["times"]), 3),
        "same_app_hash_and_fills": True,
    }


def bench_apply(n_ops: int, block_size: int, n_accounts: int, runs: int, seed: int) -> dict[str, Any]:
    log(f"generating {n_ops} ops (seed {seed}, {block_size} per block, {n_accounts} accounts)")
    work = generate(n_ops, block_size, n_accounts, seed)
    log(f"signing {n_ops} transactions")
    keys = account_keys(n_accounts)
    config = bench_config([k.address for k in keys])
    blocks = build_blocks(work, keys)
    load_before = os.getloadavg()[0]
    ita_times: list[float] = []
    peer_times: list[float] = []
    ita_cpu: list[float] = []
    peer_cpu: list[float] = []
    ita_fills = peer_fills = -1
    state: State | None = None
    book: LimitOrderBook | None = None
    for run in range(runs):
        state = book = None
        elapsed, cpu, ita_fills, state = run_ita(config, blocks)
        ita_times.append(elapsed)
        ita_cpu.append(cpu)
        elapsed, cpu, peer_fills, book = run_peer(work.effective)
        peer_times.append(elapsed)
        peer_cpu.append(cpu)
        log(f"run {run + 1}/{runs}: ita {ita_times[-1]:.3f} s, peer {peer_times[-1]:.3f} s")
    assert state is not None and book is not None
    if not ita_fills == peer_fills == work.fills:
        raise SystemExit(f"fill counts differ: ita {ita_fills}, peer {peer_fills}, reference {work.fills}")
    if state.next_order_id - 1 != work.counts["limit"] + work.counts["market"]:
        raise SystemExit(f"ita executed {state.next_order_id - 1} orders, expected {work.counts}")
    compare_books(state, book)
    new_orders = max(1, work.counts["limit"] + work.counts["market"])
    ops_per_s = n_ops / min(ita_times)
    peer_ops_per_s = n_ops / min(peer_times)
    compiled = None
    if BUILD == "pure" and not stf.stale_reason():
        compiled = bench_compiled(blocks, n_accounts, runs, state, ita_fills, min(ita_times))
        compiled["ratio"] = round(compiled.pop("ops_per_s_exact") / peer_ops_per_s, 4)
        compiled["cpu_ratio"] = round(min(peer_cpu) / compiled.pop("best_cpu_s"), 4)
    return {
        "name": "stf_apply",
        "build": BUILD,
        "ops": n_ops,
        "ops_per_s": round(ops_per_s),
        "peer": f"orderly-chaos {orderly_chaos.__version__}",
        "peer_ops_per_s": round(peer_ops_per_s),
        "ratio": round(ops_per_s / peer_ops_per_s, 4),
        "fills": ita_fills,
        "peer_fills": peer_fills,
        "runs": runs,
        "best_s": round(min(ita_times), 4),
        "peer_best_s": round(min(peer_times), 4),
        "cpu_ratio": round(min(peer_cpu) / min(ita_cpu), 4),  # the same ratio from process_time
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
        "blocks": len(blocks),
        "txs_per_block": block_size,
        "accounts": n_accounts,
        "mix": work.counts,
        "trading_limit_fraction": round(work.crossing_limits / max(1, work.counts["limit"]), 4),
        "trading_new_order_fraction": round((work.crossing_limits + work.crossing_markets) / new_orders, 4),
        "max_open_per_account": work.max_open_per_account,
        "resting_at_end": work.resting_at_end,
        "seed": seed,
        "signatures": "excluded (skip_signature_check)",
        "gc": "collect + freeze before each timed run; ita under node.heap.HeapPolicy (as nodes, indexers)",
        "python": platform.python_version(),
        "compiled": compiled,  # the mypyc build on the same blocks (null: not built, or this run is it)
    }


# -- memory ----------------------------------------------------------------------------------------

def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(n_orders: int, per_account: int, block_size: int, seed: int) -> dict[str, Any]:
    """Build `n_orders` resting, non-crossing orders through apply_block; report this process's RSS.

    Bids at mid-1..mid-LEVELS, asks at mid+1..mid+LEVELS, sizes 1-100, `per_account` orders per account
    (half the accounts bid, half ask). Each block's transactions are built just before it is applied and
    dropped after, so only the state is resident at the end. Signatures are a fixed 64-byte placeholder:
    the apply path runs with `skip_signature_check`, which never reads them.
    """
    levels = 5_000
    n_accounts = -(-n_orders // per_account)
    n_accounts += n_accounts % 2
    rng = random.Random(seed)
    public_keys = [hashlib.sha256(b"ita-bench-mem/%d" % i).digest() for i in range(n_accounts)]
    config = bench_config([address_of(pk) for pk in public_keys])
    state = genesis_state(config)
    gc.collect()
    baseline = rss_bytes()
    signature = bytes(64)
    place = tx_pb2.PlaceOrder(
        market=SYMBOL, kind=tx_pb2.ORDER_KIND_LIMIT, time_in_force=tx_pb2.TIME_IN_FORCE_GTC
    )
    nonce = GENESIS_MS
    height = 0
    placed = 0
    start = time.perf_counter()
    while placed < n_orders:
        txs: list[bytes] = []
        for i in range(placed, min(n_orders, placed + block_size)):
            account = i % n_accounts
            is_buy = account % 2 == 0
            offset = 1 + rng.randrange(levels)
            place.side = tx_pb2.SIDE_BUY if is_buy else tx_pb2.SIDE_SELL
            place.price = MID - offset if is_buy else MID + offset
            place.size = rng.randint(1, 100)
            nonce += 1
            body = tx_pb2.TxBody(chain_id=CHAIN_ID, nonce=nonce, place_order=place).SerializeToString()
            txs.append(tx_pb2.SignedTx(body=body, public_key=public_keys[account], signature=signature)
                       .SerializeToString())
        height += 1
        result = apply_block(state, header(height), txs, skip_signature_check)
        if any(r.code != 0 for r in result.results):
            raise SystemExit(f"block {height}: a transaction was rejected")
        placed += len(txs)
        del txs, result
    elapsed = time.perf_counter() - start
    if len(state.orders) != n_orders:
        raise SystemExit(f"{len(state.orders)} orders rest, expected {n_orders} (book crossed?)")
    gc.collect()
    rss = rss_bytes()
    return {
        "name": "stf_memory",
        "build": BUILD,
        "resting_orders": len(state.orders),
        "rss_bytes": rss,
        "rss_mib": round(rss / 2**20, 1),
        "target_mib": 1024,
        "baseline_rss_mib": round(baseline / 2**20, 1),
        "bytes_per_order": round((rss - baseline) / n_orders),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "accounts": n_accounts,
        "price_levels": len(state.markets[0].book.bids) + len(state.markets[0].book.asks),
        "blocks": height,
        "build_s": round(elapsed, 2),
    }


def bench_memory(n_orders: int, seed: int) -> dict[str, Any]:
    """Run `memory_child` in a fresh interpreter so its RSS holds nothing but the state."""
    log(f"building {n_orders} resting orders in a subprocess")
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", "--orders", str(n_orders),
           "--seed", str(seed)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    record: dict[str, Any] = json.loads(lines[-1])
    record["compiled"] = None
    if BUILD == "pure" and not stf.stale_reason():
        log(f"building {n_orders} resting orders with the compiled build")
        child = run_child("--memory-child", ["--orders", str(n_orders), "--seed", str(seed)])
        keep = ("build", "rss_mib", "bytes_per_order", "peak_rss_mib", "build_s")
        record["compiled"] = {key: child[key] for key in keep}
    return record


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small run (20k ops, 50k orders)")
    parser.add_argument("--ops", type=int, help="operations in the apply workload (default 200,000)")
    parser.add_argument("--orders", type=int, help="resting orders for the memory figure (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side; the best is reported")
    parser.add_argument("--block-size", type=int, default=1_000, help="transactions per block")
    parser.add_argument("--accounts", type=int, default=4_096, help="account pool of the apply workload")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--skip-apply", action="store_true", help="only the memory figure")
    parser.add_argument("--skip-memory", action="store_true", help="only the apply figure")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--apply-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n_ops = args.ops or (20_000 if args.quick else 200_000)
    n_orders = args.orders or (50_000 if args.quick else 1_000_000)
    if args.apply_child:
        emit(apply_child(args.apply_child))
        return
    if args.memory_child:
        emit(memory_child(n_orders, per_account=100, block_size=5_000, seed=args.seed))
        return
    if not args.skip_apply:
        emit(bench_apply(n_ops, args.block_size, args.accounts, args.runs, args.seed))
    if not args.skip_memory:
        emit(bench_memory(n_orders, args.seed))


if __name__ == "__main__":
    main()
