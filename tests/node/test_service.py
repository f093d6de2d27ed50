"""node/service.py: the Node gRPC service against a fake NodeBackend, health checking, reflection."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from node.mempool import Admission, MempoolCode
from node.observability import NodeMetrics, setup_tracing
from node.service import (
    SNAPSHOT_CHUNK_BYTES,
    NodeService,
    bound_port,
    snapshot_app_hash,
    snapshot_chunks,
    start_grpc_server,
    stop_grpc_server,
)
from proto.ita.v1 import block_pb2, node_pb2, node_pb2_grpc
from stf.results import Code
from stf.snapshot import MAGIC
from tests.node.support import build_chain

CHAIN = "ita-test-1"
SAFETY_S = 20.0


def committed(height: int) -> bytes:
    header = block_pb2.BlockHeader(chain_id=CHAIN, height=height)
    return block_pb2.CommittedBlock(block=block_pb2.Block(header=header), app_hash=bytes([height]) * 32)\
        .SerializeToString()


def fake_snapshot(height: int, app_hash: bytes, body: int) -> bytes:
    chain = CHAIN.encode()
    header = MAGIC + len(chain).to_bytes(2, "big") + chain + height.to_bytes(8, "big") + app_hash
    return header + (0).to_bytes(8, "big") + bytes(i % 251 for i in range(body))


class FakeBackend:
    """Blocks 1..latest in memory (some may be 'pruned'), txs admitted by prefix, snapshots by height."""

    chain_id = CHAIN

    def __init__(self, latest: int = 0) -> None:
        self.blocks = {h: committed(h) for h in range(1, latest + 1)}
        self.latest = latest
        self.waiting = 0
        self.fail_submit = False
        self.submitted: list[list[bytes]] = []
        self.snapshots: dict[int, bytes] = {}
        self._cond = asyncio.Condition()

    async def submit_txs(self, txs: Sequence[bytes]) -> list[Admission]:
        if self.fail_submit:
            raise RuntimeError("verifier pool is gone")
        self.submitted.append(list(txs))
        out = []
        for tx in txs:
            digest = hashlib.sha256(tx).digest()
            if tx.startswith(b"good"):
                out.append(Admission(digest, True, 0))
            elif tx.startswith(b"dup"):
                out.append(Admission(digest, False, int(MempoolCode.DUPLICATE), "already in the mempool"))
            else:
                out.append(Admission(digest, False, int(Code.BAD_SIGNATURE), "the signature does not verify"))
        return out

    def status(self) -> node_pb2.StatusResponse:
        return node_pb2.StatusResponse(chain_id=CHAIN, height=self.latest, moniker="fake")

    def latest_height(self) -> int:
        return self.latest

    def committed_block_bytes(self, height: int) -> bytes | None:
        return self.blocks.get(height)

    async def wait_for_height(self, height: int) -> None:
        self.waiting += 1
        try:
            async with self._cond:
                await self._cond.wait_for(lambda: self.latest >= height)
        finally:
            self.waiting -= 1

    async def commit(self, height: int) -> None:
        self.blocks[height] = committed(height)
        self.latest = height
        async with self._cond:
            self._cond.notify_all()

    def get_tx(self, tx_hash: bytes) -> node_pb2.GetTxResponse | None:
        if tx_hash == bytes(32):
            return node_pb2.GetTxResponse(hash=tx_hash, height=2, index=1, tx=b"tx",
                                          result=block_pb2.TxResult(code=0, status="ok"))
        return None

    def get_account(self, address: bytes) -> node_pb2.GetAccountResponse:
        exists = address == b"\x01" * 20
        return node_pb2.GetAccountResponse(height=self.latest, address=address, exists=exists, collateral=5)

    def snapshot(self, height: int) -> tuple[int, bytes] | None:
        if not self.snapshots:
            return None
        if height == 0:
            height = max(self.snapshots)
        data = self.snapshots.get(height)
        return None if data is None else (height, data)


async def wait_until(cond: Callable[[], bool], what: str = "condition") -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), SAFETY_S)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


Scenario = Callable[[FakeBackend, grpc.aio.Channel, NodeMetrics], Awaitable[None]]


def serve(scenario: Scenario, latest: int = 0, **kwargs: Any) -> None:
    async def main() -> None:
        backend = FakeBackend(latest)
        metrics = NodeMetrics()
        server = await start_grpc_server("127.0.0.1:0", backend, None, metrics=metrics, **kwargs)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}")
        try:
            await scenario(backend, channel, metrics)
        finally:
            await channel.close()
            await stop_grpc_server(server, grace=None)

    asyncio.run(main())


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


# ---------------------------------------------------------------------------- transactions


def test_submit_answers_rejections_in_the_response_and_malformed_requests_with_invalid_argument() -> None:
    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        stub = node_pb2_grpc.NodeStub(channel)
        ok = await stub.SubmitTx(node_pb2.SubmitTxRequest(tx=b"good-1"))
        assert (ok.hash, ok.accepted, ok.code, ok.status, ok.reason) == (
            hashlib.sha256(b"good-1").digest(), True, 0, "ok", "")
        bad = await stub.SubmitTx(node_pb2.SubmitTxRequest(tx=b"forged"))
        assert (bad.accepted, bad.code, bad.status) == (False, 2, "bad_signature") and bad.reason
        many = await stub.SubmitTxs(node_pb2.SubmitTxsRequest(txs=[b"good-2", b"dup-1", b"bad-1"]))
        assert [(r.accepted, r.status) for r in many.responses] == [
            (True, "ok"), (False, "duplicate"), (False, "bad_signature")]
        assert many.responses[2].code == 2 and many.responses[2].reason == bad.reason
        assert [r.hash for r in many.responses] == [hashlib.sha256(t).digest() for t in (b"good-2", b"dup-1",
                                                                                          b"bad-1")]
        assert backend.submitted == [[b"good-1"], [b"forged"], [b"good-2", b"dup-1", b"bad-1"]]
        for call in (
            stub.SubmitTx(node_pb2.SubmitTxRequest()),
            stub.SubmitTxs(node_pb2.SubmitTxsRequest()),
            stub.SubmitTxs(node_pb2.SubmitTxsRequest(txs=[b"good", b""])),
            stub.SubmitTxs(node_pb2.SubmitTxsRequest(txs=[b"good"] * 10_001)),
            stub.SubmitTxs(node_pb2.SubmitTxsRequest(txs=[b"g" * 1_000_000] * 9)),
        ):
            assert (await rpc_error(call)).code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(backend.submitted) == 3
        backend.fail_submit = True
        err = await rpc_error(stub.SubmitTx(node_pb2.SubmitTxRequest(tx=b"good-3")))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        sample = metrics.registry.get_sample_value
        assert sample("ita_tx_admissions_total", {"status": "ok"}) == 2
        assert sample("ita_tx_admissions_total", {"status": "bad_signature"}) == 2

    serve(scenario)


def test_undecodable_requests_are_invalid_argument_on_every_method() -> None:
    garbage = b"\xff\xff\xff\xff\x0f"  # a truncated varint: no message of ours parses from it

    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        for method in ("SubmitTx", "SubmitTxs", "Status", "GetBlock", "GetTx", "GetAccount"):
            call = channel.unary_unary(f"/ita.v1.Node/{method}")(garbage)
            err = await rpc_error(call)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "not a valid" in (err.details() or ""), method
        for method in ("GetSnapshot", "StreamBlocks"):
            stream = channel.unary_stream(f"/ita.v1.Node/{method}")(garbage)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stream:
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert backend.submitted == []
        ok = await node_pb2_grpc.NodeStub(channel).Status(node_pb2.StatusRequest())
        assert ok.chain_id  # the server is still fine

    serve(scenario)


def test_submit_records_a_tx_submit_span() -> None:
    tracing = setup_tracing(None, in_memory=True)

    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        await node_pb2_grpc.NodeStub(channel).SubmitTx(node_pb2.SubmitTxRequest(tx=b"good-1"))

    serve(scenario, tracing=tracing)
    assert tracing.memory is not None
    (span,) = tracing.memory.get_finished_spans()
    assert span.name == "tx.submit" and span.attributes is not None
    assert span.attributes["tx_hash"] == hashlib.sha256(b"good-1").hexdigest()
    assert span.parent is None  # no traceparent: a trace of its own


def test_submit_continues_the_clients_trace() -> None:
    """A W3C traceparent in the call's metadata: tx.submit is its child, in its trace (a malformed
    one is ignored: a new trace)."""
    tracing = setup_tracing(None, in_memory=True)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        stub = node_pb2_grpc.NodeStub(channel)
        metadata = (("traceparent", f"00-{trace_id}-{parent_id}-01"),)
        await stub.SubmitTxs(node_pb2.SubmitTxsRequest(txs=[b"good-1", b"good-2"]), metadata=metadata)
        malformed = (("traceparent", "00-zz-yy-01"),)
        await stub.SubmitTx(node_pb2.SubmitTxRequest(tx=b"good-3"), metadata=malformed)

    serve(scenario, tracing=tracing)
    assert tracing.memory is not None
    continued, fresh = tracing.memory.get_finished_spans()
    assert continued.name == fresh.name == "tx.submit"
    assert format(continued.context.trace_id, "032x") == trace_id
    assert continued.parent is not None and format(continued.parent.span_id, "016x") == parent_id
    assert fresh.parent is None and format(fresh.context.trace_id, "032x") != trace_id


# ---------------------------------------------------------------------------- reads


def test_status_block_tx_and_account() -> None:
    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        stub = node_pb2_grpc.NodeStub(channel)
        status = await stub.Status(node_pb2.StatusRequest())
        assert (status.chain_id, status.height, status.moniker) == (CHAIN, 3, "fake")
        assert [(p.address, p.connected) for p in status.peers] == [("127.0.0.1:1", True)]
        latest = await stub.GetBlock(node_pb2.GetBlockRequest(height=0))
        assert latest.block.header.height == 3 and latest.app_hash == b"\x03" * 32
        assert (await stub.GetBlock(node_pb2.GetBlockRequest(height=2))).block.header.height == 2
        assert (await rpc_error(stub.GetBlock(node_pb2.GetBlockRequest(height=4)))).code() == \
            grpc.StatusCode.NOT_FOUND
        del backend.blocks[1]  # pruned
        assert (await rpc_error(stub.GetBlock(node_pb2.GetBlockRequest(height=1)))).code() == \
            grpc.StatusCode.NOT_FOUND
        tx = await stub.GetTx(node_pb2.GetTxRequest(hash=bytes(32)))
        assert (tx.height, tx.index, tx.result.status) == (2, 1, "ok")
        assert (await rpc_error(stub.GetTx(node_pb2.GetTxRequest(hash=b"\x01" * 32)))).code() == \
            grpc.StatusCode.NOT_FOUND
        assert (await rpc_error(stub.GetTx(node_pb2.GetTxRequest(hash=b"\x01" * 31)))).code() == \
            grpc.StatusCode.INVALID_ARGUMENT
        account = await stub.GetAccount(node_pb2.GetAccountRequest(address=b"\x01" * 20))
        assert account.exists and account.collateral == 5 and account.height == 3
        missing = await stub.GetAccount(node_pb2.GetAccountRequest(address=b"\x02" * 20))
        assert not missing.exists
        for bad in (b"", b"\x01" * 19, b"\x01" * 32):
            err = await rpc_error(stub.GetAccount(node_pb2.GetAccountRequest(address=bad)))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    serve(scenario, latest=3,
          peer_infos=lambda: [node_pb2.PeerInfo(address="127.0.0.1:1", public_key=b"k" * 32, connected=True)])


def test_get_block_before_the_first_block_is_not_found() -> None:
    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        err = await rpc_error(node_pb2_grpc.NodeStub(channel).GetBlock(node_pb2.GetBlockRequest()))
        assert err.code() == grpc.StatusCode.NOT_FOUND

    serve(scenario)


def test_get_snapshot_streams_1_mib_chunks_with_the_snapshot_hash() -> None:
    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        stub = node_pb2_grpc.NodeStub(channel)
        err = await rpc_error(_collect(stub.GetSnapshot(node_pb2.GetSnapshotRequest())))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        big = fake_snapshot(20, b"\xaa" * 32, 2 * SNAPSHOT_CHUNK_BYTES + 123)
        small = fake_snapshot(10, b"\xbb" * 32, 10)
        backend.snapshots = {10: small, 20: big}
        chunks = await _collect(stub.GetSnapshot(node_pb2.GetSnapshotRequest(height=0)))
        assert [(c.index, c.total, c.height) for c in chunks] == [(0, 3, 20), (1, 3, 20), (2, 3, 20)]
        assert all(len(c.data) <= SNAPSHOT_CHUNK_BYTES for c in chunks)
        assert b"".join(c.data for c in chunks) == big
        assert {c.snapshot_hash for c in chunks} == {hashlib.sha256(big).digest()}
        assert {c.app_hash for c in chunks} == {b"\xaa" * 32}
        (only,) = await _collect(stub.GetSnapshot(node_pb2.GetSnapshotRequest(height=10)))
        assert (only.total, only.data, only.app_hash) == (1, small, b"\xbb" * 32)
        err = await rpc_error(_collect(stub.GetSnapshot(node_pb2.GetSnapshotRequest(height=15))))
        assert err.code() == grpc.StatusCode.NOT_FOUND

    serve(scenario)


async def _collect(call: Any) -> list[Any]:
    return [item async for item in call]


def test_snapshot_header_parse_matches_stf_snapshots() -> None:
    snapshots: dict[int, bytes] = {}
    state, _ = build_chain(2, txs_per_block=1, snapshots=snapshots, snapshot_every=2)
    data = snapshots[2]
    assert snapshot_app_hash(data) == state.app_hash
    chunks = snapshot_chunks(2, data, chunk_bytes=100)
    assert b"".join(c.data for c in chunks) == data and chunks[0].total == len(chunks) == -(-len(data) // 100)
    with pytest.raises(ValueError):
        snapshot_app_hash(b"NOTASNAP" + data[8:])
    with pytest.raises(ValueError):
        snapshot_app_hash(data[:20])


# ---------------------------------------------------------------------------- StreamBlocks


def test_stream_blocks_catches_up_then_goes_live_and_cancels_cleanly() -> None:
    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        stub = node_pb2_grpc.NodeStub(channel)
        call = stub.StreamBlocks(node_pb2.StreamBlocksRequest(from_height=2))
        got = [(await call.read()).block.header.height for _ in range(2)]  # stored: 2, 3
        assert got == [2, 3]
        await wait_until(lambda: backend.waiting == 1, "the stream waits for height 4")
        assert metrics.registry.get_sample_value("ita_stream_blocks_subscribers") == 1
        await backend.commit(4)
        await backend.commit(5)
        got += [(await call.read()).block.header.height for _ in range(2)]
        assert got == [2, 3, 4, 5]
        call.cancel()
        await wait_until(lambda: backend.waiting == 0, "the handler's wait is cancelled")
        await wait_until(lambda: metrics.registry.get_sample_value("ita_stream_blocks_subscribers") == 0)
        # from 0 means from the first block; several streams at once
        first = stub.StreamBlocks(node_pb2.StreamBlocksRequest(from_height=0))
        second = stub.StreamBlocks(node_pb2.StreamBlocksRequest(from_height=5))
        assert [(await first.read()).block.header.height for _ in range(5)] == [1, 2, 3, 4, 5]
        assert (await second.read()).block.header.height == 5
        await backend.commit(6)
        assert (await first.read()).block.header.height == 6
        assert (await second.read()).block.header.height == 6
        first.cancel()
        second.cancel()
        await wait_until(lambda: backend.waiting == 0)

    serve(scenario, latest=3)


def test_stream_blocks_beyond_max_block_streams_are_refused_until_one_closes() -> None:
    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        stub = node_pb2_grpc.NodeStub(channel)
        calls = [stub.StreamBlocks(node_pb2.StreamBlocksRequest(from_height=3)) for _ in range(2)]
        for call in calls:
            assert (await call.read()).block.header.height == 3
        extra = stub.StreamBlocks(node_pb2.StreamBlocksRequest(from_height=1))
        err = await rpc_error(extra.read())
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 2" in (err.details() or "")
        calls[0].cancel()
        await wait_until(lambda: metrics.registry.get_sample_value("ita_stream_blocks_subscribers") == 1)
        again = stub.StreamBlocks(node_pb2.StreamBlocksRequest(from_height=1))
        assert (await again.read()).block.header.height == 1
        again.cancel()
        calls[1].cancel()

    serve(scenario, latest=3, max_block_streams=2)


class Aborted(Exception):
    pass


class FakeContext:
    """What NodeService's streaming handlers use of a grpc.aio context: abort raises."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def test_snapshot_downloads_beyond_max_snapshot_streams_are_refused() -> None:
    """A download holds the whole snapshot while it lasts: beyond max_snapshot_streams open at
    once, another is refused; a finished or cancelled one frees its slot. (Called on the
    servicer directly: through a channel, gRPC's buffers let a small download finish at once.)"""

    async def scenario() -> None:
        backend = FakeBackend(0)
        data = fake_snapshot(4, b"\xcc" * 32, 2 * SNAPSHOT_CHUNK_BYTES)
        backend.snapshots = {4: data}
        service = NodeService(backend, max_snapshot_streams=1)  # type: ignore[arg-type]
        request = node_pb2.GetSnapshotRequest(height=4)
        first = service.GetSnapshot(request, FakeContext())
        head = await anext(first)  # open: one chunk of three sent
        assert (head.index, head.total) == (0, 3)
        with pytest.raises(Aborted) as info:
            await anext(service.GetSnapshot(request, FakeContext()))
        assert info.value.args == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   "1 snapshot downloads are open; at most 1: retry later")
        rest = [chunk async for chunk in first]
        assert head.data + b"".join(c.data for c in rest) == data
        again = service.GetSnapshot(request, FakeContext())
        assert (await anext(again)).index == 0  # the slot is free again
        await again.aclose()  # a client that cancels frees it too
        assert service.snapshot_streams.open == 0

    asyncio.run(scenario())


