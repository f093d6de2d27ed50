"""The engine: one owner task for consensus, the application and the mempool.

Theory of operation (DESIGN.md principles 6-8)
- Every consensus input (peer messages, timeouts, the application's answers, synced blocks)
  goes through one asyncio queue and is handled by one task, `_run`, which calls
  `core.step` and carries out the outputs in order. Height/round guards in the core make
  stale inputs harmless, so producers never coordinate. A peer's consensus messages enter
  the queue only if signed in its own name (honest peers relay nothing), at most
  CONSENSUS_BACKLOG_PER_PEER of them at a time; one the core finds badly signed
  (`core.fault`) is reported to the network against that peer.
- Write ahead: each `WalAppend` is appended to the WAL, and the WAL is fsynced before the
  first later output that is visible outside the process (a broadcast or a commit) is acted
  on, so nothing we said or committed can depend on an input a crash could lose. Inputs
  that led to nothing visible (most peer votes, timers) stay buffered until the next visible
  output syncs them: losing them in a crash only means hearing them again from the peers
  (CometBFT likewise syncs only before its own messages). A step's WAL inputs are appended
  ahead of its other outputs (up to a Decide), so one fsync covers them. Our own signatures
  are made by `consensus.GuardedSigner` in deferred mode: `_core_step` persists the signing
  state (fsync + atomic rename) once after each `core.step`, before any of the step's outputs
  is carried out, so no signature leaves the process before the state forbidding its twin is
  on disk. Both fsyncs run on the engine's disk thread while the consensus task waits for
  them: the event loop keeps admitting txs and serving peers meanwhile (with 4 validators at
  3,000 tx/s a guard write took ~8 ms, and guard writes and WAL fsyncs were ~12% of a
  validator's main-thread samples), and nothing else steps the core or touches the WAL or
  the guard.
- Decide(h): finalize through the STF, persist block + certificate + results + app hash
  (one atomic store write), then seal WAL height h, evict committed txs from the mempool,
  wake StreamBlocks waiters, announce our height and start h+1 `timeout_commit` after the
  decision (as CometBFT counts it from CommitTime): executing and storing the block happen
  inside the pause, not before it.
- Restart: the application rebuilds its state from the latest snapshot + stored blocks;
  the WAL's inputs for the height in progress are replayed into a fresh core (its outputs
  re-armed: timers, broadcasts, pending proposals/validations), the votes the guard signed
  last are fed back, and the node rejoins. If the store already holds the WAL's height (a
  crash between commit and sealing, or a marker lost with unsynced writes), the WAL is sealed
  instead of replayed.
- Block sync: peers announce their heights; when one is ahead we request the missing
  committed blocks and feed each as `CertifiedBlock` to the core, which verifies its
  commit certificate against the validator set and decides the height directly. A block is
  buffered only if its certificate already holds for it on arrival (a forged one would keep
  the height's slot and stop the sync there), and when a block is fed the next buffered one's
  txs go to the signature workers, so they are checked while this height executes.
- Tx admission: cheap checks (size, duplicate, mempool room) on the event loop, signatures in
  the verifier workers (node/verifier_pool.py), then the stateful check and the mempool. A tx
  that passed the cheap checks holds its room in the mempool's bounds until its verdict is back
  (Mempool.hold/release), so what waits for the workers is bounded like the mempool itself.
  A client's txs that pass the cheap checks are queued for gossip *before* their signatures
  are checked, so every validator verifies them in parallel instead of one after the other
  (each validator checks every tx it admits; nothing unverified enters a mempool or skips
  the STF's check). The validators form a full mesh and gossiped txs are not relayed again,
  so a bad tx costs each validator one check -- what a client sending it to every validator's
  public port costs anyway. At 3,000 tx/s on 4 validators the share of block txs a validator
  had not verified by finalize fell from 13-17% to 6-10%.
- The txs of an accepted proposal that are not known to verify yet go to the workers at once,
  ahead of the queued gossip (`_preverify`, an urgent admission), and the block's Decide waits
  for them, at most PREVERIFY_WAIT_S (`_step`), instead of verifying them a second time
  on the consensus thread; finalize_block checks inline only what is still unknown after that
  (0% of block txs measured at 3,000 tx/s on 4 validators, from up to 56% per interval). A tx
  whose signature verified is remembered as such even when the stateful check refuses it, and
  a proposal's txs go to the workers even when the mempool is full (they are bounded by the
  block size; the pool still refuses them a place): a flooded validator does not fall back to
  checking a whole block's signatures on the consensus thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nacl.signing
from opentelemetry.trace import Span

from consensus import (
    BlockValidity,
    Broadcast,
    CertificateError,
    CertifiedBlock,
    CommitCertificate,
    ConsensusCore,
    Decide,
    DecodeError,
    Ed25519Signer,
    EvidenceFound,
    GuardedSigner,
    Input,
    Output,
    ProposalBlock,
    ProposalMessage,
    RequestProposal,
    ScheduleTimeout,
    SignedVote,
    StartHeight,
    Timeout,
    ValidateBlock,
    ValidatorSet,
    WalAppend,
    compute_address,
    compute_block_id,
    decode_input,
    decode_message,
    encode_input,
    encode_message,
    message_signer,
    recover_signed_votes,
    verify_commit_certificate,
)
from node.app import Application, ProposalRejected, crash_point
from node.blocks import decode_block, encode_block
from node.blockstore import BlockStore
from node.config import NodeConfig, NodeHome
from node.interfaces import Network, Refusal
from node.mempool import Admission, Mempool, check_tx_against_state, code_status, update_after_commit
from node.observability import (
    SPAN_BLOCK_APPLY,
    SPAN_BLOCK_COMMIT,
    SPAN_BLOCK_PROPOSE,
    SPAN_HEIGHT,
    SPAN_TX_COMMIT,
    SPAN_TX_MEMPOOL,
    Tracing,
    optional_span,
)
from node.signstate import SignStateFile
from node.txtrace import TxTraces
from node.verifier_pool import VerifierPool, VerifierUnavailable
from node.verify import Verified
from node.wal import Wal
from proto.ita.v1 import block_pb2, node_pb2
from sdk.keys import Key
from stf.config import ChainConfig
from stf.results import Code
from stf.signing import tx_hash as hash_of_tx

log = logging.getLogger("ita.engine")

SYNC_BATCH = 50  # blocks asked for per request
SYNC_RETRY_S = 2.0  # no synced block for this long: ask again for the heights in flight
SYNC_WINDOW = 4 * SYNC_BATCH  # synced blocks are asked for and kept only this far above our height
STATUS_EVERY_S = 1.0
STALL_S = 2.0  # no commit for this long: re-send our consensus messages of the current height
STALL_RESEND_MAX = 64
# Outputs seen outside the process or committing a block: the WAL is synced before them.
VISIBLE_OUTPUTS = (Broadcast, Decide)
CONSENSUS_BACKLOG_PER_PEER = 512  # a peer's messages waiting in the core's queue (honest: a few per round)
PREVERIFY_WAIT_S = 1.0  # longest a decided block waits for its txs' verification in the workers


def _describe_message(inp: Input) -> str:
    if isinstance(inp, ProposalMessage):
        return f"proposal for height {inp.signed.proposal.height} round {inp.signed.proposal.round}"
    if isinstance(inp, SignedVote):
        return f"{inp.vote.type.name.lower()} for height {inp.vote.height} round {inp.vote.round}"
    return type(inp).__name__


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class NullNetwork:
    """A network with no peers (a single validator, or before the peers are attached)."""

    def broadcast_consensus(self, payload: bytes) -> None: ...
    def broadcast_txs(self, txs: Sequence[bytes]) -> None: ...
    def broadcast_status(self, height: int) -> None: ...
    def request_blocks(self, from_height: int, to_height: int) -> None: ...

    def peer_heights(self) -> dict[bytes, int]:
        return {}

    def report_misbehaviour(self, peer: bytes, reason: str, detail: str) -> None: ...


class Engine:
    """Implements node.interfaces.PeerHandler and NodeBackend."""

    def __init__(
        self,
        chain: ChainConfig,
        config: NodeConfig,
        home: NodeHome,
        validator_key: Key | None,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.chain = chain
        self.chain_id = chain.chain_id
        self.config = config
        self.home = home
        self.now_ms = now_ms
        self.key = validator_key
        self.network: Network = NullNetwork()
        self.store = BlockStore(home.store_dir, chain.chain_id, config.snapshots_kept)
        self.app = Application(chain, self.store, config.snapshot_interval)
        self.vset = ValidatorSet([(v.public_key, v.power) for v in chain.validators])
        self.guard_file = SignStateFile(home.sign_state_file)
        self.signer: GuardedSigner | None = None
        if validator_key is not None:
            inner = Ed25519Signer(nacl.signing.SigningKey(validator_key.seed))
            self.signer = GuardedSigner(
                inner, self.guard_file.load(), persist=self.guard_file.save, deferred=True
            )
        self.consensus_config = config.consensus.consensus_config()
        self.core = ConsensusCore(self.consensus_config, self.vset, self.signer, chain.chain_id)
        self.mempool = Mempool(config.mempool, lambda v: check_tx_against_state(self.app.state, v))
        self.verifier = self._new_verifier()
        # Consensus inputs with the peer that sent them (None: our own timers, the application,
        # block sync); `_queued_from` counts each peer's share, bounded by CONSENSUS_BACKLOG_PER_PEER.
        self.queue: asyncio.Queue[tuple[Input, bytes | None]] = asyncio.Queue()
        self._queued_from: dict[bytes, int] = {}
        self._peer_addresses: dict[bytes, bytes] = {}  # peer public key -> validator address
        self.wal: Wal | None = None
        self.wal_unsynced = False  # inputs appended since the last fsync
        self.wal_syncs = 0
        self.height_changed = asyncio.Condition()
        self.own_messages: list[bytes] = []  # what we broadcast at the current height (re-sent on a stall)
        self.sync_buffer: dict[int, tuple[bytes, CommitCertificate]] = {}
        self.sync_requested_at = 0.0  # last request, or last block buffered since (the retry timer)
        self.sync_requested_to = 0  # highest height asked for; heights up to it are in flight
        self._sync_progressed = False  # a synced block was buffered since the last request
        self.pending_gossip: list[bytes] = []
        self._gossip_due = asyncio.Event()  # set when pending_gossip gets txs: the relay wakes only then
        self.evidence_file = Path(home.data_dir) / "evidence.jsonl"
        self.last_commit_at = 0.0
        self._verify_wait_s = 0.0  # how long the block being decided waited for its txs' verification
        self.observers: list[Callable[[str, dict[str, object]], None]] = []
        self.tracing: Tracing | None = None  # set by the owner when spans go somewhere
        self._tx_traces: TxTraces | None = None  # with tracing: client txs waiting for their commit
        self._open_height: tuple[int, Span] | None = None  # (height, its span): _height_span
        self._tasks: list[asyncio.Task[None]] = []
        self._preverifying: set[asyncio.Task[list[Admission]]] = set()  # references keep them alive
        # block id -> (height, its task): a proposal's, or a synced block's (Engine._preverify)
        self._preverify_by_block: dict[bytes, tuple[int, asyncio.Task[list[Admission]]]] = {}
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="ita-engine-disk")  # guard + WAL fsyncs

    def _new_verifier(self) -> VerifierPool:
        mempool = self.config.mempool
        return VerifierPool(
            self.chain.chain_id,
            mempool.verify_workers,
            mempool.verify_batch_max,
            nice=mempool.verify_nice,
            on_batch=self._verified_batch,
            on_request=self._verify_request,
        )

    def _verify_request(self, txs: int) -> None:
        """A request (one or several merged admission batches) went to a signature worker."""
        self._note("verify_request", {"txs": txs})

    def _verified_batch(self, txs: int, seconds: float) -> None:
        """A batch of admissions came back from the signature workers (queue wait included)."""
        self._note("verify", {"txs": txs, "seconds": seconds})

    def _traces(self) -> TxTraces | None:
        """The trace contexts of the client txs admitted here (node/txtrace.py), with tracing."""
        if self.tracing is None:
            return None
        if self._tx_traces is None or self._tx_traces.tracing is not self.tracing:
            self._tx_traces = TxTraces(self.tracing, capacity=max(1, self.config.mempool.max_txs))
        return self._tx_traces

    def _height_span(self, height: int) -> Span | None:
        """The "height" span of `height`: opened when the previous height committed (or at the
        first use), ended by its own commit, so it spans the block interval."""
        if self.tracing is None:
            return None
        if self._open_height is not None:
            open_height, span = self._open_height
            if open_height == height:
                return span
            span.end()  # left without a commit here (stopped, or synced past it)
        span = self.tracing.open_span(SPAN_HEIGHT, height=height)
        self._open_height = (height, span)
        return span

    def _end_height_span(self, **attributes: int) -> None:
        if self._open_height is not None:
            _, span = self._open_height
            self._open_height = None
            for key, value in attributes.items():
                span.set_attribute(key, value)
            span.end()

    # ------------------------------------------------------------------ lifecycle

    def attach_network(self, network: Network) -> None:
        self.network = network

    @property
    def own_address(self) -> bytes:
        return self.key.address if self.key is not None else b""

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.verifier.warm_up)
        await self._recover()
        self._tasks = [
            asyncio.create_task(self._run(), name="consensus-owner"),
            asyncio.create_task(self._status_loop(), name="status"),
            asyncio.create_task(self._gossip_loop(), name="tx-gossip"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._preverifying]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._disk.shutdown(wait=True)  # a write a cancelled step started finishes before the close
        if self.wal is not None:
            self.wal.close()
        self.verifier.close()
        self.store.close()
        self._end_height_span()

    async def _recover(self) -> None:
        committed = self.app.height
        wal, recovery = Wal.open(self.home.wal_dir, initial_height=committed + 1)
        self.wal = wal
        while wal.height <= committed:  # crash after the store's commit, before sealing the WAL
            log.info("sealing WAL height %d already in the store", wal.height)
            wal.end_height(wal.height)
        if wal.height != committed + 1:
            raise RuntimeError(f"WAL is at height {wal.height} but the store ends at {committed}")
        inputs = (
            [decode_input(payload) for payload in recovery.inputs] if recovery.height == wal.height else []
        )
        if inputs:
            log.info("replaying %d WAL inputs of height %d", len(inputs), wal.height)
            outputs: list[Output] = []
            for inp in inputs:
                outputs.extend(await self._core_step(inp))
            await self._carry_out([o for o in outputs if not isinstance(o, WalAppend)])
        else:
            await self._step(StartHeight(committed + 1))
        if self.signer is not None:
            for vote in recover_signed_votes(self.signer.recent, self.chain_id, self.own_address):
                await self._step(vote)

    # ------------------------------------------------------------------ the owner loop

    def enqueue(self, inp: Input) -> None:
        self.queue.put_nowait((inp, None))

    async def _run(self) -> None:
        while True:
            inp, peer = await self.queue.get()
            if peer is not None:
                self._queued_from[peer] -= 1
            try:
                await self._step(inp)
            except Exception:  # a bug must stop the node loudly, never silently stall it
                log.exception("consensus step failed; stopping")
                raise
            fault = self.core.fault  # set by the core.step of this input (_step steps it once)
            if peer is not None and fault is not None:
                self.network.report_misbehaviour(peer, fault, _describe_message(inp))

    async def _core_step(self, inp: Input) -> list[Output]:
        """`core.step`, then the guard's flush: every signature the step made is durable (fsync +
        atomic rename) before any of its outputs -- the only way a signature leaves the process --
        is carried out. One write per step, not one per signature, and on the disk thread: the
        event loop keeps admitting txs and serving peers during the fsyncs."""
        outputs = self.core.step(inp)
        if self.signer is not None and self.signer.unpersisted:
            await self._on_disk(self.signer.flush)
        return outputs

    async def _on_disk(self, write: Callable[[], None]) -> None:
        """Run a durable write (fsync) on the engine's disk thread and wait for it. Only the
        consensus task calls this, one write at a time, and nothing else steps the core or
        touches the WAL and the guard meanwhile: consensus inputs wait in the queue."""
        await asyncio.get_running_loop().run_in_executor(self._disk, write)

    async def _step(self, inp: Input) -> None:
        """One consensus input: `_core_step`, then its outputs carried out in order, except that a
        Decide whose block's txs are still being verified by the workers (Engine._preverify)
        waits for them (at most PREVERIFY_WAIT_S) after the outputs before it are carried out:
        verifying them again on this thread would pay twice for what is already under way on the
        other core. The event loop keeps admitting txs meanwhile; consensus inputs wait in the
        queue, so nothing else happens to the state."""
        outputs = await self._core_step(inp)
        for index, out in enumerate(outputs):
            if not isinstance(out, Decide):
                continue
            _, pending = self._preverify_by_block.pop(out.block_id, (0, None))
            by_block = self._preverify_by_block  # a decided height: its other proposals' tasks are moot
            for block_id in [b for b, (height, _) in by_block.items() if height <= out.height]:
                del by_block[block_id]
            if pending is not None and not pending.done():
                await self._carry_out(outputs[:index])
                outputs = outputs[index:]
                started = time.perf_counter()
                await asyncio.wait({pending}, timeout=PREVERIFY_WAIT_S)
                self._verify_wait_s = time.perf_counter() - started
            break
        await self._carry_out(outputs)

    async def _carry_out(self, outputs: list[Output]) -> None:
        """Carry out a step's outputs in order, except that the WAL inputs of each run of outputs
        up to (and including) a Decide are appended first: one fsync before the run's first
        visible output then covers them all (a lone validator's step broadcasts its proposal,
        prevote and precommit). Appending an input earlier only makes it durable sooner; the
        inputs keep their order, and those after a Decide belong to the next height's WAL."""
        run: list[Output] = []
        for out in outputs:
            run.append(out)
            if isinstance(out, Decide):
                await self._carry_out_run(run)
                run = []
        if run:
            await self._carry_out_run(run)

    async def _carry_out_run(self, run: list[Output]) -> None:
        for out in run:
            if isinstance(out, WalAppend):
                assert self.wal is not None
                crash_point("before_wal_write", self.core.height)
                self.wal.append(encode_input(out.input))
                self.wal_unsynced = True
        for out in run:
            if isinstance(out, WalAppend):
                continue
            if self.wal_unsynced and isinstance(out, VISIBLE_OUTPUTS):
                await self.sync_wal()
            self._act(out)

    async def sync_wal(self) -> None:
        """Make every appended WAL input durable (before a visible output; see the module doc)."""
        assert self.wal is not None
        await self._on_disk(self.wal.flush_and_sync)
        self.wal_unsynced = False
        self.wal_syncs += 1
        crash_point("after_wal_write", self.core.height)

    def _act(self, out: Output) -> None:
        if isinstance(out, Broadcast):
            payload = encode_message(out.message)
            self.own_messages.append(payload)
            self.network.broadcast_consensus(payload)
        elif isinstance(out, ScheduleTimeout):
            self._schedule(out.duration_ms, Timeout(out.height, out.round, out.step))
            if out.round > 0 or out.step.name == "PROPOSE":
                self._note("round", {"height": out.height, "round": out.round})
        elif isinstance(out, RequestProposal):
            self._propose(out)
        elif isinstance(out, ValidateBlock):
            self._validate(out)
        elif isinstance(out, Decide):
            self._decide(out)
        elif isinstance(out, EvidenceFound):
            self._record_evidence(out)

    def _schedule(self, delay_ms: int, inp: Input) -> None:
        asyncio.get_running_loop().call_later(delay_ms / 1000, self.enqueue, inp)

    # ------------------------------------------------------------------ application calls

    def _propose(self, req: RequestProposal) -> None:
        limits = self.config.block
        txs = self.mempool.reap(
            min(limits.max_txs, self.chain.max_block_txs),
            min(limits.max_bytes, self.chain.max_block_bytes // 2),
        )
        parent = self._height_span(req.height)
        attributes = {"height": req.height, "round": req.round, "txs": len(txs)}
        with optional_span(self.tracing, SPAN_BLOCK_PROPOSE, parent, **attributes):
            raw = self.app.prepare_proposal(req.height, self.now_ms(), self.own_address, txs)
        self._note("propose", {"height": req.height, "round": req.round, "txs": len(txs)})
        self.enqueue(ProposalBlock(req.height, req.round, raw))

    @staticmethod
    def _trace_commits(traces: TxTraces, committed: block_pb2.CommittedBlock, link: Span | None) -> None:
        """A tx.commit span for each traced client tx of the block: from its admission here to
        now, with the proposer's block time as its "proposed" event (node/txtrace.py)."""
        header = committed.block.header
        results = committed.results
        traces.finish(
            SPAN_TX_COMMIT,
            committed.tx_hashes,
            link,
            lambda i: {"height": header.height, "index": i, "tx_hash": committed.tx_hashes[i],
                       "status": code_status(results[i].code)},
            events=[("proposed", header.time_ms * 1_000_000)],
        )

    def _validate(self, req: ValidateBlock) -> None:
        try:
            self.app.process_proposal(req.height, req.block, self.now_ms())
            valid = True
        except ProposalRejected as exc:
            log.warning("proposal rejected: %s", exc, extra={"height": req.height, "round": req.round})
            valid = False
        self.enqueue(BlockValidity(req.height, req.round, req.block_id, valid))
        if valid and req.block_id not in self._preverify_by_block:  # (a synced block's may be under way)
            self._preverify(self.app.unverified_proposal_txs(), req.block_id, req.height)

    def _preverify(self, txs: list[bytes], block_id: bytes = b"", height: int = 0) -> None:
        """Send a valid proposal's txs that we have not verified yet (their gossip has not arrived)
        to the verifier workers now, as admissions: while the votes go round they verify on the
        other core, and finalize_block finds them known instead of verifying them on this thread.
        Their batches go ahead of the queued ones, and the block's Decide waits for them
        (`_step`): the work is already under way, and the txs the block needs before
        anything else. What is still unverified when the wait ends is verified by finalize_block."""
        if not txs:
            return
        task = asyncio.get_running_loop().create_task(self._admit(txs, gossip=False, urgent=True))
        self._preverifying.add(task)
        task.add_done_callback(self._preverifying.discard)
        if block_id:
            self._preverify_by_block[block_id] = (height, task)

    def _preverify_synced(self, height: int) -> None:
        """`_preverify` for a buffered block of block sync (its certificate was checked on
        arrival), called when the block before it is fed to the core: while that height is
        validated and executed, the workers already check this one's txs. (The block being fed
        is preverified by `_validate`, as a proposal is, which skips a block already under way.)"""
        entry = self.sync_buffer.get(height)
        if entry is None or entry[1].block_id in self._preverify_by_block:
            return
        raw, certificate = entry
        verified = self.app.verified
        txs = [tx for tx in decode_block(raw).txs if hash_of_tx(tx) not in verified]
        self._preverify(txs, certificate.block_id, height)

    def _decide(self, decide: Decide) -> None:
        height = decide.height
        started = time.perf_counter()
        if self.app.height < height:
            parent = self._height_span(height)
            with optional_span(
                self.tracing, SPAN_BLOCK_COMMIT, parent, height=height, round=decide.round
            ) as commit_span:
                with optional_span(self.tracing, SPAN_BLOCK_APPLY, height=height):
                    finalized = self.app.finalize_block(decide.block)
                executed = time.perf_counter()
                committed = self.app.commit(finalized, decide.certificate.encode())
            traces = self._traces()
            if traces is not None and len(traces):
                self._trace_commits(traces, committed, commit_span)
            self._end_height_span(round=decide.round, txs=len(committed.block.txs))
            self._height_span(height + 1)  # the next height's span covers the commit pause too
            stored = time.perf_counter()
            self._update_mempool(committed)
            done = time.perf_counter()
            self._note(
                "commit",
                {
                    "height": height,
                    "round": decide.round,
                    "txs": len(committed.block.txs),
                    "verified_inline": finalized.verified_inline,
                    "apply_s": done - started,
                    "execute_s": executed - started,
                    "store_s": stored - executed,
                    "mempool_s": done - stored,
                    "verify_wait_s": self._verify_wait_s,
                    "block_time_ms": committed.block.header.time_ms,
                },
            )
        self._verify_wait_s = 0.0
        assert self.wal is not None
        self.wal.end_height(height)  # the marker; not synced: the store's synced write committed h
        self.wal_unsynced = False  # the Decide above synced every input
        self.last_commit_at = time.monotonic()
        self.own_messages = []
        self.sync_buffer.pop(height, None)
        self.network.broadcast_status(height)
        asyncio.get_running_loop().create_task(self._notify_height())
        if self.sync_buffer.get(height + 1) is not None or self._vouched_peer_height() > height:
            self.enqueue(StartHeight(height + 1))  # catching up: no commit pause, then the next block
            self._feed_synced(height + 1)
        elif self._skip_commit_pause(decide):
            self.enqueue(StartHeight(height + 1))
        else:  # the pause counts from the decision, so executing the block overlaps it
            spent_ms = int((time.perf_counter() - started) * 1000)
            pause_ms = max(0, self.config.consensus.timeout_commit_ms - spent_ms)
            self._schedule(pause_ms, StartHeight(height + 1))

    def _skip_commit_pause(self, decide: Decide) -> bool:
        """ConsensusTimeouts.skip_timeout_commit: every validator precommitted and a backlog waits."""
        timeouts = self.config.consensus
        backlog = max(1, timeouts.skip_timeout_commit_min_txs)
        if not timeouts.skip_timeout_commit or len(self.mempool) < backlog:
            return False
        signers = {sig.validator for sig in decide.certificate.signatures}
        return len(signers) == len(self.vset.validators)

    def _update_mempool(self, committed: block_pb2.CommittedBlock) -> None:
        update_after_commit(self.mempool, self.app.state, committed)

    async def _notify_height(self) -> None:
        async with self.height_changed:
            self.height_changed.notify_all()

    def _record_evidence(self, found: EvidenceFound) -> None:
        evidence = found.evidence
        record = {"kind": type(evidence).__name__, "height": self.core.height, "repr": repr(evidence)[:2000]}
        log.warning("equivocation evidence: %s", record["kind"], extra={"height": self.core.height})
        with open(self.evidence_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self._note("evidence", record)

    def _note(self, event: str, fields: dict[str, object]) -> None:
        for observer in self.observers:
            observer(event, fields)

    # ------------------------------------------------------------------ PeerHandler

    def on_consensus(self, payload: bytes, peer: bytes) -> Refusal | None:
        try:
            message = decode_message(payload)
        except DecodeError as exc:
            return Refusal("garbage", f"not a consensus message: {exc}", misbehaviour=True)
        address = self._peer_addresses.get(peer)
        if address is None:
            address = self._peer_addresses[peer] = compute_address(peer)
        if message_signer(message) != address:  # honest peers send only their own messages
            return Refusal("not_own_message", f"signed by {message_signer(message).hex()}", misbehaviour=True)
        queued = self._queued_from.get(peer, 0)
        if queued >= CONSENSUS_BACKLOG_PER_PEER:
            detail = f"{queued} of its messages await the core"
            return Refusal("consensus_backlog", detail, misbehaviour=False)
        self._queued_from[peer] = queued + 1
        self.queue.put_nowait((message, peer))
        return None

    async def on_txs(self, txs: Sequence[bytes], peer: bytes) -> None:
        await self._admit(txs, gossip=False)

    def on_status(self, height: int, peer: bytes) -> None:
        self._maybe_sync()

    def on_blocks(self, blocks: Sequence[block_pb2.CommittedBlock], peer: bytes) -> int:
        refused = buffered = 0
        for committed in blocks:
            height = committed.block.header.height
            if not self.app.height < height <= self.app.height + SYNC_WINDOW or height in self.sync_buffer:
                continue  # far ahead: not asked for (a peer pushing the whole chain must not fill memory)
            raw = encode_block(committed.block)
            try:  # checked here, not only by the core: a forged block must not hold the height's slot
                certificate = CommitCertificate.decode(committed.certificate)
                block_id = compute_block_id(raw)
                verify_commit_certificate(certificate, self.vset, self.chain.chain_id, height, block_id)
            except (DecodeError, CertificateError) as exc:
                who = peer.hex()[:16]
                log.info("peer %s sent block %d without a valid commit certificate: %s", who, height, exc)
                refused += 1
                continue
            self.sync_buffer[height] = (raw, certificate)
            buffered += 1
        if buffered:  # progress: the next batch may be asked for, and the retry timer restarts
            self.sync_requested_at = time.monotonic()  # (forged blocks do neither)
            self._sync_progressed = True
        self._feed_synced(self.core.height)
        return refused

    def blocks_for(self, from_height: int, to_height: int, max_bytes: int) -> list[bytes]:
        out: list[bytes] = []
        total = 0
        for height in range(max(1, from_height), min(to_height, self.app.height) + 1):
            raw = self.store.block_bytes(height)
            if raw is None or (out and total + len(raw) > max_bytes):
                break
            out.append(raw)
            total += len(raw)
        return out

    def height(self) -> int:
        return self.app.height

    def _best_peer_height(self) -> int:
        return max(self.network.peer_heights().values(), default=0)

    def _vouched_peer_height(self) -> int:
        """The highest height reported by validators holding more than 1/3 of the voting power
        together (so by at least one honest one): what the commit pause and the syncing flag go
        by. One Byzantine peer claiming a height it does not have moves block requests to it in
        turn (`_maybe_sync`) but does not make every height skip its pause."""
        power = 0
        vset = self.vset
        for key, height in sorted(self.network.peer_heights().items(), key=lambda kv: -kv[1]):
            index = vset.index_of(compute_address(key))
            if index is None:
                continue  # a full node: no voting power to vouch with
            power += vset.power_of(index)
            if vset.is_one_third(power):
                return height
        return 0

    def _maybe_sync(self) -> None:
        """Keep one to two batches of the heights we miss in flight. A peer is ahead, even by one
        height: ask for the blocks. Consensus may still deliver that height, but a node that
        missed its precommits would otherwise wait for messages that the others, already at the
        next height, do not resend. While blocks arrive, the next batch is asked for as soon as
        less than a batch is in flight; heights already asked for are asked for again only when
        nothing was asked or arrived for SYNC_RETRY_S (a peer may not have them, or may lie).
        Asking on every arriving block made each block arrive ~17 times in a 47-height catch-up.
        Without arrivals (a live node whose peers are a height ahead) it asks at most every
        SYNC_RETRY_S."""
        best = self._best_peer_height()
        ours = self.app.height
        if best <= ours:
            return
        start = ours + 1
        while start in self.sync_buffer:
            start += 1
        if start > best:
            return
        now = time.monotonic()
        if now - self.sync_requested_at >= SYNC_RETRY_S:
            self.sync_requested_to = start - 1  # nothing asked or arrived for a while: ask again
        elif not self._sync_progressed or self.sync_requested_to - start + 1 >= SYNC_BATCH:
            return  # no block arrived since the last request (live: peers just ahead), or enough in flight
        first = max(start, self.sync_requested_to + 1)
        horizon = min(best, ours + SYNC_WINDOW)  # blocks buffered but not yet applied count too
        if first > horizon:
            return
        last = min(horizon, first + SYNC_BATCH - 1)
        self.sync_requested_at = now
        self.sync_requested_to = last
        self._sync_progressed = False
        self.network.request_blocks(first, last)

    def _feed_synced(self, height: int) -> None:
        entry = self.sync_buffer.get(height)
        if entry is not None and height == self.app.height + 1:
            raw, certificate = entry
            self.enqueue(CertifiedBlock(raw, certificate))  # its txs: _validate preverifies them
            self._preverify_synced(height + 1)
        self._maybe_sync()

    @property
    def syncing(self) -> bool:
        return self._vouched_peer_height() > self.app.height + 1

    # ------------------------------------------------------------------ transactions

    async def submit_txs(self, txs: Sequence[bytes]) -> list[Admission]:
        return await self._admit(txs, gossip=True)

    async def _admit(self, txs: Sequence[bytes], gossip: bool, urgent: bool = False) -> list[Admission]:
        """Admission of `txs` (see the module doc); `gossip`: relay them to the peers; `urgent`:
        their batches go to the verifier workers ahead of the queued ones (a proposal's txs, which
        the block's execution needs soon)."""
        digests = [hash_of_tx(raw) for raw in txs]
        mempool = self.mempool
        answers: list[Admission | None] = []
        todo: list[int] = []
        held = 0  # bytes of the txs in `todo`: held in the mempool's bounds while they are verified
        for i, (raw, digest) in enumerate(zip(txs, digests, strict=True)):
            answer = mempool.precheck(raw, digest, bounded=not urgent)  # a proposal's: checked anyway
            answers.append(answer)
            if answer is None:
                todo.append(i)
                held += len(raw)
                mempool.hold(1, len(raw))  # the next precheck counts it: the batch obeys the bounds too
        if todo and gossip:  # relay before verifying: the peers check them in parallel with us
            self.pending_gossip.extend(txs[i] for i in todo)
            self._gossip_due.set()
        if todo:  # one span for the admission: the workers' check, then the mempool
            with optional_span(self.tracing, SPAN_TX_MEMPOOL, txs=len(todo), urgent=urgent) as span:
                try:
                    try:
                        verified = await self.verifier.verify_async_unless(
                            [txs[i] for i in todo], [digests[i] for i in todo], mempool.seen, urgent=urgent
                        )
                    finally:  # verdicts back (or never coming): add_verified checks the bounds itself
                        mempool.release(len(todo), held)
                except VerifierUnavailable as exc:
                    for i in todo:
                        answers[i] = mempool.reject_unverified(txs[i], str(exc))
                    self._replace_broken_verifier(exc)
                else:
                    for i, v in zip(todo, verified, strict=True):
                        answers[i] = self._add_checked(txs[i], digests[i], v)
                    traces = self._traces() if gossip and span is not None else None
                    if traces is not None and span is not None:  # a client's txs: traced to their commit
                        context = span.get_span_context()
                        for i in todo:
                            answer = answers[i]
                            if answer is not None and answer.accepted:
                                traces.remember(digests[i], context)
        return [a for a in answers if a is not None]

    def _add_checked(self, raw: bytes, digest: bytes, verified: Verified | None) -> Admission:
        """The admission of a tx the workers answered for (None: not checked, seen meanwhile)."""
        if verified is None:  # committed (or admitted) while it waited for a worker
            return self.mempool.precheck(raw, digest) or self.mempool.reject_unverified(
                raw, "not checked: the transaction was seen while it waited"
            )
        if verified.code == Code.OK:  # the signature holds whatever the stateful check says
            self.app.verified.remember(verified.hash)
        return self.mempool.add_verified(raw, verified, digest)

    def _replace_broken_verifier(self, exc: VerifierUnavailable) -> None:
        """A verifier worker died: the txs of that batch were answered as unverified (the client
        may resend); later ones go to a fresh pool."""
        if not self.verifier.broken:  # closed on purpose (stop), or already replaced
            return
        log.error("signature verifier failed (%s); starting a new worker pool", exc)
        self.verifier.close()
        self.verifier = self._new_verifier()

    async def _gossip_loop(self) -> None:
        """Relay admitted client txs in one batch per ``gossip_interval_ms``: the first tx after a
        quiet spell starts the interval, so an idle node does not wake 100 times a second."""
        every_s = self.config.mempool.gossip_interval_ms / 1000
        while True:
            await self._gossip_due.wait()
            await asyncio.sleep(every_s)  # what arrives meanwhile joins the batch
            self._gossip_due.clear()
            if self.pending_gossip:
                batch, self.pending_gossip = self.pending_gossip, []
                self.network.broadcast_txs(batch)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            self.network.broadcast_status(self.app.height)
            self._maybe_sync()
            self._rebroadcast_if_stalled()

    def _rebroadcast_if_stalled(self) -> None:
        """Gossip is best effort: if no block committed for a while, send our messages of the
        current height again (peers and the core drop duplicates)."""
        if time.monotonic() - self.last_commit_at < STALL_S:
            return
        for payload in self.own_messages[-STALL_RESEND_MAX:]:
            self.network.broadcast_consensus(payload)

    # ------------------------------------------------------------------ NodeBackend

    def status(self) -> node_pb2.StatusResponse:
        state = self.app.state
        stats = self.mempool.stats()
        return node_pb2.StatusResponse(
            chain_id=self.chain_id,
            height=state.height,
            last_block_hash=self.app.last_block_id(),
            app_hash=state.app_hash,
            last_block_time_ms=state.time_ms,
            syncing=self.syncing,
            validator_address=self.own_address,
            validator_public_key=self.key.public_key if self.key is not None else b"",
            moniker=self.config.moniker,
            mempool_txs=stats["size"],
            mempool_bytes=stats["bytes"],
            earliest_height=1 if state.height else 0,
        )

    def latest_height(self) -> int:
        return self.app.height

    def committed_block_bytes(self, height: int) -> bytes | None:
        return self.store.block_bytes(height)

    async def wait_for_height(self, height: int) -> None:
        async with self.height_changed:
            await self.height_changed.wait_for(lambda: self.app.height >= height)

    def get_tx(self, tx_hash: bytes) -> node_pb2.GetTxResponse | None:
        location = self.store.tx_location(tx_hash)
        if location is not None:
            height, index = location
            committed = self.store.block(height)
            if committed is not None:
                return node_pb2.GetTxResponse(
                    hash=tx_hash,
                    height=height,
                    index=index,
                    result=committed.results[index],
                    tx=committed.block.txs[index],
                )
        raw = self.mempool.get(tx_hash)
        if raw is not None:
            return node_pb2.GetTxResponse(hash=tx_hash, pending=True, tx=raw)
        return None

    def get_account(self, address: bytes) -> node_pb2.GetAccountResponse:
        state = self.app.state
        account = state.accounts.get(address)
        out = node_pb2.GetAccountResponse(height=state.height, address=address, exists=account is not None)
        if account is None:
            return out
        out.collateral = account.collateral
        out.nonce_count = len(account.nonces)
        out.max_nonce = account.nonces[-1] if account.nonces else 0
        out.faucet_used = account.faucet_used
        symbols = [m.spec.symbol for m in state.markets]
        for order in account.orders.values():
            out.orders.add(
                order_id=order.order_id,
                market=symbols[order.market_id],
                is_buy=order.is_buy,
                price=order.price,
                size=order.size,
                orig_size=order.orig_size,
                time_in_force=order.tif,
                reduce_only=order.reduce_only,
                client_order_id=order.client_order_id,
            )
        for market_id, position in account.positions.items():
            out.positions.add(
                market=symbols[market_id],
                size=position.size,
                open_notional=position.open_notional,
                funding_index=position.funding_index,
            )
        return out

    def snapshot(self, height: int) -> tuple[int, bytes] | None:
        if height == 0:
            return self.store.latest_snapshot()
        data = self.store.snapshot(height)
        return (height, data) if data is not None else None
