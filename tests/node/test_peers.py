"""node/peers.py: gossip between real PeerNetworks on loopback with fake PeerHandlers.

Every test runs its own event loop (asyncio.run) and waits for conditions, never for fixed
times; ``wait_until`` has a generous safety timeout so a bug fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from node.config import PeerConfig
from node.interfaces import Refusal
from node.observability import NodeMetrics
from node.peers import (
    GOSSIP_METHOD,
    HELLO_DOMAIN_TAG,
    TX_ADMISSION_MERGE_MAX,
    OutboundQueue,
    PeerLimits,
    PeerNetwork,
    _Conn,
    block_message,
    hello_sign_bytes,
)
from node.service import bound_port, start_grpc_server
from proto.ita.v1 import block_pb2, node_pb2
from sdk.keys import Key
from stf.block import MAX_TX_BYTES

CHAIN = "ita-test-1"
SAFETY_S = 20.0
BAN_S = 0.5
LIMITS = PeerLimits(backoff_initial_s=0.01, backoff_max_s=0.2, handshake_timeout_s=3.0,
                    max_consensus_bytes=4096, max_bad_messages=5, kick_ban_s=BAN_S)


def keys(n: int) -> list[Key]:
    """n keys sorted by public key (index 0 has the smallest key: it dials everyone)."""
    return sorted((Key.from_seed(bytes([i + 1]) * 32) for i in range(n)), key=lambda k: k.public_key)


def committed(height: int) -> bytes:
    block = block_pb2.CommittedBlock(block=block_pb2.Block(header=block_pb2.BlockHeader(height=height)))
    return block.SerializeToString()


@dataclass
class FakeHandler:
    """Records everything the network delivers; serves blocks up to ``our_height``."""

    our_height: int = 0
    consensus: list[tuple[bytes, bytes]] = field(default_factory=list)
    txs: list[tuple[list[bytes], bytes]] = field(default_factory=list)
    statuses: list[tuple[int, bytes]] = field(default_factory=list)
    blocks: list[tuple[int, bytes]] = field(default_factory=list)
    served: list[tuple[int, int]] = field(default_factory=list)
    raise_on_consensus: bool = False
    refuse_blocks: bool = False  # on_blocks answers every block as invalid (a forged certificate)
    consensus_refusal: Refusal | None = None  # what on_consensus answers

    def on_consensus(self, payload: bytes, peer: bytes) -> Refusal | None:
        if self.raise_on_consensus:
            raise RuntimeError("handler bug")
        self.consensus.append((payload, peer))
        return self.consensus_refusal

    async def on_txs(self, txs: Sequence[bytes], peer: bytes) -> None:
        await asyncio.sleep(0)
        self.txs.append((list(txs), peer))

    def on_status(self, height: int, peer: bytes) -> None:
        self.statuses.append((height, peer))

    def on_blocks(self, blocks: Sequence[block_pb2.CommittedBlock], peer: bytes) -> int:
        self.blocks.extend((b.block.header.height, peer) for b in blocks)
        return len(blocks) if self.refuse_blocks else 0

    def blocks_for(self, from_height: int, to_height: int, max_bytes: int) -> list[bytes]:
        self.served.append((from_height, to_height))
        return [committed(h) for h in range(from_height, min(to_height, self.our_height) + 1)]

    def height(self) -> int:
        return self.our_height


class NullBackend:
    """The Node service is not under test here; start_grpc_server only needs an object."""

    chain_id = CHAIN


async def wait_until(cond: Callable[[], bool], what: str = "condition") -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), SAFETY_S)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class LateServicer:
    """Lets a gRPC server start (and bind its port) before its PeerNetwork exists."""

    def __init__(self) -> None:
        self.network: PeerNetwork | None = None

    async def gossip(self, request_iterator: Any, context: Any) -> None:
        assert self.network is not None
        await self.network.accept(context)

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        handler = grpc.stream_stream_rpc_method_handler(self.gossip)
        return grpc.method_handlers_generic_handler("ita.v1.Peer", {"Gossip": handler})


@dataclass
class Node:
    key: Key
    server: Any
    port: int
    servicer: LateServicer
    handler: FakeHandler = field(default_factory=FakeHandler)
    network: PeerNetwork | None = None
    metrics: NodeMetrics = field(default_factory=NodeMetrics)

    @property
    def net(self) -> PeerNetwork:
        assert self.network is not None
        return self.network

    def peer_config(self) -> PeerConfig:
        return PeerConfig("127.0.0.1", self.port, self.key.public_key)

    async def start(self, peers: Sequence[PeerConfig], chain_id: str = CHAIN, signer: Any = None,
                    validator_keys: Sequence[bytes] = (), limits: PeerLimits = LIMITS) -> None:
        self.network = PeerNetwork(chain_id=chain_id, signer=signer or self.key, peers=peers,
                                   validator_keys=validator_keys, moniker=f"n{self.port}",
                                   metrics=self.metrics, limits=limits, rng=random.Random(1))
        self.servicer.network = self.network
        await self.network.start(self.handler)

    async def stop(self) -> None:
        if self.network is not None:
            await self.network.stop()
        await self.server.stop(None)


async def make_node(key: Key, port: int = 0, max_message_bytes: int | None = None) -> Node:
    servicer = LateServicer()
    extra = {} if max_message_bytes is None else {"max_message_bytes": max_message_bytes}
    server = await start_grpc_server(f"127.0.0.1:{port}", NullBackend(), servicer, **extra)  # type: ignore[arg-type]
    return Node(key, server, bound_port(server), servicer)


async def mesh(n: int) -> list[Node]:
    """n nodes, everyone configured with everyone, started and fully connected."""
    nodes = [await make_node(k) for k in keys(n)]
    for node in nodes:
        await node.start([o.peer_config() for o in nodes if o is not node])
    for node in nodes:
        await asyncio.wait_for(node.net.wait_for_peers(n - 1), SAFETY_S)
    return nodes


def failures(node: Node, reason: str) -> float:
    value = node.metrics.registry.get_sample_value("ita_peer_handshake_failures_total", {"reason": reason})
    return value or 0.0


def dropped_from(net: PeerNetwork, reason: str) -> float:
    value = net.metrics.registry.get_sample_value("ita_peer_messages_dropped_total", {"reason": reason})
    return value or 0.0


def dropped(node: Node, reason: str) -> float:
    return dropped_from(node.net, reason)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


# ---------------------------------------------------------------------------- pure pieces


def test_hello_sign_bytes_layout() -> None:
    nonce, key = bytes(range(32)), bytes(range(32, 64))
    assert hello_sign_bytes("ita-1", nonce, key) == HELLO_DOMAIN_TAG + b"\x05ita-1" + nonce + key


def test_block_message_equals_the_protobuf_encoding() -> None:
    for height in (1, 300, 70_000):
        raw = block_pb2.CommittedBlock(block=block_pb2.Block(header=block_pb2.BlockHeader(height=height),
                                                             txs=[b"x" * height]))
        data = raw.SerializeToString()
        assert block_message(data) == node_pb2.PeerMessage(block=raw).SerializeToString()


def test_outbound_queue_priorities_and_drop_oldest_txs_first() -> None:
    async def scenario() -> None:
        q = OutboundQueue(max_messages=4, max_bytes=1000)
        assert q.put("txs", b"t1", bulk=True) == []
        assert q.put("txs", b"t2", bulk=True) == []
        assert q.put("consensus", b"c1") == []
        assert q.put("consensus", b"c2") == []
        assert q.put("consensus", b"c3") == ["txs"]  # t1, the oldest tx batch, makes room
        assert q.put("consensus", b"c4") == ["txs"]  # then t2
        assert q.put("txs", b"t3", bulk=True) == ["txs"]  # no room for txs: the new batch itself
        assert q.put("consensus", b"c5") == ["consensus"]  # only urgent left: the oldest goes
        assert (q.queued("consensus"), q.queued("txs")) == (4, 0)  # counted through the drops
        assert [await q.get() for _ in range(4)] == [("consensus", b"c2"), ("consensus", b"c3"),
                                                     ("consensus", b"c4"), ("consensus", b"c5")]
        q.put("txs", b"t4", bulk=True)
        q.put("status", b"s1")
        assert await q.get() == ("status", b"s1")  # urgent before bulk whatever the order
        assert await q.get() == ("txs", b"t4")
        assert len(q) == 0 and q.size_bytes == 0
        assert q.put("block", b"x" * 2000) == ["block"]  # larger than the whole queue
        assert q.queued("block") == q.queued("consensus") == q.queued("txs") == 0
        # byte bound
        q2 = OutboundQueue(max_messages=100, max_bytes=10)
        q2.put("txs", b"aaaa", bulk=True)
        q2.put("txs", b"bbbb", bulk=True)
        assert q2.put("consensus", b"cccc") == ["txs"] and q2.size_bytes == 8
        # a consumer waiting on an empty queue wakes up on put
        waiter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        q.put("consensus", b"late")
        assert await waiter == ("consensus", b"late")

    run(scenario)


def unstarted_conn(handler: FakeHandler, limits: PeerLimits) -> tuple[PeerNetwork, _Conn]:
    """A connection from keys(2)[0] to a network of keys(2)[1] with no stream and no tasks
    running: the test calls its message handling and its queues directly."""
    ka, kb = keys(2)
    net = PeerNetwork(chain_id=CHAIN, signer=kb, peers=[], handler=handler, limits=limits)
    return net, _Conn(net, ka.public_key, "test", None, 0, False, "a")  # type: ignore[arg-type]


def test_a_peer_that_does_not_read_its_blocks_gets_no_more_served() -> None:
    """A block_request is served only while fewer than two answers' worth of blocks wait to be
    written to the peer (OutboundQueue.queued): one that asks faster than it reads makes the
    node read no more blocks from disk for it; once it reads, it is served again."""

    async def scenario() -> None:
        handler = FakeHandler(our_height=10_000)
        net, conn = unstarted_conn(handler, LIMITS)
        per_request = LIMITS.max_blocks_per_request
        ask = node_pb2.BlockRequest(from_height=1, max_blocks=per_request)
        request = node_pb2.PeerMessage(block_request=ask)
        for _ in range(3):
            conn._dispatch(request.SerializeToString())
        assert len(handler.served) == 2 and conn.queue.queued("block") == 2 * per_request
        assert dropped_from(net, "block_request_backlog") == 1
        for _ in range(per_request // 2):  # the writer sends some of them
            assert (await conn.queue.get())[0] == "block"
        conn._dispatch(request.SerializeToString())
        assert len(handler.served) == 3 and conn.bad_messages == 0

    run(scenario)


def test_a_peers_waiting_tx_batches_are_bounded_in_bytes() -> None:
    """Tx batches wait for the engine in a per-peer queue bounded in batches and in bytes
    (inbound_tx_bytes): without the byte bound, 64 batches near the message limit each could
    hold ~512 MiB per peer. Beyond it a batch is dropped and counted, not held against the peer."""

    async def scenario() -> None:
        handler = FakeHandler()
        net, conn = unstarted_conn(handler, dataclasses.replace(LIMITS, inbound_tx_bytes=1_000))
        batch = node_pb2.PeerMessage(txs=node_pb2.TxBatch(txs=[b"t" * 200, b"u" * 200])).SerializeToString()
        for _ in range(3):
            conn._dispatch(batch)
        assert conn.inbound_txs.qsize() == 2 and conn.inbound_tx_bytes == 800
        assert dropped_from(net, "inbound_txs_full") == 1 and conn.bad_messages == 0
        loop = asyncio.create_task(conn._tx_loop())
        try:
            await wait_until(lambda: len(handler.txs) == 1)
            assert handler.txs[0][0] == [b"t" * 200, b"u" * 200] * 2  # the two waiting batches, merged
            assert conn.inbound_tx_bytes == 0
            conn._dispatch(batch)  # room again
            await wait_until(lambda: len(handler.txs) == 2)
        finally:
            loop.cancel()

    run(scenario)


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    net = PeerNetwork(chain_id=CHAIN, signer=keys(1)[0], peers=(), rng=random.Random(7),
                      limits=PeerLimits(backoff_initial_s=0.05, backoff_max_s=2.0))
    for attempt in range(40):
        cap = min(2.0, 0.05 * 2**attempt)
        delay = net.backoff(attempt)
        assert cap / 2 <= delay <= cap
    assert len({net.backoff(20) for _ in range(10)}) > 1  # jitter


# ---------------------------------------------------------------------------- gossip


def test_three_nodes_gossip_consensus_txs_status_and_blocks() -> None:
    async def scenario() -> None:
        a, b, c = await mesh(3)
        try:
            ka, kb, kc = (n.key.public_key for n in (a, b, c))
            # exactly one stream per pair: the smaller key dialed
            assert a.net.dials(kb) and a.net.dials(kc) and b.net.dials(kc) and not c.net.dials(ka)
            assert sorted(a.net.connected()) == sorted([kb, kc])
            # consensus to everyone, in order
            for i in range(20):
                a.net.broadcast_consensus(b"vote-%d" % i)
            await wait_until(lambda: len(b.handler.consensus) == 20 and len(c.handler.consensus) == 20)
            assert [p for p, _ in b.handler.consensus] == [b"vote-%d" % i for i in range(20)]
            assert {peer for _, peer in c.handler.consensus} == {ka}
            # tx batches
            c.net.broadcast_txs([b"tx1", b"tx2"])
            c.net.broadcast_txs([])  # nothing sent
            await wait_until(lambda: len(a.handler.txs) == 1 and len(b.handler.txs) == 1)
            assert a.handler.txs == [([b"tx1", b"tx2"], kc)]
            # status: heights per peer
            b.handler.our_height = 9
            b.net.broadcast_status(9)
            await wait_until(lambda: a.net.peer_heights().get(kb) == 9 and c.net.peer_heights().get(kb) == 9)
            assert (9, kb) in a.handler.statuses
            # peer infos for the Status RPC
            infos = {i.public_key: i for i in a.net.peer_infos()}
            assert infos[kb].connected and infos[kb].height == 9
            assert infos[kb].address == f"127.0.0.1:{b.port}"
            assert a.metrics.registry.get_sample_value("ita_peers_connected") == 2
        finally:
            for n in (a, b, c):
                await n.stop()

    run(scenario)


def test_block_requests_go_round_robin_to_peers_that_have_the_blocks() -> None:
    async def scenario() -> None:
        a, b, c = await mesh(3)
        try:
            kb, kc = b.key.public_key, c.key.public_key
            for node, height in ((b, 10), (c, 10)):
                node.handler.our_height = height
                node.net.broadcast_status(height)
            await wait_until(lambda: a.net.peer_heights() == {kb: 10, kc: 10})
            a.net.request_blocks(11, 12)  # nobody has 12: nothing is sent
            a.net.request_blocks(0, 3)  # invalid: ignored
            a.net.request_blocks(2, 4)
            a.net.request_blocks(5, 6)
            await wait_until(lambda: len(a.handler.blocks) == 5, "blocks")
            assert sorted(h for h, _ in a.handler.blocks) == [2, 3, 4, 5, 6]
            assert b.handler.served and c.handler.served  # one request each
            assert sorted(b.handler.served + c.handler.served) == [(2, 4), (5, 6)]
            first = {peer for h, peer in a.handler.blocks if h in (2, 3, 4)}
            assert len(first) == 1 and [h for h, _ in a.handler.blocks if _ in first][:3] == [2, 3, 4]
            # c claims a height it does not have: b still gets its turn, asked up to its own height
            c.net.broadcast_status(1_000)
            await wait_until(lambda: a.net.peer_heights() == {kb: 10, kc: 1_000})
            b.handler.served.clear()
            c.handler.served.clear()
            a.net.request_blocks(7, 20)
            a.net.request_blocks(7, 20)
            await wait_until(lambda: len(b.handler.served) + len(c.handler.served) == 2, "served")
            assert b.handler.served == [(7, 10)] and c.handler.served == [(7, 20)]
        finally:
            for n in (a, b, c):
                await n.stop()

    run(scenario)


def test_a_handler_exception_does_not_break_the_stream() -> None:
    async def scenario() -> None:
        a, b = await mesh(2)
        try:
            b.handler.raise_on_consensus = True
            a.net.broadcast_consensus(b"boom")
            a.net.broadcast_status(3)
            await wait_until(lambda: (3, a.key.public_key) in b.handler.statuses)
            b.handler.raise_on_consensus = False
            a.net.broadcast_consensus(b"fine")
            await wait_until(lambda: b.handler.consensus == [(b"fine", a.key.public_key)])
            assert b.net.connected() == [a.key.public_key]
        finally:
            await a.stop()
            await b.stop()

    run(scenario)


# ---------------------------------------------------------------------------- handshake refusals


def test_wrong_chain_is_refused() -> None:
    async def scenario() -> None:
        ka, kb = keys(2)
        a, b = await make_node(ka), await make_node(kb)
        try:
            await a.start([b.peer_config()])
            await b.start([a.peer_config()], chain_id="other-chain")
            await wait_until(lambda: failures(a, "wrong_chain") + failures(b, "wrong_chain") >= 2)
            assert a.net.connected() == [] and b.net.connected() == []
            assert a.handler.statuses == [] and b.handler.statuses == []
        finally:
            await a.stop()
            await b.stop()

    run(scenario)


def test_unknown_key_is_refused_and_a_validator_key_is_accepted() -> None:
    async def scenario() -> None:
        ka, kb, kc = keys(3)
        a, b, c = await make_node(ka), await make_node(kc), await make_node(kb)
        try:
            # a dials b (smaller key) but b only knows c; then a is refused as unknown
            await b.start([c.peer_config()])
            await a.start([b.peer_config()])
            await wait_until(lambda: failures(b, "unknown_key") >= 1)
            assert b.net.connected() == [] and a.net.connected() == []
            await a.stop()
            # the same key listed among the validators is accepted although not configured
            a2 = await make_node(ka)
            await b.stop()
            b2 = await make_node(kc, port=b.port)
            await b2.start([], validator_keys=[ka.public_key])
            await a2.start([b2.peer_config()])
            await wait_until(lambda: b2.net.connected() == [ka.public_key])
            infos = b2.net.peer_infos()
            assert [i.public_key for i in infos] == [ka.public_key] and infos[0].connected
            await a2.stop()
            await b2.stop()
        finally:
            await c.stop()

    run(scenario)


def test_configured_key_mismatch_and_wrong_direction_are_refused() -> None:
    async def scenario() -> None:
        ka, kb, kc = keys(3)
        a, b = await make_node(ka), await make_node(kb)
        try:
            # a expects kc at b's address: b proves kb, a refuses
            await b.start([a.peer_config()])
            await a.start([PeerConfig("127.0.0.1", b.port, kc.public_key)])
            await wait_until(lambda: failures(a, "unexpected_key") >= 1)
            assert a.net.connected() == []
        finally:
            await a.stop()
            await b.stop()
        # a larger key dialing a configured smaller one is told "we dial you"
        a, b = await make_node(ka), await make_node(kb)
        try:
            await a.start([])  # a does not dial b
            a.net.validator_keys = frozenset()
            a.net._configured[kb.public_key] = b.peer_config()  # but a knows b: b must be dialed by a
            rogue = await raw_connect(kb, a.port, expect_refusal=True)
            assert rogue is None
            await wait_until(lambda: failures(a, "direction") >= 1)
        finally:
            await a.stop()
            await b.stop()

    run(scenario)


class BadProofSigner:
    def __init__(self, key: Key) -> None:
        self.key = key
        self.public_key = key.public_key

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message + b"tampered")


def test_bad_proof_is_refused() -> None:
    async def scenario() -> None:
        ka, kb = keys(2)
        a, b = await make_node(ka), await make_node(kb)
        try:
            await b.start([a.peer_config()])
            await a.start([b.peer_config()], signer=BadProofSigner(ka))
            await wait_until(lambda: failures(b, "bad_proof") >= 2)
            # b, the verifier, never lets a in (a, the dialer, learns it only after sending its proof)
            assert b.net.connected() == [] and b.handler.statuses == []
        finally:
            await a.stop()
            await b.stop()

    run(scenario)


# ---------------------------------------------------------------------------- restarts


def test_reconnect_after_the_accepting_peer_restarts() -> None:
    async def scenario() -> None:
        a, b = await mesh(2)  # a dials b
        try:
            kb = b.key.public_key
            await b.stop()
            await wait_until(lambda: a.net.connected() == [], "a notices b is gone")
            b2 = await make_node(b.key, port=b.port)
            b2.handler.our_height = 4
            await b2.start([a.peer_config()])
            await wait_until(lambda: a.net.connected() == [kb], "a reconnects")
            assert a.net.peer_heights() == {kb: 4}  # from b2's Hello
            a.net.broadcast_consensus(b"after-restart")
            await wait_until(lambda: len(b2.handler.consensus) == 1)
            await b2.stop()
        finally:
            await a.stop()

    run(scenario)


def test_a_peer_kicked_for_misbehaviour_is_not_redialled_until_its_ban_ends() -> None:
    """a dials b; b sends a garbage, a disconnects it (kicked) and refuses the handshakes of its
    own dial loop ("banned") until kick_ban_s has passed, then reconnects."""

    async def scenario() -> None:
        a, b = await mesh(2)  # a dials b
        try:
            kb = b.key.public_key
            conn = b.net._conns[a.key.public_key]
            for _ in range(LIMITS.max_bad_messages):
                conn.send("consensus", b"\xff\xff not a PeerMessage")
            await wait_until(lambda: a.net.connected() == [], "a kicks b")
            registry, failures = a.metrics.registry, "ita_peer_handshake_failures_total"
            await wait_until(lambda: (registry.get_sample_value(failures, {"reason": "banned"}) or 0) >= 1,
                             "a's dial loop is refused by the ban")
            await wait_until(lambda: a.net.connected() == [kb], "a reconnects after the ban")
        finally:
            await a.stop()
            await b.stop()

    run(scenario)


def test_reconnect_after_the_dialing_peer_restarts() -> None:
    async def scenario() -> None:
        a, b = await mesh(2)
        try:
            ka = a.key.public_key
            await a.stop()
            await wait_until(lambda: b.net.connected() == [], "b notices a is gone")
            a2 = await make_node(a.key, port=a.port)
            await a2.start([b.peer_config()])
            await wait_until(lambda: b.net.connected() == [ka], "a2 dials again")
            b.net.broadcast_consensus(b"hello again")
            await wait_until(lambda: len(a2.handler.consensus) == 1)
            await a2.stop()
        finally:
            await b.stop()

    run(scenario)


# ---------------------------------------------------------------------------- garbage


class RawPeer:
    """A hand-driven Gossip client: performs the handshake, then writes whatever bytes we like."""

    def __init__(self, channel: Any, call: Any) -> None:
        self.channel = channel
        self.call = call

    async def send(self, data: bytes) -> None:
        await self.call.write(data)

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


async def raw_connect(key: Key, port: int, expect_refusal: bool = False) -> RawPeer | None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    call = channel.stream_stream(GOSSIP_METHOD)()
    nonce = bytes(32)
    hello = node_pb2.Hello(chain_id=CHAIN, public_key=key.public_key, nonce=nonce, protocol_version=1)
    await call.write(node_pb2.PeerMessage(hello=hello).SerializeToString())
    try:
        theirs = node_pb2.PeerMessage.FromString(await call.read()).hello
        reply = await call.read()  # the acceptor proves first
    except grpc.aio.AioRpcError as exc:
        assert expect_refusal and exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc
        await channel.close()
        return None
    assert not expect_refusal and reply is not grpc.aio.EOF
    assert node_pb2.PeerMessage.FromString(reply).WhichOneof("msg") == "hello_proof"
    proof = key.sign(hello_sign_bytes(CHAIN, theirs.nonce, key.public_key))
    message = node_pb2.PeerMessage(hello_proof=node_pb2.HelloProof(signature=proof))
    await call.write(message.SerializeToString())
    return RawPeer(channel, call)


async def started_with_raw_peer(node: Node, key: Key) -> RawPeer:
    """Start `node` accepting `key` as a validator, and connect a raw Gossip client as `key`."""
    await node.start([], validator_keys=[key.public_key])
    peer = await raw_connect(key, node.port)
    assert peer is not None
    await wait_until(lambda: node.net.connected() == [key.public_key])
    return peer


def test_garbage_and_oversized_messages_are_dropped_then_the_peer_is_disconnected() -> None:
    async def scenario() -> None:
        ka, kb = keys(2)
        b = await make_node(kb)
        try:
            peer = await started_with_raw_peer(b, ka)
            await peer.send(b"\xff\xff\xff\xff")  # not a protobuf
            await peer.send(b"")  # an empty PeerMessage
            await peer.send(node_pb2.PeerMessage(consensus=b"x" * 5000).SerializeToString())  # > 4096
            big_tx = node_pb2.TxBatch(txs=[b"y" * (MAX_TX_BYTES + 1)])
            await peer.send(node_pb2.PeerMessage(txs=big_tx).SerializeToString())
            await peer.send(node_pb2.PeerMessage(consensus=b"still fine").SerializeToString())
            await wait_until(lambda: b.handler.consensus == [(b"still fine", ka.public_key)])
            assert dropped(b, "garbage") == 2 and dropped(b, "oversized") == 2
            assert b.net.connected() == [ka.public_key]
            await peer.send(node_pb2.PeerMessage(hello=node_pb2.Hello()).SerializeToString())  # 5th bad
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while await peer.call.read() is not grpc.aio.EOF:
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "bad messages" in (info.value.details() or "")
            await wait_until(lambda: b.net.connected() == [])
            await peer.close()
            # refused while banned, so reconnecting buys no fresh allowance of bad messages
            assert await raw_connect(ka, b.port, expect_refusal=True) is None
            failures = "ita_peer_handshake_failures_total"
            assert b.metrics.registry.get_sample_value(failures, {"reason": "banned"}) == 1
            await asyncio.sleep(BAN_S)
            again = await raw_connect(ka, b.port)  # the ban is over
            assert again is not None
            await wait_until(lambda: b.net.connected() == [ka.public_key])
            await again.close()
        finally:
            await b.stop()

    run(scenario)


def test_blocks_the_handler_refuses_count_as_bad_messages() -> None:
    """A peer sending blocks without a valid commit certificate (the engine refuses them) is
    misbehaving: each one counts against its bad-message limit, then it is disconnected."""

    async def scenario() -> None:
        ka, kb = keys(2)
        b = await make_node(kb)
        try:
            peer = await started_with_raw_peer(b, ka)
            block = node_pb2.PeerMessage(block=block_pb2.CommittedBlock.FromString(committed(3)))
            await peer.send(block.SerializeToString())  # accepted: not a bad message
            await wait_until(lambda: len(b.handler.blocks) == 1)
            assert dropped(b, "bad_block") == 0
            b.handler.refuse_blocks = True
            for _ in range(4):
                await peer.send(block.SerializeToString())
            await wait_until(lambda: dropped(b, "bad_block") == 4)
            assert b.net.connected() == [ka.public_key]
            await peer.send(block.SerializeToString())  # the 5th
            await wait_until(lambda: b.net.connected() == [])
            await peer.close()
        finally:
            await b.stop()

    run(scenario)


def test_consensus_refusals_count_against_a_peer_only_when_they_are_misbehaviour() -> None:
    """The engine's refusals of a peer's consensus messages: a full queue share is only counted
    (the core is slow, the peer is not at fault); misbehaviour, refused at once or reported once
    the core saw it (report_misbehaviour), counts against the limit, then disconnects."""

    async def scenario() -> None:
        ka, kb = keys(2)
        b = await make_node(kb)
        try:
            peer = await started_with_raw_peer(b, ka)
            message = node_pb2.PeerMessage(consensus=b"a vote").SerializeToString()
            b.handler.consensus_refusal = Refusal("consensus_backlog", "busy", misbehaviour=False)
            for _ in range(8):
                await peer.send(message)
            await wait_until(lambda: dropped(b, "consensus_backlog") == 8)
            assert b.net.connected() == [ka.public_key]
            b.handler.consensus_refusal = Refusal("not_own_message", "signed by another", misbehaviour=True)
            for _ in range(3):
                await peer.send(message)
            await wait_until(lambda: dropped(b, "not_own_message") == 3)
            b.net.report_misbehaviour(ka.public_key, "bad_signature", "prevote for height 1 round 0")
            assert dropped(b, "bad_signature") == 1 and b.net.connected() == [ka.public_key]
            await peer.send(message)  # the 5th bad message
            await wait_until(lambda: b.net.connected() == [])
            await peer.close()
        finally:
            await b.stop()

    run(scenario)


def test_a_message_over_the_grpc_limit_ends_that_stream_only() -> None:
    async def scenario() -> None:
        ka, kb = keys(2)
        b = await make_node(kb, max_message_bytes=64 * 1024)
        try:
            peer = await started_with_raw_peer(b, ka)
            await peer.send(node_pb2.PeerMessage(consensus=b"z" * 100_000).SerializeToString())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while await peer.call.read() is not grpc.aio.EOF:
                    pass
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await wait_until(lambda: b.net.connected() == [])
            await peer.close()
            again = await raw_connect(ka, b.port)
            assert again is not None
            await again.send(node_pb2.PeerMessage(consensus=b"ok").SerializeToString())
            await wait_until(lambda: b.handler.consensus == [(b"ok", ka.public_key)])
            await again.close()
        finally:
            await b.stop()

    run(scenario)


def test_inbound_streams_are_refused_until_started() -> None:
    async def scenario() -> None:
        ka, kb = keys(2)
        b = await make_node(kb)
        b.servicer.network = PeerNetwork(chain_id=CHAIN, signer=kb, peers=(), validator_keys=[ka.public_key])
        try:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{b.port}")
            call = channel.stream_stream(GOSSIP_METHOD)()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            await channel.close()
        finally:
            await b.server.stop(None)

    run(scenario)


def test_recent_consensus_messages_are_replayed_to_a_peer_that_connects_later() -> None:
    async def scenario() -> None:
        ka, kb = keys(2)
        limits = PeerLimits(backoff_initial_s=0.01, backoff_max_s=0.2, replay_consensus_messages=3)
        a, b = await make_node(ka), await make_node(kb)
        try:
            await a.start([b.peer_config()], limits=limits)
            for i in range(5):  # nobody is connected: only the last 3 are kept
                a.net.broadcast_consensus(b"early-%d" % i)
            await b.start([a.peer_config()])
            await wait_until(lambda: len(b.handler.consensus) == 3)
            a.net.broadcast_consensus(b"live")
            await wait_until(lambda: len(b.handler.consensus) == 4)
            assert [p for p, _ in b.handler.consensus] == [b"early-2", b"early-3", b"early-4", b"live"]
        finally:
            await a.stop()
            await b.stop()

    run(scenario)


def test_tx_batches_that_wait_are_admitted_together_up_to_the_merge_bound() -> None:
    """A peer's tx batches that queued while an admission ran go to the engine as one admission
    (one signature-worker request instead of one per batch), in arrival order, until the merged
    batch holds TX_ADMISSION_MERGE_MAX txs; the rest wait for the next admission."""

    async def scenario() -> None:
        handler = FakeHandler()
        net, conn = unstarted_conn(handler, LIMITS)
        per_batch = TX_ADMISSION_MERGE_MAX // 4
        batches = [[bytes([i]) * 8 + j.to_bytes(4, "big") for j in range(per_batch)] for i in range(6)]
        for txs in batches:
            conn._dispatch(node_pb2.PeerMessage(txs=node_pb2.TxBatch(txs=txs)).SerializeToString())
        loop = asyncio.create_task(conn._tx_loop())
        try:
            await wait_until(lambda: len(handler.txs) == 2)
            first, second = handler.txs[0][0], handler.txs[1][0]
            assert first == [tx for txs in batches[:4] for tx in txs]  # merged up to the bound
            assert second == [tx for txs in batches[4:] for tx in txs]
            assert conn.inbound_tx_bytes == 0 and conn.inbound_txs.empty()
        finally:
            loop.cancel()

    run(scenario)
