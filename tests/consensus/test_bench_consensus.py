"""Smoke test: bench/consensus.py runs and prints one well-formed JSON object per result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_prints_json_lines() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "consensus.py"), "--quick"],
        capture_output=True, text=True, timeout=120, check=True, cwd=ROOT,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    heights = [r for r in rows if r["bench"] == "consensus_heights"]
    votes = [r for r in rows if r["bench"] == "consensus_vote_cpu"]
    assert {(r["validators"], r["latency_ms"], r["crypto"]) for r in heights} == {
        (n, lat, c) for n in (4, 10) for lat in (0, 1) for c in ("fake", "ed25519")
    }
    assert all(r["heights_per_s"] > 0 and r["heights"] == 5 for r in heights)
    expected_votes = {(n, c) for n in (4, 10) for c in ("fake", "ed25519")}
    assert {(r["validators"], r["crypto"]) for r in votes} == expected_votes
    assert all(r["us_per_vote"] > 0 for r in votes)
