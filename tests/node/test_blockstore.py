from __future__ import annotations

from pathlib import Path

import plyvel
import pytest

from node.blocks import block_id
from node.blockstore import BlockStore, StoreCorruptError, StoreError
from proto.ita.v1 import block_pb2
from stf.signing import tx_hash
from stf.snapshot import decode_snapshot
from tests.node.support import CHAIN_ID, build_chain, chain

SNAPSHOTS: dict[int, bytes] = {}
STATE, BLOCKS = build_chain(6, txs_per_block=3, snapshots=SNAPSHOTS, snapshot_every=2)
GENESIS_APP_HASH = BLOCKS[0].block.header.last_app_hash


def filled(path: Path, n: int = 6, keep_snapshots: int = 0) -> BlockStore:
    store = BlockStore(path, CHAIN_ID, keep_snapshots)
    store.set_genesis_app_hash(GENESIS_APP_HASH)
    for committed in BLOCKS[:n]:
        height = committed.block.header.height
        store.save_block(committed, snapshot=SNAPSHOTS.get(height))
    return store


def test_empty_store(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        assert store.latest_height() == 0
        assert store.block(1) is None and store.block_bytes(0) is None and store.block_id(1) is None
        assert store.app_hash(0) is None and store.app_hash(1) is None
        assert store.latest_snapshot() is None and store.snapshot_heights() == []
        assert store.tx_location(b"\x00" * 32) is None
        store.check_integrity()


def test_blocks_index_app_hashes_and_snapshots_survive_reopen(tmp_path: Path) -> None:
    filled(tmp_path / "db").close()
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        assert store.latest_height() == 6
        store.check_integrity()
        assert store.app_hash(0) == GENESIS_APP_HASH
        for committed in BLOCKS:
            height = committed.block.header.height
            assert store.block(height) == committed
            assert store.block_bytes(height) == committed.SerializeToString(deterministic=True)
            assert store.block_id(height) == block_id(committed.block)
            assert store.app_hash(height) == committed.app_hash
            for index, raw in enumerate(committed.block.txs):
                assert store.tx_location(tx_hash(raw)) == (height, index)
        assert store.snapshot_heights() == [2, 4, 6]
        latest = store.latest_snapshot()
        assert latest is not None and latest[0] == 6
        state = decode_snapshot(chain(), latest[1])
        assert state.app_hash == STATE.app_hash == BLOCKS[-1].app_hash
        assert store.snapshot(4) == SNAPSHOTS[4] and store.snapshot(3) is None


def test_writes_out_of_order_or_unlinked_are_refused(tmp_path: Path) -> None:
    with filled(tmp_path / "db", n=2) as store:
        with pytest.raises(StoreError, match="the next height is 3"):
            store.save_block(BLOCKS[3])
        with pytest.raises(StoreError, match="the next height is 3"):
            store.save_block(BLOCKS[1])
        bad = block_pb2.CommittedBlock()
        bad.CopyFrom(BLOCKS[2])
        bad.block.header.last_app_hash = b"\x00" * 32
        with pytest.raises(StoreError, match="last_app_hash"):
            store.save_block(bad)
        bad.CopyFrom(BLOCKS[2])
        bad.block.header.last_block_id = b"\x00" * 32
        with pytest.raises(StoreError, match="last_block_id"):
            store.save_block(bad)
        bad.CopyFrom(BLOCKS[2])
        del bad.results[0]
        with pytest.raises(StoreError, match="results"):
            store.save_block(bad)
        bad.CopyFrom(BLOCKS[2])
        bad.block.txs.pop()
        with pytest.raises(StoreError, match="txs_hash"):
            store.save_block(bad)
        with pytest.raises(StoreError, match="snapshot says height 2"):
            store.save_block(BLOCKS[2], snapshot=SNAPSHOTS[2])
        assert store.latest_height() == 2 and store.block(3) is None  # nothing half-written
        with pytest.raises(StoreError, match="latest is 2"):
            store.save_snapshot(3, SNAPSHOTS[2])
        store.check_integrity()


def test_genesis_app_hash_links_block_one(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        store.set_genesis_app_hash(b"\x01" * 32)
        with pytest.raises(StoreError, match="genesis app hash"):
            store.save_block(BLOCKS[0])
        with pytest.raises(StoreError, match="different genesis"):
            store.set_genesis_app_hash(GENESIS_APP_HASH)


def test_other_chain_and_locked_store(tmp_path: Path) -> None:
    filled(tmp_path / "db", n=1).close()
    with pytest.raises(StoreError, match="belongs to chain"):
        BlockStore(tmp_path / "db", "another-chain")
    with BlockStore(tmp_path / "db", CHAIN_ID), pytest.raises(StoreError, match="another node"):
        BlockStore(tmp_path / "db", CHAIN_ID)


def test_prune_snapshots(tmp_path: Path) -> None:
    with filled(tmp_path / "db") as store:
        assert store.prune_snapshots(keep=1) == [2, 4]
        assert store.snapshot_heights() == [6]
        with pytest.raises(ValueError):
            store.prune_snapshots(keep=0)


def test_storing_a_snapshot_keeps_only_the_newest(tmp_path: Path) -> None:
    """keep_snapshots: the write that stores a snapshot deletes the ones beyond the newest N,
    whether the snapshot comes with its block or on its own."""
    with filled(tmp_path / "db", n=4, keep_snapshots=2) as store:
        assert store.snapshot_heights() == [2, 4]
        store.save_block(BLOCKS[4])
        store.save_block(BLOCKS[5], snapshot=SNAPSHOTS[6])
        assert store.snapshot_heights() == [4, 6]
        latest = store.latest_snapshot()
        assert latest is not None and latest == (6, SNAPSHOTS[6])
        store.save_snapshot(2, SNAPSHOTS[2])  # older than those kept: not kept either
        assert store.snapshot_heights() == [4, 6]
    with pytest.raises(ValueError):
        BlockStore(tmp_path / "other", CHAIN_ID, keep_snapshots=-1)


def test_a_store_written_with_snappy_compression_still_reads(tmp_path: Path) -> None:
    """The store no longer compresses; records an older node wrote compressed stay readable."""
    filled(tmp_path / "db", n=3).close()
    old = plyvel.DB(str(tmp_path / "db"), compression="snappy")  # what the store used to open with
    for committed in BLOCKS[3:]:  # raw records the way save_block lays them out, compressed
        height = committed.block.header.height
        old.put(b"b" + height.to_bytes(8, "big"), committed.SerializeToString(deterministic=True))
        old.put(b"i" + height.to_bytes(8, "big"), block_id(committed.block))
        old.put(b"a" + height.to_bytes(8, "big"), committed.app_hash)
        for index, raw in enumerate(committed.block.txs):
            old.put(b"t" + tx_hash(raw), height.to_bytes(8, "big") + index.to_bytes(4, "big"))
    old.put(b"m:latest", (6).to_bytes(8, "big"))
    old.compact_range()  # into compressed table files
    old.close()
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        store.check_integrity()
        assert [store.block(h) for h in range(1, 7)] == BLOCKS


def raw_db(path: Path) -> plyvel.DB:
    return plyvel.DB(str(path))


def key(prefix: bytes, height: int) -> bytes:
    return prefix + height.to_bytes(8, "big")


def test_undecodable_block_is_corruption(tmp_path: Path) -> None:
    filled(tmp_path / "db").close()
    db = raw_db(tmp_path / "db")
    db.put(key(b"b", 3), b"\xff\xff\xff garbage")
    db.close()
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        with pytest.raises(StoreCorruptError, match="block 3 does not decode"):
            store.block(3)
        with pytest.raises(StoreCorruptError, match="block 3"):
            store.check_integrity()


def test_block_under_the_wrong_height_is_corruption(tmp_path: Path) -> None:
    filled(tmp_path / "db").close()
    db = raw_db(tmp_path / "db")
    db.put(key(b"b", 2), BLOCKS[2].SerializeToString())
    db.close()
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        with pytest.raises(StoreCorruptError, match="holds block 3"):
            store.block(2)


def test_height_gap_is_corruption(tmp_path: Path) -> None:
    filled(tmp_path / "db").close()
    db = raw_db(tmp_path / "db")
    db.delete(key(b"b", 4))
    db.close()
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        with pytest.raises(StoreCorruptError, match="block 4 is missing"):
            store.block(4)
        with pytest.raises(StoreCorruptError, match="height gap, found 5 after 3"):
            store.check_integrity()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ((b"a" + (5).to_bytes(8, "big"), b"\x00" * 32), "app hash of 5 disagrees"),
        ((b"i" + (3).to_bytes(8, "big"), b"\x00" * 32), "block id of 3 does not match"),
        ((b"t" + BLOCKS[1].tx_hashes[0], None), "not indexed"),
    ],
)
def test_inconsistent_records_are_corruption(
    tmp_path: Path, tamper: tuple[bytes, bytes | None], message: str
) -> None:
    filled(tmp_path / "db").close()
    db = raw_db(tmp_path / "db")
    k, v = tamper
    if v is None:
        db.delete(k)
    else:
        db.put(k, v)
    db.close()
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        with pytest.raises(StoreCorruptError, match=message):
            store.check_integrity()


