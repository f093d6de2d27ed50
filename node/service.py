"""The client-facing gRPC ``Node`` service and the node's gRPC server.

Theory of operation
- ``NodeService`` answers every ``Node`` RPC from a ``NodeBackend`` (the Engine). It holds
  no state of its own. A rejected transaction is an answer (``accepted=false`` with its
  code), never an RPC error; RPC errors are for requests that are malformed as requests:
  INVALID_ARGUMENT for an empty ``SubmitTx``/``SubmitTxs``, a batch over ``max_submit_txs``
  txs or ``max_submit_bytes`` bytes, a tx hash that is not 32 bytes, an address that is
  not 20 bytes; NOT_FOUND for a block, tx or snapshot the node does not have; UNAVAILABLE
  when the backend cannot admit transactions (it raised).
- Blocks leave as stored: ``GetBlock`` and ``StreamBlocks`` are registered with a raw-bytes
  response serializer, so a CommittedBlock is never parsed and re-encoded on the way out.
- ``StreamBlocks(from)`` sends stored blocks from ``max(from, 1)`` up to the latest height,
  then waits on ``backend.wait_for_height(next)`` for each live one, without gaps. A block
  missing below the latest height (pruned) ends the stream with NOT_FOUND. At most
  ``max_block_streams`` (64) are open at once; another is answered RESOURCE_EXHAUSTED, so
  clients replaying the chain cannot crowd the validator's event loop without bound. A client that
  cancels simply cancels the handler task (CancelledError at the pending await/yield);
  nothing else is held.
- ``GetSnapshot`` slices the snapshot into chunks of ``SNAPSHOT_CHUNK_BYTES`` (1 MiB);
  each carries the height, the app hash read from the snapshot header (stf/snapshot.py
  layout), index/total and the SHA-256 of the whole snapshot. A download holds the whole
  snapshot in memory while it lasts, so at most ``max_snapshot_streams`` (4) run at once;
  another is answered RESOURCE_EXHAUSTED.
- ``start_grpc_server`` registers ``Node``, the ``Peer`` servicer (node/peers.py), gRPC
  health checking (SERVING once started, NOT_SERVING from ``stop_grpc_server`` on) and
  server reflection (so ``grpcurl -plaintext host:port list`` works), with message-size
  limits and keepalive settings that suit long-lived gossip streams.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import struct
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node.interfaces import NodeBackend
from node.mempool import Admission
from node.observability import SPAN_TX_SUBMIT, NodeMetrics, Tracing
from node.peers import MAX_GRPC_MESSAGE_BYTES, PeerNetwork
from proto.ita.v1 import node_pb2
from stf.snapshot import MAGIC as SNAPSHOT_MAGIC

__all__ = [
    "MAX_SUBMIT_TXS",
    "SNAPSHOT_CHUNK_BYTES",
    "NodeService",
    "bound_port",
    "snapshot_chunks",
    "start_grpc_server",
    "stop_grpc_server",
]

log = logging.getLogger(__name__)

SNAPSHOT_CHUNK_BYTES = 1024 * 1024
MAX_SUBMIT_TXS = 10_000
MAX_SUBMIT_BYTES = 8 * 1024 * 1024
MAX_BLOCK_STREAMS = 64  # StreamBlocks calls open at once (indexers, explorers)
MAX_SNAPSHOT_STREAMS = 4  # GetSnapshot calls open at once (each holds a whole snapshot in memory)


class StreamSlots:
    """A bound on the open streams of one kind: ``hold`` a slot for a stream's whole life."""

    __slots__ = ("what", "limit", "open")

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        self.open = 0

    @contextlib.asynccontextmanager
    async def hold(self, context: Any) -> AsyncIterator[None]:
        """A slot until the block ends; the RPC is aborted RESOURCE_EXHAUSTED if none is free."""
        if self.open >= self.limit:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{self.open} {self.what} are open; at most {self.limit}: retry later")
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


NODE_SERVICE = node_pb2.DESCRIPTOR.services_by_name["Node"].full_name
PEER_SERVICE = node_pb2.DESCRIPTOR.services_by_name["Peer"].full_name
HASH_LEN = 32
ADDRESS_LEN = 20
_SNAPSHOT_HEIGHT_HASH = struct.Struct(">Q32s")

PeerInfoSource = Callable[[], Sequence[node_pb2.PeerInfo]]


class RpcHandlerSource(Protocol):
    """node.peers.PeerNetwork or its PeerServicer: anything that provides the Peer service handler."""

    def rpc_handler(self) -> grpc.GenericRpcHandler: ...


