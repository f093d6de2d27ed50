"""Block store: committed blocks, tx index, app hashes and state snapshots in LevelDB.

Theory of operation
-------------------
Keys (heights are u64 big-endian, so byte order is height order)::

    m:chain_id          chain id (checked on open)
    m:latest            u64 latest committed height (absent: empty store)
    m:genesis_app_hash  32 bytes, the app hash at height 0 (optional)
    b<h>                CommittedBlock protobuf bytes of height h
    i<h>                32-byte block id of height h (node/blocks.py)
    a<h>                32-byte app hash after height h
    t<tx hash>          u64 height || u32 index of the tx's execution, else its first inclusion
    s<h>                snapshot bytes (stf/snapshot.py) of the state after h

Invariants
- Blocks are stored for heights 1..latest with no gap; ``save_block`` only
  accepts latest+1, for this chain, linked to its predecessor (last_block_id
  and last_app_hash equal to the stored id and app hash of latest).
- Everything about one height (block, id, app hash, tx index, latest pointer
  and, optionally, the snapshot taken after it) is written in one LevelDB
  WriteBatch with sync=True: after a crash a height is either wholly there
  or wholly absent.
- A record that LevelDB cannot read, that does not decode, whose height
  disagrees with its key, or a missing block inside 1..latest raises
  ``StoreCorruptError``; ``check_integrity`` walks the whole chain.
- ``keep_snapshots`` (config ``snapshots_kept``): the batch that stores a snapshot also
  deletes all but the newest ``keep_snapshots`` of them (0: keep every one). Restart and the
  snapshot download use the newest; without pruning, one snapshot every
  ``snapshot_interval`` blocks grew the store without bound.
- LevelDB compression is off: the store is mostly signatures, keys and hashes. Snappy
  saved 25% of the block bytes here but cost ~9 us of CPU per stored tx (every memtable
  flush and compaction compresses again): 13% of a lone validator's CPU at 10,000 tx/s
  (perf). A store written with compression on still reads: LevelDB marks each block.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Final

import plyvel
from google.protobuf.message import DecodeError

from node.blocks import BlockShapeError, block_id, check_block_shape
from proto.ita.v1 import block_pb2
from stf.results import Code
from stf.snapshot import MAGIC as SNAPSHOT_MAGIC

__all__ = ["BlockStore", "StoreCorruptError", "StoreError"]

_CHAIN: Final = b"m:chain_id"
_LATEST: Final = b"m:latest"
_GENESIS_APP_HASH: Final = b"m:genesis_app_hash"
_BLOCK: Final = b"b"
_BLOCK_ID: Final = b"i"
_APP_HASH: Final = b"a"
_TX: Final = b"t"
_SNAPSHOT: Final = b"s"
_TX_LOC = struct.Struct(">QI")
_OK = int(Code.OK)
HASH_LEN: Final = 32


class StoreError(Exception):
    """The store cannot be opened or a write is refused (wrong height, chain, ...)."""


class StoreCorruptError(StoreError):
    """Stored data is unreadable or inconsistent; the node must stop."""


def _h(prefix: bytes, height: int) -> bytes:
    return prefix + height.to_bytes(8, "big")


def snapshot_height(data: bytes) -> int:
    """The height recorded in a stf snapshot's header (magic, u16 chain len, chain, u64 height...)."""
    if not data.startswith(SNAPSHOT_MAGIC) or len(data) < len(SNAPSHOT_MAGIC) + 2:
        raise ValueError("not an ita snapshot (bad magic)")
    pos = len(SNAPSHOT_MAGIC)
    chain_len = int.from_bytes(data[pos : pos + 2], "big")
    start = pos + 2 + chain_len
    if len(data) < start + 8:
        raise ValueError("snapshot truncated before its height")
    return int.from_bytes(data[start : start + 8], "big")


