"""A stand-in for the node's gRPC ``Node`` service, backed by a SimChain (tests, benchmarks).

Serves ``StreamBlocks`` (catch-up then live), ``GetSnapshot`` (in chunks of ``chunk_size``),
``SubmitTx``, ``Status`` and ``GetBlock`` exactly as proto/ita/v1/node.proto describes, so
the indexer's gRPC source can be exercised without a devnet. ``python -m rpc.simnode`` runs
one that produces random-trading blocks at a fixed rate.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from genesis.schema import genesis_to_json
from proto.ita.v1 import block_pb2, node_pb2, node_pb2_grpc
from rpc.simchain import SimChain, sim_config


class SimNodeServicer(node_pb2_grpc.NodeServicer):
    def __init__(self, chain: SimChain, chunk_size: int = 1 << 20) -> None:
        self.chain = chain
        self.chunk_size = chunk_size
        self.hold_at: int | None = None  # tests: stream no block above this height (a lagging node link)
        self.submit_traceparents: list[str] = []  # tests: the W3C traceparent of each SubmitTx that had one
        self._new_block = asyncio.Event()
        chain.listeners.append(lambda _committed: self.wake())

    def wake(self) -> None:
        self._new_block.set()

    async def SubmitTx(self, request: Any, context: Any) -> node_pb2.SubmitTxResponse:  # noqa: N802
        for key, value in context.invocation_metadata() or ():
            if key == "traceparent":
                self.submit_traceparents.append(value)
        v = self.chain.submit(request.tx)
        return node_pb2.SubmitTxResponse(
            hash=v.hash, accepted=v.accepted, code=v.code, reason=v.reason, status=v.status
        )

    async def Status(self, request: Any, context: Any) -> node_pb2.StatusResponse:  # noqa: N802
        chain = self.chain
        last = chain.blocks[-1] if chain.blocks else None
        return node_pb2.StatusResponse(
            chain_id=chain.config.chain_id,
            height=chain.height,
            last_block_hash=chain.last_block_id,
            app_hash=chain.state.app_hash,
            last_block_time_ms=last.block.header.time_ms if last is not None else 0,
            earliest_height=1,
        )

    async def GetBlock(self, request: Any, context: Any) -> block_pb2.CommittedBlock:  # noqa: N802
        height = request.height or self.chain.height
        if not 1 <= height <= self.chain.height:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no block at height {height}")
        return self.chain.block(height)

    async def GetSnapshot(self, request: Any, context: Any) -> AsyncIterator[node_pb2.SnapshotChunk]:  # noqa: N802
        snapshots = self.chain.snapshots
        height = request.height or (max(snapshots) if snapshots else 0)
        if height not in snapshots:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no snapshot")
        data = snapshots[height]
        app_hash = self.chain.block(height).app_hash
        digest = hashlib.sha256(data).digest()
        size = self.chunk_size
        total = max((len(data) + size - 1) // size, 1)
        for index in range(total):
            yield node_pb2.SnapshotChunk(
                height=height,
                app_hash=app_hash,
                index=index,
                total=total,
                data=data[index * size : (index + 1) * size],
                snapshot_hash=digest,
            )

    async def StreamBlocks(self, request: Any, context: Any) -> AsyncIterator[block_pb2.CommittedBlock]:  # noqa: N802
        height = max(request.from_height, 1)
        while True:
            while height <= self.chain.height and (self.hold_at is None or height <= self.hold_at):
                yield self.chain.block(height)
                height += 1
            self._new_block.clear()
            await self._new_block.wait()


class SimNode:
    """A grpc.aio server for a SimChain on ``host:port`` (0 = ephemeral); can stop and restart."""

    def __init__(
        self, chain: SimChain, host: str = "127.0.0.1", port: int = 0, chunk_size: int = 1 << 20
    ) -> None:
        self.chain = chain
        self.host = host
        self.port = port
        self.chunk_size = chunk_size
        self.server: grpc.aio.Server | None = None
        self.servicer = SimNodeServicer(chain, chunk_size)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
        node_pb2_grpc.add_NodeServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None


async def produce_live(chain: SimChain, blocks_per_second: float, count: int | None = None) -> None:
    """Produce blocks stamped with the wall clock at a fixed rate (forever when count is None)."""
    period = 1.0 / blocks_per_second
    next_at = time.monotonic()
    made = 0
    while count is None or made < count:
        next_at += period
        chain.produce(time_ms=time.time_ns() // 1_000_000)
        made += 1
        await asyncio.sleep(max(next_at - time.monotonic(), 0))


async def _main(args: argparse.Namespace) -> None:
    chain = SimChain(
        sim_config(accounts=args.accounts),
        seed=args.seed,
        max_txs=args.max_txs,
        snapshot_interval=args.snapshot_interval,
    )
    if args.genesis_out:
        Path(args.genesis_out).write_text(genesis_to_json(chain.config))
    host, _, port = args.listen.rpartition(":")
    node = SimNode(chain, host or "127.0.0.1", int(port))
    await node.start()
    print(json.dumps({"simnode": node.address, "chain_id": chain.config.chain_id}), flush=True)
    try:
        await produce_live(chain, args.rate)
    finally:
        await node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="A simulated ita node (gRPC Node service) with random trading."
    )
    parser.add_argument("--listen", default="127.0.0.1:9090")
    parser.add_argument("--rate", type=float, default=2.0, help="blocks per second")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--max-txs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--snapshot-interval", type=int, default=100)
    parser.add_argument("--genesis-out", default="", help="write the chain's genesis.json here")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
