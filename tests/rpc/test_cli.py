"""``rpc.service.main`` as a process (what ``ita indexer`` runs) against a simulated node process:
serves, stops cleanly on SIGTERM with a snapshot, resumes from it, exits 1 on bad configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def first_json_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else "no output"
    return dict(json.loads(line))


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(url: str, predicate: Any) -> Any:
    for _ in range(3000):
        status, body = get(url)
        if predicate(status, body):
            return body
        time.sleep(0.02)
    raise AssertionError(f"gave up waiting on {url}")


def test_main_serves_stops_and_resumes(tmp_path: Path) -> None:
    home = tmp_path / "indexer"
    home.mkdir()
    node = spawn(
        "-m",
        "rpc.simnode",
        "--listen",
        "127.0.0.1:0",
        "--rate",
        "20",
        "--genesis-out",
        str(home / "genesis.json"),
    )
    try:
        address = first_json_line(node)["simnode"]
        args = (
            "-m",
            "rpc.service",
            "--node",
            address,
            "--home",
            str(home),
            "--listen",
            "127.0.0.1:0",
            "--no-node-snapshot",
            "--snapshot-interval",
            "1000000",
        )
        indexer = spawn(*args)
        url = first_json_line(indexer)["indexer"]
        body = wait_for(f"{url}/v1/status", lambda s, b: s == 200 and (b["height"] or 0) >= 10)
        assert body["node"]["connected"] is True
        assert wait_for(f"{url}/healthz", lambda s, b: s == 200)["ok"] is True
        indexer.send_signal(signal.SIGTERM)
        assert indexer.wait(timeout=30) == 0
        stopped_at = body["height"]
        assert indexer.stderr is not None  # the node's JSON log lines, extra fields kept
        lines = [json.loads(line) for line in indexer.stderr.read().splitlines()]
        started = [line for line in lines if line["msg"].startswith("indexer for")]
        assert started and started[0]["stf_build"] in ("pure", "compiled") and started[0]["ts"].endswith("Z")

        indexer = spawn(*args)
        url = first_json_line(indexer)["indexer"]
        body = wait_for(f"{url}/v1/status", lambda s, b: s == 200 and b["ready"])
        assert (
            body["snapshot_height"] is not None and body["snapshot_height"] >= stopped_at
        )  # resumed from it
        indexer.send_signal(signal.SIGINT)
        assert indexer.wait(timeout=30) == 0
    finally:
        node.kill()
        node.wait(timeout=10)


def test_main_refuses_a_home_without_genesis(tmp_path: Path) -> None:
    proc = spawn(
        "-m", "rpc.service", "--node", "127.0.0.1:1", "--home", str(tmp_path), "--listen", "127.0.0.1:0"
    )
    assert proc.wait(timeout=30) == 1
    assert proc.stderr is not None and "genesis.json" in proc.stderr.read()
