"""Garbage-collector policy for the long-running processes that hold the exchange state.

Theory of operation
- The exchange state (accounts, resting orders, books, kept nonces) is large, long-lived
  and acyclic: applying blocks leaves no cyclic garbage (tests/node/test_heap.py checks
  it). CPython's generational collector still re-scans all of it on every full
  collection, so full-collection pauses grow with the book (~40 ms at 18,000 resting
  orders here, far more at 1M), and the large containers a block creates (its
  dirty-entry map, its events and results) are traversed again on every young collection
  (~700 allocations apart by default) while they live.
- ``HeapPolicy.after_block()``, called by the owner after each committed (node) or
  replayed (indexer) block, collects what was allocated since the previous freeze
  (``gc.collect()`` scans only the unfrozen generations: a few ms for a 2,000-tx block)
  and then ``gc.freeze()``s what survived, so later collections never scan it again.
  It does so at most every ``freeze_every_ms`` milliseconds (tiny blocks in a fast replay would
  otherwise pay for a collection each).
- Cost: cyclic garbage that involves an object frozen earlier is kept until the next full
  collection. Every ``full_collect_every_s`` seconds (0: never) the policy unfreezes
  everything and runs one full collection (one long pause), reporting what it reclaimed
  in ``ita_gc_reclaimed_objects`` so operators can see whether the trade-off holds.
- ``young_threshold`` raises the young-generation threshold (CPython: 700 allocations).
- Every collection's pause is observed per generation (``ita_gc_pause_seconds``);
  ``ita_gc_frozen_objects`` is the size of the permanent generation.
- GC settings are process-wide: install one policy per process (``ita start``,
  ``ita indexer``), never from a component that tests create many times in one process.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger("ita.heap")

_PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class HeapSettings:
    """The ``[gc]`` table of the node config (the indexer uses the defaults)."""

    freeze_after_block: bool = True
    freeze_every_ms: int = 100  # at most one collect + freeze per this many ms
    young_threshold: int = 10_000  # allocations between young collections (CPython: 700)
    full_collect_every_s: int = 3_600  # unfreeze + one full collection this often; 0: never


class HeapMetrics:
    """The GC metrics of one process, in the caller's registry (node or indexer)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pause = Histogram(
            "ita_gc_pause_seconds",
            "Garbage-collection pauses, by generation.",
            ["generation"],
            buckets=_PAUSE_BUCKETS,
            registry=registry,
        )
        self.frozen = Gauge(
            "ita_gc_frozen_objects",
            "Objects in the permanent generation (frozen after blocks).",
            registry=registry,
        )
        self.frozen.set_function(gc.get_freeze_count)
        self.reclaimed = Counter(
            "ita_gc_reclaimed_objects",
            "Objects reclaimed by the periodic full collection (garbage that freezing had kept).",
            registry=registry,
        )


class HeapPolicy:
    """One per process: GC thresholds, pause observation and freezing after blocks."""

    def __init__(
        self,
        settings: HeapSettings,
        metrics: HeapMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._saved_threshold: tuple[int, int, int] | None = None
        self._started = 0.0
        now = clock()
        self._last_freeze = now - settings.freeze_every_ms / 1000  # the first block freezes
        self._last_full = now

    # -- installation ----------------------------------------------------------------------
    def install(self) -> None:
        if self._saved_threshold is not None:
            return
        self._saved_threshold = gc.get_threshold()
        young, middle, old = self._saved_threshold
        gc.set_threshold(max(young, self.settings.young_threshold), middle, old)
        gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        """Restore the thresholds, stop observing, and give frozen objects back to the GC."""
        if self._saved_threshold is None:
            return
        gc.set_threshold(*self._saved_threshold)
        self._saved_threshold = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.metrics is not None:
            pause = time.perf_counter() - self._started
            self.metrics.pause.labels(generation=str(info["generation"])).observe(pause)

    # -- per block -------------------------------------------------------------------------
    def after_block(self) -> None:
        """Collect what the block left behind and freeze what survives (see module doc)."""
        settings = self.settings
        if not settings.freeze_after_block:
            return
        now = self.clock()
        if settings.full_collect_every_s > 0 and now - self._last_full >= settings.full_collect_every_s:
            self._last_full = self._last_freeze = now
            self._full_collect()
            gc.freeze()
            return
        if now - self._last_freeze < settings.freeze_every_ms / 1000:
            return
        self._last_freeze = now
        gc.collect()  # the unfrozen generations only: what was allocated since the last freeze
        gc.freeze()

    def _full_collect(self) -> None:
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        started = time.perf_counter()
        reclaimed = gc.collect()
        pause = time.perf_counter() - started
        log.info(
            "full garbage collection",
            extra={"frozen_before": frozen, "reclaimed": reclaimed, "pause_s": round(pause, 4)},
        )
        if self.metrics is not None:
            self.metrics.reclaimed.inc(reclaimed)
