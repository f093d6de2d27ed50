"""Where committed blocks come from: the node's gRPC ``Node`` service, or an in-process chain.

Theory of operation
- ``BlockSource`` is what the indexer needs from a node: its latest state snapshot, an
  endless in-order stream of committed blocks from a height on, tx submission, and a
  ``SourceStatus`` (connected?, the node's height, last error) for lag reporting.
- ``GrpcBlockSource`` talks to ``Node`` with grpc.aio. ``stream_blocks`` never ends on its
  own: when the stream breaks (node restarting, network) it marks itself disconnected,
  waits with capped exponential backoff and re-opens ``StreamBlocks`` from the next height
  it has not yet handed out. A background task polls ``Status`` for the node's height.
  Nothing here verifies anything; rpc/verify.py does, on every block.
- ``InProcessSource`` serves a ``rpc.simchain.SimChain`` directly (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import grpc.aio

from proto.ita.v1 import block_pb2, node_pb2, node_pb2_grpc
from rpc.simchain import SimChain

log = logging.getLogger("ita.indexer.source")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class SourceError(Exception):
    """The source answered with something unusable (e.g. an inconsistent snapshot)."""


class SourceUnavailable(SourceError):
    """The node cannot be reached right now."""


@dataclass(frozen=True, slots=True)
class SnapshotBlob:
    height: int
    app_hash: bytes
    data: bytes  # stf/snapshot.py encoding; its app hash is verified when decoded


@dataclass(frozen=True, slots=True)
class SubmitVerdict:
    hash: bytes
    accepted: bool
    code: int
    status: str
    reason: str


@dataclass(slots=True)
class SourceStatus:
    connected: bool = False
    node_height: int | None = None
    chain_id: str = ""
    last_error: str = ""
    reconnects: int = 0
    last_block_monotonic: float = field(default_factory=time.monotonic)


class BlockSource(Protocol):
    status: SourceStatus

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def latest_snapshot(self) -> SnapshotBlob | None: ...

    def stream_blocks(self, from_height: int) -> AsyncIterator[block_pb2.CommittedBlock]: ...

    async def submit_tx(self, tx: bytes, metadata: Mapping[str, str] | None = None) -> SubmitVerdict:
        """Submit to the node; ``metadata``: call metadata (e.g. the W3C ``traceparent``)."""
        ...


# -- gRPC ---------------------------------------------------------------------------------------


class GrpcBlockSource:
    """``BlockSource`` over the node's gRPC ``Node`` service (see the module docstring)."""

    def __init__(
        self,
        address: str,
        *,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        status_interval: float = 1.0,
        call_timeout: float = 10.0,
    ) -> None:
        self.address = address
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.status_interval = status_interval
        self.call_timeout = call_timeout
        self.status = SourceStatus()
        self._channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.initial_reconnect_backoff_ms", int(backoff_initial * 1000)),
                ("grpc.max_reconnect_backoff_ms", int(backoff_max * 1000)),
            ],
        )
        self._stub = node_pb2_grpc.NodeStub(self._channel)
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_status(), name="indexer-node-status")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
            self._poller = None
        await self._channel.close(grace=None)

    def _down(self, exc: BaseException) -> None:
        was = self.status.connected
        self.status.connected = False
        self.status.last_error = _describe(exc)
        if was:
            log.warning("lost the node at %s: %s", self.address, self.status.last_error)

    async def _poll_status(self) -> None:
        while True:
            try:
                reply = await self._stub.Status(node_pb2.StatusRequest(), timeout=self.call_timeout)
                self.status.node_height = reply.height
                self.status.chain_id = reply.chain_id
                self.status.connected = True
                self.status.last_error = ""
            except grpc.aio.AioRpcError as exc:
                self._down(exc)
            await asyncio.sleep(self.status_interval)

    async def latest_snapshot(self) -> SnapshotBlob | None:
        """The node's latest snapshot, reassembled and checked against its SHA-256; None if the
        node has none. Raises SourceUnavailable when the node cannot be reached."""
        chunks: list[node_pb2.SnapshotChunk] = []
        try:
            call = self._stub.GetSnapshot(
                node_pb2.GetSnapshotRequest(height=0), timeout=self.call_timeout * 6
            )
            async for chunk in call:
                chunks.append(chunk)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            self._down(exc)
            raise SourceUnavailable(f"GetSnapshot from {self.address}: {_describe(exc)}") from exc
        return assemble_snapshot(chunks)

    async def stream_blocks(self, from_height: int) -> AsyncIterator[block_pb2.CommittedBlock]:
        next_height = max(from_height, 1)
        delay = self.backoff_initial
        while True:
            try:
                call = self._stub.StreamBlocks(node_pb2.StreamBlocksRequest(from_height=next_height))
                async for committed in call:
                    self.status.connected = True
                    self.status.last_block_monotonic = time.monotonic()
                    height = committed.block.header.height
                    if self.status.node_height is None or height > self.status.node_height:
                        self.status.node_height = height
                    delay = self.backoff_initial
                    next_height = height + 1
                    yield committed
                error: BaseException = SourceUnavailable("the node ended the block stream")
            except grpc.aio.AioRpcError as exc:
                error = exc
            self._down(error)
            self.status.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def submit_tx(self, tx: bytes, metadata: Mapping[str, str] | None = None) -> SubmitVerdict:
        try:
            reply = await self._stub.SubmitTx(
                node_pb2.SubmitTxRequest(tx=tx),
                timeout=self.call_timeout,
                metadata=tuple(metadata.items()) if metadata else None,
            )
        except grpc.aio.AioRpcError as exc:
            self._down(exc)
            raise SourceUnavailable(f"SubmitTx to {self.address}: {_describe(exc)}") from exc
        return SubmitVerdict(reply.hash, reply.accepted, reply.code, reply.status, reply.reason)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def assemble_snapshot(chunks: list[node_pb2.SnapshotChunk]) -> SnapshotBlob:
    """Join SnapshotChunk messages, refusing gaps, disagreement between chunks or a bad hash."""
    if not chunks:
        raise SourceError("GetSnapshot returned no chunks")
    first = chunks[0]
    total = first.total
    if total != len(chunks):
        raise SourceError(f"snapshot has {len(chunks)} chunks, announced {total}")
    for index, chunk in enumerate(chunks):
        if (chunk.index, chunk.total, chunk.height, chunk.app_hash, chunk.snapshot_hash) != (
            index,
            total,
            first.height,
            first.app_hash,
            first.snapshot_hash,
        ):
            raise SourceError(f"snapshot chunk {index} disagrees with chunk 0")
    data = b"".join(chunk.data for chunk in chunks)
    if hashlib.sha256(data).digest() != first.snapshot_hash:
        raise SourceError("snapshot bytes do not match their SHA-256")
    return SnapshotBlob(first.height, first.app_hash, data)


