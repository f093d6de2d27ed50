"""The engine in-process: real consensus cores, application, WAL and stores, wired through an
in-memory network (no gRPC): commits, txs, restart from the WAL/store, block sync."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from consensus import (
    Broadcast,
    CommitCertificate,
    Decide,
    Ed25519Signer,
    ProposalMessage,
    ScheduleTimeout,
    SignedVote,
    SignRequest,
    SignState,
    StartHeight,
    Step,
    Timeout,
    Vote,
    VoteType,
    WalAppend,
    compute_address,
    compute_block_id,
    decode_message,
)
from node import engine as engine_module
from node import mempool as mempool_module
from node.blocks import encode_block, make_block
from node.config import ConsensusTimeouts, MempoolConfig, NodeConfig, NodeHome
from node.engine import Engine, wall_clock_ms
from node.main import connect_metrics
from node.mempool import MempoolCode
from node.observability import (
    SPAN_BLOCK_APPLY,
    SPAN_BLOCK_COMMIT,
    SPAN_BLOCK_PROPOSE,
    SPAN_HEIGHT,
    SPAN_TX_COMMIT,
    SPAN_TX_MEMPOOL,
    NodeMetrics,
    setup_tracing,
)
from node.signstate import SignStateFile
from node.verifier_pool import VerifierUnavailable
from node.verify import verify_tx
from proto.ita.v1 import block_pb2
from sdk import tx as sdk_tx
from sdk.keys import Key
from stf.block import BlockHeader, apply_block
from stf.config import ChainConfig, ValidatorSpec
from stf.results import Code
from stf.signing import tx_hash
from tests.stf_support import USD, keys, make_config, order

FAST = ConsensusTimeouts(
    timeout_propose_ms=400,
    timeout_propose_delta_ms=200,
    timeout_prevote_ms=200,
    timeout_prevote_delta_ms=100,
    timeout_precommit_ms=200,
    timeout_precommit_delta_ms=100,
    timeout_commit_ms=20,
)
CONFIG = NodeConfig(consensus=FAST, mempool=MempoolConfig(verify_workers=1), snapshot_interval=5)
VALIDATORS = keys(4, b"engine-val")
TRADERS = keys(2, b"engine-trader")


def chain_config(n: int = 4) -> ChainConfig:
    base = make_config(TRADERS, validators=VALIDATORS[:n], collateral=1_000_000 * USD)
    return dataclasses.replace(
        base,
        validators=tuple(ValidatorSpec(v.public_key, 10) for v in VALIDATORS[:n]),
        genesis_time_ms=wall_clock_ms(),
    )


class Hub:
    """Delivers every engine's gossip to the other connected engines (in-process, same loop)."""

    def __init__(self) -> None:
        self.engines: dict[bytes, Engine] = {}
        self.down: set[bytes] = set()
        self.misbehaviour: list[tuple[bytes, bytes, str]] = []  # (reporter, peer, reason)

    def attach(self, engine: Engine) -> None:
        assert engine.key is not None
        self.engines[engine.key.public_key] = engine
        engine.attach_network(LocalNetwork(self, engine.key.public_key))

    def others(self, me: bytes) -> list[tuple[bytes, Engine]]:
        if me in self.down:
            return []
        return [(k, e) for k, e in self.engines.items() if k != me and k not in self.down]


class LocalNetwork:
    def __init__(self, hub: Hub, me: bytes) -> None:
        self.hub = hub
        self.me = me

    def broadcast_consensus(self, payload: bytes) -> None:
        for _, engine in self.hub.others(self.me):
            asyncio.get_running_loop().call_soon(engine.on_consensus, payload, self.me)

    def broadcast_txs(self, txs: Sequence[bytes]) -> None:
        for _, engine in self.hub.others(self.me):
            asyncio.get_running_loop().create_task(engine.on_txs(list(txs), self.me))

    def broadcast_status(self, height: int) -> None:
        for _, engine in self.hub.others(self.me):
            engine.on_status(height, self.me)

    def request_blocks(self, from_height: int, to_height: int) -> None:
        me = self.hub.engines[self.me]
        for _, engine in self.hub.others(self.me):
            raw = engine.blocks_for(from_height, to_height, 8 << 20)
            if raw:
                blocks = [block_pb2.CommittedBlock.FromString(b) for b in raw]
                asyncio.get_running_loop().call_soon(me.on_blocks, blocks, engine.key.public_key)  # type: ignore[union-attr]
                return

    def peer_heights(self) -> dict[bytes, int]:
        return {k: e.height() for k, e in self.hub.others(self.me)}

    def report_misbehaviour(self, peer: bytes, reason: str, detail: str) -> None:
        self.hub.misbehaviour.append((self.me, peer, reason))


class TxRecorder(engine_module.NullNetwork):
    """A network that records the txs the engine relays."""

    def __init__(self) -> None:
        self.relayed: list[bytes] = []

    def broadcast_txs(self, txs: Sequence[bytes]) -> None:
        self.relayed.extend(txs)


def make_engine(root: Path, chain: ChainConfig, key: Key, config: NodeConfig = CONFIG) -> Engine:
    home = NodeHome(root)
    home.ensure_dirs()
    return Engine(chain, config, home, key)