def test_a_block_not_linked_to_its_parent_is_corruption(tmp_path: Path) -> None:
    """Block 3 replaced by one whose header points elsewhere, its own records made consistent:
    only the hash link to block 2 can tell, and the integrity walk does."""
    filled(tmp_path / "db").close()
    forged = block_pb2.CommittedBlock()
    forged.CopyFrom(BLOCKS[2])
    forged.block.header.last_block_id = b"\x07" * 32
    db = raw_db(tmp_path / "db")
    db.put(b"b" + (3).to_bytes(8, "big"), forged.SerializeToString())
    db.put(b"i" + (3).to_bytes(8, "big"), block_id(forged.block))
    db.close()
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        with pytest.raises(StoreCorruptError, match="block 3 is not linked to 2"):
            store.check_integrity()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda db: db.put(b"m:latest", b"\x01"), "latest-height record has 1 bytes"),
        (lambda db: db.put(key(b"b", 7), BLOCKS[0].SerializeToString()), "block 7 is stored above"),
        (lambda db: db.delete(key(b"b", 6)), "block 6 is missing"),
        (lambda db: db.put(key(b"s", 9), b"ITASNAP1junk"), "snapshot"),
    ],
)
def test_corruption_detected_on_open(tmp_path: Path, mutate: object, message: str) -> None:
    filled(tmp_path / "db").close()
    db = raw_db(tmp_path / "db")
    mutate(db)  # type: ignore[operator]
    db.close()
    with pytest.raises(StoreCorruptError, match=message):
        store = BlockStore(tmp_path / "db", CHAIN_ID)
        store.latest_snapshot()


