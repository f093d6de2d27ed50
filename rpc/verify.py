"""Verification of committed blocks before the indexer replays them.

Theory of operation
- The indexer trusts only (a) its genesis file and (b) what 2/3+ of the genesis validator
  power signed. A committed block is accepted when:
  1. its header is for this chain, at the next height, and links to what we hold:
     ``last_block_id`` equals the id of the block we applied before it (when we know it:
     not for the first block after a snapshot) and ``last_app_hash`` equals *our* app hash
     after the previous height. The latter is the app-hash chain check: header H+1 carries
     the app hash after H, signed through H+1's certificate, so every replayed state is
     confirmed by the validators one block later, and a snapshot loaded from the node is
     confirmed by the first block after it;
  2. ``txs_hash`` commits to its transactions and ``tx_hashes`` match them;
  3. its commit certificate (consensus.certificate encoding) holds precommits of more than
     2/3 of the genesis validator power for ``block_id = sha256(Block serialized with
     deterministic=True)`` -- the exact bytes the proposer signed (nodes reject
     non-canonical blocks, so re-serializing reproduces them). A run of consecutive blocks
     that arrived together (catching up) is vouched for by the last one's certificate and
     the ``last_block_id`` hash links back from it (``vouch_run``), checked before any of
     them is applied: one certificate check per run instead of per block.
- After the replay, our app hash must equal the one the node reports for the block
  (``CommittedBlock.app_hash``) and our result codes must equal the node's: a cheap early
  alarm; the signed confirmation is check 1 at the next height.
- Every failure is an ``IndexerFatal``: indexing stops loudly instead of serving a state the
  indexer cannot vouch for. Verification never mutates anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from google.protobuf.message import DecodeError as ProtoDecodeError

from consensus.certificate import CertificateError, CommitCertificate, verify_commit_certificate
from consensus.codec import DecodeError
from consensus.validators import ValidatorSet
from node.blocks import block_id as compute_block_id  # one definition of the block id
from node.blocks import txs_hash_of
from proto.ita.v1 import block_pb2
from stf.config import ChainConfig
from stf.results import TxResult


class IndexerFatal(Exception):
    """Indexing must stop: the indexer can no longer vouch for the state it would serve."""

    code = "indexer_fatal"

    def __init__(self, height: int, message: str) -> None:
        super().__init__(f"height {height}: {message}")
        self.height = height


class BlockRejected(IndexerFatal):
    """A block is malformed, does not link to the previous one, or is not properly certified."""

    code = "block_rejected"


class AppHashMismatch(IndexerFatal):
    """Our replay disagrees with the chain's app hash (signed in the next header, or reported)."""

    code = "app_hash_mismatch"


class ResultMismatch(IndexerFatal):
    """Our replay produced different transaction result codes than the node reported."""

    code = "result_mismatch"


def validator_set(config: ChainConfig) -> ValidatorSet:
    """The genesis validator set in genesis order (the consensus validator index)."""
    return ValidatorSet([(v.public_key, v.power) for v in config.validators])


