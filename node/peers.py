"""Peer gossip over gRPC ``Peer.Gossip`` streams: implements ``node.interfaces.Network``.

Theory of operation
-------------------
Topology. Exactly one long-lived bidirectional stream per pair of nodes. Between two
*configured* peers the node with the lexicographically smaller public key dials (it is the
gRPC client) and the other only accepts; an inbound stream from a configured peer whose key
is larger than ours is refused ("we dial you"), so a pair never holds two streams. A key
that is not configured but is in ``validator_keys`` may dial us whatever its key (it listed
us, we did not list it). A dial loop per peer we dial reconnects with exponential backoff
and jitter (a delay uniform in [d/2, d], d = ``backoff_initial_s`` doubling up to
``backoff_max_s``, ~2 s for loopback devnets), restarting from the initial delay after
every successful handshake. If a peer opens a new authenticated stream while we still hold
an old one (it restarted before we noticed), the new stream replaces the old.

Handshake (both directions, first thing on every stream; see node.proto). Each side sends
``Hello`` (chain id, public key, 32 random bytes of nonce, committed height, protocol 1),
reads the other's Hello and checks chain id, protocol version, field lengths and the key
(the dialer: exactly the configured key; the acceptor: a configured peer that should dial
us, or a member of ``validator_keys``; never our own key). It then sends ``HelloProof``:
ed25519 over ``hello_sign_bytes(chain_id, other side's nonce, own key)``, and verifies the
other's proof against its own nonce. The acceptor proves first and the dialer only after
verifying it, so when the acceptor refuses the dialer (after its Hello) the dialer reads the
refusal as the stream's status instead of failing a write. (A dialer whose own proof is bad
learns it only from the stream ending just after it started.) Any failure, any other
message before the proof, or a handshake slower than ``handshake_timeout_s`` closes the
stream with one warning log line ("peer handshake refused", with the reason) and
``ita_peer_handshake_failures_total``.
The acceptor aborts with PERMISSION_DENIED and the reason, so the dialer logs it too.

After the handshake a ``_Conn`` runs three tasks until the stream ends or is closed:
- reader: parses each PeerMessage itself (the method is registered with raw bytes, so
  garbage never aborts the RPC inside gRPC), checks per-kind bounds, and dispatches to the
  ``PeerHandler``; consensus/status/blocks synchronously, tx batches through a small
  inbound queue, bounded in batches and bytes, drained by the tx task (tx verification
  never delays the peer's consensus messages; a full queue drops the batch). ``block_request`` is served from
  ``PeerHandler.blocks_for`` as ``block`` messages. A malformed or oversized message is
  dropped and counted (``ita_peer_messages_dropped_total{reason}``); after
  ``max_bad_messages`` of them the peer is disconnected. What the engine refuses counts the
  same way when it is misbehaviour: a consensus message that does not decode or is signed in
  another validator's name (peers send only their own), a block without a valid certificate,
  and, reported later through ``report_misbehaviour``, a consensus signature that does not
  verify. A consensus message beyond the peer's share of the core's queue is only counted,
  and so is a ``block_request`` while two answers' worth of blocks (2 x
  ``max_blocks_per_request``) still wait to be written to that peer: a peer that asks faster
  than it reads makes us read no more blocks from disk for it.
  A peer disconnected for misbehaviour is refused ("banned") for ``kick_ban_s`` (30 s), in
  both directions, so reconnecting does not buy it a fresh allowance of bad messages.
- writer: drains the peer's ``OutboundQueue``. Sending never blocks the engine: the queue
  has two lanes (consensus/status/blocks first, tx batches after) and bounds on count and
  bytes; on overflow the oldest tx batches are dropped first, then the oldest urgent
  messages (consensus re-gossips and block sync re-requests on its own).
- tx: ``await handler.on_txs(batch, peer)`` one admission at a time; the batches that queued
  meanwhile are merged into the next one (up to ``TX_ADMISSION_MERGE_MAX`` txs), so under load
  a peer's gossip costs one admission per verifier round trip rather than one per batch.

Consensus replay. The network remembers the last ``replay_consensus_messages`` consensus
messages it broadcast (bounded in bytes too) and queues them, oldest first, to every peer
whose stream has just been authenticated. A proposal or vote broadcast while a peer was
down or not yet connected (at start-up the engine proposes before any stream is up) thus
still reaches it; stale ones are harmless to the consensus core (height/round guards).
This is a cheap stand-in for Tendermint's per-peer vote gossip, not a replacement for the
engine re-broadcasting when a round stalls.

Everything runs on the node's single event loop; no locks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from consensus.crypto import ed25519_verify
from node.config import PeerConfig
from node.interfaces import PeerHandler, Refusal
from node.observability import NodeMetrics
from proto.ita.v1 import node_pb2
from stf.block import MAX_TX_BYTES

__all__ = [
    "GOSSIP_METHOD",
    "HELLO_DOMAIN_TAG",
    "MAX_GRPC_MESSAGE_BYTES",
    "HelloSigner",
    "OutboundQueue",
    "PeerLimits",
    "PeerNetwork",
    "PeerServicer",
    "hello_sign_bytes",
]

log = logging.getLogger(__name__)

HELLO_DOMAIN_TAG = b"ita/peer/hello/v1\x00"
PROTOCOL_VERSION = 1
NONCE_LEN = 32
KEY_LEN = 32
GOSSIP_METHOD = "/ita.v1.Peer/Gossip"
MAX_GRPC_MESSAGE_BYTES = 16 * 1024 * 1024  # gRPC send/receive limit (blocks are the largest messages)
_BLOCK_FIELD_TAG = b"\x32"  # PeerMessage.block: field 6, wire type 2 (length-delimited)


def hello_sign_bytes(chain_id: str, receiver_nonce: bytes, sender_key: bytes) -> bytes:
    """"ita/peer/hello/v1\\0" || u8(len(chain_id)) || chain_id || receiver's nonce || sender's key."""
    chain = chain_id.encode("ascii")
    if len(chain) > 255:
        raise ValueError("chain id longer than 255 bytes")
    return HELLO_DOMAIN_TAG + bytes((len(chain),)) + chain + receiver_nonce + sender_key


class HelloSigner(Protocol):
    """The node's identity for the handshake (sdk.keys.Key fits: raw ed25519 over bytes)."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


