"""The node protos: generated, importable, and carrying the methods and oneof the node relies on."""

from __future__ import annotations

from proto.ita.v1 import block_pb2, node_pb2, node_pb2_grpc


def test_node_service_methods() -> None:
    service = node_pb2.DESCRIPTOR.services_by_name["Node"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "SubmitTx": (False, False),
        "SubmitTxs": (False, False),
        "Status": (False, False),
        "GetBlock": (False, False),
        "GetTx": (False, False),
        "GetAccount": (False, False),
        "GetSnapshot": (False, True),
        "StreamBlocks": (False, True),
    }
    assert hasattr(node_pb2_grpc, "NodeServicer") and hasattr(node_pb2_grpc, "PeerStub")


def test_peer_gossip_is_bidirectional_and_message_oneof() -> None:
    gossip = node_pb2.DESCRIPTOR.services_by_name["Peer"].methods_by_name["Gossip"]
    assert gossip.client_streaming and gossip.server_streaming
    oneof = node_pb2.PeerMessage.DESCRIPTOR.oneofs_by_name["msg"]
    assert [f.name for f in oneof.fields] == [
        "hello", "hello_proof", "consensus", "txs", "block_request", "block", "status",
    ]
    msg = node_pb2.PeerMessage(block=block_pb2.CommittedBlock(app_hash=b"x"))
    assert node_pb2.PeerMessage.FromString(msg.SerializeToString()).WhichOneof("msg") == "block"


def test_get_block_returns_the_block_proto_type() -> None:
    method = node_pb2.DESCRIPTOR.services_by_name["Node"].methods_by_name["GetBlock"]
    assert method.output_type.full_name == "ita.v1.CommittedBlock"
