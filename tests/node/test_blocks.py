from __future__ import annotations

import hashlib

import pytest

from node.blocks import (
    BlockShapeError,
    block_id,
    check_block_shape,
    committed_block,
    compute_txs_hash,
    decode_block,
    encode_block,
    header_bytes,
    header_id,
    make_block,
    result_from_proto,
    result_to_proto,
)
from proto.ita.v1 import block_pb2
from stf.results import Code, TxResult
from stf.signing import tx_hash
from tests.node.support import CHAIN_ID, build_chain, proposer, transfer_tx


def test_header_bytes_layout_is_the_documented_one() -> None:
    header = block_pb2.BlockHeader(
        chain_id="c-1", height=7, time_ms=1234, proposer=b"\x01" * 20,
        last_block_id=b"\x02" * 32, last_app_hash=b"\x03" * 32, txs_hash=b"\x04" * 32,
    )
    expected = (
        b"ita/block/v1\x00" + b"\x03c-1" + (7).to_bytes(8, "big") + (1234).to_bytes(8, "big")
        + b"\x14" + b"\x01" * 20 + b"\x20" + b"\x02" * 32 + b"\x20" + b"\x03" * 32 + b"\x20" + b"\x04" * 32
    )
    assert header_bytes(header) == expected
    assert header_id(header) == hashlib.sha256(expected).digest()


def test_header_id_changes_with_every_field_and_ignores_protobuf_encoding() -> None:
    base = block_pb2.BlockHeader(
        chain_id="c-1", height=7, time_ms=1234, proposer=b"\x01" * 20,
        last_block_id=b"\x02" * 32, last_app_hash=b"\x03" * 32, txs_hash=b"\x04" * 32,
    )
    ids = {header_id(base)}
    for field, value in [("chain_id", "c-2"), ("height", 8), ("time_ms", 1235), ("proposer", b"\x09" * 20),
                         ("last_block_id", b""), ("last_app_hash", b"\x05" * 32), ("txs_hash", b"\x06" * 32)]:
        other = block_pb2.BlockHeader()
        other.CopyFrom(base)
        setattr(other, field, value)
        ids.add(header_id(other))
    assert len(ids) == 8
    reparsed = block_pb2.BlockHeader.FromString(base.SerializeToString())
    assert header_id(reparsed) == header_id(base)


def test_block_id_is_the_consensus_id_of_the_canonical_bytes() -> None:
    from consensus import compute_block_id

    block = make_block(CHAIN_ID, 1, 1000, proposer(), b"", b"\x03" * 32, [transfer_tx(0, 1)])
    raw = encode_block(block)
    assert block_id(block) == compute_block_id(raw)
    assert decode_block(raw) == block
    padded = raw + block_pb2.Block(header=block.header).SerializeToString()  # a repeated header field
    with pytest.raises(BlockShapeError, match="canonical"):
        decode_block(padded)
    with pytest.raises(BlockShapeError, match="protobuf"):
        decode_block(b"\xff\xff")


def test_txs_hash_commits_to_order_and_count() -> None:
    a, b = transfer_tx(0, 1), transfer_tx(1, 2)
    assert compute_txs_hash([a, b]) != compute_txs_hash([b, a])
    assert compute_txs_hash([]) == hashlib.sha256(b"ita/txs/v1\x00" + b"\x00\x00\x00\x00").digest()
    assert compute_txs_hash([a]) == hashlib.sha256(b"ita/txs/v1\x00\x00\x00\x00\x01" + tx_hash(a)).digest()


def test_block_shape_checks() -> None:
    block = make_block(CHAIN_ID, 2, 10, proposer(), b"\x00" * 32, b"\x01" * 32, [transfer_tx(0, 1)])
    check_block_shape(block, CHAIN_ID)
    with pytest.raises(BlockShapeError, match="chain"):
        check_block_shape(block, "other-chain")
    block.txs.append(transfer_tx(0, 2))
    with pytest.raises(BlockShapeError, match="txs_hash"):
        check_block_shape(block, CHAIN_ID)
    with pytest.raises(BlockShapeError, match="last_block_id"):
        make_block(CHAIN_ID, 1, 10, proposer(), b"\x00" * 32, b"\x01" * 32, [])
    with pytest.raises(BlockShapeError, match="proposer"):
        make_block(CHAIN_ID, 1, 10, b"short", b"", b"\x01" * 32, [])


def test_result_round_trip_mirrors_to_dict() -> None:
    items = [TxResult(Code.OK, "", 42), TxResult(Code.INSUFFICIENT_MARGIN, "no margin")]
    result = TxResult(Code.OK, "", 0, items)
    msg = result_to_proto(result)
    assert msg.status == "ok" and msg.items[1].status == "insufficient_margin" and msg.items[0].order_id == 42
    back = result_from_proto(block_pb2.TxResult.FromString(msg.SerializeToString()))
    assert back.to_dict() == result.to_dict()
    with pytest.raises(BlockShapeError, match="unknown result code"):
        result_from_proto(block_pb2.TxResult(code=9999))


def test_committed_block_from_a_real_chain() -> None:
    _, blocks = build_chain(2)
    cb = blocks[1]
    assert cb.block.header.last_block_id == block_id(blocks[0].block)
    assert cb.block.header.last_app_hash == blocks[0].app_hash
    assert list(cb.tx_hashes) == [tx_hash(t) for t in cb.block.txs]
    with pytest.raises(BlockShapeError, match="results"):
        committed_block(cb.block, b"", [], cb.app_hash)


def test_committed_block_results_are_result_to_proto() -> None:
    """committed_block builds its results in place; each equals result_to_proto's message,
    batch items included."""
    _, blocks = build_chain(1, txs_per_block=3)
    block = blocks[0].block
    results = [
        TxResult(Code.OK, "", 7),
        TxResult(Code.OK, "", 0, [TxResult(Code.OK, "", 8), TxResult(Code.INSUFFICIENT_MARGIN, "no margin")]),
        TxResult(Code.NONCE_USED, "nonce 5 was already used"),
    ]
    committed = committed_block(block, b"cert", results, b"\x02" * 32)
    assert list(committed.results) == [result_to_proto(r) for r in results]
    assert committed.results[1].items[1].status == "insufficient_margin"
    assert committed.certificate == b"cert" and committed.app_hash == b"\x02" * 32
