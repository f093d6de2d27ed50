"""``ita devnet up|status|down``: run a local network in the foreground and inspect or stop it.

``up`` creates (or resumes) DIR with N validator homes, starts every validator as its own OS
process, an indexer next to them and, with ``--load RATE``, the random order generator; it
writes DIR/manifest.json and then supervises in the foreground: it reports children that die
(and restarts validators with ``--restart-after S``), and on Ctrl-C / SIGTERM stops all of
them (SIGTERM, then SIGKILL after a grace period) and marks them dead in the manifest.
``status`` asks every validator of the manifest for its Status; ``down`` stops the processes
listed in the manifest of a devnet started elsewhere (its supervisor first).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devnet.network import (
    MANIFEST_NAME,
    Network,
    NodePlan,
    Plan,
    create_homes,
    free_ports,
    plan_network,
    read_manifest,
    reset_root,
)
from genesis.schema import GenesisError, load_genesis
from node.config import ConfigError, MempoolConfig, NodeConfig, NodeHome, load_config
from sdk.client import NodeClient, NodeError
from sdk.keys import Key

__all__ = ["DEFAULT_ROOT", "add_devnet_parser", "devnet_template", "load_plan", "run_command"]

DEFAULT_ROOT = Path(os.environ.get("ITA_DEVNET_HOME", "~/.ita/devnet")).expanduser()
POLL_S = 0.5


def devnet_template() -> NodeConfig:
    """Node settings for N validators sharing one small machine: one verifier worker each."""
    return NodeConfig(mempool=MempoolConfig(verify_workers=1), snapshot_interval=100)


def load_plan(root: Path) -> Plan:
    """The plan of an existing devnet directory (its homes' config.toml and the shared genesis)."""
    root = root.resolve()
    homes = sorted(
        (p for p in root.glob("validator-*") if p.is_dir()), key=lambda p: int(p.name.rpartition("-")[2])
    )
    if not homes:
        raise ValueError(f"{root} has no validator homes")
    chain = load_genesis(root / "genesis.json")
    nodes = []
    for i, home in enumerate(homes):
        layout = NodeHome(home)
        config = load_config(layout.config_file)
        nodes.append(
            NodePlan(
                i,
                home.name,
                home,
                config.grpc_listen,
                config.metrics_listen,
                Key.load(layout.validator_key_file),
            )
        )
    indexer_http = f"127.0.0.1:{free_ports(1)[0]}"
    try:
        for proc in read_manifest(root)["processes"]:
            if proc.get("kind") == "indexer" and proc.get("http"):
                indexer_http = str(proc["http"])
    except (OSError, ValueError):
        pass
    return Plan(root, chain, nodes, indexer_http, load_config(NodeHome(homes[0]).config_file))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _running_supervisor(root: Path) -> int | None:
    try:
        manifest = read_manifest(root)
    except (OSError, ValueError):
        return None
    pid = manifest.get("supervisor_pid")
    if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid) and "devnet" in _cmdline(pid):
        return pid
    return None


# ---------------------------------------------------------------------------- up


def _prepare(args: argparse.Namespace, root: Path) -> Plan:
    if args.reset:
        reset_root(root)
    if any(root.glob("validator-*")):
        plan = load_plan(root)
        if len(plan.nodes) != args.validators:
            raise ValueError(
                f"{root} holds a devnet of {len(plan.nodes)} validators, not {args.validators}; "
                "pass --reset to start a new one"
            )
        print(f"resuming the devnet in {root} at its stored heights", file=sys.stderr)
        return plan
    plan = plan_network(root, args.validators, accounts=args.accounts, template=devnet_template())
    create_homes(plan)
    return plan


