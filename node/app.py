"""The application behind consensus: an ABCI-shaped boundary around the STF.

Theory of operation (DESIGN.md principle 8)
- `check_tx`: mempool admission against the latest *committed* state (nonce window, used
  nonces, sender exists): the signature was already checked in a worker process.
- `prepare_proposal`: the proposer's block for height h = committed + 1: the canonical
  bytes of a `Block` whose header carries the previous block id and the app hash after
  h - 1 (so block h's app hash is signed in block h + 1's certificate).
- `process_proposal`: a proposed block is valid iff its bytes are canonical, its shape is
  right (chain id, txs_hash, limits), it extends our committed chain (height, last block
  id, last app hash), its proposer is a validator and its time is after the previous
  block's and not further ahead of our clock than `max_time_drift_ms`. Transactions are not
  judged here: an invalid transaction becomes a rejected result in finalize.
- `finalize_block`: runs the block through `stf.apply_block` (in place) and returns the
  results and the new app hash. `commit` then persists block + certificate + results +
  app hash (+ a snapshot every `snapshot_interval` blocks) in one atomic store write.
  Results are persisted before the block counts as committed; a crash between the two
  steps loses only in-memory state, which restart rebuilds from the store.
- Restart: `recover_state` loads the latest stored snapshot (its hash is verified on load)
  or genesis, and replays the stored blocks after it, checking each app hash.
Signatures are verified once: `VerifiedTxs` remembers the hashes of txs whose signatures
verified in the mempool's worker processes (a tx's hash fixes its key, signature and signed
bytes); finalize tells the STF which txs those are and the STF checks only the others (txs
that reached us in a proposal before their gossip was verified, synced blocks). Verifying
those in the workers before prevoting was tried: the vote then queued behind the gossip
batches and 4-validator p99 latency rose (bench/node.py, 2,500 tx/s: 634/657 ms vs 375/600).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass

from node.blocks import (
    BlockShapeError,
    check_block_shape,
    committed_block,
    decode_block,
    encode_block,
    make_block,
    stf_header,
)
from node.blockstore import BlockStore, StoreCorruptError
from proto.ita.v1 import block_pb2
from stf.block import BlockResult, apply_block, genesis_state
from stf.config import ChainConfig
from stf.signing import verify_signature
from stf.snapshot import SnapshotError, decode_snapshot, encode_snapshot
from stf.state import State

log = logging.getLogger("ita.app")

CRASH_ENV = "ITA_CRASH_AT"  # "<point>" or "<point>:<height>": os._exit at that point (tests)


def crash_point(name: str, height: int) -> None:
    """Die abruptly at a named point when the environment asks for it (crash-recovery tests)."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted and wanted in (name, f"{name}:{height}"):
        log.warning("crash point reached", extra={"point": name, "height": height})
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(99)


class VerifiedTxs:
    """Bounded set of hashes of txs whose signatures verified (oldest forgotten first)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._good: OrderedDict[bytes, None] = OrderedDict()

    def remember(self, tx_hash: bytes) -> None:
        self._good[tx_hash] = None
        while len(self._good) > self.capacity:
            self._good.popitem(last=False)

    def __len__(self) -> int:
        return len(self._good)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._good

    def flags(self, hashes: list[bytes]) -> list[bool]:
        """stf.block.apply_block's ``verified``: which of these txs are known to verify."""
        good = self._good
        return [h in good for h in hashes]


@dataclass(slots=True)
class Finalized:
    block: block_pb2.Block
    raw: bytes
    result: BlockResult
    hashes: list[bytes]  # tx_hash of each tx
    verified_inline: int = 0  # txs whose signatures the execution checked (not known to verify)


class ProposalRejected(ValueError):
    """process_proposal's reason for voting nil."""


def recover_state(config: ChainConfig, store: BlockStore) -> State:
    """Latest snapshot (verified) or genesis, then every stored block after it."""
    latest = store.latest_snapshot()
    if latest is not None:
        height, data = latest
        try:
            state = decode_snapshot(config, data)
        except SnapshotError as exc:
            raise StoreCorruptError(f"snapshot at height {height} does not verify: {exc}") from exc
    else:
        state = genesis_state(config)
    for height in range(state.height + 1, store.latest_height() + 1):
        committed = store.block(height)
        if committed is None:
            raise StoreCorruptError(f"block {height} is missing from the store")
        result = apply_block(state, stf_header(committed.block.header), list(committed.block.txs))
        if result.app_hash != committed.app_hash:
            raise StoreCorruptError(
                f"replaying block {height} gives app hash {result.app_hash.hex()}, "
                f"the store recorded {committed.app_hash.hex()}"
            )
    return state