class ChainVerifier:
    """Checks committed blocks against the genesis validator set of one chain."""

    __slots__ = ("chain_id", "vset")

    def __init__(self, config: ChainConfig) -> None:
        self.chain_id = config.chain_id
        self.vset = validator_set(config)

    def verify(
        self,
        committed: block_pb2.CommittedBlock,
        height: int,
        last_app_hash: bytes,
        last_block_id: bytes | None,
        vouched_id: bytes | None = None,
    ) -> bytes:
        """Raise BlockRejected/AppHashMismatch unless `committed` is the certified next block;
        return its block id. `vouched_id`: the block's id as `vouch_run` computed it, whose
        certificate check was done once for the whole run."""
        block = committed.block
        header = block.header
        if header.chain_id != self.chain_id:
            raise BlockRejected(height, f"block is for chain {header.chain_id!r}, not {self.chain_id!r}")
        if header.height != height:
            raise BlockRejected(height, f"expected block {height}, got block {header.height}")
        if header.last_app_hash != last_app_hash:
            raise AppHashMismatch(
                height,
                f"header carries app hash {header.last_app_hash.hex()} for height {height - 1}, "
                f"our replay computed {last_app_hash.hex()}",
            )
        if last_block_id is not None and header.last_block_id != last_block_id:
            raise BlockRejected(height, "last_block_id does not match the block applied before it")
        txs = list(block.txs)
        sha256 = hashlib.sha256
        hashes = [sha256(tx).digest() for tx in txs]  # tx_hash of each: hashed once for both checks
        if header.txs_hash != txs_hash_of(hashes):
            raise BlockRejected(height, "txs_hash does not match the block's transactions")
        if list(committed.tx_hashes) != hashes:
            raise BlockRejected(height, "tx_hashes do not match the block's transactions")
        if len(committed.results) != len(txs):
            raise BlockRejected(height, f"{len(committed.results)} results for {len(txs)} transactions")
        if vouched_id is not None:
            return vouched_id
        block_id = compute_block_id(block)
        self._check_certificate(committed, height, block_id)
        return block_id

    def _check_certificate(self, committed: block_pb2.CommittedBlock, height: int, block_id: bytes) -> None:
        try:
            cert = CommitCertificate.decode(committed.certificate)
            verify_commit_certificate(cert, self.vset, self.chain_id, height, block_id)
        except (CertificateError, DecodeError, ValueError) as exc:
            raise BlockRejected(height, f"commit certificate rejected: {exc}") from exc

    def vouch_run(
        self, run: Sequence[block_pb2.CommittedBlock], height: int, last_block_id: bytes | None
    ) -> list[bytes]:
        """Vouch for consecutive blocks `height`, `height + 1`, ... with one certificate check:
        every header must name the id of the block before it (``last_block_id``), and the last
        block's certificate must verify. Its id commits to its header, which commits to the
        previous block's id, and so on back: the one certificate signs the whole run (the
        validator set is the genesis one throughout). Returns the block ids, for
        ``verify(..., vouched_id=...)`` of each block (which still checks everything else)."""
        ids: list[bytes] = []
        previous = last_block_id
        for offset, committed in enumerate(run):
            header = committed.block.header
            at = height + offset
            if header.chain_id != self.chain_id or header.height != at:
                raise BlockRejected(at, f"expected block {at} of chain {self.chain_id!r}, got "
                                        f"block {header.height} of {header.chain_id!r}")
            if previous is not None and header.last_block_id != previous:
                raise BlockRejected(at, "last_block_id does not match the block before it")
            previous = compute_block_id(committed.block)
            ids.append(previous)
        if run:
            self._check_certificate(run[-1], height + len(run) - 1, ids[-1])
        return ids


def check_replay(committed: block_pb2.CommittedBlock, app_hash: bytes, results: Sequence[TxResult]) -> None:
    """Our replay against the node's report of the same block (early alarm, see module doc)."""
    height = committed.block.header.height
    if committed.app_hash != app_hash:
        raise AppHashMismatch(
            height,
            f"node reports app hash {committed.app_hash.hex()}, our replay computed {app_hash.hex()}",
        )
    for index, (ours, theirs) in enumerate(zip(results, committed.results, strict=True)):
        if int(ours.code) != theirs.code or ours.order_id != theirs.order_id:
            raise ResultMismatch(
                height,
                f"tx {index}: node reports code {theirs.code} order {theirs.order_id}, "
                f"our replay gave {int(ours.code)} order {ours.order_id}",
            )


def decode_committed(data: bytes) -> block_pb2.CommittedBlock:
    """Parse CommittedBlock bytes (from a store); a decode failure is a BlockRejected at height 0."""
    try:
        return block_pb2.CommittedBlock.FromString(data)
    except ProtoDecodeError as exc:
        raise BlockRejected(0, f"undecodable CommittedBlock: {exc}") from exc