def _print_summary(net: Network, manifest: Path) -> None:
    plan = net.plan
    print(f"devnet {plan.chain.chain_id}: {len(plan.nodes)} validators in {plan.root}")
    for proc in net.processes:
        where = proc.info.get("grpc") or proc.info.get("url") or ""
        extra = f" metrics http://{proc.info['metrics']}/metrics" if proc.info.get("metrics") else ""
        print(f"  {proc.name:<12} pid {proc.pid:<8} {where}{extra}  log {proc.log}")
    for proc in net.extras:
        if proc.kind == "indexer":
            print(f"indexer: {proc.info['url']}  (e.g. {proc.info['url']}/v1/markets)")
    print(f"manifest: {manifest}")
    print(f"try: ita query status --node {plan.nodes[0].grpc}   |   ita devnet status --home {plan.root}")
    print("Ctrl-C stops every process.", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    root = Path(args.home).resolve()
    running = _running_supervisor(root)
    if running is not None:
        print(
            f"ita: error: a devnet is already running in {root} (supervisor pid {running}); "
            f"stop it with `ita devnet down --home {root}`",
            file=sys.stderr,
        )
        return 2
    try:
        plan = _prepare(args, root)
    except (ValueError, OSError, ConfigError, GenesisError) as exc:
        print(f"ita: error: {exc}", file=sys.stderr)
        return 2
    net = Network(plan)
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        net.start_validators()
        if not args.no_indexer:
            net.add_indexer().start()
        if args.load > 0:
            net.add_loadgen(args.load, seed=args.seed).start()
        _print_summary(net, net.write_manifest())
        _supervise(net, args.restart_after, stop)
    finally:
        print("stopping the devnet ...", file=sys.stderr, flush=True)
        codes = net.stop_all()
        net.write_manifest()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopped: " + ", ".join(f"{k}={v}" for k, v in codes.items()), file=sys.stderr)
    return 0


def _supervise(net: Network, restart_after: float, stop: dict[str, int]) -> None:
    died_at: dict[str, float] = {}
    while not stop["signal"]:
        time.sleep(POLL_S)
        changed = False
        for proc in net.processes:
            if proc.popen is None or proc.alive():
                continue
            if proc.name not in died_at:
                died_at[proc.name] = time.monotonic()
                print(
                    f"{proc.name} (pid {proc.pid}) exited with code {proc.returncode}; log {proc.log}",
                    file=sys.stderr,
                    flush=True,
                )
                changed = True
            if (
                proc.kind == "validator"
                and restart_after > 0
                and time.monotonic() - died_at[proc.name] >= restart_after
            ):
                proc.start()
                died_at.pop(proc.name)
                print(f"{proc.name} restarted (pid {proc.pid})", file=sys.stderr, flush=True)
                changed = True
        if changed:
            net.write_manifest()


# ---------------------------------------------------------------------------- status


def node_status(name: str, grpc: str, timeout: float = 2.0) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "grpc": grpc}
    try:
        with NodeClient(grpc, timeout=timeout) as client:
            status = client.status()
    except NodeError as exc:
        row.update({"height": None, "last_block_hash": None, "app_hash": None, "error": str(exc)})
        return row
    row.update(
        {
            "height": status.height,
            "last_block_hash": status.last_block_hash.hex(),
            "app_hash": status.app_hash.hex(),
            "syncing": status.syncing,
            "peers_connected": sum(1 for p in status.peers if p.connected),
            "mempool_txs": status.mempool_txs,
        }
    )
    return row


def cmd_status(args: argparse.Namespace) -> int:
    root = Path(args.home).resolve()
    try:
        manifest = read_manifest(root)
    except (OSError, ValueError) as exc:
        print(f"ita: error: no devnet manifest in {root}: {exc}", file=sys.stderr)
        return 2
    rows = []
    for proc in manifest["processes"]:
        if proc.get("kind") != "validator":
            continue
        row = node_status(str(proc["name"]), str(proc["grpc"]), args.timeout)
        row["pid"] = proc.get("pid")
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'name':<13} {'height':>7}  {'last block hash':<16}  {'app hash':<16}  notes")
        for row in rows:
            if row.get("error"):
                print(f"{row['name']:<13} {'-':>7}  {'-':<16}  {'-':<16}  unreachable")
                continue
            notes = "syncing" if row.get("syncing") else ""
            print(
                f"{row['name']:<13} {row['height']:>7}  {row['last_block_hash'][:16]:<16}  "
                f"{row['app_hash'][:16]:<16}  {row['peers_connected']} peers {notes}"
            )
    return 0 if all(not r.get("error") for r in rows) else 3


