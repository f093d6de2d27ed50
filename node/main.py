"""`ita start`: wire one validator (or full node) process together and run it.

Start-up order: logging and tracing, config + genesis + keys from the home, the engine
(recovers state from the store and the WAL), the peer network, the gRPC server (Node + Peer
services, health, reflection), metrics, the oracle duty; then wait for SIGINT/SIGTERM and
stop in reverse order. A stop closes the WAL and the store cleanly; a crash (kill -9) is
recovered on the next start from the WAL and the store (node/engine.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import nacl.signing

import stf
from genesis.schema import load_genesis
from node.config import NodeConfig, NodeHome, check_against_chain, load_config
from node.engine import Engine, wall_clock_ms
from node.heap import HeapPolicy
from node.observability import MetricsServer, NodeMetrics, Tracing, setup_logging, setup_tracing
from node.oracle import RandomWalkSource, run_oracle_duty
from node.peers import PeerNetwork
from node.service import start_grpc_server
from sdk.keys import Key
from stf.config import ChainConfig

log = logging.getLogger("ita.node")

GAUGE_EVERY_S = 0.5


class NaclHelloSigner:
    """Signs peer handshakes with the validator key."""

    def __init__(self, key: Key) -> None:
        self._key = nacl.signing.SigningKey(key.seed)
        self.public_key = key.public_key

    def sign(self, message: bytes) -> bytes:
        return bytes(self._key.sign(message).signature)


def connect_heap_policy(engine: Engine, policy: HeapPolicy) -> None:
    """Collect and freeze after each committed block (node/heap.py)."""

    def observe(event: str, fields: dict[str, object]) -> None:
        if event == "commit":
            policy.after_block()

    engine.observers.append(observe)


def connect_metrics(engine: Engine, metrics: NodeMetrics) -> None:
    """Feed the engine's notes into Prometheus."""
    state = {"last_commit": 0.0, "height_started": time.monotonic()}

    def observe(event: str, fields: dict[str, object]) -> None:
        now = time.monotonic()
        if event == "commit":
            metrics.height.set(float(fields["height"]))  # type: ignore[arg-type]
            metrics.block_txs.observe(float(fields["txs"]))  # type: ignore[arg-type]
            metrics.block_apply_latency.observe(float(fields["apply_s"]))  # type: ignore[arg-type]
            for stage in ("verify_wait", "execute", "store", "mempool"):
                seconds = float(fields[f"{stage}_s"])  # type: ignore[arg-type]
                metrics.block_stage_latency.labels(stage=stage).observe(seconds)
            metrics.txs_verified_inline.inc(float(fields["verified_inline"]))  # type: ignore[arg-type]
            if state["last_commit"]:
                metrics.block_interval.observe(now - state["last_commit"])
            metrics.commit_latency.observe(now - state["height_started"])
            state["last_commit"] = now
            state["height_started"] = now
        elif event == "verify":
            metrics.tx_verify_latency.observe(float(fields["seconds"]))  # type: ignore[arg-type]
            metrics.txs_verified.inc(float(fields["txs"]))  # type: ignore[arg-type]
        elif event == "verify_request":
            metrics.verify_requests.inc()
        elif event == "round":
            metrics.rounds.inc()
            metrics.round.set(float(fields["round"]))  # type: ignore[arg-type]
        elif event == "evidence":
            metrics.evidence.labels(kind=str(fields["kind"])).inc()

    engine.observers.append(observe)


async def refresh_gauges(engine: Engine, network: PeerNetwork, metrics: NodeMetrics) -> None:
    while True:
        stats = engine.mempool.stats()
        metrics.mempool_txs.set(stats["size"])
        metrics.mempool_bytes.set(stats["bytes"])
        queued, in_flight = engine.verifier.backlog()
        metrics.verify_backlog.labels(state="queued").set(queued)
        metrics.verify_backlog.labels(state="in_flight").set(in_flight)
        metrics.syncing.set(1 if engine.syncing else 0)
        metrics.peers_connected.set(sum(1 for info in network.peer_infos() if info.connected))
        await asyncio.sleep(GAUGE_EVERY_S)


def load_home(home: Path) -> tuple[NodeHome, NodeConfig, ChainConfig, Key | None]:
    node_home = NodeHome(home)
    config = load_config(node_home.config_file)
    chain = load_genesis(node_home.genesis_file)
    check_against_chain(config, chain)
    key = Key.load(node_home.validator_key_file) if node_home.validator_key_file.exists() else None
    node_home.ensure_dirs()
    return node_home, config, chain, key


async def serve(home: Path, stop: asyncio.Event) -> None:
    node_home, config, chain, key = load_home(home)
    tracing: Tracing = setup_tracing(config.otlp_endpoint, moniker=config.moniker, set_global=True)
    metrics = NodeMetrics()
    metrics.set_info(chain.chain_id, config.moniker, stf.BUILD)
    engine = Engine(chain, config, node_home, key)
    spans = tracing if tracing.recording else None  # no spans where they would go nowhere
    engine.tracing = spans
    connect_metrics(engine, metrics)
    metrics.watch_verify_workers(lambda: engine.verifier.worker_pids())  # the current pool's
    heap = HeapPolicy(config.gc, metrics.heap)
    heap.install()
    connect_heap_policy(engine, heap)
    validators = [v.public_key for v in chain.validators]
    if key is None:
        raise SystemExit(
            "this node has no validator key (keys/validator_key.json); full nodes are not supported yet"
        )
    network = PeerNetwork(
        chain_id=chain.chain_id,
        signer=NaclHelloSigner(key),
        peers=config.peers,
        validator_keys=validators,
        moniker=config.moniker,
        metrics=metrics,
    )
    engine.attach_network(network)
    await engine.start()
    server = await start_grpc_server(
        config.grpc_listen,
        engine,
        network.servicer,
        metrics=metrics,
        tracing=spans,
        peer_infos=network.peer_infos,
    )
    await network.start(engine)
    metrics_server = MetricsServer(metrics, config.metrics_listen) if config.metrics_listen else None
    if metrics_server is not None:
        await metrics_server.start()
    tasks = [asyncio.create_task(refresh_gauges(engine, network, metrics), name="gauges")]
    if config.oracle_interval_ms and key is not None and key.address in {v.address for v in chain.validators}:
        index = validators.index(key.public_key)
        source = RandomWalkSource(chain.chain_id, chain.markets, chain.genesis_time_ms, noise_seed=index)
        tasks.append(
            asyncio.create_task(
                run_oracle_duty(
                    key, chain.chain_id, source, config.oracle_interval_ms, engine.submit_txs, wall_clock_ms
                ),
                name="oracle",
            )
        )
    log.info(
        "node started",
        extra={
            "moniker": config.moniker,
            "grpc": config.grpc_listen,
            "height": engine.height(),
            "stf_build": stf.BUILD,
            "stf_build_note": stf.BUILD_NOTE,
        },
    )
    await stop.wait()
    log.info("node stopping", extra={"height": engine.height()})
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.stop(grace=1.0)
    await network.stop()
    if metrics_server is not None:
        await metrics_server.stop()
    await engine.stop()
    heap.uninstall()
    tracing.shutdown()


def run_node(home: Path) -> int:
    """Run until SIGINT/SIGTERM; 0 after a clean stop."""
    node_home = NodeHome(home)
    try:
        level = load_config(node_home.config_file).log_level
    except Exception:  # reported properly by serve()
        level = "info"
    setup_logging(level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(home, stop)

    asyncio.run(main())
    return 0