TX_ADMISSION_MERGE_MAX = 1024  # a peer's queued tx batches are merged into one admission up to ~this many txs


@dataclass(frozen=True, slots=True)
class PeerLimits:
    max_message_bytes: int = MAX_GRPC_MESSAGE_BYTES
    max_consensus_bytes: int = 8 * 1024 * 1024  # a proposal carries its block
    max_txs_per_batch: int = 10_000
    max_blocks_per_request: int = 64  # served per block_request
    max_block_response_bytes: int = 8 * 1024 * 1024  # passed to blocks_for
    queue_messages: int = 2048  # per-peer outbound queue
    queue_bytes: int = 64 * 1024 * 1024
    inbound_tx_batches: int = 64  # per-peer, awaiting on_txs
    inbound_tx_bytes: int = 16 * 1024 * 1024  # per-peer bytes of those batches
    max_bad_messages: int = 10
    kick_ban_s: float = 30.0  # a peer disconnected for misbehaviour is refused this long
    replay_consensus_messages: int = 128  # replayed to a newly connected peer (0: off)
    replay_consensus_bytes: int = 16 * 1024 * 1024
    handshake_timeout_s: float = 5.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0


class HandshakeRefused(Exception):
    """The stream's handshake failed; ``reason`` is a short metric label, the message is for humans."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------- outbound queue


class OutboundQueue:
    """A bounded two-lane queue that never blocks the producer.

    ``put`` appends to the urgent lane (consensus, status, block requests and answers) or the
    bulk lane (tx batches) and then, while the count or byte bound is exceeded, drops the
    oldest bulk message, or the oldest urgent one when no bulk is left. ``get`` returns urgent
    messages before bulk ones, each lane in FIFO order. (asyncio.Queue cannot drop its oldest
    element or prioritise, hence this small class.) One consumer.
    """

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._urgent: deque[tuple[str, bytes]] = deque()
        self._bulk: deque[tuple[str, bytes]] = deque()
        self._bytes = 0
        self._by_kind: dict[str, int] = {}  # messages queued, per kind
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._urgent) + len(self._bulk)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def queued(self, kind: str) -> int:
        """How many messages of `kind` wait to be written."""
        return self._by_kind.get(kind, 0)

    def _count(self, kind: str, delta: int) -> None:
        self._by_kind[kind] = self._by_kind.get(kind, 0) + delta

    def put(self, kind: str, data: bytes, bulk: bool = False) -> list[str]:
        """Enqueue; return the kinds of the messages dropped to make room (maybe this one)."""
        if len(data) > self.max_bytes:
            return [kind]
        (self._bulk if bulk else self._urgent).append((kind, data))
        self._bytes += len(data)
        self._count(kind, 1)
        dropped: list[str] = []
        while len(self) > self.max_messages or self._bytes > self.max_bytes:
            victim_kind, victim = (self._bulk if self._bulk else self._urgent).popleft()
            self._bytes -= len(victim)
            self._count(victim_kind, -1)
            dropped.append(victim_kind)
        self._ready.set()
        return dropped

    async def get(self) -> tuple[str, bytes]:
        while not (self._urgent or self._bulk):
            self._ready.clear()
            await self._ready.wait()
        kind, data = (self._urgent if self._urgent else self._bulk).popleft()
        self._bytes -= len(data)
        self._count(kind, -1)
        return kind, data


# ---------------------------------------------------------------------------- streams


class _Stream(Protocol):
    async def read(self) -> bytes | None: ...  # None at the end of the stream

    async def write(self, data: bytes) -> None: ...


class _CallStream:
    """The dialer's side: a grpc.aio StreamStreamCall with raw bytes."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def read(self) -> bytes | None:
        data = await self.call.read()
        return None if data is grpc.aio.EOF else bytes(data)

    async def write(self, data: bytes) -> None:
        await self.call.write(data)