async def _abort(context: Any, code: grpc.StatusCode, details: str) -> NoReturn:
    """End the RPC with an error status (grpc.aio's abort raises; this tells the type checker)."""
    await context.abort(code, details)
    raise AssertionError("ServicerContext.abort returned")


class Undecodable:
    """What a request deserializer yields for bytes that are not the expected message: the
    handler answers INVALID_ARGUMENT (grpc would otherwise answer UNKNOWN with a traceback)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def lenient(message_type: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Undecodable(f"request is not a valid {message_type.DESCRIPTOR.name}: {exc}")

    return parse


def _response(msg: node_pb2.SubmitTxResponse, admission: Admission) -> node_pb2.SubmitTxResponse:
    """Set ``msg`` (new, or just added to SubmitTxsResponse.responses: filled in place, no copy)."""
    msg.hash = admission.hash
    msg.accepted = admission.accepted
    msg.code = admission.code
    msg.reason = admission.reason
    msg.status = admission.status
    return msg


def snapshot_app_hash(data: bytes) -> bytes:
    """The app hash recorded in a snapshot's header (magic, u16 chain length, chain, u64 height, hash)."""
    if not data.startswith(SNAPSHOT_MAGIC) or len(data) < len(SNAPSHOT_MAGIC) + 2:
        raise ValueError("not a snapshot (bad magic)")
    chain_len = int.from_bytes(data[len(SNAPSHOT_MAGIC):len(SNAPSHOT_MAGIC) + 2], "big")
    offset = len(SNAPSHOT_MAGIC) + 2 + chain_len
    if len(data) < offset + _SNAPSHOT_HEIGHT_HASH.size:
        raise ValueError("snapshot header is truncated")
    _, app_hash = _SNAPSHOT_HEIGHT_HASH.unpack_from(data, offset)
    return bytes(app_hash)


