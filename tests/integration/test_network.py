"""Four validators on loopback: blocks commit, signed orders submitted through ``Node`` are committed,
every node has the same block id and app hash at every height; bad input on both gRPC services
(``Node`` and ``Peer``) is rejected with typed answers, crashes nothing and changes no state."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest

from node.blocks import block_id
from node.peers import GOSSIP_METHOD, MAX_GRPC_MESSAGE_BYTES, hello_sign_bytes
from proto.ita.v1 import node_pb2, tx_pb2
from sdk import tx as sdk_tx
from sdk.client import NodeClient, NotFound
from sdk.keys import Key, devnet_validator_key
from stf.block import MAX_TX_BYTES
from stf.results import Code
from stf.signing import tx_hash
from tests.integration.conftest import NetFactory
from tests.integration.support import TestNet, resting_orders

pytestmark = pytest.mark.integration

TRADER = 3  # devnet account used by the order tests
VICTIM = 7  # devnet account whose state must not change under bad input
GARBAGE_REQUEST = b"\xff\xff\xff\xff\x0f garbage"  # not a protobuf message at all


@pytest.fixture(scope="module")
def net(make_module_net: NetFactory) -> Iterator[TestNet]:
    testnet = make_module_net(4).start()
    testnet.wait_height(2)
    yield testnet


def test_signed_orders_commit_and_all_nodes_agree(net: TestNet) -> None:
    txs = resting_orders(net, TRADER, 24)
    answers = []
    for k in range(0, len(txs), 6):  # batches through different nodes
        answers += net.client(k // 6 % 4).submit_many(txs[k : k + 6])
    assert [a.status for a in answers] == ["ok"] * len(txs)
    assert [a.hash for a in answers] == [tx_hash(t) for t in txs]

    located = {}
    for raw in txs:
        found = net.client(0).wait_for_tx(tx_hash(raw), timeout=60)
        assert found.result.code == Code.OK, found.result.reason
        assert found.result.order_id > 0
        assert found.tx == raw
        located[tx_hash(raw)] = (found.height, found.index)
    for i in range(1, 4):  # every node indexes the same tx at the same place
        net.wait_height(max(h for h, _ in located.values()), [i])
        for digest, where in located.items():
            other = net.client(i).tx(digest)
            assert other is not None and (other.height, other.index) == where

    account = net.client(2).account(net.signer(TRADER).key.address)
    assert {o.client_order_id for o in account.orders} >= {f"it{k}" for k in range(24)}
    assert account.nonce_count == 24

    net.wait_advance(3, range(4))
    top = net.assert_same_chain()
    assert top >= 5
    heights = {h for h, _ in located.values()}
    for h in heights:  # the blocks holding our txs carry them on every node
        ids = {block_id(net.client(i).block(h).block) for i in range(4)}
        assert len(ids) == 1


# ---------------------------------------------------------------------------- bad input: Node


def _raw_unary(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def _victim_state(client: NodeClient) -> tuple[int, int, int, int]:
    account = client.account(Key.from_seed(bytes(32)).address)  # placeholder never funded
    assert not account.exists
    victim = client.account(_victim_key().address)
    return victim.collateral, victim.nonce_count, victim.max_nonce, len(victim.orders)


def _victim_key() -> Key:
    from sdk.keys import devnet_account_key  # noqa: PLC0415

    return devnet_account_key(VICTIM)


def test_bad_input_on_node_service_is_rejected_without_state_change(net: TestNet) -> None:
    client = net.client(1)
    before = _victim_state(client)
    chain_id = net.plan.chain.chain_id
    key = _victim_key()
    spec = net.market()
    order = sdk_tx.place_order(
        spec.symbol, "buy", price=spec.initial_oracle_price // 2 * 2, size=spec.min_size
    )
    good = sdk_tx.Signer(key, chain_id).sign(order)

    # a bad signature: code 2
    signed = tx_pb2.SignedTx.FromString(good)
    signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    bad_sig = signed.SerializeToString()
    # wrong chain id: code 3
    wrong_chain = sdk_tx.Signer(key, "another-chain-1").sign(order)
    # garbage tx bytes inside a valid request: malformed (1)
    garbage = os.urandom(200)
    # over the per-tx size limit
    oversized_tx = sdk_tx.Signer(key, chain_id).sign(
        sdk_tx.place_order(spec.symbol, "buy", price=spec.initial_oracle_price, size=spec.min_size)
    ) + b"\x00" * (MAX_TX_BYTES + 1)
    answers = client.submit_many([bad_sig, wrong_chain, garbage, oversized_tx])
    assert [a.accepted for a in answers] == [False] * 4
    assert answers[0].code == Code.BAD_SIGNATURE and answers[0].status == "bad_signature"
    assert answers[1].code == Code.WRONG_CHAIN_ID and answers[1].status == "wrong_chain_id"
    assert answers[2].code == Code.MALFORMED_TX
    assert answers[3].code in (Code.TX_TOO_LARGE, Code.MALFORMED_TX)
    assert all(a.reason for a in answers)

    channel = grpc.insecure_channel(net.nodes[1].grpc, options=[("grpc.max_send_message_length", 64 << 20)])
    try:
        # garbage bytes that are not a SubmitTxRequest at all: a typed RPC error, not a crash
        with pytest.raises(grpc.RpcError) as info:
            _raw_unary(channel, "/ita.v1.Node/SubmitTx")(GARBAGE_REQUEST, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # an oversized message: refused by the transport limit
        huge = node_pb2.SubmitTxsRequest(
            txs=[b"\x01" * (1 << 20)] * (MAX_GRPC_MESSAGE_BYTES // (1 << 20) + 1)
        )
        with pytest.raises(grpc.RpcError) as info:
            _raw_unary(channel, "/ita.v1.Node/SubmitTxs")(huge.SerializeToString(), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # empty submission, bad hash and address lengths: INVALID_ARGUMENT
        for method, request in (
            ("SubmitTx", node_pb2.SubmitTxRequest()),
            ("GetTx", node_pb2.GetTxRequest(hash=b"short")),
            ("GetAccount", node_pb2.GetAccountRequest(address=b"\x01" * 7)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                _raw_unary(channel, f"/ita.v1.Node/{method}")(request.SerializeToString(), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
    finally:
        channel.close()
    with pytest.raises(NotFound):
        client.block(10**9)

    # replayed nonces: the committed tx again (duplicate or nonce used), and a new body with its nonce
    replay_key = net.signer(TRADER + 1)
    first = replay_key.sign(sdk_tx.cancel_all(spec.symbol))
    assert client.submit(first).accepted
    committed = client.wait_for_tx(tx_hash(first), timeout=60)
    body = tx_pb2.TxBody.FromString(tx_pb2.SignedTx.FromString(first).body)
    again = client.submit(first)
    assert not again.accepted and again.code in (101, Code.NONCE_USED), again
    same_nonce = sdk_tx.sign_tx(
        replay_key.key, chain_id, sdk_tx.tx_body(chain_id, body.nonce, sdk_tx.cancel_all())
    )
    reused = client.submit(same_nonce)
    assert not reused.accepted and reused.code == Code.NONCE_USED, reused

    # nothing of it reached the chain: no bad tx is known, the victim's account is unchanged
    net.wait_advance(2, range(4))
    for raw in (bad_sig, wrong_chain, garbage, oversized_tx, same_nonce):
        assert client.tx(tx_hash(raw), missing_ok=True) is None
    assert _victim_state(client) == before
    assert client.tx(tx_hash(first)) is not None and committed.height >= 1
    assert all(p.alive() for p in net.procs)
    net.assert_same_chain()


def test_undecodable_request_is_invalid_argument(net: TestNet) -> None:
    with grpc.insecure_channel(net.nodes[0].grpc) as channel:
        for method in ("SubmitTx", "SubmitTxs", "GetTx", "GetAccount", "Status", "GetBlock"):
            with pytest.raises(grpc.RpcError) as info:
                _raw_unary(channel, f"/ita.v1.Node/{method}")(GARBAGE_REQUEST, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
    assert net.procs[0].alive()


# ---------------------------------------------------------------------------- bad input: Peer


def _gossip(address: str, messages: list[bytes], timeout: float = 15) -> grpc.RpcError | None:
    """Open a Peer.Gossip stream, send ``messages``, read until the server ends it; its error."""
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    try:
        call = channel.stream_stream(
            GOSSIP_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        responses = call(iter(messages), timeout=timeout)
        try:
            for _ in responses:
                pass
        except grpc.RpcError as exc:
            return exc
        return None
    finally:
        channel.close()


def _hello(chain_id: str, key: Key, nonce: bytes = b"\x07" * 32) -> bytes:
    hello = node_pb2.Hello(
        chain_id=chain_id,
        public_key=key.public_key,
        nonce=nonce,
        height=0,
        moniker="intruder",
        protocol_version=1,
    )
    return node_pb2.PeerMessage(hello=hello).SerializeToString()


def test_bad_input_on_peer_service_is_refused_without_state_change(net: TestNet) -> None:
    target = net.nodes[2]
    chain_id = net.plan.chain.chain_id
    before = _victim_state(net.client(2))
    outsider = Key.generate()
    insider = devnet_validator_key(0)  # a real validator key (devnet keys are public) ...
    proof = node_pb2.PeerMessage(hello_proof=node_pb2.HelloProof(signature=b"\x00" * 64)).SerializeToString()
    wrong_proof = node_pb2.PeerMessage(
        hello_proof=node_pb2.HelloProof(
            signature=outsider.sign(hello_sign_bytes(chain_id, b"\x00" * 32, insider.public_key))
        )
    ).SerializeToString()
    cases = {
        "garbage": [os.urandom(64)],
        "wrong chain": [_hello("another-chain-1", outsider)],
        "unknown key": [_hello(chain_id, outsider)],
        "zero proof": [_hello(chain_id, insider), proof],  # ... without its secret: the proof fails
        "forged proof": [_hello(chain_id, insider), wrong_proof],
        "consensus before hello": [node_pb2.PeerMessage(consensus=b"\x01\x02").SerializeToString()],
    }
    for name, messages in cases.items():
        error = _gossip(target.grpc, messages)
        assert error is not None, f"{name}: the stream was not refused"
        assert error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT), (
            name,
            error.code(),
            error.details(),
        )
    oversized = _gossip(target.grpc, [b"\x0a" + b"\xff" * (MAX_GRPC_MESSAGE_BYTES + 16)])
    assert oversized is not None and oversized.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    net.wait_advance(2, range(4))  # everyone still commits, nothing changed, nobody diverged
    assert all(p.alive() for p in net.procs)
    assert _victim_state(net.client(2)) == before
    net.assert_same_chain()
