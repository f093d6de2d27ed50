"""Smoke test of bench/pipeline.py: a small run works and reports every stage.

Performance is never asserted here; only that the benchmark runs end to end (every signed tx is
admitted, proposed, committed and evicted, or it exits non-zero) and prints its documented fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_bench_pipeline_small_run() -> None:
    args = "--block-txs 40 --blocks 3 --accounts 20 --runs 1".split()
    command = [sys.executable, str(ROOT / "bench" / "pipeline.py"), *args]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr
    [record] = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert record["bench"] == "validator_pipeline"
    assert (record["block_txs"], record["blocks"], record["accounts"]) == (40, 3, 20)
    assert set(record["per_tx_us"]) == {"admit", "propose", "process", "finalize", "commit", "update", "gc"}
    assert record["total_us_per_tx"] == pytest.approx(sum(record["per_tx_us"].values()), abs=0.1)
    assert record["verify_us_per_tx"] > 0
    assert record["ratio_to_verify"] == pytest.approx(
        record["total_us_per_tx"] / record["verify_us_per_tx"], rel=0.01
    )
