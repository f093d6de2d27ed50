"""Every way a committed block can be wrong stops indexing with a typed IndexerFatal."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from unittest.mock import patch

import aiohttp
import pytest

from node.blocks import compute_txs_hash
from proto.ita.v1 import block_pb2, tx_pb2
from rpc import verify as rpc_verify
from rpc.reducer import IndexerState, apply_committed, vouch_run
from rpc.simchain import SimChain
from rpc.source import InProcessSource, SourceUnavailable, block_runs
from rpc.verify import (
    AppHashMismatch,
    BlockRejected,
    IndexerFatal,
    ResultMismatch,
    compute_block_id,
)
from sdk import tx as sdk_tx
from sdk.keys import Key
from stf.block import genesis_state
from tests.rpc.support import caught_up, get_json, run, start_indexer, wait_until


def replayed(chain: SimChain, upto: int) -> IndexerState:
    state = IndexerState(genesis_state(chain.config))
    for committed in chain.blocks[:upto]:
        apply_committed(state, committed)
    return state


def tampered(
    chain: SimChain, height: int, change: Callable[[block_pb2.CommittedBlock], None]
) -> block_pb2.CommittedBlock:
    copy = block_pb2.CommittedBlock()
    copy.CopyFrom(chain.block(height))
    change(copy)
    return copy


def recertify(chain: SimChain) -> Callable[[block_pb2.CommittedBlock], None]:
    def fix(c: block_pb2.CommittedBlock) -> None:
        c.certificate = chain.certify(c.block.header.height, compute_block_id(c.block))

    return fix


def flip_signature(c: block_pb2.CommittedBlock) -> None:
    cert = bytearray(c.certificate)
    cert[-1] ^= 1
    c.certificate = bytes(cert)


def swap_tx(c: block_pb2.CommittedBlock) -> None:
    c.block.txs[0] = c.block.txs[0] + b"\x00"


def swap_tx_and_hash(c: block_pb2.CommittedBlock) -> None:
    swap_tx(c)
    c.block.header.txs_hash = compute_txs_hash(list(c.block.txs))
    c.tx_hashes[0] = hashlib.sha256(c.block.txs[0]).digest()


CASES: list[
    tuple[str, Callable[[SimChain], Callable[[block_pb2.CommittedBlock], None]], type[IndexerFatal]]
] = [
    ("flipped certificate signature", lambda ch: flip_signature, BlockRejected),
    ("garbage certificate", lambda ch: lambda c: setattr(c, "certificate", b"\x01\x02"), BlockRejected),
    ("tx changed, txs_hash not", lambda ch: swap_tx, BlockRejected),
    ("tx and txs_hash changed: not the certified block", lambda ch: swap_tx_and_hash, BlockRejected),
    ("tx hashes wrong", lambda ch: lambda c: c.tx_hashes.__setitem__(0, b"\x00" * 32), BlockRejected),
    (
        "wrong chain id",
        lambda ch: lambda c: setattr(c.block.header, "chain_id", "other-chain"),
        BlockRejected,
    ),
    (
        "node reports another app hash",
        lambda ch: lambda c: setattr(c, "app_hash", b"\x07" * 32),
        AppHashMismatch,
    ),
    ("node reports another result", lambda ch: lambda c: setattr(c.results[0], "code", 35), ResultMismatch),
    ("missing results", lambda ch: lambda c: c.results.__delitem__(-1), BlockRejected),
]


@pytest.mark.parametrize("name,make,error", CASES, ids=[c[0] for c in CASES])
def test_tampered_block_is_fatal(
    name: str,
    make: Callable[[SimChain], Callable[[block_pb2.CommittedBlock], None]],
    error: type[IndexerFatal],
) -> None:
    chain = SimChain(seed=31)
    chain.produce_many(12)
    height = next(h for h in range(6, 13) if chain.block(h).block.txs)
    state = replayed(chain, height - 1)
    before = (state.height, state.stf.app_hash, dict(state.seqs))
    with pytest.raises(error) as info:
        apply_committed(state, tampered(chain, height, make(chain)))
    assert info.value.height == height
    if error is BlockRejected:  # rejected before anything was touched
        assert (state.height, state.stf.app_hash, dict(state.seqs)) == before
        apply_committed(state, chain.block(height))  # the genuine block still applies


def test_quorum_must_exceed_two_thirds_of_genesis_power() -> None:
    chain = SimChain(seed=32, signers=2)  # 20 of 40 power
    chain.produce_many(2)
    with pytest.raises(BlockRejected, match="more than 2/3"):
        replayed(chain, 1)
    three = SimChain(seed=32, signers=3)  # 30 of 40 power: enough
    three.produce_many(2)
    assert replayed(three, 2).height == 2


def test_signers_outside_the_genesis_set_are_refused() -> None:
    strangers = [Key.from_seed(bytes([i + 1]) * 32) for i in range(4)]
    chain = SimChain(seed=33, validator_keys=strangers)
    chain.produce_many(1)
    with pytest.raises(BlockRejected, match="not a validator"):
        replayed(chain, 1)


def test_certified_header_with_another_app_hash_is_fatal() -> None:
    chain = SimChain(seed=34)
    chain.produce_many(5)
    chain.state.app_hash = b"\x09" * 32  # validators sign a header claiming another app hash for height 5
    chain.produce()
    state = replayed(chain, 5)
    with pytest.raises(AppHashMismatch, match="header carries app hash"):
        apply_committed(state, chain.block(6))


def test_broken_link_and_skipped_heights_are_refused() -> None:
    chain = SimChain(seed=35)
    chain.produce_many(8)
    state = replayed(chain, 4)

    def relink(c: block_pb2.CommittedBlock) -> None:
        c.block.header.last_block_id = b"\x01" * 32
        recertify(chain)(c)

    with pytest.raises(BlockRejected, match="last_block_id"):
        apply_committed(state, tampered(chain, 5, relink))
    with pytest.raises(BlockRejected, match="expected block 5"):
        apply_committed(state, chain.block(6))


def test_badly_signed_tx_in_a_certified_block_replays_as_rejected() -> None:
    chain = SimChain(seed=36, verify_signatures=True)
    chain.produce_many(3)
    key = chain.account_keys[0]
    good = chain.sign(
        key, sdk_tx.place_order("BTC-PERP", "buy", price=640_000, size=10), chain.state.time_ms + 1000
    )
    signed = tx_pb2.SignedTx.FromString(good)
    signed.signature = bytes(64)
    bad = signed.SerializeToString(deterministic=True)
    committed = chain.produce([bad, good])
    assert [r.status for r in committed.results] == ["bad_signature", "ok"]
    state = replayed(chain, chain.height)
    assert state.stf.app_hash == chain.state.app_hash


def test_service_halts_loudly_and_stops_serving(tmp_path: Path) -> None:
    run(_halts(tmp_path))


async def _halts(tmp_path: Path) -> None:
    chain = SimChain(seed=37)
    chain.produce_many(20)
    service = await start_indexer(chain, tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            await caught_up(service, chain)
            ws = await session.ws_connect(f"{service.url}/v1/ws")
            await ws.send_json({"op": "subscribe", "channel": "book", "market": "BTC-PERP"})
            assert (await ws.receive_json())["type"] == "snapshot"
            chain.listeners.clear()  # hold the block back until it is tampered with
            chain.produce()
            chain.blocks[20] = tampered(chain, 21, flip_signature)
            assert isinstance(service.indexer.source, InProcessSource)
            service.indexer.source._on_block(chain.blocks[20])
            await wait_until(lambda: service.task is not None and service.task.done(), "halt")
            assert service.task is not None
            with pytest.raises(BlockRejected):
                service.task.result()
            while True:  # the subscriber is closed with 1011 and the reason
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1011
            assert "indexer halted: block_rejected at height 21" in str(msg.extra)
            status, body = await get_json(session, f"{service.url}/v1/markets/BTC-PERP/book")
            assert status == 503 and body["error"]["code"] == "not_ready"
            status, body = await get_json(session, f"{service.url}/healthz")
            assert status == 503 and "halted" in body["reason"]
            status, body = await get_json(session, f"{service.url}/v1/status")
            assert status == 200 and "height 21" in body["halted"]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{service.url}/v1/ws")
            assert refused.value.status == 503
    finally:
        await service.stop()


def test_a_run_is_vouched_for_by_its_last_certificate_and_the_links_back() -> None:
    chain = SimChain(seed=37)
    chain.produce_many(12)
    state = replayed(chain, 2)
    run = [chain.block(h) for h in range(3, 11)]
    checked: list[int] = []
    real = rpc_verify.verify_commit_certificate

    def counting(cert: object, vset: object, chain_id: str, height: int, block_id: bytes) -> None:
        checked.append(height)
        real(cert, vset, chain_id, height, block_id)  # type: ignore[arg-type]

    with patch.object(rpc_verify, "verify_commit_certificate", counting):
        ids = vouch_run(state, run)
        for committed, block_id in zip(run, ids, strict=True):
            apply_committed(state, committed, block_id)
    assert checked == [10]  # one certificate for eight blocks
    assert ids == [compute_block_id(c.block) for c in run]
    assert state.stf.app_hash == replayed(chain, 10).stf.app_hash

    fresh = replayed(chain, 2)
    # a middle block that is not the certified one breaks the link to the next block
    forged = [*run[:3], tampered(chain, 6, swap_tx_and_hash), *run[4:]]
    with pytest.raises(BlockRejected, match="last_block_id") as info:
        vouch_run(fresh, forged)
    assert info.value.height == 7
    # a bad last certificate vouches for nothing
    with pytest.raises(BlockRejected, match="certificate"):
        vouch_run(fresh, [*run[:-1], tampered(chain, 10, flip_signature)])
    with pytest.raises(BlockRejected, match="expected block 4"):
        vouch_run(fresh, [run[0], run[2]])
    assert fresh.height == 2  # nothing was applied


def test_block_runs_group_what_already_arrived() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()

        async def stream() -> AsyncIterator[int]:
            for i in range(5):
                yield i
            await gate.wait()
            yield 5
            raise SourceUnavailable("stream ended")

        runs = block_runs(stream(), max_run=3)  # type: ignore[arg-type]
        got: list[list[int]] = []
        while sum(len(r) for r in got) < 5:
            got.append(await runs.__anext__())
            await asyncio.sleep(0.01)  # the reader queues what the stream has behind it
        assert [i for r in got for i in r] == [0, 1, 2, 3, 4]
        assert max(len(r) for r in got) == 3 and len(got) == 2  # grouped, at most max_run
        gate.set()
        assert await runs.__anext__() == [5]
        with pytest.raises(SourceUnavailable):
            await runs.__anext__()
        await runs.aclose()

    asyncio.run(scenario())