class _ContextStream:
    """The acceptor's side: the servicer context's read/write API with raw bytes."""

    def __init__(self, context: Any) -> None:
        self.context = context

    async def read(self) -> bytes | None:
        data = await self.context.read()
        return None if data is grpc.aio.EOF else bytes(data)

    async def write(self, data: bytes) -> None:
        await self.context.write(data)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def block_message(committed_block: bytes) -> bytes:
    """PeerMessage{block: <serialized CommittedBlock>} without parsing and re-encoding the block."""
    return _BLOCK_FIELD_TAG + _varint(len(committed_block)) + committed_block


# ---------------------------------------------------------------------------- one connection


class _Conn:
    """An authenticated stream to one peer: reader, writer and tx tasks (see module doc)."""

    def __init__(self, net: PeerNetwork, key: bytes, address: str, stream: _Stream, height: int,
                 outbound: bool, moniker: str) -> None:
        self.net = net
        self.key = key
        self.address = address
        self.stream = stream
        self.height = height
        self.outbound = outbound
        self.moniker = moniker
        limits = net.limits
        self.queue = OutboundQueue(limits.queue_messages, limits.queue_bytes)
        # (batch, its bytes); inbound_tx_bytes is the sum of the queued batches' bytes
        self.inbound_txs: asyncio.Queue[tuple[list[bytes], int]] = asyncio.Queue(limits.inbound_tx_batches)
        self.inbound_tx_bytes = 0
        self.bad_messages = 0
        self.close_reason = ""
        self.kicked = False  # closed because of the peer's misbehaviour
        self._closed = asyncio.Event()

    @property
    def label(self) -> str:
        return f"{self.key.hex()[:16]}@{self.address}"

    def send(self, kind: str, data: bytes, bulk: bool = False) -> None:
        for dropped in self.queue.put(kind, data, bulk):
            self.net.metrics.peer_messages_dropped.labels(reason=f"queue_full_{dropped}").inc()

    def close(self, reason: str, kicked: bool = False) -> None:
        if not self._closed.is_set():
            self.close_reason = reason
            self.kicked = kicked
            self._closed.set()

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._read_loop(), name=f"peer-read-{self.label}"),
            asyncio.create_task(self._write_loop(), name=f"peer-write-{self.label}"),
            asyncio.create_task(self._tx_loop(), name=f"peer-txs-{self.label}"),
            asyncio.create_task(self._closed.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    self.close(f"stream error: {_describe(task.exception())}")
            self.close("stream ended")
        except asyncio.CancelledError:  # the RPC was cancelled under us (server stop, peer gone)
            self.close("stream cancelled")
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_loop(self) -> None:
        sent = self.net.metrics.peer_messages_sent
        while True:
            kind, data = await self.queue.get()
            await self.stream.write(data)
            sent.labels(kind=kind).inc()

    async def _tx_loop(self) -> None:
        queue = self.inbound_txs
        while True:
            batch, size = await queue.get()
            # Batches that queued while the previous admission waited for the signature workers
            # go in together: one admission (and verifier request) instead of one per batch.
            while not queue.empty() and len(batch) < TX_ADMISSION_MERGE_MAX:
                more, more_size = queue.get_nowait()
                batch = batch + more
                size += more_size
            self.inbound_tx_bytes -= size
            try:
                await self.net.handler.on_txs(batch, self.key)
            except Exception:
                log.exception("PeerHandler.on_txs failed", extra={"peer": self.label})

    async def _read_loop(self) -> None:
        while True:
            data = await self.stream.read()
            if data is None:
                return
            self._dispatch(data)

    def _bad(self, reason: str, detail: str) -> None:
        self.net.metrics.peer_messages_dropped.labels(reason=reason).inc()
        self.bad_messages += 1
        extra = {"peer": self.label, "reason": reason, "detail": detail, "bad_messages": self.bad_messages}
        log.warning("dropped a bad peer message", extra=extra)
        if self.bad_messages >= self.net.limits.max_bad_messages:
            self.close(f"{self.bad_messages} bad messages (last: {reason})", kicked=True)

    def _refused(self, refusal: Refusal) -> None:
        if refusal.misbehaviour:
            self._bad(refusal.reason, refusal.detail)
        else:
            self.net.metrics.peer_messages_dropped.labels(reason=refusal.reason).inc()

    def _dispatch(self, data: bytes) -> None:
        limits = self.net.limits
        if len(data) > limits.max_message_bytes:
            self._bad("oversized", f"{len(data)} bytes")
            return
        try:
            msg = node_pb2.PeerMessage.FromString(data)
        except DecodeError as exc:
            self._bad("garbage", f"not a PeerMessage: {exc}")
            return
        kind = msg.WhichOneof("msg")
        if kind is None:
            self._bad("garbage", "empty PeerMessage")
            return
        self.net.metrics.peer_messages_received.labels(kind=kind).inc()
        handler = self.net.handler
        try:
            if kind == "consensus":
                if not msg.consensus or len(msg.consensus) > limits.max_consensus_bytes:
                    self._bad("oversized", f"consensus payload of {len(msg.consensus)} bytes")
                    return
                refusal = handler.on_consensus(msg.consensus, self.key)
                if refusal is not None:
                    self._refused(refusal)
            elif kind == "txs":
                self._on_txs(list(msg.txs.txs))
            elif kind == "status":
                self.height = msg.status.height
                handler.on_status(msg.status.height, self.key)
            elif kind == "block":
                if handler.on_blocks([msg.block], self.key):
                    height = msg.block.block.header.height
                    self._bad("bad_block", f"block {height} without a valid commit certificate")
            elif kind == "block_request":
                self._serve_blocks(msg.block_request.from_height, msg.block_request.max_blocks)
            else:  # hello / hello_proof after the handshake
                self._bad("unexpected", f"{kind} after the handshake")
        except Exception:
            log.exception("PeerHandler failed on a peer message", extra={"peer": self.label, "kind": kind})

    def _on_txs(self, txs: list[bytes]) -> None:
        limits = self.net.limits
        if not txs or len(txs) > limits.max_txs_per_batch:
            self._bad("oversized", f"tx batch of {len(txs)} txs")
            return
        if any(not tx or len(tx) > MAX_TX_BYTES for tx in txs):
            self._bad("oversized", f"tx batch with an empty or > {MAX_TX_BYTES}-byte tx")
            return
        size = sum(map(len, txs))
        if self.inbound_tx_bytes + size > limits.inbound_tx_bytes or self.inbound_txs.full():
            self.net.metrics.peer_messages_dropped.labels(reason="inbound_txs_full").inc()
            return
        self.inbound_txs.put_nowait((txs, size))
        self.inbound_tx_bytes += size

    def _serve_blocks(self, from_height: int, max_blocks: int) -> None:
        if from_height < 1 or max_blocks < 1:
            self._bad("garbage", f"block_request from {from_height} max {max_blocks}")
            return
        limits = self.net.limits
        backlog = self.queue.queued("block")
        if backlog >= 2 * limits.max_blocks_per_request:  # it is not reading what it asked for
            self.net.metrics.peer_messages_dropped.labels(reason="block_request_backlog").inc()
            return
        to_height = from_height + min(max_blocks, limits.max_blocks_per_request) - 1
        blocks = self.net.handler.blocks_for(from_height, to_height, limits.max_block_response_bytes)
        for raw in blocks:
            self.send("block", block_message(raw))


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------- the network


class PeerServicer:
    """The ``Peer`` gRPC service; register ``rpc_handler()`` on the node's server."""

    def __init__(self, network: PeerNetwork) -> None:
        self.network = network

    async def Gossip(self, request_iterator: AsyncIterator[bytes], context: Any) -> None:
        await self.network.accept(context)

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """Raw-bytes handler (no deserializer): garbage reaches our checks instead of aborting the RPC."""
        handler = grpc.stream_stream_rpc_method_handler(self.Gossip)
        return grpc.method_handlers_generic_handler("ita.v1.Peer", {"Gossip": handler})


class PeerNetwork:
    """Gossip with the configured peers (module doc); implements node.interfaces.Network.

    ``handler`` may be given later to ``start`` (the Engine needs the network to be built);
    inbound streams are refused (UNAVAILABLE) until the network is started.
    """

    def __init__(
        self,
        *,
        chain_id: str,
        signer: HelloSigner,
        peers: Sequence[PeerConfig],
        validator_keys: Collection[bytes] = (),
        handler: PeerHandler | None = None,
        moniker: str = "",
        metrics: NodeMetrics | None = None,
        limits: PeerLimits | None = None,
        rng: random.Random | None = None,
    ) -> None:
        hello_sign_bytes(chain_id, bytes(NONCE_LEN), bytes(KEY_LEN))  # validates the chain id length
        self.chain_id = chain_id
        self.signer = signer
        self.public_key = bytes(signer.public_key)
        self.peers = tuple(p for p in peers if p.public_key != self.public_key)
        self.validator_keys = frozenset(bytes(k) for k in validator_keys)
        self.moniker = moniker
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.limits = limits if limits is not None else PeerLimits()
        self._rng = rng if rng is not None else random.Random()
        self._handler = handler
        self._configured = {p.public_key: p for p in self.peers}
        self._conns: dict[bytes, _Conn] = {}
        self._banned_until: dict[bytes, float] = {}  # kicked peers' keys -> time.monotonic() deadline
        self._dial_tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._round_robin = 0
        self._changed = asyncio.Event()
        self._recent_consensus: deque[bytes] = deque()  # serialized PeerMessages, oldest first
        self._recent_bytes = 0
        self.servicer = PeerServicer(self)

    # ------------------------------------------------------------------ lifecycle

    @property
    def handler(self) -> PeerHandler:
        if self._handler is None:
            raise RuntimeError("PeerNetwork has no PeerHandler; call start(handler) first")
        return self._handler

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The Peer service handler to register on the node's gRPC server (see PeerServicer)."""
        return self.servicer.rpc_handler()

    def dials(self, peer_key: bytes) -> bool:
        """Whether we dial this configured peer (our key is the smaller one)."""
        return self.public_key < peer_key

    async def start(self, handler: PeerHandler | None = None) -> None:
        if handler is not None:
            self._handler = handler
        self.handler  # noqa: B018 -- raises without a handler
        self._running = True
        for peer in self.peers:
            if self.dials(peer.public_key):
                task = asyncio.create_task(self._dial_loop(peer), name=f"dial-{peer.address}")
                self._dial_tasks.append(task)

    async def stop(self) -> None:
        self._running = False
        for conn in list(self._conns.values()):
            conn.close("node stopping")
        for task in self._dial_tasks:
            task.cancel()
        await asyncio.gather(*self._dial_tasks, return_exceptions=True)
        self._dial_tasks.clear()

    # ------------------------------------------------------------------ Network

    def _broadcast(self, kind: str, data: bytes, bulk: bool = False) -> None:
        for conn in self._conns.values():
            conn.send(kind, data, bulk)

    def broadcast_consensus(self, payload: bytes) -> None:
        data = node_pb2.PeerMessage(consensus=payload).SerializeToString()
        self._broadcast("consensus", data)
        self._remember_consensus(data)

    def _remember_consensus(self, data: bytes) -> None:
        limits = self.limits
        if limits.replay_consensus_messages <= 0 or len(data) > limits.replay_consensus_bytes:
            return
        self._recent_consensus.append(data)
        self._recent_bytes += len(data)
        while (len(self._recent_consensus) > limits.replay_consensus_messages
               or self._recent_bytes > limits.replay_consensus_bytes):
            self._recent_bytes -= len(self._recent_consensus.popleft())

    def broadcast_txs(self, txs: Sequence[bytes]) -> None:
        if txs:
            msg = node_pb2.PeerMessage(txs=node_pb2.TxBatch(txs=list(txs)))
            self._broadcast("txs", msg.SerializeToString(), bulk=True)

    def broadcast_status(self, height: int) -> None:
        msg = node_pb2.PeerMessage(status=node_pb2.StatusUpdate(height=height))
        self._broadcast("status", msg.SerializeToString())

    def request_blocks(self, from_height: int, to_height: int) -> None:
        heights = {"from_height": from_height, "to_height": to_height}
        if to_height < from_height:  # an empty range: nothing to ask
            log.debug("ignored an empty block request", extra=heights)
            return
        if from_height < 1:
            log.warning("ignored a block request below height 1", extra=heights)
            return
        # every peer that has the first block takes its turn, each asked up to its own height: a
        # peer claiming a height it does not have (Byzantine) must not get every request
        candidates = sorted((c for c in self._conns.values() if c.height >= from_height), key=lambda c: c.key)
        if not candidates:
            log.debug("no connected peer has the blocks", extra=heights)
            return
        conn = candidates[self._round_robin % len(candidates)]
        self._round_robin += 1
        count = min(min(to_height, conn.height) - from_height + 1, 2**32 - 1)
        request = node_pb2.BlockRequest(from_height=from_height, max_blocks=count)
        conn.send("block_request", node_pb2.PeerMessage(block_request=request).SerializeToString())

    def report_misbehaviour(self, peer: bytes, reason: str, detail: str) -> None:
        conn = self._conns.get(peer)
        if conn is not None:
            conn._bad(reason, detail)

    def peer_heights(self) -> dict[bytes, int]:
        return {key: conn.height for key, conn in self._conns.items()}

    # ------------------------------------------------------------------ inspection

    def connected(self) -> list[bytes]:
        return sorted(self._conns)

    def peer_infos(self) -> list[node_pb2.PeerInfo]:
        """Every configured peer (connected or not), then connected peers we did not configure."""
        infos = []
        for peer in self.peers:
            conn = self._conns.get(peer.public_key)
            infos.append(node_pb2.PeerInfo(address=peer.address, public_key=peer.public_key,
                                           connected=conn is not None, height=conn.height if conn else 0))
        for key, conn in sorted(self._conns.items()):
            if key not in self._configured:
                infos.append(node_pb2.PeerInfo(address=conn.address, public_key=key, connected=True,
                                               height=conn.height))
        return infos

    async def wait_for_peers(self, count: int) -> None:
        """Return once at least ``count`` peers are connected."""
        while len(self._conns) < count:
            self._changed.clear()
            await self._changed.wait()

    # ------------------------------------------------------------------ connections

    def _register(self, conn: _Conn) -> None:
        old = self._conns.get(conn.key)
        if old is not None:
            old.close("replaced by a new stream from the same peer")
        self._conns[conn.key] = conn
        for data in self._recent_consensus:  # see "Consensus replay" in the module doc
            conn.send("consensus", data)
        self.metrics.peers_connected.set(len(self._conns))
        self._changed.set()
        log.info("peer connected", extra={"peer": conn.label, "moniker": conn.moniker, "height": conn.height,
                                          "direction": "out" if conn.outbound else "in"})

    def _unregister(self, conn: _Conn) -> None:
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        if conn.kicked and self.limits.kick_ban_s > 0:
            self._banned_until[conn.key] = time.monotonic() + self.limits.kick_ban_s
        self.metrics.peers_connected.set(len(self._conns))
        self.metrics.peer_disconnects.labels(reason="kicked" if conn.kicked else "closed").inc()
        self._changed.set()
        log.info("peer disconnected", extra={"peer": conn.label, "reason": conn.close_reason})

    def _check_key(self, key: bytes, expected: bytes | None) -> None:
        until = self._banned_until.get(key)
        if until is not None:
            left = until - time.monotonic()
            if left > 0:
                raise HandshakeRefused("banned", f"{key.hex()} was disconnected for misbehaviour; "
                                                 f"refused for another {left:.1f} s")
            del self._banned_until[key]
        if expected is not None:
            if key != expected:
                raise HandshakeRefused("unexpected_key",
                                       f"peer key {key.hex()} is not the configured {expected.hex()}")
            return
        if key == self.public_key:
            raise HandshakeRefused("self", "a connection to ourselves")
        if key in self._configured:
            if self.dials(key):
                raise HandshakeRefused("direction",
                                       "we dial you: the smaller public key dials, the other accepts")
            return
        if key not in self.validator_keys:
            raise HandshakeRefused("unknown_key",
                                   f"key {key.hex()} is neither a configured peer nor a validator")

    async def _handshake(self, stream: _Stream, expected: bytes | None) -> tuple[node_pb2.Hello, bytes]:
        """Run the handshake; return the peer's Hello. Raises HandshakeRefused."""
        nonce = os.urandom(NONCE_LEN)
        hello = node_pb2.Hello(chain_id=self.chain_id, public_key=self.public_key, nonce=nonce,
                               height=self.handler.height(), moniker=self.moniker,
                               protocol_version=PROTOCOL_VERSION)
        await stream.write(node_pb2.PeerMessage(hello=hello).SerializeToString())
        theirs = (await self._read_handshake(stream, "hello")).hello
        if theirs.chain_id != self.chain_id:
            raise HandshakeRefused("wrong_chain",
                                   f"chain id {theirs.chain_id!r}, we are on {self.chain_id!r}")
        if theirs.protocol_version != PROTOCOL_VERSION:
            raise HandshakeRefused("protocol", f"protocol version {theirs.protocol_version}, we speak 1")
        if len(theirs.public_key) != KEY_LEN or len(theirs.nonce) != NONCE_LEN:
            raise HandshakeRefused("malformed", "hello with a bad public key or nonce length")
        key = bytes(theirs.public_key)
        self._check_key(key, expected)
        proof = self.signer.sign(hello_sign_bytes(self.chain_id, theirs.nonce, self.public_key))
        message = node_pb2.PeerMessage(hello_proof=node_pb2.HelloProof(signature=proof)).SerializeToString()
        if expected is None:  # acceptor: prove first
            await stream.write(message)
        their_proof = (await self._read_handshake(stream, "hello_proof")).hello_proof
        if not ed25519_verify(key, hello_sign_bytes(self.chain_id, nonce, key), their_proof.signature):
            raise HandshakeRefused("bad_proof", f"the hello proof of {key.hex()} does not verify")
        if expected is not None:  # dialer: prove once the acceptor has proved (and not refused us)
            await stream.write(message)
        return theirs, key

    async def _read_handshake(self, stream: _Stream, kind: str) -> node_pb2.PeerMessage:
        data = await stream.read()
        if data is None:
            raise HandshakeRefused("closed", f"stream closed while waiting for {kind}")
        try:
            msg = node_pb2.PeerMessage.FromString(data)
        except DecodeError:
            raise HandshakeRefused("garbage", f"garbage instead of {kind}") from None
        if msg.WhichOneof("msg") != kind:
            raise HandshakeRefused("unexpected", f"{msg.WhichOneof('msg')} instead of {kind}")
        return msg

    async def _run_stream(self, stream: _Stream, address: str, expected: bytes | None) -> _Conn:
        """Handshake then gossip until the stream ends; returns the finished connection.
        Raises HandshakeRefused (logged and counted here)."""
        try:
            timeout = self.limits.handshake_timeout_s
            hello, key = await asyncio.wait_for(self._handshake(stream, expected), timeout)
        except TimeoutError:
            refused = HandshakeRefused("timeout", f"no handshake within {timeout} s")
            self._refused(refused, address)
            raise refused from None
        except HandshakeRefused as refused:
            self._refused(refused, address)
            raise
        conn = _Conn(self, key, address, stream, hello.height, expected is not None, hello.moniker)
        self._register(conn)
        try:
            self._notify_status(conn)
            await conn.run()
        finally:
            self._unregister(conn)
        return conn

    def _notify_status(self, conn: _Conn) -> None:
        try:
            self.handler.on_status(conn.height, conn.key)
        except Exception:
            log.exception("PeerHandler.on_status failed", extra={"peer": conn.label})

    def _refused(self, refused: HandshakeRefused, address: str) -> None:
        self.metrics.peer_handshake_failures.labels(reason=refused.reason).inc()
        log.warning("peer handshake refused", extra={"peer_address": address, "reason": refused.reason,
                                                     "detail": str(refused)})

    async def accept(self, context: Any) -> None:
        """Serve one inbound Gossip stream (the PeerServicer calls this)."""
        address = _peer_address(context.peer())
        if not self._running:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "node is not accepting peers yet")
        try:
            conn = await self._run_stream(_ContextStream(context), address, expected=None)
        except HandshakeRefused as refused:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"handshake refused: {refused}")
            return
        if conn.kicked:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"disconnected: {conn.close_reason}")

    def _channel_options(self) -> list[tuple[str, int]]:
        max_backoff_ms = int(self.limits.backoff_max_s * 1000)
        return [
            ("grpc.max_receive_message_length", self.limits.max_message_bytes),
            ("grpc.max_send_message_length", self.limits.max_message_bytes),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", min(100, max_backoff_ms)),
            ("grpc.min_reconnect_backoff_ms", min(100, max_backoff_ms)),
            ("grpc.max_reconnect_backoff_ms", max_backoff_ms),
        ]

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: uniform in [cap/2, cap], cap = initial * 2**attempt <= max."""
        cap = min(self.limits.backoff_max_s, self.limits.backoff_initial_s * 2 ** min(attempt, 30))
        return cap / 2 + self._rng.random() * cap / 2

    async def _dial_loop(self, peer: PeerConfig) -> None:
        attempt = 0
        while self._running:
            established = await self._dial_once(peer, quiet=attempt > 0)
            attempt = 0 if established else attempt + 1
            await asyncio.sleep(self.backoff(attempt))

    async def _dial_once(self, peer: PeerConfig, quiet: bool) -> bool:
        """One stream to ``peer``; True if the handshake succeeded."""
        channel = grpc.aio.insecure_channel(peer.address, options=self._channel_options())
        call = channel.stream_stream(GOSSIP_METHOD)()
        try:
            await self._run_stream(_CallStream(call), peer.address, expected=peer.public_key)
            return True
        except HandshakeRefused:
            return False
        except grpc.aio.AioRpcError as exc:
            level = logging.DEBUG if quiet else logging.INFO
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                level = logging.WARNING
            log.log(level, "peer stream failed", extra={"peer_address": peer.address,
                                                        "error": _describe(exc)})
            return False
        except (grpc.aio.UsageError, grpc.aio.InternalError, ConnectionError,
                asyncio.InvalidStateError) as exc:
            log.log(logging.DEBUG if quiet else logging.INFO, "peer stream failed",
                    extra={"peer_address": peer.address, "error": _describe(exc)})
            return False
        finally:
            call.cancel()
            await channel.close()


def _peer_address(peer: str) -> str:
    """'ipv4:127.0.0.1:5000' -> '127.0.0.1:5000' (gRPC's context.peer() format)."""
    for prefix in ("ipv4:", "ipv6:"):
        if peer.startswith(prefix):
            return peer[len(prefix):]
    return peer
