"""The ``ita`` command line: offline commands in-process (keys, init, genesis helpers, usage errors);
then a single-validator chain made by ``ita init`` and run by ``ita start``, driven by ``ita tx`` and
``ita query``; and ``ita devnet up|status|down`` end to end (manifest, status JSON, Ctrl-C, down)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devnet.network import free_ports
from genesis.schema import load_genesis
from node.cli import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, main
from node.config import load_config
from sdk.client import NodeClient
from sdk.keys import Key, devnet_account_key
from tests.processes import alive

WAIT_S = 90.0


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ita(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "node.cli", *argv], capture_output=True, text=True, timeout=timeout
    )


# ---------------------------------------------------------------------------- offline


def test_keys_new_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "k" / "trader.json"
    code, out, _ = run_cli(capsys, "keys", "new", "--out", str(path))
    assert code == EXIT_OK
    made = json.loads(out)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert made["address"] == Key.load(path).address_hex
    code, out, _ = run_cli(capsys, "keys", "show", str(path))
    assert code == EXIT_OK and json.loads(out)["address"] == made["address"]
    assert "seed" not in out
    code, _, err = run_cli(capsys, "keys", "new", "--out", str(path))  # never overwrites silently
    assert code == EXIT_USAGE and "already exists" in err
    code, out, _ = run_cli(capsys, "keys", "new", "--out", str(path), "--force", "--devnet-account", "5")
    assert code == EXIT_OK and json.loads(out)["address"] == devnet_account_key(5).address_hex
    path.chmod(0o644)
    code, _, err = run_cli(capsys, "keys", "show", str(path))
    assert code == EXIT_USAGE and "chmod 600" in err
    code, _, err = run_cli(capsys, "keys", "show", str(tmp_path / "missing.json"))
    assert code == EXIT_USAGE and "does not exist" in err


def test_init_creates_a_home_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "node"
    code, out, _ = run_cli(
        capsys, "init", "--home", str(home), "--chain-id", "ita-test-9", "--moniker", "alpha"
    )
    assert code == EXIT_OK
    info = json.loads(out)
    assert info["in_genesis_validators"] is True
    config = load_config(home / "config.toml")
    assert config.moniker == "alpha"
    chain = load_genesis(home / "genesis.json")
    assert chain.chain_id == "ita-test-9"
    assert [v.public_key for v in chain.validators] == [
        Key.load(home / "keys" / "validator_key.json").public_key
    ]
    assert [m.symbol for m in chain.markets] == ["BTC-PERP", "ETH-PERP", "7203-T-PERP"]
    assert abs(chain.genesis_time_ms - time.time() * 1000) < 3_600_000
    for name in ("validator_key.json", "node_key.json"):
        assert stat.S_IMODE((home / "keys" / name).stat().st_mode) == 0o600
    code, _, err = run_cli(capsys, "init", "--home", str(home), "--chain-id", "x", "--moniker", "alpha")
    assert code == EXIT_USAGE and "already initialized" in err
    code, _, err = run_cli(
        capsys, "init", "--home", str(tmp_path / "n2"), "--moniker", "bad name!", "--chain-id", "c"
    )
    assert code == EXIT_USAGE and "moniker" in err
    code, _, err = run_cli(capsys, "init", "--home", str(tmp_path / "n3"), "--moniker", "m")
    assert code == EXIT_USAGE and "--chain-id" in err


def test_genesis_helpers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "genesis.json"
    code, out, _ = run_cli(
        capsys, "genesis", "devnet", "--out", str(path), "--validators", "2", "--accounts", "3"
    )
    assert code == EXIT_OK and json.loads(out)["validators"] == 2
    address = Key.generate().address_hex
    code, _, _ = run_cli(capsys, "genesis", "add-account", "--file", str(path), address, "250.5")
    assert code == EXIT_OK
    chain = load_genesis(path)
    assert (bytes.fromhex(address[2:]), 250_500_000) in chain.accounts
    code, _, err = run_cli(capsys, "genesis", "add-account", "--file", str(path), address, "1")
    assert code == EXIT_USAGE and "duplicates" in err  # the edit is validated before writing
    key = tmp_path / "v.json"
    Key.generate().save(key)
    code, out, _ = run_cli(
        capsys, "genesis", "add-validator", "--file", str(path), "--key", str(key), "--power", "5"
    )
    assert code == EXIT_OK and len(json.loads(out)["validators"]) == 3
    code, out, _ = run_cli(capsys, "genesis", "show", "--file", str(path))
    assert code == EXIT_OK and json.loads(out)["accounts"][-1]["address"] == address
    path.write_text("{not json")
    code, _, err = run_cli(capsys, "genesis", "show", "--file", str(path))
    assert code == EXIT_USAGE and "invalid genesis" in err


def test_usage_errors_and_unreachable_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    code, _, err = run_cli(capsys, "query", "status", "--node", dead, "--timeout", "2")
    assert code == EXIT_UNAVAILABLE and "cannot reach the node" in err
    code, _, err = run_cli(capsys, "query", "status", "--node", "nonsense")
    assert code == EXIT_USAGE
    code, _, err = run_cli(capsys, "query", "tx", "1234", "--node", dead)
    assert code == EXIT_USAGE and "64 hex" in err
    code, _, err = run_cli(capsys, "query", "account", "0x12", "--node", dead)
    assert code == EXIT_USAGE and "address" in err
    code, _, err = run_cli(
        capsys,
        "tx",
        "order",
        "--key",
        str(tmp_path / "none.json"),
        "--node",
        dead,
        "--market",
        "BTC-PERP",
        "--side",
        "buy",
        "--price",
        "1",
        "--size",
        "1",
    )
    assert code == EXIT_USAGE and "does not exist" in err
    code, _, err = run_cli(capsys, "query", "book", "BTC-PERP")
    assert code == EXIT_USAGE and "--indexer" in err
    with pytest.raises(SystemExit) as info:
        main(["tx", "order", "--side", "sideways"])
    assert info.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as info:
        main(["query", "status", "--bogus"])  # only `ita indexer` passes options on
    assert info.value.code == EXIT_USAGE
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    # every option of the indexer's own parser reaches it through `ita indexer`
    with pytest.raises(SystemExit) as info:
        main(["indexer", "--help"])
    assert info.value.code == 0
    usage = capsys.readouterr().out
    assert "--otlp-endpoint" in usage and "--snapshot-interval" in usage and "--no-node-snapshot" in usage
    with pytest.raises(SystemExit) as info:
        main(["indexer", "--home", str(tmp_path)])
    assert info.value.code == EXIT_USAGE and "--node" in capsys.readouterr().err


# ------------------------------------------------------------------ one node: init, start, tx, query


@pytest.fixture
def single_node(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    home = tmp_path / "solo"
    grpc_port, metrics_port = free_ports(2)
    grpc = f"127.0.0.1:{grpc_port}"
    made = ita(
        "init",
        "--home",
        str(home),
        "--chain-id",
        "ita-solo-1",
        "--moniker",
        "solo",
        "--grpc-listen",
        grpc,
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
    )
    assert made.returncode == 0, made.stderr
    log = open(home / "node.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "node.cli", "start", "--home", str(home)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        NodeClient(grpc).wait_for_height(1, timeout=WAIT_S)
        yield grpc, home
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0, "ita start did not exit cleanly on SIGTERM"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
            print((home / "node.log").read_text(errors="replace")[-4000:])


@pytest.mark.integration
def test_single_validator_tx_and_queries(single_node: tuple[str, Path], tmp_path: Path) -> None:
    grpc, home = single_node
    key = tmp_path / "trader.json"
    assert ita("keys", "new", "--out", str(key)).returncode == 0
    address = Key.load(key).address_hex

    faucet = ita(
        "tx", "faucet", "--amount", "5000", "--key", str(key), "--node", grpc, "--home", str(home), "--wait"
    )
    assert faucet.returncode == EXIT_OK, faucet.stderr + faucet.stdout
    assert json.loads(faucet.stdout)["result"]["status"] == "ok"

    order = ita(
        "tx",
        "order",
        "--market",
        "BTC-PERP",
        "--side",
        "buy",
        "--price",
        "64000.5",
        "--size",
        "0.01",
        "--client-order-id",
        "cli-1",
        "--key",
        str(key),
        "--node",
        grpc,
        "--home",
        str(home),
        "--wait",
    )
    assert order.returncode == EXIT_OK, order.stderr + order.stdout
    placed = json.loads(order.stdout)
    assert placed["accepted"] and placed["result"]["status"] == "ok" and placed["result"]["order_id"] > 0

    account = json.loads(ita("query", "account", address, "--node", grpc, "--home", str(home)).stdout)
    assert account["collateral"] == 5000 * 10**6 and account["collateral_usd"] == "5000.000000"
    orders = [
        (o["client_order_id"], o["price"], o["size"], o["price_decimal"], o["size_decimal"])
        for o in account["orders"]
    ]
    assert orders == [("cli-1", 640005, 100, "64000.5", "0.0100")]

    tx = json.loads(ita("query", "tx", placed["hash"], "--node", grpc).stdout)
    assert tx["height"] == placed["height"] and tx["tx"]["place_order"]["client_order_id"] == "cli-1"
    block = json.loads(ita("query", "block", str(placed["height"]), "--node", grpc).stdout)
    assert placed["hash"] in [t["hash"] for t in block["txs"]]
    status = json.loads(ita("query", "status", "--node", grpc).stdout)
    assert status["chain_id"] == "ita-solo-1" and status["height"] >= placed["height"]

    # lossy, off-grid and out-of-band input: refused before signing (2) or rejected in the block (1)
    lossy = ita(
        "tx",
        "order",
        "--market",
        "BTC-PERP",
        "--side",
        "buy",
        "--price",
        "64000.55",
        "--size",
        "0.01",
        "--key",
        str(key),
        "--node",
        grpc,
        "--home",
        str(home),
    )
    assert lossy.returncode == EXIT_USAGE and "decimals" in lossy.stderr
    band = ita(
        "tx",
        "order",
        "--market",
        "BTC-PERP",
        "--side",
        "buy",
        "--price",
        "1000",
        "--size",
        "0.01",
        "--key",
        str(key),
        "--node",
        grpc,
        "--home",
        str(home),
        "--wait",
    )
    assert (
        band.returncode == EXIT_FAILED and json.loads(band.stdout)["result"]["status"] == "price_out_of_band"
    )
    # the chain id comes from the node: a genesis of another chain is refused
    other = tmp_path / "other.json"
    assert ita("genesis", "devnet", "--out", str(other)).returncode == 0
    mismatch = ita("tx", "cancel-all", "--key", str(key), "--node", grpc, "--genesis", str(other))
    assert mismatch.returncode == EXIT_USAGE and "ita-solo-1" in mismatch.stderr

    cancel = ita(
        "tx",
        "cancel",
        "--market",
        "BTC-PERP",
        "--client-order-id",
        "cli-1",
        "--key",
        str(key),
        "--node",
        grpc,
        "--home",
        str(home),
        "--wait",
    )
    assert cancel.returncode == EXIT_OK, cancel.stderr + cancel.stdout
    account = json.loads(ita("query", "account", address, "--node", grpc).stdout)
    assert account["orders"] == []
    missing = ita("query", "tx", "ab" * 32, "--node", grpc)
    assert missing.returncode == EXIT_FAILED and "not found" in missing.stderr


# ---------------------------------------------------------------------------- devnet up / status / down


def _wait_manifest(root: Path, proc: subprocess.Popen[Any]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"devnet up exited early: {proc.stdout.read() if proc.stdout else ''}"
        try:
            return dict(json.loads((root / "manifest.json").read_text()))
        except (OSError, ValueError):
            time.sleep(0.2)
    raise AssertionError("no manifest.json")


def _devnet_status(root: Path) -> list[dict[str, Any]]:
    result = ita("devnet", "status", "--home", str(root), "--json")
    return list(json.loads(result.stdout))


@pytest.mark.integration
def test_devnet_up_status_and_stop(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    up = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "node.cli",
            "devnet",
            "up",
            "--validators",
            "3",
            "--load",
            "10",
            "--home",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        manifest = _wait_manifest(root, up)
        processes = manifest["processes"]
        assert isinstance(processes, list)
        by_kind: dict[str, list[dict[str, object]]] = {}
        for p in processes:
            by_kind.setdefault(str(p["kind"]), []).append(p)
        assert [p["name"] for p in by_kind["validator"]] == ["validator-0", "validator-1", "validator-2"]
        for p in by_kind["validator"]:
            assert {"pid", "home", "grpc", "metrics", "log"} <= set(p)
        assert by_kind["indexer"][0]["url"] == f"http://{by_kind['indexer'][0]['http']}"
        assert len(by_kind["loadgen"]) == 1

        deadline = time.monotonic() + WAIT_S
        rows = _devnet_status(root)
        while time.monotonic() < deadline and min(int(r["height"] or 0) for r in rows) < 4:
            time.sleep(0.5)
            rows = _devnet_status(root)
        assert [r["name"] for r in rows] == ["validator-0", "validator-1", "validator-2"]
        assert all({"height", "last_block_hash", "app_hash"} <= set(r) for r in rows)
        clients = [NodeClient(str(p["grpc"])) for p in by_kind["validator"]]
        top = min(c.status().height for c in clients)
        assert top >= 4
        assert len({(c.block(top).app_hash) for c in clients}) == 1
        text = ita("devnet", "status", "--home", str(root))
        assert text.returncode == 0 and "validator-2" in text.stdout

        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C: everything stops
        assert up.wait(60) == 0
        pids = [int(str(p["pid"])) for p in processes]
        for pid in pids:
            assert not alive(pid), f"pid {pid} survived Ctrl-C"
        after = json.loads((root / "manifest.json").read_text())
        assert all(p["alive"] is False for p in after["processes"])
        assert ita("devnet", "down", "--home", str(root)).returncode == 0  # nothing left: still fine
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        ita("devnet", "down", "--home", str(root), "--grace", "2")


@pytest.mark.integration
def test_devnet_down_stops_a_running_devnet(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    up = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "node.cli",
            "devnet",
            "up",
            "--validators",
            "1",
            "--home",
            str(root),
            "--no-indexer",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        manifest = _wait_manifest(root, up)
        grpc = str(manifest["processes"][0]["grpc"])
        NodeClient(grpc).wait_for_height(1, timeout=WAIT_S)
        again = ita("devnet", "up", "--validators", "1", "--home", str(root))
        assert again.returncode == 2 and "already running" in again.stderr
        down = ita("devnet", "down", "--home", str(root))
        assert down.returncode == 0
        assert up.wait(30) == 0
        assert not alive(int(manifest["processes"][0]["pid"]))
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