def _delete_older(batch: Any, heights: list[int], keep: int) -> list[int]:
    """Delete, in ``batch``, the snapshots of all but the last ``keep`` of the ascending
    ``heights``; returns the heights deleted."""
    doomed = heights[:-keep]
    for height in doomed:
        batch.delete(_h(_SNAPSHOT, height))
    return doomed


class BlockStore:
    def __init__(self, path: str | os.PathLike[str], chain_id: str, keep_snapshots: int = 0) -> None:
        if keep_snapshots < 0:
            raise ValueError("keep_snapshots is a count (0: keep every snapshot)")
        self.keep_snapshots = keep_snapshots
        Path(path).mkdir(parents=True, exist_ok=True)
        try:
            self._db = plyvel.DB(
                os.fspath(path), create_if_missing=True, paranoid_checks=True, compression=None
            )
        except plyvel.CorruptionError as exc:
            raise StoreCorruptError(f"block store {path} is corrupt: {exc}") from None
        except plyvel.IOError as exc:
            raise StoreError(f"cannot open block store {path} (is another node using it?): {exc}") from None
        self.path = Path(path)
        self.chain_id = chain_id
        stored = self._get(_CHAIN)
        if stored is None:
            self._db.put(_CHAIN, chain_id.encode(), sync=True)
        elif stored != chain_id.encode():
            self.close()
            raise StoreError(f"block store {path} belongs to chain {stored!r}, not {chain_id!r}")
        self._latest = self._read_latest()
        if self._latest and self._get(_h(_BLOCK, self._latest + 1)) is not None:
            raise self._corrupt(f"block {self._latest + 1} is stored above the latest height {self._latest}")
        if self._latest:
            self.block(self._latest)  # decodes and checks the newest record

    # ------------------------------------------------------------------ low level

    def _get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except plyvel.CorruptionError as exc:
            raise self._corrupt(f"unreadable record {key!r}: {exc}") from None
        return value

    def _corrupt(self, message: str) -> StoreCorruptError:
        return StoreCorruptError(f"block store {self.path}: {message}")

    def _read_latest(self) -> int:
        raw = self._get(_LATEST)
        if raw is None:
            return 0
        if len(raw) != 8:
            raise self._corrupt(f"latest-height record has {len(raw)} bytes")
        return int.from_bytes(raw, "big")

    def _require(self, key: bytes, what: str, length: int | None = None) -> bytes:
        value = self._get(key)
        if value is None:
            raise self._corrupt(f"{what} is missing (latest is {self._latest})")
        if length is not None and len(value) != length:
            raise self._corrupt(f"{what} has {len(value)} bytes, expected {length}")
        return value

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ blocks

    def latest_height(self) -> int:
        """The latest committed height; 0 for an empty store."""
        return self._latest

    def set_genesis_app_hash(self, app_hash: bytes) -> None:
        if len(app_hash) != HASH_LEN:
            raise StoreError(f"app hash must be {HASH_LEN} bytes")
        existing = self._get(_GENESIS_APP_HASH)
        if existing is not None and existing != app_hash:
            raise StoreError("the store already records a different genesis app hash")
        self._db.put(_GENESIS_APP_HASH, app_hash, sync=True)

    def save_block(self, committed: block_pb2.CommittedBlock, snapshot: bytes | None = None) -> None:
        """Append height latest+1 atomically (with the snapshot of the state after it, if given)."""
        header = committed.block.header
        height = header.height
        if height != self._latest + 1:
            raise StoreError(f"cannot store block {height}: the next height is {self._latest + 1}")
        try:
            check_block_shape(committed.block, self.chain_id, committed.tx_hashes)
        except BlockShapeError as exc:
            raise StoreError(f"cannot store block {height}: {exc}") from None
        n = len(committed.block.txs)
        if len(committed.results) != n or len(committed.tx_hashes) != n:
            results, hashes = len(committed.results), len(committed.tx_hashes)
            raise StoreError(f"block {height}: {n} txs, {results} results, {hashes} hashes")
        if len(committed.app_hash) != HASH_LEN:
            raise StoreError(f"block {height}: app hash must be {HASH_LEN} bytes")
        self._check_link(header)
        if snapshot is not None:
            self._check_snapshot(height, snapshot)
        seen: set[bytes] = set()
        with self._db.write_batch(transaction=True, sync=True) as batch:
            batch.put(_h(_BLOCK, height), committed.SerializeToString(deterministic=True))
            batch.put(_h(_BLOCK_ID, height), block_id(committed.block))
            batch.put(_h(_APP_HASH, height), committed.app_hash)
            pairs = zip(committed.tx_hashes, committed.results, strict=True)
            for index, (tx_hash, result) in enumerate(pairs):
                # An executed tx is indexed here: its nonce was fresh, so no earlier inclusion
                # executed. A rejected one only if the hash has no location yet (a replay of an
                # executed tx keeps pointing at the execution). Executed txs need no read.
                if result.code != _OK and (tx_hash in seen or self._get(_TX + tx_hash) is not None):
                    continue
                seen.add(tx_hash)
                batch.put(_TX + tx_hash, _TX_LOC.pack(height, index))
            if snapshot is not None:
                self._put_snapshot(batch, height, snapshot)
            batch.put(_LATEST, height.to_bytes(8, "big"))
        self._latest = height

    def _check_link(self, header: block_pb2.BlockHeader) -> None:
        if header.height == 1:
            genesis = self._get(_GENESIS_APP_HASH)
            if genesis is not None and header.last_app_hash != genesis:
                raise StoreError("block 1: last_app_hash is not the genesis app hash")
            return
        previous = header.height - 1
        if header.last_block_id != self.block_id(previous):
            raise StoreError(f"block {header.height}: last_block_id is not the id of block {previous}")
        if header.last_app_hash != self.app_hash(previous):
            raise StoreError(f"block {header.height}: last_app_hash is not the app hash after {previous}")

    def block_bytes(self, height: int) -> bytes | None:
        """The stored CommittedBlock bytes; None outside 1..latest."""
        if not 1 <= height <= self._latest:
            return None
        return self._require(_h(_BLOCK, height), f"block {height}")

    def block(self, height: int) -> block_pb2.CommittedBlock | None:
        raw = self.block_bytes(height)
        if raw is None:
            return None
        try:
            committed = block_pb2.CommittedBlock.FromString(raw)
        except DecodeError as exc:
            raise self._corrupt(f"block {height} does not decode: {exc}") from None
        if committed.block.header.height != height:
            raise self._corrupt(
                f"record of height {height} holds block {committed.block.header.height}"
            )
        return committed

    def block_id(self, height: int) -> bytes | None:
        if not 1 <= height <= self._latest:
            return None
        return self._require(_h(_BLOCK_ID, height), f"block id of {height}", HASH_LEN)

    def app_hash(self, height: int) -> bytes | None:
        """The app hash after ``height`` (height 0: the genesis app hash, if recorded)."""
        if height == 0:
            return self._get(_GENESIS_APP_HASH)
        if not 1 <= height <= self._latest:
            return None
        return self._require(_h(_APP_HASH, height), f"app hash of {height}", HASH_LEN)

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, index in block) of a committed tx, or None."""
        raw = self._get(_TX + tx_hash)
        if raw is None:
            return None
        if len(raw) != _TX_LOC.size:
            raise self._corrupt(f"tx index record of {tx_hash.hex()} is malformed")
        height, index = _TX_LOC.unpack(raw)
        if not 1 <= height <= self._latest:
            raise self._corrupt(f"tx {tx_hash.hex()} indexed at unknown height {height}")
        return height, index

    # ------------------------------------------------------------------ snapshots

    def _check_snapshot(self, height: int, data: bytes) -> None:
        try:
            recorded = snapshot_height(data)
        except ValueError as exc:
            raise StoreError(f"snapshot for height {height}: {exc}") from None
        if recorded != height:
            raise StoreError(f"snapshot says height {recorded}, stored as height {height}")

    def save_snapshot(self, height: int, data: bytes) -> None:
        """Store the snapshot of the state after ``height`` (a committed height)."""
        if not 1 <= height <= self._latest:
            raise StoreError(f"cannot store a snapshot for height {height}: latest is {self._latest}")
        self._check_snapshot(height, data)
        with self._db.write_batch(transaction=True, sync=True) as batch:
            self._put_snapshot(batch, height, data)

    def _put_snapshot(self, batch: Any, height: int, data: bytes) -> None:
        """Put a snapshot into ``batch`` and delete the ones ``keep_snapshots`` no longer keeps."""
        batch.put(_h(_SNAPSHOT, height), data)
        if self.keep_snapshots:  # the deletes apply after the put, in batch order
            _delete_older(batch, sorted({*self.snapshot_heights(), height}), self.keep_snapshots)

    def snapshot_heights(self) -> list[int]:
        keys = self._db.iterator(prefix=_SNAPSHOT, include_value=False)
        return [int.from_bytes(key[1:], "big") for key in keys]

    def snapshot(self, height: int) -> bytes | None:
        data = self._get(_h(_SNAPSHOT, height))
        if data is not None:
            self._verify_snapshot_record(height, data)
        return data

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        """(height, bytes) of the newest snapshot, or None."""
        with self._db.iterator(prefix=_SNAPSHOT, reverse=True) as it:
            for key, data in it:
                height = int.from_bytes(key[1:], "big")
                self._verify_snapshot_record(height, data)
                return height, data
        return None

    def _verify_snapshot_record(self, height: int, data: bytes) -> None:
        try:
            recorded = snapshot_height(data)
        except ValueError as exc:
            raise self._corrupt(f"snapshot {height}: {exc}") from None
        if recorded != height or height > self._latest:
            raise self._corrupt(
                f"snapshot record {height} holds height {recorded} (latest {self._latest})"
            )

    def prune_snapshots(self, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` snapshots; returns the deleted heights."""
        if keep < 1:
            raise ValueError("keep at least one snapshot")
        with self._db.write_batch(transaction=True, sync=True) as batch:
            return _delete_older(batch, self.snapshot_heights(), keep)

    # ------------------------------------------------------------------ integrity

    def check_integrity(self) -> None:
        """Walk every block: present, decodable, consecutive, linked, index consistent."""
        previous: block_pb2.CommittedBlock | None = None
        expected = 1
        with self._db.iterator(prefix=_BLOCK, include_value=False) as it:
            for key in it:
                height = int.from_bytes(key[1:], "big")
                if height != expected:
                    raise self._corrupt(f"height gap, found {height} after {expected - 1}")
                expected += 1
        if expected - 1 != self._latest:
            raise self._corrupt(
                f"blocks end at {expected - 1} but latest is {self._latest}"
            )
        for height in range(1, self._latest + 1):
            committed = self.block(height)
            assert committed is not None
            header = committed.block.header
            if self.block_id(height) != block_id(committed.block):
                raise self._corrupt(f"block id of {height} does not match its header")
            if self.app_hash(height) != committed.app_hash:
                raise self._corrupt(f"app hash of {height} disagrees with the block")
            if previous is not None and (
                header.last_block_id != block_id(previous.block)
                or header.last_app_hash != previous.app_hash
            ):
                raise self._corrupt(f"block {height} is not linked to {height - 1}")
            for tx_hash in committed.tx_hashes:
                location = self.tx_location(tx_hash)
                if location is None or not self._includes(location, tx_hash, height, committed):
                    raise self._corrupt(f"tx {tx_hash.hex()} of {height} not indexed")
            previous = committed

    def _includes(
        self, location: tuple[int, int], tx_hash: bytes, height: int, block: block_pb2.CommittedBlock
    ) -> bool:
        """Whether the block at ``location`` holds ``tx_hash`` there (``block`` is the one at ``height``)."""
        committed = block if location[0] == height else self.block(location[0])
        hashes = committed.tx_hashes if committed is not None else []
        return location[1] < len(hashes) and hashes[location[1]] == tx_hash
