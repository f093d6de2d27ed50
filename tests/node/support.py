"""Shared helpers for node tests: the devnet chain, signed txs, a chain of real committed blocks."""

from __future__ import annotations

from functools import cache

from genesis.devnet import DEVNET_CHAIN_ID, devnet_config
from node.blocks import committed_block, make_block, stf_header
from proto.ita.v1 import block_pb2
from sdk import tx as sdk_tx
from sdk.keys import Key, devnet_account_key, devnet_validator_key
from stf.block import apply_block, genesis_state
from stf.config import ChainConfig
from stf.snapshot import encode_snapshot
from stf.state import State

CHAIN_ID = DEVNET_CHAIN_ID
BLOCK_MS = 500


@cache
def chain() -> ChainConfig:
    return devnet_config(validators=1, accounts=4)


def account(i: int) -> Key:
    return devnet_account_key(i)


def proposer() -> bytes:
    return devnet_validator_key(0).address


def transfer_tx(
    sender: int, nonce_offset: int, to: int = 1, amount: int = 1, chain_id: str = CHAIN_ID
) -> bytes:
    """A signed transfer whose nonce is the genesis time + nonce_offset (inside the window)."""
    nonce = chain().genesis_time_ms + nonce_offset
    body = sdk_tx.tx_body(chain_id, nonce, sdk_tx.transfer(account(to).address, amount))
    return sdk_tx.sign_tx(account(sender), chain_id, body)


def corrupt_signature(raw: bytes) -> bytes:
    from proto.ita.v1 import tx_pb2

    signed = tx_pb2.SignedTx.FromString(raw)
    signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    return signed.SerializeToString(deterministic=True)


def build_chain(
    n_blocks: int, txs_per_block: int = 2, snapshots: dict[int, bytes] | None = None, snapshot_every: int = 0
) -> tuple[State, list[block_pb2.CommittedBlock]]:
    """Apply n blocks of transfers to the genesis state; return the state and the committed blocks.

    With ``snapshots`` and ``snapshot_every``, snapshots[h] = encode_snapshot(state after h) every N blocks.
    """
    state = genesis_state(chain())
    blocks: list[block_pb2.CommittedBlock] = []
    last_id = b""
    from node.blocks import block_id

    for height in range(1, n_blocks + 1):
        txs = [transfer_tx(k % 4, height * 100 + k, to=(k + 1) % 4) for k in range(txs_per_block)]
        time_ms = chain().genesis_time_ms + height * BLOCK_MS
        block = make_block(CHAIN_ID, height, time_ms, proposer(), last_id, state.app_hash, txs)
        result = apply_block(state, stf_header(block.header), list(block.txs))
        cert = b"cert-" + height.to_bytes(8, "big")
        blocks.append(committed_block(block, cert, result.results, result.app_hash))
        last_id = block_id(block)
        if snapshots is not None and snapshot_every and height % snapshot_every == 0:
            snapshots[height] = encode_snapshot(state)
    return state, blocks
