"""Block-sync catch-up benchmark: how fast a validator that fell behind rejoins. Prints JSON.

A 4-validator devnet (``ita devnet up``, no indexer) takes a signed-order load from a separate
client process (devnet.loadgen, presigned, place-only) on validators 0-2 while validator 3 is
frozen with SIGSTOP; once the load ends it is resumed (SIGCONT) and must fetch the blocks it
missed by block sync (certificates checked, txs verified by its signature workers, blocks
executed and stored) until it reaches the height the others had when it was resumed.

Reported (``block_sync_catchup``): heights and txs caught up, seconds from SIGCONT to the target
height (including noticing that it is behind: status every 1 s), txs per second, the txs its
finalize verified inline, and ``ratio_to_verify_bound``: txs/s over this machine's ed25519
verifications per core measured in the same run (the workers' ceiling per core). Run it
alternately against two builds to compare them: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.node import VerifyBound, emit, progress  # noqa: E402


def metric(address: str, name: str) -> float:
    """One unlabelled sample from a node's /metrics (0.0 when absent)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_for_heights(validators: list[dict[str, Any]], height: int, timeout_s: float = 60.0) -> None:
    """Until every validator's /metrics answers and shows at least ``height``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if min(metric(p["metrics"], "ita_consensus_height") for p in validators) >= height:
                return
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise SystemExit(f"the devnet did not reach height {height} in {timeout_s} s")
        time.sleep(0.2)


def wait_for_manifest(home: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    path = home / "manifest.json"
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no devnet manifest at {path} after {timeout_s} s")
        time.sleep(0.2)
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def run_once(rate: float, stopped_s: float, home: Path) -> dict[str, Any]:
    ita = [sys.executable, "-m", "node.cli"]
    devnet = subprocess.Popen(  # noqa: S603
        [*ita, "devnet", "up", "--validators", "4", "--home", str(home), "--no-indexer", "--reset"],
        cwd=_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        manifest = wait_for_manifest(home)
        validators = [p for p in manifest["processes"] if p["kind"] == "validator"]
        wait_for_heights(validators, 2)
        lagging, others = validators[3], validators[:3]
        load = subprocess.Popen(  # noqa: S603
            [
                sys.executable, "-m", "devnet.loadgen",
                "--nodes", ",".join(p["grpc"] for p in others),
                "--genesis", manifest["genesis"],
                "--rate", str(rate),
                "--duration", str(stopped_s),
                "--presign", "--wait-go", "--place-only", "--batch-ms", "50",
            ],
            cwd=_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert load.stdin is not None and load.stdout is not None
        if not load.stdout.readline().startswith("{"):  # presigned
            raise SystemExit("the load client failed to start")
        os.kill(lagging["pid"], signal.SIGSTOP)
        load.stdin.write("go\n")
        load.stdin.flush()
        load.communicate(timeout=stopped_s + 120)
        target = max(metric(p["metrics"], "ita_consensus_height") for p in others)
        os.kill(lagging["pid"], signal.SIGCONT)
        resumed = time.monotonic()
        start_height = metric(lagging["metrics"], "ita_consensus_height")
        start_txs = metric(lagging["metrics"], "ita_block_txs_sum")
        while metric(lagging["metrics"], "ita_consensus_height") < target:
            if time.monotonic() - resumed > 600:
                raise SystemExit(f"validator-3 did not reach height {target} in 600 s")
            time.sleep(0.05)
        seconds = time.monotonic() - resumed
        txs = metric(lagging["metrics"], "ita_block_txs_sum") - start_txs
        return {
            "heights": int(target - start_height),
            "txs": int(txs),
            "seconds": round(seconds, 3),
            "txs_per_s": round(txs / seconds, 1),
            "verified_inline": int(metric(lagging["metrics"], "ita_block_txs_verified_inline_total")),
        }
    finally:
        devnet.send_signal(signal.SIGINT)
        try:
            devnet.wait(timeout=30)
        except subprocess.TimeoutExpired:
            devnet.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1500.0, help="orders/s while validator-3 is stopped")
    parser.add_argument("--stopped", type=float, default=25.0, help="seconds of load while it is stopped")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    progress("measuring ed25519 verification per core ...")
    verify_rate = VerifyBound().measure()
    for run in range(args.runs):
        home = Path(tempfile.mkdtemp(prefix="ita-bench-catchup-"))
        try:
            progress(f"run {run + 1}/{args.runs}: {args.rate:.0f} orders/s for {args.stopped:.0f} s")
            result = run_once(args.rate, args.stopped, home)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        emit(
            {
                "bench": "block_sync_catchup",
                "offered_per_s": args.rate,
                "stopped_s": args.stopped,
                **result,
                "verify_per_core": round(verify_rate, 1),
                "ratio_to_verify_bound": round(result["txs_per_s"] / verify_rate, 4),
                "cpus": os.cpu_count(),
            }
        )


if __name__ == "__main__":
    main()
