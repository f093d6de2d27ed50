"""Indexer benchmark: replay speed and WebSocket fan-out. Prints one JSON object per result.

- ``indexer_replay``: rebuild from a snapshot + N stored blocks (default 10,000) of random
  trading (rpc.simchain: limit/IOC/post-only/market orders, batches, cancels, transfers,
  oracle updates; 3 markets, 50 accounts): decode + verify the snapshot, then vouch for the
  blocks in runs of ``IndexerSettings.max_run`` (64) as the service does while catching up
  (hash links + the last block's commit certificate, 4 real ed25519 precommits), check the
  app-hash chain, replay each block through ``stf.block.apply_block`` and describe it as
  channel updates
  (``rpc.reducer.apply_committed``). Reported in blocks/s and orders/s (order placements,
  batch items included). ``with_history`` adds the LevelDB history writes the service does.
  ``stf_only`` is ``apply_block`` alone on the same blocks: the ceiling for any replay. Every
  run uses the indexer's GC policy (node/heap.py: collect + freeze after blocks).
- ``indexer_fanout``: a simulated node (rpc.simnode, its own process, gRPC) commits blocks
  at 10/s with header time = wall clock; the indexer (this process) follows it over gRPC;
  ``--subscribers`` WebSocket clients (default 1,000, spread over ``--client-procs``
  processes so they do not share the server's GIL) each subscribe to book + trades of
  BTC-PERP. Reported: update messages delivered per second, and commit->client latency
  (client receive wall clock - block header time) p50/p99/max over all messages.

Targets (issue 6): replay >= 50,000 orders/s; fan-out p99 <= 100 ms with 1,000 subscribers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
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

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from node.blocks import stf_header  # noqa: E402
from node.heap import HeapPolicy, HeapSettings  # noqa: E402
from proto.ita.v1 import tx_pb2  # noqa: E402
from rpc.history import History  # noqa: E402
from rpc.reducer import IndexerState, apply_committed, vouch_run  # noqa: E402
from rpc.service import Indexer, IndexerService, IndexerSettings  # noqa: E402
from rpc.simchain import SimChain, sim_config  # noqa: E402
from rpc.simnode import SimNode, produce_live  # noqa: E402
from rpc.source import GrpcBlockSource  # noqa: E402
from stf.block import apply_block, skip_signature_check  # noqa: E402
from stf.snapshot import decode_snapshot, encode_snapshot  # noqa: E402


def log(message: str) -> None:
    print(f"[bench/indexer] {message}", file=sys.stderr, flush=True)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, separators=(",", ":")), flush=True)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def count_orders(txs: list[bytes]) -> int:
    orders = 0
    for raw in txs:
        body = tx_pb2.TxBody.FromString(tx_pb2.SignedTx.FromString(raw).body)
        action = body.WhichOneof("action")
        if action == "place_order":
            orders += 1
        elif action == "batch":
            orders += sum(1 for item in body.batch.items if item.WhichOneof("item") == "place")
    return orders


# -- replay ----------------------------------------------------------------------------------------


def bench_replay(blocks: int, warmup: int, max_txs: int, runs: int) -> None:
    log(f"preparing {warmup} + {blocks} blocks (max {max_txs} txs each) ...")
    started = time.perf_counter()
    chain = SimChain(sim_config(accounts=50), seed=7, max_txs=max_txs, snapshot_interval=0)
    chain.produce_many(warmup)
    snapshot = encode_snapshot(chain.state)
    chain.produce_many(blocks)
    stored = chain.blocks[warmup:]
    orders = sum(count_orders(list(c.block.txs)) for c in stored)
    txs = sum(len(c.block.txs) for c in stored)
    log(
        f"prepared in {time.perf_counter() - started:.1f} s: {txs} txs, {orders} orders, "
        f"{len(snapshot)} snapshot bytes"
    )

    run_length = IndexerSettings().max_run

    def reducer_run(with_history: bool) -> float:
        directory = tempfile.mkdtemp(prefix="ita-bench-indexer-")
        history = History(Path(directory), chain.config) if with_history else None
        gc.collect()
        heap = HeapPolicy(HeapSettings())  # what `ita indexer` runs with (node/heap.py)
        heap.install()
        t0 = time.perf_counter()
        state = IndexerState(decode_snapshot(chain.config, snapshot))
        for start in range(0, len(stored), run_length):  # runs as the service groups a catch-up
            run = stored[start : start + run_length]
            for committed, block_id in zip(run, vouch_run(state, run), strict=True):
                updates = apply_committed(state, committed, block_id)
                if history is not None:
                    history.record([(state.height, updates)])
                heap.after_block()
        elapsed = time.perf_counter() - t0
        heap.uninstall()
        assert state.stf.app_hash == chain.state.app_hash
        if history is not None:
            history.close()
        return elapsed

    def stf_run() -> float:
        gc.collect()
        heap = HeapPolicy(HeapSettings())
        heap.install()
        t0 = time.perf_counter()
        state = decode_snapshot(chain.config, snapshot)
        for committed in stored:
            h = committed.block.header
            apply_block(state, stf_header(h), list(committed.block.txs), skip_signature_check)
            heap.after_block()
        elapsed = time.perf_counter() - t0
        heap.uninstall()
        return elapsed

    results = {
        "reducer": min(reducer_run(False) for _ in range(runs)),
        "with_history": min(reducer_run(True) for _ in range(runs)),
        "stf_only": min(stf_run() for _ in range(runs)),
    }
    record: dict[str, Any] = {
        "bench": "indexer_replay",
        "blocks": blocks,
        "txs": txs,
        "orders": orders,
        "snapshot_height": warmup,
        "snapshot_bytes": len(snapshot),
        "runs": runs,
    }
    for name, elapsed in results.items():
        record[name] = {
            "seconds": round(elapsed, 3),
            "blocks_per_s": round(blocks / elapsed, 1),
            "orders_per_s": round(orders / elapsed, 1),
        }
    record["target_orders_per_s"] = 50_000
    record["meets_target"] = orders / results["with_history"] >= 50_000
    record["machine"] = machine()
    emit(record)


# -- fan-out ---------------------------------------------------------------------------------------


def node_process(address_queue: Any, rate: float, seconds: float) -> None:
    async def main() -> None:
        chain = SimChain(sim_config(accounts=50), seed=9, max_txs=12, snapshot_interval=0)
        node = SimNode(chain)
        await node.start()
        address_queue.put(node.address)
        try:
            await produce_live(chain, rate, int(rate * seconds))
        finally:
            await node.stop()

    asyncio.run(main())


def client_process(url: str, count: int, start_at: float, stop_at: float, out: Any) -> None:
    gc.freeze()

    async def main() -> None:
        latencies: list[float] = []
        delivered = 0
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> None:
                nonlocal delivered
                async with session.ws_connect(f"{url}/v1/ws", max_msg_size=0, heartbeat=None) as ws:
                    await ws.send_str('{"op":"subscribe","channel":"book","market":"BTC-PERP"}')
                    await ws.send_str('{"op":"subscribe","channel":"trades","market":"BTC-PERP"}')
                    async for msg in ws:
                        now = time.time()
                        if now >= stop_at:
                            break
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        m = orjson.loads(msg.data)
                        if m.get("type") == "update" and now >= start_at:
                            delivered += 1
                            latencies.append(now * 1000 - m["time_ms"])

            tasks = [asyncio.create_task(one()) for _ in range(count)]
            await asyncio.sleep(max(stop_at - time.time(), 0) + 1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        out.put((delivered, latencies))

    asyncio.run(main())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def bench_fanout(subscribers: int, procs: int, rate: float, seconds: float, warmup_s: float) -> None:
    ctx = mp.get_context("spawn")
    address_queue = ctx.Queue()
    total_s = warmup_s + seconds + 5
    node = ctx.Process(target=node_process, args=(address_queue, rate, total_s + 10), daemon=True)
    node.start()
    address = address_queue.get(timeout=60)
    log(f"simulated node at {address}, {rate} blocks/s")

    async def serve() -> dict[str, Any]:
        config = sim_config(accounts=50)
        home = Path(tempfile.mkdtemp(prefix="ita-bench-fanout-"))
        source = GrpcBlockSource(address)
        indexer = Indexer(
            config, source, History(home / "db", config), IndexerSettings(use_node_snapshot=False)
        )
        service = IndexerService(indexer)
        await service.start("127.0.0.1", 0)
        gc.collect()
        gc.freeze()  # what a long-running indexer does after loading its state: no full scans of it
        start_at = time.time() + warmup_s
        stop_at = start_at + seconds
        out = ctx.Queue()
        per = [subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)]
        clients = [
            ctx.Process(target=client_process, args=(service.url, n, start_at, stop_at, out), daemon=True)
            for n in per
        ]
        for p in clients:
            p.start()
        loop = asyncio.get_running_loop()
        connected_peak = 0
        while time.time() < stop_at + 2:
            connected_peak = max(connected_peak, len(indexer.hub.clients))
            await asyncio.sleep(0.2)
        results = [await loop.run_in_executor(None, out.get, True, 120) for _ in clients]
        for p in clients:
            p.join(timeout=30)
        metrics = indexer.metrics
        fanout_sum = metrics.fanout_seconds._sum.get()
        blocks = metrics.blocks._value.get()
        slow = {a: metrics.slow_clients.labels(a)._value.get() for a in ("resync", "close")}
        await service.stop()
        delivered = sum(r[0] for r in results)
        latencies = [x for r in results for x in r[1]]
        return {
            "bench": "indexer_fanout",
            "subscribers": subscribers,
            "connected_peak": connected_peak,
            "client_processes": procs,
            "blocks_per_s": rate,
            "seconds": seconds,
            "messages_delivered": delivered,
            "messages_per_s": round(delivered / seconds, 1),
            "latency_ms": {
                "p50": round(percentile(latencies, 0.50), 2),
                "p99": round(percentile(latencies, 0.99), 2),
                "max": round(max(latencies), 2) if latencies else None,
            },
            "server_fanout_mean_ms": round(1000 * fanout_sum / blocks, 3) if blocks else None,
            "slow_clients": slow,
            "target_p99_ms": 100,
            "meets_target": bool(latencies) and percentile(latencies, 0.99) <= 100,
            "machine": machine(),
        }

    record = asyncio.run(serve())
    node.terminate()
    emit(record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["replay", "fanout"], default=None)
    parser.add_argument("--blocks", type=int, default=10_000, help="stored blocks to replay")
    parser.add_argument("--warmup-blocks", type=int, default=200, help="blocks before the snapshot")
    parser.add_argument("--max-txs", type=int, default=40, help="random txs per block: uniform 0..max")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10.0, help="blocks per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured fan-out duration")
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.only in (None, "replay"):
        bench_replay(args.blocks, args.warmup_blocks, args.max_txs, args.runs)
    if args.only in (None, "fanout"):
        bench_fanout(args.subscribers, args.client_procs, args.rate, args.seconds, args.warmup_seconds)


if __name__ == "__main__":
    main()
