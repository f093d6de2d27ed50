"""Smoke test of bench/stf.py: the quick run works and both engines agree.

Performance is never asserted here; only that the benchmark runs, prints one
JSON object per result with the documented fields, and that ita and the peer
engine saw the same fills.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "stf.py"

pytest.importorskip("orderly_chaos")


@pytest.mark.timeout(60)
def test_bench_stf_quick() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--runs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=55,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {"stf_apply", "stf_memory"}

    apply = by_name["stf_apply"]
    for field in ("ops", "ops_per_s", "peer", "peer_ops_per_s", "ratio", "fills", "peer_fills", "runs"):
        assert field in apply, field
    assert apply["peer"] == "orderly-chaos 0.2.0"
    assert apply["ops"] == 20_000
    assert apply["fills"] == apply["peer_fills"] > 0
    assert apply["ops_per_s"] > 0 and apply["peer_ops_per_s"] > 0
    assert sum(apply["mix"].values()) == apply["ops"]
    assert apply["mix"]["cancel"] > 0 and apply["mix"]["market"] > 0

    memory = by_name["stf_memory"]
    for field in ("resting_orders", "rss_bytes", "rss_mib", "target_mib"):
        assert field in memory, field
    assert memory["resting_orders"] == 50_000
    assert memory["rss_bytes"] > 0 and memory["target_mib"] == 1024
