"""DESIGN.md (Observability): ``promtool check metrics`` passes on the node's and the
indexer's /metrics exposition. promtool comes from Debian's ``prometheus`` package, which
.ci/run installs; elsewhere the test skips when it is missing, unless ITA_REQUIRE_PROMTOOL=1
(set by .ci/run) makes that a failure."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from node.heap import HeapMetrics
from rpc.metrics import IndexerMetrics
from tests.node.test_observability import exercised_metrics


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("ITA_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required here (ITA_REQUIRE_PROMTOOL=1) but not on PATH")
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    return path


def check(exposition: bytes) -> None:
    proc = subprocess.run(
        [promtool(), "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False
    )
    findings = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0 and not findings.strip(), findings


def test_promtool_accepts_the_node_metrics() -> None:
    check(exercised_metrics().exposition())


def test_promtool_accepts_the_indexer_metrics() -> None:
    metrics = IndexerMetrics()
    HeapMetrics(metrics.registry)  # ita indexer serves its GC metrics in the same registry
    metrics.blocks.inc()
    metrics.fanout_seconds.observe(0.004)
    check(metrics.render())  # what GET /metrics serves


def test_promtool_finds_a_badly_named_metric() -> None:
    check_bad = b"# HELP fooBar a thing\n# TYPE fooBar counter\nfooBar 1\n"
    with pytest.raises(AssertionError, match="snake_case"):
        check(check_bad)
