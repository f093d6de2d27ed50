from __future__ import annotations

import pytest
from opentelemetry.trace import INVALID_SPAN_CONTEXT

from node.observability import setup_tracing
from node.txtrace import TxTraces


def test_finish_makes_one_child_span_per_remembered_tx_and_forgets_it() -> None:
    tracing = setup_tracing(None, in_memory=True)
    traces = TxTraces(tracing, capacity=2)
    with tracing.span("tx.mempool") as a, tracing.span("tx.mempool") as b:
        pass
    traces.remember(b"a", a.get_span_context())
    traces.remember(b"b", b.get_span_context())
    traces.remember(b"x", INVALID_SPAN_CONTEXT)  # not recorded: nothing to continue
    assert len(traces) == 2 and b"x" not in traces
    with tracing.span("block.commit") as block:
        made = traces.finish("tx.commit", [b"z", b"b", b"a"], block, lambda i: {"index": i, "none": None},
                             events=[("proposed", 1_000_000)])
    assert made == 2 and len(traces) == 0
    assert traces.finish("tx.commit", [b"a"], None, lambda i: {}) == 0  # forgotten: no second span
    assert tracing.memory is not None
    done = [s for s in tracing.memory.get_finished_spans() if s.name == "tx.commit"]
    by_parent = {s.parent.span_id: s for s in done if s.parent is not None}
    for source, index in ((a, 2), (b, 1)):
        span = by_parent[source.get_span_context().span_id]
        assert span.context.trace_id == source.get_span_context().trace_id
        assert span.attributes == {"index": index}
        assert [link.context.span_id for link in span.links] == [block.get_span_context().span_id]
        assert [(e.name, e.timestamp) for e in span.events] == [("proposed", 1_000_000)]
    tracing.shutdown()


def test_capacity_forgets_the_oldest_and_start_can_be_given() -> None:
    tracing = setup_tracing(None, in_memory=True)
    traces = TxTraces(tracing, capacity=2)
    with tracing.span("tx.forward") as s:
        pass
    for digest in (b"1", b"2", b"3"):
        traces.remember(digest, s.get_span_context())
    assert b"1" not in traces and b"2" in traces and b"3" in traces
    assert traces.finish("tx.indexed", [b"1", b"2", b"3"], None, lambda i: {}, start_ns=5) == 2
    assert tracing.memory is not None
    assert {x.start_time for x in tracing.memory.get_finished_spans() if x.name == "tx.indexed"} == {5}
    with pytest.raises(ValueError):
        TxTraces(tracing, capacity=0)
    tracing.shutdown()