class Application:
    def __init__(
        self,
        config: ChainConfig,
        store: BlockStore,
        snapshot_interval: int = 0,
        max_time_drift_ms: int = 5_000,
    ) -> None:
        self.config = config
        self.store = store
        self.snapshot_interval = snapshot_interval
        self.max_time_drift_ms = max_time_drift_ms
        self.verified = VerifiedTxs()
        self.validators = {v.address for v in config.validators}
        # The last proposal that passed process_proposal: (raw bytes, decoded block, tx hashes),
        # so finalize and commit of that block neither decode nor hash its txs again.
        self._checked: tuple[bytes, block_pb2.Block, list[bytes]] | None = None
        self.state = recover_state(config, store)
        if store.latest_height() == 0:
            store.set_genesis_app_hash(self.state.app_hash)

    # -- accessors ---------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.state.height

    def last_block_id(self) -> bytes:
        """Id of the latest committed block; empty before the first one."""
        if self.state.height == 0:
            return b""
        return self.store.block_id(self.state.height) or b""

    # -- proposals ---------------------------------------------------------------------------
    def prepare_proposal(self, height: int, now_ms: int, proposer: bytes, txs: list[bytes]) -> bytes:
        if height != self.state.height + 1:
            raise ValueError(f"cannot propose height {height} on top of {self.state.height}")
        time_ms = max(now_ms, self.state.time_ms + 1)
        block = make_block(
            self.config.chain_id, height, time_ms, proposer, self.last_block_id(), self.state.app_hash, txs
        )
        return encode_block(block)

    def process_proposal(self, height: int, raw: bytes, now_ms: int) -> block_pb2.Block:
        """The decoded block if it is a valid proposal for `height`, else ProposalRejected."""
        try:
            block = decode_block(raw)
            hashes = check_block_shape(block, self.config.chain_id)
        except BlockShapeError as exc:
            raise ProposalRejected(str(exc)) from None
        header = block.header
        if header.height != height or height != self.state.height + 1:
            raise ProposalRejected(f"block height {header.height}, expected {self.state.height + 1}")
        if header.last_block_id != self.last_block_id():
            raise ProposalRejected("last_block_id does not match our chain")
        if header.last_app_hash != self.state.app_hash:
            raise ProposalRejected("last_app_hash does not match our state")
        if header.proposer not in self.validators:
            raise ProposalRejected("proposer is not a validator")
        if header.time_ms <= self.state.time_ms:
            raise ProposalRejected(f"block time {header.time_ms} not after {self.state.time_ms}")
        if header.time_ms > now_ms + self.max_time_drift_ms:
            raise ProposalRejected(f"block time {header.time_ms} is ahead of our clock {now_ms}")
        if len(block.txs) > self.config.max_block_txs or len(raw) > self.config.max_block_bytes:
            raise ProposalRejected("block exceeds the genesis limits")
        self._checked = (raw, block, hashes)
        return block

    def unverified_proposal_txs(self) -> list[bytes]:
        """The txs of the proposal process_proposal last accepted that are not known to verify."""
        if self._checked is None:
            return []
        _, block, hashes = self._checked
        verified = self.verified
        return [tx for tx, digest in zip(block.txs, hashes, strict=True) if digest not in verified]

    # -- execution ---------------------------------------------------------------------------
    def finalize_block(self, raw: bytes) -> Finalized:
        checked = self._checked
        if checked is not None and (checked[0] is raw or checked[0] == raw):
            _, block, hashes = checked
        else:  # a block we did not validate (block sync): its shape is checked here
            block = decode_block(raw)
            hashes = check_block_shape(block, self.config.chain_id)
        self._checked = None
        header = block.header
        if header.height != self.state.height + 1:
            raise ValueError(f"finalize of height {header.height} on top of {self.state.height}")
        flags = self.verified.flags(hashes)
        result = apply_block(self.state, stf_header(header), list(block.txs), verify_signature, flags)
        return Finalized(block, raw, result, hashes, len(flags) - sum(flags))

    def commit(self, finalized: Finalized, certificate: bytes) -> block_pb2.CommittedBlock:
        height = finalized.block.header.height
        crash_point("after_finalize", height)
        block, result = finalized.block, finalized.result
        committed = committed_block(block, certificate, result.results, result.app_hash, finalized.hashes)
        snapshot = None
        if self.snapshot_interval and height % self.snapshot_interval == 0:
            snapshot = encode_snapshot(self.state)
            crash_point("during_snapshot", height)
        self.store.save_block(committed, snapshot)
        crash_point("after_commit", height)
        return committed