def test_leveldb_checksum_damage_is_corruption(tmp_path: Path) -> None:
    filled(tmp_path / "db").close()
    (log,) = (tmp_path / "db").glob("*.log")
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="corrupt"):
        BlockStore(tmp_path / "db", CHAIN_ID)


def test_a_replayed_tx_keeps_its_first_location(tmp_path: Path) -> None:
    from node.blocks import committed_block, make_block, stf_header
    from stf.block import apply_block
    from tests.node.support import BLOCK_MS, proposer

    state, blocks = build_chain(2)
    replay = blocks[0].block.txs[1]
    block = make_block(
        CHAIN_ID, 3, chain().genesis_time_ms + 3 * BLOCK_MS, proposer(),
        block_id(blocks[1].block), state.app_hash, [replay, replay],
    )
    result = apply_block(state, stf_header(block.header), list(block.txs))
    assert [r.code.name for r in result.results] == ["NONCE_USED", "NONCE_USED"]
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        for committed in [*blocks, committed_block(block, b"c", result.results, result.app_hash)]:
            store.save_block(committed)
        assert store.tx_location(tx_hash(replay)) == (1, 1)
        store.check_integrity()


def test_a_tx_rejected_first_and_executed_later_is_located_at_its_execution(tmp_path: Path) -> None:
    from node.blocks import committed_block, make_block, stf_header
    from stf.block import apply_block
    from tests.node.support import BLOCK_MS, proposer, transfer_tx

    state, blocks = build_chain(2)
    early = transfer_tx(5, 10_000, to=1)  # account 5 does not exist yet: rejected, nonce not consumed
    fund = transfer_tx(0, 10_001, to=5, amount=10)
    heights = [(3, [early]), (4, [fund]), (5, [early, early])]
    with BlockStore(tmp_path / "db", CHAIN_ID) as store:
        for committed in blocks:
            store.save_block(committed)
        codes = []
        for height, txs in heights:
            block = make_block(
                CHAIN_ID, height, chain().genesis_time_ms + height * BLOCK_MS, proposer(),
                store.block_id(height - 1) or b"", state.app_hash, txs,
            )
            result = apply_block(state, stf_header(block.header), list(block.txs))
            codes += [r.code.name for r in result.results]
            store.save_block(committed_block(block, b"c", result.results, result.app_hash))
        assert codes == ["UNKNOWN_ACCOUNT", "OK", "OK", "NONCE_USED"]
        assert store.tx_location(tx_hash(early)) == (5, 0)  # not block 3, not the replay after it
        store.check_integrity()