# ---------------------------------------------------------------------------- down


def _terminate(pid: int, grace: float) -> bool:
    """SIGTERM the process group of ``pid`` (falls back to the pid), SIGKILL after ``grace``."""

    def send(sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.1)
    send(signal.SIGKILL)
    return False


def cmd_down(args: argparse.Namespace) -> int:
    root = Path(args.home).resolve()
    try:
        manifest = read_manifest(root)
    except (OSError, ValueError) as exc:
        print(f"ita: error: no devnet manifest in {root}: {exc}", file=sys.stderr)
        return 2
    supervisor = _running_supervisor(root)
    stopped = []
    if supervisor is not None:
        stopped.append(f"supervisor (pid {supervisor}) and its children")
        try:
            os.kill(supervisor, signal.SIGTERM)  # it stops its children itself
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + args.grace + 5
        while _pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.1)
    for proc in manifest["processes"]:
        pid = proc.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            continue
        marker = str(proc.get("home") or proc.get("name") or "")
        if marker and marker not in _cmdline(pid) and proc.get("kind") != "loadgen":
            continue  # the pid was reused by something else
        clean = _terminate(pid, args.grace)
        stopped.append(f"{proc['name']} (pid {pid}{'' if clean else ', killed'})")
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    manifest_path = root / MANIFEST_NAME
    for proc in manifest["processes"]:
        proc["alive"] = False
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return 0


# ---------------------------------------------------------------------------- parser


def add_devnet_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    devnet = sub.add_parser("devnet", help="a local multi-validator network on loopback")
    ds = devnet.add_subparsers(dest="devnet_command", required=True)
    up = ds.add_parser("up", help="create/resume DIR and run N validators in the foreground (Ctrl-C stops)")
    up.add_argument("--validators", type=int, default=4)
    up.add_argument("--home", default=str(DEFAULT_ROOT), help=f"devnet directory (default {DEFAULT_ROOT})")
    up.add_argument("--load", type=float, default=0.0, help="random orders per second (0: none)")
    up.add_argument("--accounts", type=int, default=50, help="funded devnet accounts in a new genesis")
    up.add_argument("--seed", type=int, default=0, help="load generator seed")
    up.add_argument("--reset", action="store_true", help="delete DIR's previous devnet first")
    up.add_argument("--no-indexer", action="store_true", help="do not start the indexer")
    up.add_argument(
        "--restart-after",
        type=float,
        default=0.0,
        metavar="S",
        help="restart a validator S seconds after it dies (0: never)",
    )
    up.set_defaults(func=func)
    status = ds.add_parser("status", help="each validator's height, last block hash and app hash")
    status.add_argument("--home", default=str(DEFAULT_ROOT))
    status.add_argument("--json", action="store_true", help="a JSON list of objects")
    status.add_argument("--timeout", type=float, default=2.0)
    status.set_defaults(func=func)
    down = ds.add_parser("down", help="stop the processes listed in DIR/manifest.json")
    down.add_argument("--home", default=str(DEFAULT_ROOT))
    down.add_argument("--grace", type=float, default=10.0)
    down.set_defaults(func=func)


def run_command(args: argparse.Namespace) -> int:
    command = args.devnet_command
    if command == "up":
        if args.validators < 1:
            print("ita: error: --validators must be >= 1", file=sys.stderr)
            return 2
        return cmd_up(args)
    if command == "status":
        return cmd_status(args)
    if command == "down":
        return cmd_down(args)
    raise ValueError(f"unknown devnet command {command!r}")
