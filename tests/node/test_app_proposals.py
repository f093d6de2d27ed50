"""Application.process_proposal: every rule a proposal must meet (node/app.py), each broken once by
a proposer that is wrong or lying. A refused proposal is a ProposalRejected with its reason and
leaves nothing behind: the state does not move and the next good proposal is accepted."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.app import Application, ProposalRejected
from node.blocks import encode_block
from node.blockstore import BlockStore
from proto.ita.v1 import block_pb2
from sdk.keys import devnet_account_key
from tests.node.support import CHAIN_ID, chain, proposer, transfer_tx

FIRST = chain().genesis_time_ms + 1_000  # block 1's time
NOW = FIRST + 1_000  # our clock when height 2 is proposed


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    """An application that has committed block 1: proposals are for height 2."""
    store = BlockStore(tmp_path / "db", CHAIN_ID)
    app = Application(chain(), store)
    raw = app.prepare_proposal(1, FIRST, proposer(), [transfer_tx(3, 1)])
    app.process_proposal(1, raw, FIRST)
    app.commit(app.finalize_block(raw), b"")
    yield app
    store.close()


def good_block(app: Application) -> block_pb2.Block:
    raw = app.prepare_proposal(2, NOW, proposer(), [transfer_tx(0, 2), transfer_tx(1, 3, to=2)])
    return block_pb2.Block.FromString(raw)


def tamper(change: Callable[[block_pb2.Block], None]) -> Callable[[Application], bytes]:
    def make(app: Application) -> bytes:
        block = good_block(app)
        change(block)
        return encode_block(block)

    return make


def _set(field: str, value: object) -> Callable[[block_pb2.Block], None]:
    return lambda block: setattr(block.header, field, value)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda app: b"\x0a\xff garbage", "not a Block"),
        (tamper(_set("chain_id", "other-chain")), "block is for chain 'other-chain'"),
        (tamper(lambda block: block.txs.append(transfer_tx(2, 4))), "txs_hash does not match"),
        (tamper(_set("height", 3)), "block height 3, expected 2"),
        (tamper(_set("last_block_id", b"\x01" * 32)), "last_block_id does not match our chain"),
        (tamper(_set("last_app_hash", b"\x02" * 32)), "last_app_hash does not match our state"),
        (tamper(_set("proposer", devnet_account_key(0).address)), "proposer is not a validator"),
        (tamper(_set("time_ms", FIRST)), f"block time {FIRST} not after {FIRST}"),
        (tamper(_set("time_ms", NOW + 5_001)), "is ahead of our clock"),
    ],
)
def test_a_bad_proposal_is_rejected_and_changes_nothing(
    app: Application, make: Callable[[Application], bytes], reason: str
) -> None:
    raw = make(app)
    app_hash = app.state.app_hash
    with pytest.raises(ProposalRejected, match=reason):
        app.process_proposal(2, raw, NOW)
    assert app.unverified_proposal_txs() == []  # nothing was accepted
    assert (app.height, app.state.app_hash) == (1, app_hash)
    good = encode_block(good_block(app))
    assert app.process_proposal(2, good, NOW).header.height == 2


def test_a_proposal_over_the_genesis_limits_is_rejected(app: Application) -> None:
    app.config = dataclasses.replace(app.config, max_block_txs=1)
    raw = encode_block(good_block(app))  # two txs
    with pytest.raises(ProposalRejected, match="exceeds the genesis limits"):
        app.process_proposal(2, raw, NOW)
