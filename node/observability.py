"""Node observability: Prometheus metrics, structured JSON logs, OpenTelemetry tracing.

Theory of operation
- ``NodeMetrics`` owns one ``CollectorRegistry`` (never the process-global default, so
  several nodes or tests in one process do not collide) holding every ``ita_`` metric of
  the node. Components receive the object and touch its attributes; nothing here knows
  about consensus or the network. Names follow Prometheus conventions: base units in the
  name (``_seconds``, ``_bytes``), counters end in ``_total`` (prometheus_client appends
  it), every metric has HELP and TYPE, so ``promtool check metrics`` is clean.
- ``MetricsServer`` serves ``GET /metrics`` (text exposition format) with aiohttp on the
  node's own event loop; ``listen`` may use port 0 (the bound port is in ``.port``).
- ``JsonFormatter`` renders one JSON object per log line: ``ts`` (UTC, ISO 8601, ms),
  ``level``, ``logger``, ``msg``, then every ``extra=`` field (``height``, ``round``,
  ``tx_hash``, ``peer`` ...; bytes as hex) and ``exc`` for exceptions.
  ``setup_logging`` installs it on the root logger.
- ``Tracing`` wraps an OpenTelemetry ``TracerProvider`` private to the node (the global
  provider is left alone unless asked). With an OTLP endpoint and the optional package
  ``opentelemetry-exporter-otlp-proto-http`` importable, spans are batch-exported; with
  ``in_memory=True`` they are kept for tests; otherwise nothing would receive them and
  ``recording`` is False, so the node and the indexer hand None to ``optional_span`` (the
  helper callers use) and no span is made at all. Span names are the ``SPAN_*`` constants
  below. A tx's life: tx.submit (the client call) -> tx.mempool (its
  admission: signature check in the workers, then the mempool), and on the consensus side one
  "height" root span per height (opened with ``open_span`` when the previous height commits,
  ended by its own commit: the block interval) holding block.propose (when this node
  proposes) and block.commit, which holds block.apply (the STF). ``continued_span`` continues a
  caller's W3C ``traceparent`` (gRPC metadata, HTTP header) and ``inject`` hands one on, so a
  tx's spans in the indexer and the node are one trace; node/txtrace.py carries it from the
  admission to the commit (tx.commit) and to the indexer's publish (tx.indexed).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from node.heap import HeapMetrics
from node.procstat import cpu_seconds

__all__ = [
    "SPAN_BLOCK_APPLY",
    "SPAN_BLOCK_COMMIT",
    "SPAN_BLOCK_PROPOSE",
    "SPAN_HEIGHT",
    "SPAN_TX_COMMIT",
    "SPAN_TX_MEMPOOL",
    "SPAN_TX_SUBMIT",
    "JsonFormatter",
    "MetricsServer",
    "NodeMetrics",
    "Tracing",
    "setup_logging",
    "setup_tracing",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- metrics

# Seconds. Loopback devnet blocks are ~0.3-2 s apart; verification and apply are ms.
_INTERVAL_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_TXS_BUCKETS = (0, 1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)


class NodeMetrics:
    """Every Prometheus metric of a node, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No ``*_created`` series next to counters and histograms (process-wide setting of
        # prometheus_client; nothing in the node uses them and they double the exposition).
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge("ita_node_info", "Constant 1, labelled with the node identity and the STF build "
                          "it runs (stf_build: pure or compiled, see stf/__init__.py).",
                          ["chain_id", "moniker", "stf_build"], registry=r)
        # consensus
        self.height = Gauge("ita_consensus_height", "Latest committed height.", registry=r)
        self.round = Gauge("ita_consensus_round", "Current consensus round at the current height.",
                           registry=r)
        self.rounds = Counter("ita_consensus_rounds", "Consensus rounds started.", registry=r)
        self.block_interval = Histogram("ita_block_interval_seconds",
                                        "Wall-clock time between consecutive commits.",
                                        buckets=_INTERVAL_BUCKETS, registry=r)
        self.commit_latency = Histogram("ita_commit_latency_seconds",
                                        "From entering a height to committing its block.",
                                        buckets=_INTERVAL_BUCKETS, registry=r)
        self.block_txs = Histogram("ita_block_txs", "Transactions per committed block.",
                                   buckets=_TXS_BUCKETS, registry=r)
        self.evidence = Counter("ita_evidence", "Misbehaviour evidence found (double signs).",
                                ["kind"], registry=r)
        self.syncing = Gauge("ita_syncing", "1 while catching up by block sync, else 0.", registry=r)
        # mempool and execution
        self.mempool_txs = Gauge("ita_mempool_txs", "Transactions in the mempool.", registry=r)
        self.mempool_bytes = Gauge("ita_mempool_bytes", "Bytes of transactions in the mempool.", registry=r)
        self.verify_backlog = Gauge("ita_verify_backlog_txs",
                                    "Txs waiting for the signature workers (queued) or being checked "
                                    "by them (in_flight): admission lag that the mempool size hides.",
                                    ["state"], registry=r)
        self.tx_verify_latency = Histogram("ita_tx_verify_latency_seconds",
                                           "Signature verification of one batch of admitted txs, "
                                           "from queueing it for the workers to their verdict.",
                                           buckets=_LATENCY_BUCKETS, registry=r)
        self.txs_verified = Counter("ita_txs_verified", "Txs whose signatures the workers checked "
                                    "(admissions, gossip and proposals; each tx once per node).",
                                    registry=r)
        self.verify_requests = Counter("ita_verify_requests", "Requests sent to the signature workers, "
                                       "each one admission batch or several merged (ita_txs_verified "
                                       "over this: txs per request).", registry=r)
        self.block_apply_latency = Histogram("ita_block_apply_latency_seconds",
                                             "Applying one block through the STF.",
                                             buckets=_LATENCY_BUCKETS, registry=r)
        self.block_stage_latency = Histogram("ita_block_stage_seconds",
                                             "One stage of committing a block: verify_wait (for the "
                                             "workers to finish its txs' signatures), execute (STF, "
                                             "signatures not verified before), store (block, results, "
                                             "snapshot), mempool (evict and recheck).",
                                             ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.txs_verified_inline = Counter("ita_block_txs_verified_inline",
                                           "Committed txs whose signatures the block execution checked "
                                           "itself (not verified by the mempool beforehand).", registry=r)
        self.tx_admissions = Counter("ita_tx_admissions", "Client-submitted txs by admission status.",
                                     ["status"], registry=r)
        # peers
        self.peers_connected = Gauge("ita_peers_connected", "Peers with an authenticated gossip stream.",
                                     registry=r)
        self.peer_messages_received = Counter("ita_peer_messages_received",
                                              "Gossip messages received, by kind.", ["kind"], registry=r)
        self.peer_messages_sent = Counter("ita_peer_messages_sent", "Gossip messages sent, by kind.",
                                          ["kind"], registry=r)
        self.peer_messages_dropped = Counter("ita_peer_messages_dropped",
                                             "Gossip messages dropped, by reason.", ["reason"], registry=r)
        self.peer_handshake_failures = Counter("ita_peer_handshake_failures",
                                               "Gossip handshakes refused, by reason.", ["reason"],
                                               registry=r)
        self.peer_disconnects = Counter("ita_peer_disconnects", "Gossip streams ended, by reason.",
                                        ["reason"], registry=r)
        # client API
        self.stream_blocks_subscribers = Gauge("ita_stream_blocks_subscribers",
                                               "Open Node.StreamBlocks calls.", registry=r)
        # process: ita_process_cpu_seconds_total, _resident_memory_bytes, _open_fds, ... (Linux)
        ProcessCollector(namespace="ita", registry=r)
        self.heap = HeapMetrics(r)

    def watch_verify_workers(self, pids: Callable[[], list[int]]) -> None:
        """Export ``ita_verify_worker_cpu_seconds_total`` per signature worker, read from /proc
        at each scrape; ``pids`` gives the current workers' pids (a replaced worker's counter
        starts again from zero, which Prometheus reads as a counter reset)."""
        self.registry.register(VerifyWorkerCpu(pids))

    def set_info(self, chain_id: str, moniker: str, stf_build: str) -> None:
        self.info.labels(chain_id=chain_id, moniker=moniker, stf_build=stf_build).set(1)

    def exposition(self) -> bytes:
        """The text exposition format of every metric (what GET /metrics returns)."""
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` over HTTP on the running event loop (aiohttp)."""

    def __init__(self, metrics: NodeMetrics, listen: str) -> None:
        self.metrics = metrics
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        if runner.addresses:  # the bound (host, port, ...) of each socket: learn an ephemeral port
            self.port = int(runner.addresses[0][1])
        log.info("metrics listening", extra={"address": f"{self.host}:{self.port}"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# ---------------------------------------------------------------------------- logging

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        doc: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in doc:
                doc[key] = _jsonable(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def setup_logging(level: str = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger to one JSON handler (stderr by default) at ``level``; returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # grpc and aiohttp are chatty at debug; keep them at warning unless asked for debug
    for name in ("grpc", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    return handler


# ---------------------------------------------------------------------------- tracing

SPAN_TX_SUBMIT = "tx.submit"
SPAN_TX_MEMPOOL = "tx.mempool"
SPAN_BLOCK_PROPOSE = "block.propose"
SPAN_BLOCK_APPLY = "block.apply"
SPAN_BLOCK_COMMIT = "block.commit"
SPAN_TX_COMMIT = "tx.commit"
SPAN_HEIGHT = "height"

_OTLP_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
_W3C = TraceContextTextMapPropagator()  # the ``traceparent`` header between processes


class Tracing:
    """A TracerProvider for the node and the ``span`` helper."""

    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter | None = None,
                 exporting: bool = False) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("ita.node")
        self.memory = exporter  # set with in_memory=True: finished spans for tests
        self.exporting = exporting  # True when spans leave the process (OTLP)

    @property
    def recording(self) -> bool:
        """Whether spans go somewhere (exported, or kept in memory for tests). When not, callers
        hand None to ``optional_span`` instead: a span costs ~18 us even when it is dropped."""
        return self.exporting or self.memory is not None

    @contextmanager
    def span(self, name: str, parent: Span | None = None, **attributes: Any) -> Iterator[Span]:
        """Start a span, child of ``parent`` if given, else of the current one; bytes attributes
        become hex, None is skipped."""
        context = trace.set_span_in_context(parent) if parent is not None else None
        attrs = _attributes(attributes)
        with self.tracer.start_as_current_span(name, context=context, attributes=attrs) as span:
            yield span

    @contextmanager
    def continued_span(self, name: str, carrier: Mapping[str, str], **attributes: Any) -> Iterator[Span]:
        """Start a span that continues the W3C trace context in ``carrier`` (a ``traceparent``
        from gRPC metadata or HTTP headers), or a new trace when it has none or a malformed one."""
        context = _W3C.extract(carrier)
        attrs = _attributes(attributes)
        with self.tracer.start_as_current_span(name, context=context, attributes=attrs) as span:
            yield span

    @staticmethod
    def inject(span: Span) -> dict[str, str]:
        """``span``'s W3C trace context as headers/metadata (``traceparent``) for the next hop."""
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    def open_span(self, name: str, **attributes: Any) -> Span:
        """Start a root span that outlives any one call (a height); the caller ends it."""
        return self.tracer.start_span(name, context=trace.set_span_in_context(INVALID_SPAN),
                                      attributes=_attributes(attributes))

    def shutdown(self) -> None:
        self.provider.shutdown()


@contextmanager
def optional_span(
    tracing: Tracing | None, name: str, parent: Span | None = None, **attributes: Any
) -> Iterator[Span | None]:
    """``tracing.span(...)``, or nothing (None) when there is no tracing."""
    if tracing is None:
        yield None
        return
    with tracing.span(name, parent, **attributes) as span:
        yield span


class VerifyWorkerCpu(Collector):
    """The signature workers' CPU seconds (user + system), labelled by worker index."""

    NAME = "ita_verify_worker_cpu_seconds"
    HELP = ("CPU seconds (user + system) used by each signature-verification worker process "
            "(Linux /proc; absent elsewhere).")

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.NAME, self.HELP, labels=["worker"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=["worker"])
        for index, pid in enumerate(self.pids()):
            seconds = cpu_seconds(pid)
            if seconds is not None:
                family.add_metric([str(index)], seconds)
        yield family


def _attributes(attributes: dict[str, Any]) -> dict[str, str | bool | int | float]:
    return {k: _span_value(v) for k, v in attributes.items() if v is not None}


def _span_value(value: Any) -> str | bool | int | float:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def setup_tracing(
    otlp_endpoint: str | None,
    service_name: str = "ita-node",
    moniker: str = "",
    *,
    in_memory: bool = False,
    set_global: bool = False,
) -> Tracing:
    """A Tracing for the node: OTLP/HTTP export when an endpoint is configured and the exporter
    package is installed (a warning otherwise), in-memory when asked (tests), else spans are dropped."""
    resource = Resource.create({"service.name": service_name, "service.instance.id": moniker or service_name})
    provider = TracerProvider(resource=resource)
    memory: InMemorySpanExporter | None = None
    exporting = False
    if otlp_endpoint:
        try:
            import importlib

            module = importlib.import_module(_OTLP_MODULE)
        except ImportError:
            log.warning(
                "otlp_endpoint is set but opentelemetry-exporter-otlp-proto-http is not installed; "
                "traces are not exported",
                extra={"otlp_endpoint": otlp_endpoint},
            )
        else:
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
            provider.add_span_processor(BatchSpanProcessor(module.OTLPSpanExporter(endpoint=endpoint)))
            exporting = True
            log.info("exporting traces by OTLP/HTTP", extra={"otlp_endpoint": endpoint})
    if in_memory:
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
    if set_global:
        trace.set_tracer_provider(provider)
    return Tracing(provider, memory, exporting)