@contextlib.asynccontextmanager
async def started_engine(tmp_path: Path, network: engine_module.NullNetwork) -> AsyncIterator[Engine]:
    """A single-validator engine on `network`, started, and stopped when the block ends."""
    engine = make_engine(tmp_path, chain_config(1), VALIDATORS[0])
    engine.attach_network(network)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def wait_until(predicate: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def same_chain(engines: Sequence[Engine], height: int) -> None:
    for h in range(1, height + 1):
        ids = {e.store.block_id(h) for e in engines}
        hashes = {e.store.app_hash(h) for e in engines}
        assert len(ids) == 1 and None not in ids, f"block ids differ at {h}"
        assert len(hashes) == 1 and None not in hashes, f"app hashes differ at {h}"


class GuardWatcher(engine_module.NullNetwork):
    """A network that checks, at each of our consensus broadcasts, that the signing-state file
    on disk already holds that signature (the guard persisted before it left the process)."""

    def __init__(self, guard_file: SignStateFile) -> None:
        self.guard_file = guard_file
        self.checked = 0

    def broadcast_consensus(self, payload: bytes) -> None:
        msg = decode_message(payload)
        signature = msg.signed.signature if isinstance(msg, ProposalMessage) else msg.signature
        assert signature in [state.signature for state in self.guard_file.load()], msg
        self.checked += 1


def test_signatures_are_durable_before_broadcast_with_one_guard_write_and_wal_sync_per_height(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard is flushed once per core step (Engine._core_step) and a step's WAL inputs are
    appended ahead of its broadcasts: a lone validator signs its proposal, prevote and
    precommit in one step, so it writes the guard file once and fsyncs the WAL once a height,
    and still no signature is broadcast before the file holds it."""
    saves: list[tuple[int, int]] = []  # the (height, round) of each guard write's newest state
    real_save = SignStateFile.save

    def counting_save(self: SignStateFile, recent: tuple[SignState, ...]) -> None:
        saves.append((recent[-1].height, recent[-1].round))
        real_save(self, recent)

    monkeypatch.setattr(SignStateFile, "save", counting_save)

    async def scenario() -> None:
        watcher = GuardWatcher(SignStateFile(NodeHome(tmp_path).sign_state_file))
        async with started_engine(tmp_path, watcher) as engine:
            await wait_until(lambda: engine.height() >= 6)
            height, syncs, writes = engine.height(), engine.wal_syncs, len(saves)
        assert watcher.checked >= 3 * height  # proposal, prevote, precommit of every height
        # one write per round (a slow machine may time a round out: that round gets its own)
        assert writes >= height and len(set(saves[:writes])) == writes, saves
        assert height <= syncs <= writes + 1  # the next height's step may have begun
        assert engine.signer is not None and not engine.signer.unpersisted

    asyncio.run(scenario())


def test_guard_writes_run_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's write (and the WAL's fsync) runs on the engine's disk thread: the event loop
    keeps running while it lasts, and the step's broadcasts still wait for it (GuardWatcher)."""
    ticks = [0]
    during: list[int] = []
    real_save = SignStateFile.save

    def slow_save(self: SignStateFile, recent: tuple[SignState, ...]) -> None:
        before = ticks[0]
        time.sleep(0.1)  # a slow disk
        real_save(self, recent)
        during.append(ticks[0] - before)

    monkeypatch.setattr(SignStateFile, "save", slow_save)

    async def scenario() -> None:
        watcher = GuardWatcher(SignStateFile(NodeHome(tmp_path).sign_state_file))

        async def ticker() -> None:
            while True:
                ticks[0] += 1
                await asyncio.sleep(0.005)

        tick_task = asyncio.ensure_future(ticker())
        try:
            async with started_engine(tmp_path, watcher) as engine:
                await wait_until(lambda: engine.height() >= 3)
        finally:
            tick_task.cancel()
        assert watcher.checked >= 9
        assert during and min(during) >= 3, during  # the loop ticked through every slow write

    asyncio.run(scenario())


def test_single_validator_commits_and_applies_txs(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain = chain_config(1)
        engine = make_engine(tmp_path, chain, VALIDATORS[0])
        commits: list[dict[str, object]] = []
        engine.observers.append(lambda event, fields: commits.append(fields) if event == "commit" else None)
        await engine.start()
        try:
            await wait_until(lambda: engine.height() >= 3)
            signer = sdk_tx.Signer(TRADERS[0], chain.chain_id)
            [admission] = await engine.submit_txs([signer.sign(order("sell", 600_000, 20))])
            assert admission.accepted, admission
            await wait_until(lambda: len(engine.app.state.orders) == 1)
            # the commit note: stage times add up, and the mempool had verified the order already
            with_txs = [c for c in commits if c["txs"]]
            assert with_txs and all(c["verified_inline"] == 0 for c in with_txs), with_txs
            for c in commits:
                stages = [c["execute_s"], c["store_s"], c["mempool_s"]]
                assert all(isinstance(x, float) and x >= 0 for x in stages), c
                assert abs(sum(stages) - c["apply_s"]) < 1e-6, c  # type: ignore[operator, arg-type]
            [dup] = await engine.submit_txs([signer.sign(order("sell", 600_000, 20))])
            assert dup.accepted
            [bad] = await engine.submit_txs([b"garbage"])
            assert not bad.accepted and bad.code == 1
            status = engine.status()
            assert status.height >= 3 and status.app_hash == engine.app.state.app_hash
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_the_engine_feeds_the_verify_commit_and_stage_metrics(tmp_path: Path) -> None:
    """node.main.connect_metrics on a running engine: an admitted tx's signature batch lands in
    ita_tx_verify_latency_seconds, and its block in the block histograms."""
    metrics = NodeMetrics()

    def sample(name: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(name, labels)
        assert value is not None, name
        return value

    async def scenario() -> None:
        async with started_engine(tmp_path, engine_module.NullNetwork()) as engine:
            connect_metrics(engine, metrics)
            signer = sdk_tx.Signer(TRADERS[0], engine.chain.chain_id)
            [admission] = await engine.submit_txs([signer.sign(order("sell", 600_000, 20))])
            assert admission.accepted, admission
            await wait_until(lambda: len(engine.app.state.orders) == 1)
            await wait_until(lambda: sample("ita_block_txs_sum") >= 1)

    asyncio.run(scenario())
    assert sample("ita_tx_verify_latency_seconds_count") == 1  # one batch of one tx
    assert sample("ita_txs_verified_total") == 1
    assert 0 < sample("ita_tx_verify_latency_seconds_sum") < 30
    assert sample("ita_block_txs_count") >= 1 and sample("ita_block_apply_latency_seconds_count") >= 1
    assert sample("ita_block_stage_seconds_count", stage="execute") >= 1
    assert sample("ita_consensus_height") >= 1


def test_the_engine_traces_each_height_and_each_admission(tmp_path: Path) -> None:
    """One root "height" span per height (block interval), holding block.propose and
    block.commit, which holds block.apply; a tx's admission is a tx.mempool span."""
    tracing = setup_tracing(None, in_memory=True)

    async def scenario() -> None:
        engine = make_engine(tmp_path, chain_config(1), VALIDATORS[0])
        engine.tracing = tracing
        await engine.start()
        try:
            signer = sdk_tx.Signer(TRADERS[0], engine.chain.chain_id)
            [admission] = await engine.submit_txs([signer.sign(order("sell", 600_000, 20))])
            assert admission.accepted, admission
            await wait_until(lambda: len(engine.app.state.orders) == 1)
        finally:
            await engine.stop()

    asyncio.run(scenario())
    assert tracing.memory is not None
    spans = tracing.memory.get_finished_spans()
    [mempool] = [s for s in spans if s.name == SPAN_TX_MEMPOOL]
    assert mempool.attributes is not None and mempool.attributes["txs"] == 1
    heights = {s.attributes["height"]: s for s in spans if s.name == SPAN_HEIGHT and s.attributes}
    [with_tx] = [h for h, s in heights.items() if s.attributes and s.attributes.get("txs") == 1]
    assert all(s.parent is None for s in heights.values())
    assert set(range(1, with_tx + 1)) <= set(heights)  # every height up to it, none skipped
    by_name = {s.name: s for s in spans if s.attributes and s.attributes.get("height") == with_tx}
    height_id = heights[with_tx].context.span_id

    def parent_id(name: str) -> int | None:
        parent = by_name[name].parent
        return parent.span_id if parent is not None else None

    commit = by_name[SPAN_BLOCK_COMMIT]
    assert parent_id(SPAN_BLOCK_PROPOSE) == height_id and parent_id(SPAN_BLOCK_COMMIT) == height_id
    assert parent_id(SPAN_BLOCK_APPLY) == commit.context.span_id
    assert heights[with_tx].start_time <= commit.start_time and commit.end_time <= heights[with_tx].end_time
    # the client's tx goes on in the same trace: tx.commit, child of its admission, linked to the
    # block.commit span of its block, from the admission to the commit, "proposed" at the block time
    [tx_commit] = [s for s in spans if s.name == SPAN_TX_COMMIT]
    assert tx_commit.context.trace_id == mempool.context.trace_id
    assert tx_commit.parent is not None and tx_commit.parent.span_id == mempool.context.span_id
    assert [link.context.span_id for link in tx_commit.links] == [commit.context.span_id]
    assert tx_commit.attributes is not None
    assert tx_commit.attributes["height"] == with_tx and tx_commit.attributes["index"] == 0
    assert tx_commit.attributes["status"] == "ok" and len(str(tx_commit.attributes["tx_hash"])) == 64
    assert tx_commit.start_time is not None and mempool.start_time is not None
    assert mempool.start_time <= tx_commit.start_time and tx_commit.end_time >= commit.end_time
    [proposed] = tx_commit.events
    assert proposed.name == "proposed" and proposed.timestamp % 1_000_000 == 0  # the block time, in ms
    tracing.shutdown()


def test_four_validators_agree_and_a_restarted_one_catches_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain = chain_config(4)
        hub = Hub()
        engines = [make_engine(tmp_path / f"v{i}", chain, VALIDATORS[i]) for i in range(4)]
        for engine in engines:
            hub.attach(engine)
        for engine in engines:
            await engine.start()
        try:
            signer = sdk_tx.Signer(TRADERS[0], chain.chain_id)
            await engines[1].submit_txs([signer.sign(order("sell", 600_000, 20)) for _ in range(5)])
            await wait_until(lambda: min(e.height() for e in engines) >= 6)
            await wait_until(lambda: all(len(e.app.state.orders) == 5 for e in engines))
            # take validator 3 down; the other three keep committing
            hub.down.add(VALIDATORS[3].public_key)
            await engines[3].stop()
            stopped_at = engines[3].height()
            await wait_until(lambda: min(e.height() for e in engines[:3]) >= stopped_at + 8)
            # restart it from its home: WAL + store recovery, then block sync
            engines[3] = make_engine(tmp_path / "v3", chain, VALIDATORS[3])
            hub.down.discard(VALIDATORS[3].public_key)
            hub.attach(engines[3])
            await engines[3].start()
            target = max(e.height() for e in engines[:3])
            await wait_until(lambda: engines[3].height() >= target + 2)
            same_chain(engines, min(e.height() for e in engines))
        finally:
            for engine in engines:
                await engine.stop()

    asyncio.run(scenario())


def test_a_block_without_a_valid_certificate_does_not_hold_its_height_in_block_sync(tmp_path: Path) -> None:
    """Block sync buffers a peer's block only if its commit certificate holds for exactly that
    block: a forged one (bad signatures, or good signatures for another block) is dropped,
    so the height is asked for again instead of waiting for ever behind it."""

    async def scenario() -> None:
        chain = chain_config(4)
        engine = make_engine(tmp_path, chain, VALIDATORS[0])
        height = engine.app.height + 1
        proposer = VALIDATORS[1].address
        block = make_block(chain.chain_id, height, chain.genesis_time_ms + 1, proposer, b"", bytes(32), [])
        other = make_block(chain.chain_id, height, chain.genesis_time_ms + 2, proposer, b"", bytes(32), [])

        def certificate(block_id: bytes, sign: bool) -> bytes:
            votes = []
            for key in VALIDATORS[:3]:
                vote = Vote(VoteType.PRECOMMIT, height, 0, block_id, key.address)
                signature = key.sign(vote.sign_bytes(chain.chain_id)) if sign else b"\x07" * 64
                votes.append(SignedVote(vote, signature))
            return CommitCertificate.from_precommits(height, 0, block_id, votes).encode()

        block_id = compute_block_id(encode_block(block))
        other_id = compute_block_id(encode_block(other))
        engine.sync_requested_at = 123.0  # a request in flight
        for forged in (certificate(block_id, sign=False), certificate(other_id, sign=True)):
            refused = engine.on_blocks([block_pb2.CommittedBlock(block=block, certificate=forged)], b"peer")
            assert refused == 1 and height not in engine.sync_buffer  # the peer is told off (peers.py)
            assert engine.sync_requested_at == 123.0  # forged blocks do not hasten the next request
        good = certificate(block_id, sign=True)
        assert engine.on_blocks([block_pb2.CommittedBlock(block=block, certificate=good)], b"peer") == 0
        assert engine.sync_buffer[height][0] == encode_block(block)
        # beyond SYNC_WINDOW: not asked for, so not kept (a peer pushing the chain would fill memory)
        height = engine.app.height + engine_module.SYNC_WINDOW + 1
        parent = bytes(32)  # any: only the certificate is checked on arrival
        far = make_block(chain.chain_id, height, chain.genesis_time_ms + 3, proposer, parent, bytes(32), [])
        far_cert = certificate(compute_block_id(encode_block(far)), sign=True)
        assert engine.on_blocks([block_pb2.CommittedBlock(block=far, certificate=far_cert)], b"peer") == 0
        assert height not in engine.sync_buffer

    asyncio.run(scenario())


def test_block_sync_checks_the_next_blocks_txs_while_a_block_executes(tmp_path: Path) -> None:
    """A validator catching up by block sync sends the next buffered block's txs to its signature
    workers when it feeds a block to the core (before that block commits), every tx once; no
    synced tx is verified on the consensus thread."""

    async def scenario() -> None:
        chain = chain_config(4)
        hub = Hub()
        engines = [make_engine(tmp_path / f"v{i}", chain, VALIDATORS[i]) for i in range(4)]
        hub.down.add(VALIDATORS[3].public_key)  # v3 never sees these txs' gossip
        for engine in engines[:3]:
            hub.attach(engine)
            await engine.start()
        try:
            signer = sdk_tx.Signer(TRADERS[0], chain.chain_id)
            for batch in range(6):
                txs = [signer.sign(order("sell", 600_000, 20)) for _ in range(5)]
                await engines[batch % 3].submit_txs(txs)
                resting = 5 * (batch + 1)
                await wait_until(lambda n=resting: all(len(e.app.state.orders) == n for e in engines[:3]))
            target = max(e.height() for e in engines[:3])
            lagging = engines[3]
            timeline: list[tuple[str, int]] = []  # ("verify", height of the block) / ("commit", height)
            sent: list[bytes] = []
            real_verify = lagging.verifier.verify_async_unless

            async def spy(txs: Sequence[bytes], keys: Sequence[bytes], skip: object, urgent: bool) -> object:
                sent.extend(keys)
                return await real_verify(txs, keys, skip, urgent)  # type: ignore[arg-type]

            lagging.verifier.verify_async_unless = spy  # type: ignore[method-assign,assignment]
            real_preverify = lagging._preverify

            def preverify(txs: list[bytes], block_id: bytes = b"", height: int = 0) -> None:
                if txs:
                    timeline.append(("verify", height))
                real_preverify(txs, block_id, height)

            lagging._preverify = preverify  # type: ignore[method-assign]
            commits: list[dict[str, object]] = []

            def observe(event: str, fields: dict[str, object]) -> None:
                if event == "commit":
                    commits.append(fields)
                    timeline.append(("commit", int(fields["height"])))  # type: ignore[call-overload]

            lagging.observers.append(observe)
            hub.down.discard(VALIDATORS[3].public_key)
            hub.attach(lagging)
            await lagging.start()
            await wait_until(lambda: lagging.height() >= target)
            assert len(lagging.app.state.orders) == 30
            assert len(sent) == len(set(sent)) == 30  # every synced tx went to the workers once
            with_txs = [c for c in commits if c["txs"]]
            assert len(with_txs) == 6 and all(c["verified_inline"] == 0 for c in with_txs), with_txs
            first_commit = min(h for kind, h in timeline if kind == "commit")
            for kind, height in timeline:
                if kind == "verify" and height > first_commit + 1:  # fed after a synced block
                    before = timeline.index(("verify", height)) < timeline.index(("commit", height - 1))
                    assert before, timeline
            same_chain(engines, target)
        finally:
            for engine in engines:
                await engine.stop()

    asyncio.run(scenario())


def test_one_peer_claiming_a_height_does_not_make_a_node_think_it_is_behind(tmp_path: Path) -> None:
    """The syncing flag and the commit pause's skip go by the height that validators with more
    than 1/3 of the power report (at least one honest): one Byzantine claim does not move it."""

    class Heights(engine_module.NullNetwork):
        def __init__(self) -> None:
            self.heights: dict[bytes, int] = {}

        def peer_heights(self) -> dict[bytes, int]:
            return self.heights

    engine = make_engine(tmp_path, chain_config(4), VALIDATORS[0])
    network = Heights()
    engine.attach_network(network)
    liar, honest, other = (v.public_key for v in VALIDATORS[1:4])
    network.heights = {liar: 1_000, honest: 0, other: 0}
    assert engine._vouched_peer_height() == 0 and not engine.syncing
    assert engine._best_peer_height() == 1_000  # block requests still ask it, in turn with the others
    network.heights = {liar: 1_000, honest: 7, other: 5, Key.generate().public_key: 900}  # + a full node
    assert engine._vouched_peer_height() == 7 and engine.syncing


def test_post_commit_recheck_is_incremental_on_a_large_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """update_after_commit's incremental path (block senders + nonce floor) evicts exactly what a full
    recheck evicts: here a pending tx whose nonce a rival tx of the same sender consumed."""
    monkeypatch.setattr(mempool_module, "INCREMENTAL_RECHECK_MIN", -1)  # always incremental
    chain = chain_config(1)
    engine = make_engine(tmp_path, chain, VALIDATORS[0])
    try:
        state = engine.app.state
        now = state.time_ms

        def signed(trader: int, nonce: int, price: int) -> bytes:
            body = sdk_tx.tx_body(chain.chain_id, nonce, order("sell", price, 20))
            return sdk_tx.sign_tx(TRADERS[trader], chain.chain_id, body)

        pending = [signed(0, now + 1, 600_000), signed(0, now + 2, 600_000), signed(1, now + 1, 600_000)]
        for raw in pending:
            assert engine.mempool.add_verified(raw, verify_tx(raw, chain.chain_id)).accepted
        rival = signed(1, now + 1, 610_000)  # same sender and nonce as pending[2], other bytes
        txs = [pending[0], rival]
        block = make_block(chain.chain_id, 1, now + 500, VALIDATORS[0].address, b"", state.app_hash, txs)
        result = apply_block(state, BlockHeader(height=1, time_ms=now + 500), txs)
        assert all(r.ok for r in result.results)
        committed = block_pb2.CommittedBlock(block=block, tx_hashes=[tx_hash(t) for t in txs])
        engine._update_mempool(committed)
        assert engine.mempool.reap(100, 10**9) == [pending[1]]
        assert engine.mempool.stats()["recheck_evicted_total"] == 1
    finally:
        engine.verifier.close()
        engine.store.close()


def test_commit_pause_is_skipped_only_while_txs_wait(tmp_path: Path) -> None:
    """ConsensusTimeouts.skip_timeout_commit: with every precommit in (one validator) and txs in the
    mempool, the next height starts at once; an idle chain keeps the timeout_commit pause."""
    from node.config import BlockLimits

    pause_s = 3.0
    config = dataclasses.replace(
        CONFIG,
        consensus=dataclasses.replace(
            FAST, timeout_commit_ms=int(pause_s * 1000), skip_timeout_commit_min_txs=2
        ),
        block=BlockLimits(max_txs=1),  # one tx per block: ten txs need ten heights
    )

    async def scenario() -> None:
        chain = chain_config(1)
        engine = make_engine(tmp_path, chain, VALIDATORS[0], config)
        await engine.start()
        try:
            await wait_until(lambda: engine.height() >= 1)
            signer = sdk_tx.Signer(TRADERS[0], chain.chain_id)
            txs = [signer.sign(order("sell", 600_000 + k, 20)) for k in range(10)]
            assert all(a.accepted for a in await engine.submit_txs(txs))
            loop = asyncio.get_running_loop()
            started = loop.time()
            await wait_until(lambda: len(engine.mempool) == 0, timeout=4 * pause_s)
            # at most two pauses (the one in progress, and before the last tx, when fewer than
            # skip_timeout_commit_min_txs wait); with every pause it would take >= 9 x 3 s
            assert loop.time() - started < 3 * pause_s
            idle_height = engine.height()
            await asyncio.sleep(pause_s / 2)
            assert engine.height() <= idle_height + 1  # idle again: the pause is back
            # one tx is below skip_timeout_commit_min_txs: it waits out the pause like a trickle
            height = engine.height()
            assert all(a.accepted for a in await engine.submit_txs([signer.sign(order("sell", 600_100, 20))]))
            await wait_until(lambda: len(engine.mempool) == 0, timeout=4 * pause_s)
            assert engine.height() <= height + 2
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_commit_pause_counts_from_the_decision(tmp_path: Path) -> None:
    """timeout_commit starts when the block is decided (CometBFT's CommitTime), so the time spent
    executing and storing the block is taken out of the pause instead of added to it."""
    pause_ms, apply_s = 2_000, 0.5
    config = dataclasses.replace(CONFIG, consensus=dataclasses.replace(FAST, timeout_commit_ms=pause_ms))

    async def scenario() -> None:
        chain = chain_config(1)
        engine = make_engine(tmp_path, chain, VALIDATORS[0], config)
        scheduled: list[tuple[int, object]] = []
        real_schedule, real_finalize = engine._schedule, engine.app.finalize_block

        def schedule(delay_ms: int, inp: object) -> None:
            scheduled.append((delay_ms, inp))
            real_schedule(delay_ms, inp)  # type: ignore[arg-type]

        def slow_finalize(raw: bytes) -> object:
            time.sleep(apply_s)  # a block that takes apply_s to execute
            return real_finalize(raw)

        engine._schedule = schedule  # type: ignore[method-assign]
        engine.app.finalize_block = slow_finalize  # type: ignore[method-assign,assignment]
        await engine.start()
        try:
            await wait_until(lambda: engine.height() >= 2, timeout=30)
            pauses = [delay for delay, inp in scheduled if isinstance(inp, StartHeight)]
            assert pauses, "no commit pause was scheduled"
            assert all(delay <= pause_ms - apply_s * 1000 for delay in pauses), pauses
            assert all(delay > 0 for delay in pauses), pauses  # the rest of the pause is still kept
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_dead_verifier_worker_is_replaced(tmp_path: Path) -> None:
    """A verifier worker dies: the txs of that call are answered VERIFY_UNAVAILABLE (nothing is
    admitted unchecked) and the engine starts a new pool, which admits the next ones."""
    from node.mempool import MempoolCode

    async def scenario() -> None:
        chain = chain_config(1)
        engine = make_engine(tmp_path, chain, VALIDATORS[0])
        await engine.start()
        try:
            await wait_until(lambda: engine.height() >= 1)
            signer = sdk_tx.Signer(TRADERS[0], chain.chain_id)
            broken = engine.verifier
            for worker in broken._workers:
                worker.process.kill()
                worker.process.join(timeout=10)
            first = await engine.submit_txs([signer.sign(order("sell", 600_000, 20))])
            assert [a.code for a in first] == [MempoolCode.VERIFY_UNAVAILABLE]
            assert len(engine.mempool) == 0
            assert engine.verifier is not broken and not engine.verifier.broken
            second = await engine.submit_txs([signer.sign(order("sell", 600_001, 20))])
            assert [a.accepted for a in second] == [True]
        finally:
            await engine.stop()

    asyncio.run(scenario())


class RecordingWal:
    """Stands in for node.wal.Wal: records appends and syncs in order."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def append(self, payload: bytes) -> None:
        self.log.append("append")

    def flush_and_sync(self) -> None:
        self.log.append("sync")


class RecordingNetwork(engine_module.NullNetwork):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def broadcast_consensus(self, payload: bytes) -> None:
        self.log.append("broadcast")


def hold_back_verifier(engine: Engine) -> asyncio.Event:
    """Make the engine's signature workers answer only once the returned event is set."""
    release = asyncio.Event()
    real_verify = engine.verifier.verify_async_unless

    async def slow_verify(txs: Sequence[bytes], keys: object, skip: object, urgent: bool) -> list[object]:
        await release.wait()
        return await real_verify(txs, keys, skip, urgent)  # type: ignore[arg-type,return-value]

    engine.verifier.verify_async_unless = slow_verify  # type: ignore[method-assign,assignment]
    return release


def test_client_txs_are_relayed_before_their_signatures_are_checked(tmp_path: Path) -> None:
    """Peers verify a client's txs in parallel with us: the relay does not wait for our workers.
    Txs that fail the cheap checks (a duplicate here) are not relayed; gossiped-in txs are not
    relayed again (the validators form a full mesh)."""

    async def scenario() -> None:
        network = TxRecorder()
        async with started_engine(tmp_path, network) as engine:
            release = hold_back_verifier(engine)
            signer = sdk_tx.Signer(TRADERS[0], engine.chain.chain_id)
            raw = signer.sign(order("sell", 600_000, 20))
            pending = asyncio.ensure_future(engine.submit_txs([raw]))
            await wait_until(lambda: network.relayed == [raw], timeout=10)
            assert not pending.done()  # relayed while our own check is still running
            release.set()
            assert [a.accepted for a in await pending] == [True]
            again = await engine.submit_txs([raw])
            assert [a.accepted for a in again] == [False]  # a duplicate: answered, not relayed
            await engine.on_txs([signer.sign(order("sell", 600_001, 20))], b"peer")
            await asyncio.sleep(0.1)  # a few gossip ticks
            assert network.relayed == [raw]

    asyncio.run(scenario())


def test_the_relay_sleeps_while_idle_and_wakes_for_the_next_client_tx(tmp_path: Path) -> None:
    """The gossip task waits for txs instead of ticking every gossip_interval_ms: after a relay
    and a quiet spell it holds nothing due, and the next client tx is relayed as before."""

    async def scenario() -> None:
        network = TxRecorder()
        async with started_engine(tmp_path, network) as engine:
            signer = sdk_tx.Signer(TRADERS[0], engine.chain.chain_id)
            first, second = (signer.sign(order("sell", 600_000 + i, 20)) for i in range(2))
            assert [a.accepted for a in await engine.submit_txs([first])] == [True]
            await wait_until(lambda: network.relayed == [first], timeout=10)
            await asyncio.sleep(0.1)  # quiet: ten gossip intervals
            assert not engine._gossip_due.is_set() and engine.pending_gossip == []
            assert [a.accepted for a in await engine.submit_txs([second])] == [True]
            await wait_until(lambda: network.relayed == [first, second], timeout=10)

    asyncio.run(scenario())


def test_txs_awaiting_their_signature_checks_count_against_the_mempool_bounds(tmp_path: Path) -> None:
    """A flood of submissions cannot queue for the workers without limit: the txs that passed the
    cheap checks hold their room in the mempool's bounds until their verdicts are back, so
    beyond ``max_txs`` a submission is answered mempool_full at once (and not relayed)."""

    async def scenario() -> None:
        config = dataclasses.replace(CONFIG, mempool=MempoolConfig(verify_workers=1, max_txs=4))
        engine = make_engine(tmp_path, chain_config(1), VALIDATORS[0], config)
        network = TxRecorder()
        engine.attach_network(network)
        await engine.start()
        try:
            release = hold_back_verifier(engine)
            signers = [sdk_tx.Signer(t, engine.chain.chain_id) for t in TRADERS]
            first = [signers[0].sign(order("sell", 600_000 + i, 20)) for i in range(3)]
            second = [signers[1].sign(order("buy", 500_000 + i, 20)) for i in range(3)]
            waiting = asyncio.ensure_future(engine.submit_txs(first))
            await wait_until(lambda: engine.mempool.stats()["awaiting"] == 3, timeout=10)
            assert engine.mempool.stats()["awaiting_bytes"] == sum(map(len, first))
            flood = asyncio.ensure_future(engine.submit_txs(second))
            await wait_until(lambda: engine.mempool.stats()["awaiting"] == 4, timeout=10)
            await asyncio.sleep(0.05)  # a few gossip ticks
            assert network.relayed == first + second[:1]  # the refused ones are not relayed
            release.set()
            assert [a.accepted for a in await waiting] == [True] * 3
            answers = await flood
            assert [a.accepted for a in answers] == [True, False, False]
            for refused in answers[1:]:
                assert refused.code == MempoolCode.MEMPOOL_FULL and refused.status == "mempool_full"
                assert "0 txs and 4 more await signature checks" in refused.reason, refused.reason
            assert engine.mempool.stats()["awaiting"] == 0 and engine.mempool.stats()["awaiting_bytes"] == 0
            await wait_until(lambda: len(engine.mempool) == 0)  # committed: room again
            # a broken worker pool answers the held txs as unverified and releases their room too

            async def broken(*args: object, **kwargs: object) -> list[object]:
                raise VerifierUnavailable("test: workers gone")

            engine.verifier.verify_async_unless = broken  # type: ignore[method-assign,assignment]
            [lost] = await engine.submit_txs([signers[0].sign(order("sell", 700_000, 20))])
            assert not lost.accepted and lost.code == MempoolCode.VERIFY_UNAVAILABLE
            assert engine.mempool.stats()["awaiting"] == 0
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_full_mempool_still_sends_a_proposals_txs_to_the_workers(tmp_path: Path) -> None:
    """A validator whose pool (with the txs awaiting their checks) is full still has the txs of
    a proposal it is about to execute checked by its workers: otherwise finalize_block would
    check the whole block's signatures on the consensus thread."""

    async def scenario() -> None:
        config = dataclasses.replace(CONFIG, mempool=MempoolConfig(verify_workers=1, max_txs=2))
        engine = make_engine(tmp_path, chain_config(1), VALIDATORS[0], config)
        engine.attach_network(TxRecorder())
        await engine.start()
        try:
            release = hold_back_verifier(engine)
            signers = [sdk_tx.Signer(t, engine.chain.chain_id) for t in TRADERS]
            flood = asyncio.ensure_future(
                engine.submit_txs([signers[0].sign(order("sell", 600_000 + i, 20)) for i in range(2)])
            )
            await wait_until(lambda: engine.mempool.stats()["awaiting"] == 2, timeout=10)
            [refused] = await engine.submit_txs([signers[1].sign(order("buy", 500_000, 20))])
            assert refused.code == MempoolCode.MEMPOOL_FULL  # a client's tx: the bounds hold
            proposed = signers[1].sign(order("buy", 500_001, 20))
            urgent = asyncio.ensure_future(engine._admit([proposed], gossip=False, urgent=True))
            await wait_until(lambda: engine.mempool.stats()["awaiting"] == 3, timeout=10)
            release.set()
            await flood
            [answer] = await urgent
            assert answer.accepted or answer.code == MempoolCode.MEMPOOL_FULL, answer
            assert tx_hash(proposed) in engine.app.verified  # finalize_block will not check it again
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_unverified_proposal_txs_go_to_the_workers_without_relaying(tmp_path: Path) -> None:
    """Engine._preverify (called for an accepted proposal's txs we have not verified): the workers
    check them as admissions, so finalize_block finds them known; they are not gossiped again."""

    async def scenario() -> None:
        network = TxRecorder()
        async with started_engine(tmp_path, network) as engine:
            raw = sdk_tx.Signer(TRADERS[0], engine.chain.chain_id).sign(order("sell", 600_000, 20))
            engine._preverify([raw])
            await wait_until(lambda: tx_hash(raw) in engine.app.verified, timeout=10)
            await asyncio.sleep(0.1)  # a few gossip ticks
            assert network.relayed == []
        assert not engine._preverifying  # finished (or cancelled by stop)

    asyncio.run(scenario())


def test_a_decided_block_waits_for_its_txs_in_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Decide of a block whose txs the workers are still verifying (Engine._preverify) waits
    for them instead of checking them again on the consensus thread; the outputs before it are
    carried out at once, and the wait is bounded (PREVERIFY_WAIT_S)."""

    async def scenario() -> None:
        engine = make_engine(tmp_path, chain_config(1), VALIDATORS[0])
        before = ScheduleTimeout(1, 0, Step.PROPOSE, 10)
        decide = Decide(1, 0, b"block-id", b"block", None)  # type: ignore[arg-type]
        carried: list[list[object]] = []

        async def carry_out(outputs: list[object]) -> None:
            carried.append(list(outputs))

        engine._carry_out = carry_out  # type: ignore[method-assign,assignment]
        engine.core.step = lambda inp: [before, decide]  # type: ignore[method-assign]

        gate = asyncio.Event()
        engine._preverify_by_block[b"block-id"] = (1, asyncio.ensure_future(gate.wait()))  # type: ignore[arg-type]
        step = asyncio.ensure_future(engine._step(StartHeight(1)))
        await asyncio.sleep(0.05)
        assert carried == [[before]]  # the Decide waits for the verification under way
        gate.set()
        await asyncio.wait_for(step, 5)
        assert carried == [[before], [decide]]
        assert not engine._preverify_by_block

        carried.clear()
        monkeypatch.setattr(engine_module, "PREVERIFY_WAIT_S", 0.05)
        stuck = asyncio.ensure_future(asyncio.Event().wait())
        engine._preverify_by_block[b"block-id"] = (1, stuck)  # type: ignore[assignment]
        await asyncio.wait_for(engine._step(StartHeight(1)), 5)
        assert carried == [[before], [decide]]  # gave up waiting: finalize verifies what is left
        assert engine._verify_wait_s >= 0.05
        stuck.cancel()

        carried.clear()
        await engine._step(StartHeight(1))  # nothing under way: no wait, one pass
        assert carried == [[before, decide]]

    asyncio.run(scenario())


def test_a_good_signature_is_remembered_even_when_the_state_rejects_the_tx(tmp_path: Path) -> None:
    """A proposal's tx whose signature holds but which the mempool's stateful check refuses (here:
    an account that does not exist) is still known to verify: finalize_block must not check its
    signature again on the consensus thread."""

    async def scenario() -> None:
        async with started_engine(tmp_path, TxRecorder()) as engine:
            raw = sdk_tx.Signer(Key.generate(), engine.chain.chain_id).sign(order("sell", 600_000, 20))
            [admission] = await engine._admit([raw], gossip=False, urgent=True)
            assert not admission.accepted and admission.code == Code.UNKNOWN_ACCOUNT
            assert tx_hash(raw) in engine.app.verified
            forged = raw[:-1] + bytes([raw[-1] ^ 1])
            [refused] = await engine._admit([forged], gossip=False, urgent=True)
            assert refused.code == Code.BAD_SIGNATURE and tx_hash(forged) not in engine.app.verified

    asyncio.run(scenario())


def test_wal_is_synced_before_visible_outputs_only(tmp_path: Path) -> None:
    # Inputs that lead to nothing visible stay buffered; the next broadcast (or commit) syncs
    # them all first, so nothing seen outside the process depends on an input a crash can lose.
    async def scenario() -> None:
        engine = make_engine(tmp_path, chain_config(1), VALIDATORS[0])
        log: list[str] = []
        engine.wal = RecordingWal(log)  # type: ignore[assignment]
        engine.attach_network(RecordingNetwork(log))
        timer = ScheduleTimeout(1, 0, Step.PREVOTE, 60_000)
        await engine._carry_out([WalAppend(Timeout(1, 0, Step.PROPOSE)), timer])
        await engine._carry_out([WalAppend(Timeout(1, 0, Step.PREVOTE)), timer])
        assert log == ["append", "append"] and engine.wal_unsynced
        vote = SignedVote(Vote(VoteType.PREVOTE, 1, 0, b"", VALIDATORS[0].address), b"\x01" * 64)
        await engine._carry_out([WalAppend(Timeout(1, 0, Step.PRECOMMIT)), Broadcast(vote), Broadcast(vote)])
        assert log == ["append", "append", "append", "sync", "broadcast", "broadcast"]
        assert not engine.wal_unsynced and engine.wal_syncs == 1
        engine.verifier.close()
        engine.store.close()

    asyncio.run(scenario())


def _prevote(signer_key: Key, as_validator: Key, height: int = 1, round_: int = 0) -> bytes:
    """An encoded prevote claiming `as_validator`, signed with `signer_key`'s key."""
    vote = Vote(VoteType.PREVOTE, height, round_, b"", compute_address(as_validator.public_key))
    signer = Ed25519Signer.from_seed(signer_key.seed)
    chain_id = chain_config(4).chain_id
    request = SignRequest(height, round_, Step.PREVOTE, vote.sign_bytes(chain_id))
    return SignedVote(vote, signer.sign(request)).encode()


class MisbehaviourLog(engine_module.NullNetwork):
    def __init__(self) -> None:
        self.reports: list[tuple[bytes, str]] = []

    def report_misbehaviour(self, peer: bytes, reason: str, detail: str) -> None:
        self.reports.append((peer, reason))


def test_consensus_messages_a_peer_could_not_have_sent_honestly_are_refused(tmp_path: Path) -> None:
    """Peers send only their own consensus messages: garbage and messages signed in another
    validator's name are refused at once as misbehaviour (no signature check, no queue slot);
    a message in the peer's own name whose signature fails is reported once the core saw it."""

    async def scenario() -> None:
        engine = make_engine(tmp_path, chain_config(4), VALIDATORS[0])
        network = MisbehaviourLog()
        engine.attach_network(network)
        await engine.start()
        try:
            peer, other = VALIDATORS[1], VALIDATORS[2]
            garbage = engine.on_consensus(b"\xff not a message", peer.public_key)
            assert garbage is not None and garbage.reason == "garbage" and garbage.misbehaviour
            forged = engine.on_consensus(_prevote(other, other), peer.public_key)
            assert forged is not None and forged.reason == "not_own_message" and forged.misbehaviour
            assert engine.on_consensus(_prevote(peer, peer), peer.public_key) is None  # honest
            assert engine.on_consensus(_prevote(other, peer), peer.public_key) is None  # bad signature
            await wait_until(lambda: network.reports)
            assert network.reports == [(peer.public_key, "bad_signature")]
            assert engine._queued_from[peer.public_key] == 0
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_peer_gets_a_bounded_share_of_the_consensus_queue(tmp_path: Path) -> None:
    """Beyond CONSENSUS_BACKLOG_PER_PEER of its messages waiting for the core, a peer's messages
    are dropped (not misbehaviour: the core is slow); another peer still gets in."""
    engine = make_engine(tmp_path, chain_config(4), VALIDATORS[0])  # not started: nothing drains
    try:
        peer, other = VALIDATORS[1], VALIDATORS[2]
        limit = engine_module.CONSENSUS_BACKLOG_PER_PEER
        for round_ in range(limit):
            assert engine.on_consensus(_prevote(peer, peer, round_=round_), peer.public_key) is None
        refusal = engine.on_consensus(_prevote(peer, peer, round_=limit), peer.public_key)
        assert refusal is not None and refusal.reason == "consensus_backlog" and not refusal.misbehaviour
        assert engine.on_consensus(_prevote(other, other), other.public_key) is None
        assert engine.queue.qsize() == limit + 1
    finally:
        engine.verifier.close()
        engine.store.close()


def test_block_sync_keeps_a_batch_in_flight_and_asks_for_each_height_once(tmp_path: Path) -> None:
    """A node far behind asks for SYNC_BATCH heights, then for the next batch as soon as blocks
    arrive and less than a batch is in flight; it asks for heights in flight again only when
    nothing arrived for SYNC_RETRY_S. (It used to ask again on every arriving block: each block
    then arrived ~17 times in a 47-height catch-up.) A live node whose peers are a height ahead
    asks at most every SYNC_RETRY_S."""

    class Requests(engine_module.NullNetwork):
        def __init__(self) -> None:
            self.heights: dict[bytes, int] = {}
            self.asked: list[tuple[int, int]] = []

        def peer_heights(self) -> dict[bytes, int]:
            return self.heights

        def request_blocks(self, from_height: int, to_height: int) -> None:
            self.asked.append((from_height, to_height))

    engine = make_engine(tmp_path, chain_config(4), VALIDATORS[0])
    try:
        network = Requests()
        engine.attach_network(network)
        batch = engine_module.SYNC_BATCH
        network.heights = {v.public_key: 200 for v in VALIDATORS[1:4]}
        engine._maybe_sync()
        engine._maybe_sync()  # a status message: nothing arrived, the batch is in flight
        assert network.asked == [(1, batch)]

        def arrives(height: int) -> None:  # what on_blocks does for a block it buffers
            engine.sync_buffer[height] = (b"", None)  # type: ignore[assignment]
            engine._sync_progressed = True
            engine._maybe_sync()

        arrives(1)
        assert network.asked[-1] == (batch + 1, 2 * batch)  # less than a batch in flight now
        for height in range(2, batch + 1):
            arrives(height)
        assert len(network.asked) == 2  # still a batch or more in flight: nothing asked twice
        arrives(batch + 1)
        assert network.asked[-1] == (2 * batch + 1, 3 * batch)
        window = engine_module.SYNC_WINDOW
        for height in range(batch + 2, window - batch + 1):
            arrives(height)  # none applied: asking stops at SYNC_WINDOW above our height
        assert network.asked[-1][1] == window and max(h for _, h in network.asked) == window
        for height in range(batch + 2, window + 1):
            engine.sync_buffer.pop(height, None)
        engine.sync_requested_at -= engine_module.SYNC_RETRY_S  # nothing arrived for a while
        engine._maybe_sync()
        assert network.asked[-1] == (batch + 2, 2 * batch + 1)  # the missing heights, again
        # live: the buffer is applied, peers one height ahead
        engine.sync_buffer.clear()
        network.heights = {v.public_key: 1 for v in VALIDATORS[1:4]}
        network.asked.clear()
        engine.sync_requested_at = 0.0
        engine._sync_progressed = False
        for _ in range(3):
            engine._maybe_sync()
        assert network.asked == [(1, 1)]
    finally:
        engine.verifier.close()
        engine.store.close()
