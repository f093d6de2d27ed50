"""The indexer process: bootstrap, tail the node, record history, serve HTTP + WebSocket.

Theory of operation
- Bootstrap, in order of preference: (1) our own snapshot in the history store (written by
  us after verifying it; the blocks after it are replayed, never from genesis again);
  (2) the node's latest snapshot (``GetSnapshot``): its SHA-256 and its app hash are
  checked on decode, and it is *not served* until the first block after it has been
  verified -- that block's certified header must carry the snapshot's app hash;
  (3) the genesis state from ``genesis.json``.
- Tail: ``StreamBlocks(height + 1)``; for each block, synchronously and without awaiting in
  between: reduce (verify + replay + describe), record history (and every
  ``snapshot_interval`` blocks our snapshot, in the same LevelDB batch), publish to the
  WebSocket hub. HTTP handlers run on the same loop, so every response and every WS
  snapshot reflects one whole height.
- An ``IndexerFatal`` (bad certificate, app hash mismatch, ...) stops indexing loudly: the
  state is no longer served (HTTP 503, WebSocket clients closed with 1011 and the reason),
  the error is logged at CRITICAL with the height, and ``run_indexer`` raises it
  (``main`` exits with status 2).
- Lag: the source reports the node's height and connection; ``/v1/status``, ``/healthz`` and
  the ``ita_indexer_*`` gauges show them. A lost node is retried forever with backoff.
- Tracing (``--otlp-endpoint``): one ``indexer.block`` span per block holding
  ``indexer.apply`` (verify + replay + describe), ``indexer.record`` (history) and
  ``indexer.publish`` (fan-out). Spans are made only when they leave the process (or are kept
  for tests): a catch-up replays hundreds of blocks per second, and four spans per block
  would cost it ~5%. Logs are the node's JSON lines (node.observability.setup_logging).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

import stf
from genesis.schema import GenesisError, load_genesis
from node.heap import HeapMetrics, HeapPolicy, HeapSettings
from node.observability import Tracing, optional_span, setup_logging, setup_tracing
from node.txtrace import TxTraces
from proto.ita.v1 import block_pb2
from rpc.history import History, HistoryError
from rpc.http import make_app
from rpc.metrics import IndexerMetrics
from rpc.reducer import IndexerState, apply_committed, vouch_run
from rpc.source import BlockSource, GrpcBlockSource, SourceUnavailable, SubmitVerdict, block_runs
from rpc.verify import AppHashMismatch, IndexerFatal
from rpc.ws import CLOSE_INTERNAL, Hub, WsLimits
from stf.block import genesis_state
from stf.config import ChainConfig
from stf.snapshot import SnapshotError, decode_snapshot, encode_snapshot

log = logging.getLogger("ita.indexer")

GENESIS_FILE = "genesis.json"
DATA_DIR = "data/indexer.db"
SPAN_TX_FORWARD = "tx.forward"  # POST /v1/txs -> the node's SubmitTx (the node's spans go on from it)
SPAN_TX_INDEXED = "tx.indexed"  # a forwarded tx's block: from its arrival here to its WS publish


class SnapshotRejected(IndexerFatal):
    """A snapshot (the node's or our own) does not decode or verify."""

    code = "snapshot_rejected"


@dataclass(frozen=True, slots=True)
class IndexerSettings:
    snapshot_interval: int = 1_000  # blocks between our own snapshots
    limits: WsLimits = field(default_factory=WsLimits)
    verify_tx_signatures: bool = False
    use_node_snapshot: bool = True
    unhealthy_after_s: float = 30.0  # /healthz fails when no block arrived for this long and lagging
    max_run: int = 64  # blocks already received that one certificate check vouches for (catch-up)


class Indexer:
    """Bootstrap + tail loop + the state the HTTP/WS layers read (see the module docstring)."""

    def __init__(
        self,
        config: ChainConfig,
        source: BlockSource,
        history: History,
        settings: IndexerSettings | None = None,
        metrics: IndexerMetrics | None = None,
        heap: HeapPolicy | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.tracing = tracing if tracing is not None and tracing.recording else None
        # with tracing: txs forwarded by POST /v1/txs, waiting to be indexed (node/txtrace.py)
        self.tx_traces = TxTraces(self.tracing) if self.tracing is not None else None
        self.heap = heap  # the process's GC policy (node/heap.py), called after each block
        self.source = source
        self.history = history
        self.settings = settings or IndexerSettings()
        self.metrics = metrics or IndexerMetrics()
        self.hub = Hub(self.settings.limits, self.metrics, lambda: self.state)
        self._state: IndexerState | None = None
        self.ready = False  # the state is vouched for (genesis, own snapshot, or confirmed by a block)
        self.halted: IndexerFatal | None = None
        self.snapshot_height: int | None = None
        self.caught_up = asyncio.Event()

    @property
    def state(self) -> IndexerState | None:
        """The state to serve: None until vouched for, and after a fatal error."""
        return self._state if self.ready and self.halted is None else None

    # -- bootstrap ----------------------------------------------------------------------------
    async def bootstrap(self) -> None:
        own = self.history.load_snapshot()
        if own is not None:
            height, data, meta = own
            try:
                stf_state = decode_snapshot(self.config, data)
                state = IndexerState(stf_state, self.settings.verify_tx_signatures)
                state.load_meta(meta)
            except (SnapshotError, ValueError, KeyError) as exc:
                raise SnapshotRejected(
                    height,
                    f"our own snapshot does not load ({exc}); delete "
                    f"the indexer data directory to rebuild it",
                ) from exc
            self._state, self.ready, self.snapshot_height = state, True, height
            log.info("resuming from our snapshot at height %d", height, extra={"height": height})
            return
        blob = None
        if self.settings.use_node_snapshot:
            blob = await self._node_snapshot()
        if blob is not None:
            try:
                stf_state = decode_snapshot(self.config, blob.data)
            except SnapshotError as exc:
                raise SnapshotRejected(blob.height, f"the node's snapshot does not verify: {exc}") from exc
            if stf_state.app_hash != blob.app_hash or stf_state.height != blob.height:
                raise SnapshotRejected(
                    blob.height, "the node's snapshot disagrees with its announced hash/height"
                )
            self._state = IndexerState(stf_state, self.settings.verify_tx_signatures)
            self.ready = False  # until block height+1 carries this app hash in its certified header
            log.info(
                "bootstrapped from the node's snapshot at height %d (unconfirmed)",
                blob.height,
                extra={"height": blob.height},
            )
            return
        self._state = IndexerState(genesis_state(self.config), self.settings.verify_tx_signatures)
        self.ready = True
        log.info("starting from genesis (chain %s)", self.config.chain_id)

    async def _node_snapshot(self) -> Any:
        delay = 0.2
        while True:
            try:
                return await self.source.latest_snapshot()
            except SourceUnavailable as exc:
                log.warning("node unavailable for the snapshot, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- tail ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Bootstrap, then index forever. Raises the IndexerFatal that stopped it."""
        try:
            if self._state is None:
                await self.bootstrap()
                if self.heap is not None:  # the loaded state is long-lived: freeze it now
                    self.heap.after_block()
            await self._tail()
        except IndexerFatal as exc:
            await self._halt(exc)
            raise

    async def _tail(self) -> None:
        state = self._state
        assert state is not None
        runs = block_runs(self.source.stream_blocks(state.height + 1), self.settings.max_run)
        async with contextlib.aclosing(runs):  # stops the read-ahead task when indexing stops
            async for run in runs:
                # one certificate check for the blocks that arrived together (rpc/verify.py),
                # before any of them is applied; then block by block as before
                for committed, block_id in zip(run, vouch_run(state, run), strict=True):
                    await self._index(state, committed, block_id)

    async def _index(self, state: IndexerState, committed: block_pb2.CommittedBlock, block_id: bytes) -> None:
        """Apply one vouched block, record its history, publish its updates."""
        metrics = self.metrics
        interval = self.settings.snapshot_interval
        arrived = time.perf_counter()
        tracing = self.tracing
        with optional_span(
            tracing, "indexer.block", height=state.height + 1, txs=len(committed.block.txs)
        ) as block_span:
            arrived_ns = time.time_ns()  # a forwarded tx's tx.indexed starts with its block's span
            try:
                with optional_span(tracing, "indexer.apply"):
                    updates = apply_committed(state, committed, block_id)
            except AppHashMismatch as exc:
                if not self.ready:
                    message = f"the node's snapshot is not the chain's state: {exc}"
                    raise SnapshotRejected(exc.height, message) from exc
                raise
            applied = time.perf_counter()
            height = state.height
            snapshot = None
            if interval and height % interval == 0:
                snapshot = (height, encode_snapshot(state.stf), orjson.dumps(state.to_meta()))
            with optional_span(tracing, "indexer.record", snapshot=snapshot is not None):
                self.history.record([(height, updates)], snapshot)
            if snapshot is not None:
                self.snapshot_height = height
            self.ready = True
            with optional_span(tracing, "indexer.publish", updates=len(updates)):
                self.hub.publish(updates)
            traces = self.tx_traces
            if traces is not None and len(traces):  # txs forwarded here: indexed and sent on WS
                hashes = committed.tx_hashes
                traces.finish(
                    SPAN_TX_INDEXED,
                    hashes,
                    block_span,
                    lambda i: {"height": height, "index": i, "tx_hash": hashes[i]},
                    start_ns=arrived_ns,
                    events=[("published", time.time_ns())],
                )
        done = time.perf_counter()
        metrics.fanout_seconds.observe(done - arrived)
        metrics.apply_seconds.observe(applied - arrived)
        metrics.blocks.inc()
        metrics.txs.inc(len(committed.block.txs))
        metrics.height.set(height)
        node_height = self.source.status.node_height
        if node_height is None or node_height <= height:
            self.caught_up.set()
        if self.heap is not None:
            self.heap.after_block()
        await asyncio.sleep(0)  # let HTTP/WS requests in between blocks while catching up

    async def _halt(self, exc: IndexerFatal) -> None:
        self.halted = exc
        message = f"INDEXER HALTED at height {exc.height}: {exc.code}: {exc}"
        log.critical(message, extra={"height": exc.height})
        print(message, file=sys.stderr, flush=True)
        await self.hub.stop(CLOSE_INTERNAL, f"indexer halted: {exc.code} at height {exc.height}")

    def save_snapshot(self) -> None:
        """Write our snapshot now (clean shutdown), unless halted or not yet vouched for."""
        state = self._state
        if state is None or not self.ready or self.halted is not None or state.height == 0:
            return
        if self.snapshot_height == state.height:
            return
        meta = orjson.dumps(state.to_meta())
        self.history.record([], (state.height, encode_snapshot(state.stf), meta))
        self.snapshot_height = state.height

    # -- status -------------------------------------------------------------------------------
    def lag(self) -> tuple[int | None, float]:
        status = self.source.status
        height = self._state.height if self._state is not None else 0
        lag = max(status.node_height - height, 0) if status.node_height is not None else None
        return lag, max(time.monotonic() - status.last_block_monotonic, 0.0)

    def refresh_gauges(self) -> None:
        status = self.source.status
        lag, since = self.lag()
        m = self.metrics
        if status.node_height is not None:
            m.node_height.set(status.node_height)
        if lag is not None:
            m.lag_blocks.set(lag)
        m.seconds_since_block.set(since)
        m.node_up.set(1 if status.connected else 0)
        m.reconnects.set(status.reconnects)

    def status(self) -> dict[str, Any]:
        self.refresh_gauges()
        state = self.state
        src = self.source.status
        lag, since = self.lag()
        last = state.last_block if state is not None else None
        return {
            "chain_id": self.config.chain_id,
            "ready": state is not None,
            "height": state.height if state is not None else None,
            "time_ms": state.stf.time_ms if state is not None else None,
            "app_hash": state.stf.app_hash.hex() if state is not None else None,
            "block_id": last["block_id"] if last is not None else None,
            "halted": str(self.halted) if self.halted is not None else None,
            "node": {
                "address": getattr(self.source, "address", "in-process"),
                "connected": src.connected,
                "height": src.node_height,
                "lag_blocks": lag,
                "seconds_since_block": round(since, 3),
                "last_error": src.last_error,
                "reconnects": src.reconnects,
            },
            "ws": {"connections": len(self.hub.clients), "subscriptions": self.hub.subscriptions},
            "snapshot_height": self.snapshot_height,
        }

    def healthy(self) -> tuple[bool, str]:
        if self.halted is not None:
            return False, f"halted: {self.halted}"
        if self.state is None:
            return False, "not ready: no verified state yet"
        lag, since = self.lag()
        if not self.source.status.connected and since > self.settings.unhealthy_after_s:
            return False, f"node unreachable for {since:.0f} s ({self.source.status.last_error})"
        return True, f"lag {lag} blocks" if lag is not None else "ok"

    async def submit_tx(self, tx: bytes, trace: Mapping[str, str] | None = None) -> SubmitVerdict:
        """Forward ``tx`` to the node. With tracing, a ``tx.forward`` span continues the caller's
        W3C ``trace`` (if any) and passes its own on to the node, and an accepted tx is traced
        on to its ``tx.indexed`` span (node/txtrace.py)."""
        traces = self.tx_traces
        if self.tracing is None or traces is None:
            return await self.source.submit_tx(tx)
        with self.tracing.continued_span(SPAN_TX_FORWARD, trace or {}) as span:
            verdict = await self.source.submit_tx(tx, self.tracing.inject(span))
            span.set_attribute("tx_hash", verdict.hash.hex())
            span.set_attribute("status", verdict.status)
        if verdict.accepted:
            traces.remember(verdict.hash, span.get_span_context())
        return verdict


class IndexerService:
    """An Indexer with its HTTP server: start on HOST:PORT (port 0 = ephemeral), stop cleanly."""

    def __init__(self, indexer: Indexer) -> None:
        self.indexer = indexer
        self.runner: web.AppRunner | None = None
        self.task: asyncio.Task[None] | None = None
        self.gauges: asyncio.Task[None] | None = None
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        indexer = self.indexer
        await indexer.source.start()
        self.runner = web.AppRunner(make_app(indexer), handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        self.host, self.port = host, int(self.runner.addresses[0][1])
        indexer.hub.start()
        self.task = asyncio.create_task(indexer.run(), name="indexer")
        self.gauges = asyncio.create_task(self._gauges(), name="indexer-gauges")

    async def _gauges(self) -> None:
        while True:
            self.indexer.refresh_gauges()
            await asyncio.sleep(1.0)

    async def wait(self) -> None:
        """Until the indexer stops (raises its IndexerFatal) or is cancelled."""
        assert self.task is not None
        await self.task

    async def stop(self, save_snapshot: bool = True) -> None:
        """Stop serving and indexing; ``save_snapshot=False`` leaves the store as a crash would."""
        for task in (self.task, self.gauges):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, IndexerFatal):
                    await task
        if save_snapshot:
            self.indexer.save_snapshot()
        await self.indexer.hub.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.indexer.source.close()
        self.indexer.history.close()


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def run_indexer(
    node_addr: str,
    home: Path,
    listen: str,
    settings: IndexerSettings | None = None,
    otlp_endpoint: str | None = None,
) -> None:
    """``ita indexer``: index the node at ``node_addr`` with state in ``home``, serve on ``listen``.

    ``home`` must contain the chain's ``genesis.json``; history and snapshots go to
    ``home/data/indexer.db``. Runs until cancelled (SIGINT/SIGTERM in ``main``) or until an
    ``IndexerFatal``, which it raises after closing everything.
    """
    home = Path(home)
    config = load_genesis(home / GENESIS_FILE)
    host, port = split_listen(listen)
    history = History(home / DATA_DIR, config)
    source = GrpcBlockSource(node_addr)
    metrics = IndexerMetrics()
    heap = HeapPolicy(HeapSettings(), HeapMetrics(metrics.registry))
    heap.install()
    tracing = setup_tracing(otlp_endpoint, service_name="ita-indexer", moniker=f"indexer@{listen}")
    service = IndexerService(Indexer(config, source, history, settings, metrics, heap, tracing))
    await service.start(host, port)
    log.info(
        "indexer for %s following %s, serving on %s (STF build: %s)",
        config.chain_id,
        node_addr,
        service.url,
        stf.BUILD,
        extra={"stf_build": stf.BUILD, "stf_build_note": stf.BUILD_NOTE},
    )
    print(json.dumps({"indexer": service.url, "node": node_addr, "chain_id": config.chain_id}), flush=True)
    try:
        await service.wait()
    finally:
        await service.stop()
        heap.uninstall()
        tracing.shutdown()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ita indexer", description="Index an ita node and serve HTTP + WebSocket."
    )
    parser.add_argument("--node", required=True, help="node gRPC address HOST:PORT")
    parser.add_argument("--home", required=True, type=Path, help="indexer home (holds genesis.json, data/)")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HTTP/WS address HOST:PORT")
    parser.add_argument("--snapshot-interval", type=int, default=1_000, help="blocks between own snapshots")
    parser.add_argument("--max-connections", type=int, default=WsLimits().max_connections)
    parser.add_argument("--max-subscriptions", type=int, default=WsLimits().max_subscriptions)
    parser.add_argument(
        "--no-node-snapshot", action="store_true", help="replay from genesis, not the node's snapshot"
    )
    parser.add_argument("--verify-tx-signatures", action="store_true", help="re-verify every tx signature")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--otlp-endpoint", default=None, help="export OpenTelemetry spans by OTLP/HTTP, e.g. http://127.0.0.1:4318"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ita indexer ...`` (argv without the program/subcommand name).
    Exit status: 0 stopped by a signal, 1 bad configuration, 2 halted by an IndexerFatal."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    settings = IndexerSettings(
        snapshot_interval=args.snapshot_interval,
        limits=WsLimits(max_connections=args.max_connections, max_subscriptions=args.max_subscriptions),
        verify_tx_signatures=args.verify_tx_signatures,
        use_node_snapshot=not args.no_node_snapshot,
    )

    async def runner() -> None:
        indexing = run_indexer(args.node, args.home, args.listen, settings, args.otlp_endpoint)
        task = asyncio.create_task(indexing)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(runner())
    except IndexerFatal:
        return 2
    except (GenesisError, HistoryError, OSError, ValueError) as exc:
        print(f"ita indexer: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
