"""One trace per tx across its life: the trace contexts of txs this process saw come in.

Theory of operation
- A client may send a W3C ``traceparent`` with its submission (gRPC metadata to a node; the
  indexer's ``POST /v1/txs`` takes it as an HTTP header and passes its own on to the node).
  The receiving span continues that trace (``Tracing.continued_span``), so the spans of one
  tx in different processes form one trace.
- The receiver then ``remember``s, per tx hash, the span context its later spans hang from
  and when it came in. When the tx reaches its next stage -- the node commits the block
  holding it (``tx.commit``), the indexer has indexed and published that block
  (``tx.indexed``) -- ``finish`` emits one span per remembered tx of that block: a child of
  the remembered context (same trace), from ``start_ns`` (default: when it was remembered)
  to now, with a link to the block's own span and the tx's place in the block as attributes,
  and forgets it. A span may end after its parent: OpenTelemetry allows it, and that is
  what a tx waiting in a mempool is.
- Bounded: at most ``capacity`` txs are remembered; the oldest is forgotten first (a tx that
  never commits -- rejected later, evicted, lost -- must not pin memory).
- Only used when tracing records (``Tracing.recording``): without it the node and the indexer
  hold no ``TxTraces`` and nothing here runs. The work is O(remembered txs in the block).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext

from node.observability import Tracing, _attributes

__all__ = ["TxTraces"]

DEFAULT_CAPACITY = 100_000


class TxTraces:
    """Span contexts of txs by hash, waiting for their next stage (see the module doc)."""

    def __init__(self, tracing: Tracing, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.tracing = tracing
        self.capacity = capacity
        self._waiting: OrderedDict[bytes, tuple[SpanContext, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, digest: object) -> bool:
        return digest in self._waiting

    def remember(self, digest: bytes, context: SpanContext) -> None:
        """``digest``'s later spans hang from ``context``; it came in now."""
        if not context.is_valid:
            return
        self._waiting[digest] = (context, time.time_ns())
        self._waiting.move_to_end(digest)
        while len(self._waiting) > self.capacity:
            self._waiting.popitem(last=False)

    def finish(
        self,
        name: str,
        digests: Sequence[bytes],
        link: Span | None,
        attributes: Callable[[int], dict[str, Any]],
        start_ns: int | None = None,
        events: Sequence[tuple[str, int]] = (),
    ) -> int:
        """One ``name`` span per remembered tx among ``digests`` (``attributes(index)`` for the
        tx at ``index``), linked to ``link``, with ``events`` (name, time in ns); forgets them.
        The number of spans made."""
        waiting = self._waiting
        if not waiting:
            return 0
        links = [Link(link.get_span_context())] if link is not None else None
        tracer = self.tracing.tracer
        made = 0
        for index, digest in enumerate(digests):
            entry = waiting.pop(digest, None)
            if entry is None:
                continue
            context, remembered_ns = entry
            parent = trace.set_span_in_context(trace.NonRecordingSpan(context))
            span = tracer.start_span(
                name,
                context=parent,
                links=links,
                attributes=_attributes(attributes(index)),
                start_time=remembered_ns if start_ns is None else start_ns,
            )
            for event, at_ns in events:
                span.add_event(event, timestamp=at_ns)
            span.end()
            made += 1
        return made