def snapshot_chunks(
    height: int, data: bytes, chunk_bytes: int = SNAPSHOT_CHUNK_BYTES
) -> list[node_pb2.SnapshotChunk]:
    """The chunks of a snapshot, in order (at least one, even for empty data)."""
    app_hash = snapshot_app_hash(data)
    digest = hashlib.sha256(data).digest()
    total = max(1, -(-len(data) // chunk_bytes))
    view = memoryview(data)
    return [
        node_pb2.SnapshotChunk(height=height, app_hash=app_hash, index=i, total=total,
                               data=bytes(view[i * chunk_bytes:(i + 1) * chunk_bytes]), snapshot_hash=digest)
        for i in range(total)
    ]


def _trace_carrier(context: Any) -> dict[str, str]:
    """The W3C trace headers (``traceparent``, ``tracestate``) of a call's metadata."""
    try:
        metadata = context.invocation_metadata() or ()
    except Exception:  # a test double without metadata
        return {}
    carrier: dict[str, str] = {}
    for item in metadata:
        key, value = item[0], item[1]
        if key in ("traceparent", "tracestate") and isinstance(value, str):
            carrier[key] = value
    return carrier


class NodeService:
    """The ``Node`` gRPC service over a NodeBackend; register ``rpc_handler()`` on a grpc.aio server."""

    def __init__(
        self,
        backend: NodeBackend,
        *,
        peer_infos: PeerInfoSource | None = None,
        metrics: NodeMetrics | None = None,
        tracing: Tracing | None = None,
        max_submit_txs: int = MAX_SUBMIT_TXS,
        max_submit_bytes: int = MAX_SUBMIT_BYTES,
        snapshot_chunk_bytes: int = SNAPSHOT_CHUNK_BYTES,
        max_block_streams: int = MAX_BLOCK_STREAMS,
        max_snapshot_streams: int = MAX_SNAPSHOT_STREAMS,
    ) -> None:
        self.backend = backend
        self.block_streams = StreamSlots("block streams", max_block_streams)
        self.snapshot_streams = StreamSlots("snapshot downloads", max_snapshot_streams)
        self.peer_infos = peer_infos
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.tracing = tracing
        self.max_submit_txs = max_submit_txs
        self.max_submit_bytes = max_submit_bytes
        self.snapshot_chunk_bytes = snapshot_chunk_bytes

    # ------------------------------------------------------------------ transactions

    async def _submit(self, txs: Sequence[bytes], context: Any) -> list[Admission]:
        if not txs or any(not tx for tx in txs):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "empty transaction")
        if len(txs) > self.max_submit_txs:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"{len(txs)} txs in one request; at most {self.max_submit_txs}")
        if sum(map(len, txs)) > self.max_submit_bytes:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"request over {self.max_submit_bytes} bytes of txs")
        try:
            if self.tracing is None:
                admissions = await self.backend.submit_txs(txs)
            else:
                carrier = _trace_carrier(context)  # a client's traceparent: its trace goes on here
                with self.tracing.continued_span(SPAN_TX_SUBMIT, carrier, txs=len(txs)) as span:
                    admissions = await self.backend.submit_txs(txs)
                    if len(admissions) == 1:
                        span.set_attribute("tx_hash", admissions[0].hash.hex())
                        span.set_attribute("status", admissions[0].status)
                    else:
                        span.set_attribute("accepted", sum(a.accepted for a in admissions))
        except Exception:
            log.exception("submit_txs failed", extra={"txs": len(txs)})
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "the node cannot admit transactions right now")
        if len(admissions) != len(txs):
            log.error("submit_txs answered %d admissions for %d txs", len(admissions), len(txs))
            await _abort(context, grpc.StatusCode.INTERNAL, "admission count mismatch")
        for status, count in Counter(a.status for a in admissions).items():  # one labels() per status
            self.metrics.tx_admissions.labels(status=status).inc(count)
        return admissions

    async def SubmitTx(self, request: node_pb2.SubmitTxRequest, context: Any) -> node_pb2.SubmitTxResponse:
        return _response(node_pb2.SubmitTxResponse(), (await self._submit([request.tx], context))[0])

    async def SubmitTxs(self, request: node_pb2.SubmitTxsRequest, context: Any) -> node_pb2.SubmitTxsResponse:
        response = node_pb2.SubmitTxsResponse()
        add = response.responses.add
        for admission in await self._submit(list(request.txs), context):
            _response(add(), admission)
        return response

    # ------------------------------------------------------------------ reads

    async def Status(self, request: node_pb2.StatusRequest, context: Any) -> node_pb2.StatusResponse:
        status = node_pb2.StatusResponse()
        status.CopyFrom(self.backend.status())
        if self.peer_infos is not None and not status.peers:
            status.peers.extend(self.peer_infos())
        return status

    async def GetBlock(self, request: node_pb2.GetBlockRequest, context: Any) -> bytes:
        latest = self.backend.latest_height()
        height = request.height or latest
        raw = self.backend.committed_block_bytes(height) if 1 <= height <= latest else None
        if raw is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"no block at height {height} (latest {latest})")
        return raw

    async def GetTx(self, request: node_pb2.GetTxRequest, context: Any) -> node_pb2.GetTxResponse:
        if len(request.hash) != HASH_LEN:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"a tx hash is {HASH_LEN} bytes, got {len(request.hash)}")
        found = self.backend.get_tx(request.hash)
        if found is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND,
                         f"tx {request.hash.hex()} is neither committed nor pending")
        return found

    async def GetAccount(
        self, request: node_pb2.GetAccountRequest, context: Any
    ) -> node_pb2.GetAccountResponse:
        if len(request.address) != ADDRESS_LEN:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"an address is {ADDRESS_LEN} bytes, got {len(request.address)}")
        return self.backend.get_account(request.address)

    async def GetSnapshot(
        self, request: node_pb2.GetSnapshotRequest, context: Any
    ) -> AsyncIterator[node_pb2.SnapshotChunk]:
        async with self.snapshot_streams.hold(context):
            found = self.backend.snapshot(request.height)
            if found is None or (request.height and found[0] != request.height):
                what = f"at height {request.height}" if request.height else "at all"
                await _abort(context, grpc.StatusCode.NOT_FOUND, f"no snapshot {what}")
            height, data = found
            try:
                chunks = snapshot_chunks(height, data, self.snapshot_chunk_bytes)
            except ValueError as exc:
                log.error("stored snapshot is malformed", extra={"height": height, "error": str(exc)})
                await _abort(context, grpc.StatusCode.INTERNAL, f"stored snapshot at {height} is malformed")
            for chunk in chunks:
                yield chunk

    async def StreamBlocks(self, request: node_pb2.StreamBlocksRequest, context: Any) -> AsyncIterator[bytes]:
        height = max(1, request.from_height)
        async with self.block_streams.hold(context):
            self.metrics.stream_blocks_subscribers.inc()
            try:
                while True:
                    latest = self.backend.latest_height()
                    while height <= latest:
                        raw = self.backend.committed_block_bytes(height)
                        if raw is None:
                            await _abort(context, grpc.StatusCode.NOT_FOUND,
                                         f"block {height} is not stored here (pruned?); latest is {latest}")
                        yield raw
                        height += 1
                    await self.backend.wait_for_height(height)
            finally:
                self.metrics.stream_blocks_subscribers.dec()

    # ------------------------------------------------------------------ registration

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any, request: Any, response: Any) -> Any:
            serializer = response.SerializeToString if response is not None else None

            async def checked(req: Any, context: Any) -> Any:
                if isinstance(req, Undecodable):
                    await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, req.message)
                return await fn(req, context)

            return grpc.unary_unary_rpc_method_handler(checked, request_deserializer=lenient(request),
                                                       response_serializer=serializer)

        def stream(fn: Any, request: Any, response: Any) -> Any:
            serializer = response.SerializeToString if response is not None else None

            async def checked(req: Any, context: Any) -> AsyncIterator[Any]:
                if isinstance(req, Undecodable):
                    await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, req.message)
                async for item in fn(req, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(checked, request_deserializer=lenient(request),
                                                        response_serializer=serializer)

        pb = node_pb2
        handlers = {
            "SubmitTx": unary(self.SubmitTx, pb.SubmitTxRequest, pb.SubmitTxResponse),
            "SubmitTxs": unary(self.SubmitTxs, pb.SubmitTxsRequest, pb.SubmitTxsResponse),
            "Status": unary(self.Status, pb.StatusRequest, pb.StatusResponse),
            "GetBlock": unary(self.GetBlock, pb.GetBlockRequest, None),  # raw CommittedBlock bytes
            "GetTx": unary(self.GetTx, pb.GetTxRequest, pb.GetTxResponse),
            "GetAccount": unary(self.GetAccount, pb.GetAccountRequest, pb.GetAccountResponse),
            "GetSnapshot": stream(self.GetSnapshot, pb.GetSnapshotRequest, pb.SnapshotChunk),
            "StreamBlocks": stream(self.StreamBlocks, pb.StreamBlocksRequest, None),  # raw bytes
        }
        return grpc.method_handlers_generic_handler(NODE_SERVICE, handlers)


# ---------------------------------------------------------------------------- server


def server_options(max_message_bytes: int = MAX_GRPC_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # gossip streams ping every 10 s (node/peers.py); allow it, also while idle
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]


@dataclass(slots=True)
class _Extras:
    port: int
    health: Any


_EXTRAS: weakref.WeakKeyDictionary[Any, _Extras] = weakref.WeakKeyDictionary()


async def start_grpc_server(
    listen: str,
    backend: NodeBackend,
    peer_servicer: RpcHandlerSource | None,
    *,
    metrics: NodeMetrics | None = None,
    tracing: Tracing | None = None,
    peer_infos: PeerInfoSource | None = None,
    max_message_bytes: int = MAX_GRPC_MESSAGE_BYTES,
    max_block_streams: int = MAX_BLOCK_STREAMS,
    max_snapshot_streams: int = MAX_SNAPSHOT_STREAMS,
) -> grpc.aio.Server:
    """Start the node's gRPC server on ``listen`` (``host:port``; port 0 picks one, see ``bound_port``)
    with Node, Peer (when given), health checking and reflection. Status lists ``peer_infos()`` when
    the backend's status has no peers; it defaults to the PeerNetwork's when one is passed."""
    if peer_infos is None and isinstance(peer_servicer, PeerNetwork):
        peer_infos = peer_servicer.peer_infos
    server = grpc.aio.server(options=server_options(max_message_bytes))
    node = NodeService(backend, peer_infos=peer_infos, metrics=metrics, tracing=tracing,
                       max_block_streams=max_block_streams, max_snapshot_streams=max_snapshot_streams)
    server.add_generic_rpc_handlers((node.rpc_handler(),))
    services = [NODE_SERVICE]
    if peer_servicer is not None:
        server.add_generic_rpc_handlers((peer_servicer.rpc_handler(),))
        services.append(PEER_SERVICE)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection([*services, health_name, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen} for gRPC")
    await server.start()
    for name in ("", *services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _EXTRAS[server] = _Extras(port, health_servicer)
    host = listen.rpartition(":")[0]
    log.info("gRPC listening", extra={"address": f"{host}:{port}", "services": services})
    return server


def bound_port(server: grpc.aio.Server) -> int:
    """The TCP port a server from ``start_grpc_server`` listens on (useful with port 0)."""
    return _EXTRAS[server].port


async def stop_grpc_server(server: grpc.aio.Server, grace: float | None = 2.0) -> None:
    """Report NOT_SERVING to health checks, then stop (open streams get ``grace`` seconds)."""
    extras = _EXTRAS.get(server)
    if extras is not None:
        await extras.health.enter_graceful_shutdown()
    await server.stop(grace)