# -- in process ---------------------------------------------------------------------------------


class InProcessSource:
    """``BlockSource`` over a SimChain in the same event loop (tests, benchmarks)."""

    def __init__(self, chain: SimChain, *, offer_snapshot: bool = True) -> None:
        self.chain = chain
        self.offer_snapshot = offer_snapshot
        self.status = SourceStatus(connected=True, node_height=chain.height, chain_id=chain.config.chain_id)
        self._wake = asyncio.Event()
        chain.listeners.append(self._on_block)

    def _on_block(self, committed: block_pb2.CommittedBlock) -> None:
        self.status.node_height = committed.block.header.height
        self._wake.set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self._on_block in self.chain.listeners:
            self.chain.listeners.remove(self._on_block)

    async def latest_snapshot(self) -> SnapshotBlob | None:
        found = self.chain.latest_snapshot() if self.offer_snapshot else None
        if found is None:
            return None
        height, data = found
        return SnapshotBlob(height, self.chain.block(height).app_hash, data)

    async def stream_blocks(self, from_height: int) -> AsyncIterator[block_pb2.CommittedBlock]:
        height = max(from_height, 1)
        while True:
            while height <= self.chain.height:
                self.status.last_block_monotonic = time.monotonic()
                yield self.chain.block(height)
                height += 1
            self._wake.clear()
            await self._wake.wait()

    async def submit_tx(self, tx: bytes, metadata: Mapping[str, str] | None = None) -> SubmitVerdict:
        verdict = self.chain.submit(tx)
        return SubmitVerdict(verdict.hash, verdict.accepted, verdict.code, verdict.status, verdict.reason)


async def block_runs(
    blocks: AsyncIterator[block_pb2.CommittedBlock], max_run: int
) -> AsyncGenerator[list[block_pb2.CommittedBlock], None]:
    """Regroup a block stream into runs: each run is the next block plus the blocks that had
    already arrived behind it (at most ``max_run``). Caught up, runs have one block; catching
    up, they are long, and rpc.verify.ChainVerifier.vouch_run checks one certificate per run.
    A task reads ahead into a queue of ``max_run`` blocks; it ends with the consumer."""
    if max_run < 1:
        raise ValueError("max_run must be >= 1")
    queue: asyncio.Queue[block_pb2.CommittedBlock | BaseException] = asyncio.Queue(max_run)

    async def pump() -> None:
        try:
            async for committed in blocks:
                await queue.put(committed)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced to the consumer in order
            await queue.put(exc)

    reader = asyncio.get_running_loop().create_task(pump())
    try:
        while True:
            item = await queue.get()
            run: list[block_pb2.CommittedBlock] = []
            while True:
                if isinstance(item, BaseException):
                    if run:
                        yield run
                    raise item
                run.append(item)
                if len(run) >= max_run or queue.empty():
                    break
                item = queue.get_nowait()
            yield run
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