def test_stream_blocks_ends_with_not_found_at_a_pruned_block() -> None:
    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        del backend.blocks[1]
        call = node_pb2_grpc.NodeStub(channel).StreamBlocks(node_pb2.StreamBlocksRequest(from_height=1))
        err = await rpc_error(call.read())
        assert err.code() == grpc.StatusCode.NOT_FOUND and "pruned" in (err.details() or "")

    serve(scenario, latest=3)


# ---------------------------------------------------------------------------- health and reflection


def test_health_is_serving_and_reflection_lists_the_services() -> None:
    async def scenario(backend: FakeBackend, channel: grpc.aio.Channel, metrics: NodeMetrics) -> None:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ita.v1.Node"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="ita.v1.Node"),
        ]
        answers = [a async for a in reflect.ServerReflectionInfo(iter(requests))]
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"ita.v1.Node", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
        assert answers[1].file_descriptor_response.file_descriptor_proto  # grpcurl can describe Node

    serve(scenario)


def test_the_peer_service_is_registered_and_listed_when_given() -> None:
    class Handler:
        def rpc_handler(self) -> grpc.GenericRpcHandler:
            async def gossip(request_iterator: Any, context: Any) -> None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, "test")

            handler = grpc.stream_stream_rpc_method_handler(gossip)
            return grpc.method_handlers_generic_handler("ita.v1.Peer", {"Gossip": handler})

    async def main() -> None:
        server = await start_grpc_server("127.0.0.1:0", FakeBackend(), Handler())
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}")
        try:
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            (answer,) = [a async for a in reflect.ServerReflectionInfo(iter([request]))]
            assert "ita.v1.Peer" in {s.name for s in answer.list_services_response.service}
            call = channel.stream_stream("/ita.v1.Peer/Gossip")()
            err = await rpc_error(call.read())
            assert err.code() == grpc.StatusCode.UNIMPLEMENTED and err.details() == "test"
        finally:
            await channel.close()
            await stop_grpc_server(server, grace=None)

    asyncio.run(main())


def test_a_peer_network_passed_as_the_peer_servicer_also_feeds_status_peers() -> None:
    from node.config import PeerConfig
    from node.peers import PeerNetwork
    from sdk.keys import Key

    me, other = Key.from_seed(b"\x01" * 32), Key.from_seed(b"\x02" * 32)
    network = PeerNetwork(chain_id=CHAIN, signer=me, peers=[PeerConfig("127.0.0.1", 1, other.public_key)])

    async def main() -> None:
        server = await start_grpc_server("127.0.0.1:0", FakeBackend(), network)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}")
        try:
            status = await node_pb2_grpc.NodeStub(channel).Status(node_pb2.StatusRequest())
            assert [(p.address, p.public_key, p.connected) for p in status.peers] == [
                ("127.0.0.1:1", other.public_key, False)]
            call = channel.stream_stream("/ita.v1.Peer/Gossip")()
            err = await rpc_error(call.read())  # registered, but not started: refused
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await channel.close()
            await stop_grpc_server(server, grace=None)

    asyncio.run(main())
