"""A local multi-validator network: homes, ports, genesis, processes and the manifest.

Theory of operation
-------------------
``plan_network(root, n)`` picks free loopback ports (gRPC + metrics per validator, HTTP for the
indexer) and names every validator's home ``root/validator-<i>``; ``create_homes`` writes each
home exactly as ``ita init`` would (config.toml, keys/validator_key.json = the PUBLIC devnet
validator key #i, keys/node_key.json, genesis.json) with peers configured all-to-all, and one
shared genesis built from ``genesis/devnet.json`` with ``genesis_time`` = now and the N devnet
validator keys. ``peer_address(i, j)`` lets a caller route node i's view of node j through
something else (the partition tests put ``devnet/proxy.py`` there).

``Network`` starts and stops the processes: each validator is ``python -m node.cli start
--home HOME`` in its own session (process group), stdout/stderr appended to HOME/node.log; the
indexer is ``python -m node.cli indexer`` (log: root/indexer/indexer.log); the load generator
``python -m devnet.loadgen`` (root/loadgen.log). Stopping is SIGTERM to the process group, then
SIGKILL after a grace period; ``kill`` is SIGKILL to the group (``kill -9`` semantics, verifier
workers included). ``write_manifest`` records every process in ``root/manifest.json`` (format in
README "Devnet and CLI"); ``devnet down`` and external tools read it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import genesis as genesis_pkg
from genesis.schema import format_genesis_time, loads_genesis_json, parse_genesis, write_genesis
from node.config import NodeConfig, NodeHome, PeerConfig, write_config
from sdk.keys import Key, devnet_account_key, devnet_validator_key
from stf.config import ChainConfig

__all__ = [
    "MANIFEST_NAME",
    "ManagedProcess",
    "Network",
    "NodePlan",
    "Plan",
    "create_homes",
    "devnet_chain",
    "free_ports",
    "plan_network",
    "read_manifest",
]

MANIFEST_NAME = "manifest.json"
HOST = "127.0.0.1"
STOP_GRACE_S = 10.0


def free_ports(n: int, host: str = HOST) -> list[int]:
    """``n`` distinct TCP ports that were free on ``host`` a moment ago (all bound at once)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def devnet_chain(
    validators: int,
    accounts: int = 50,
    genesis_time_ms: int | None = None,
    validator_keys: Sequence[Key] | None = None,
) -> ChainConfig:
    """genesis/devnet.json with ``genesis_time`` (default now), N devnet validators and M accounts."""
    doc: dict[str, Any] = loads_genesis_json((Path(genesis_pkg.__file__).parent / "devnet.json").read_bytes())
    keys = (
        list(validator_keys)
        if validator_keys is not None
        else [devnet_validator_key(i) for i in range(validators)]
    )
    now_ms = genesis_time_ms if genesis_time_ms is not None else int(time.time()) * 1000
    doc["genesis_time"] = format_genesis_time(now_ms)
    power = doc["validators"][0]["power"] if doc.get("validators") else 10
    doc["validators"] = [
        {"name": f"devnet-validator-{i}", "public_key": k.public_key.hex(), "power": power}
        for i, k in enumerate(keys)
    ]
    balance = doc["accounts"][0]["balance"] if doc.get("accounts") else "1000000"
    doc["accounts"] = [
        {"address": devnet_account_key(i).address_hex, "balance": balance} for i in range(accounts)
    ]
    return parse_genesis(doc)


@dataclass(frozen=True, slots=True)
class NodePlan:
    index: int
    name: str
    home: Path
    grpc: str
    metrics: str
    key: Key

    @property
    def log(self) -> Path:
        return self.home / "node.log"


@dataclass(slots=True)
class Plan:
    root: Path
    chain: ChainConfig
    nodes: list[NodePlan]
    indexer_http: str
    template: NodeConfig = field(default_factory=NodeConfig)

    @property
    def genesis_file(self) -> Path:
        return self.root / "genesis.json"

    @property
    def indexer_home(self) -> Path:
        return self.root / "indexer"


def plan_network(
    root: Path,
    n: int,
    *,
    accounts: int = 50,
    template: NodeConfig | None = None,
    genesis_time_ms: int | None = None,
) -> Plan:
    if n < 1:
        raise ValueError("a devnet needs at least one validator")
    root = root.resolve()
    ports = free_ports(2 * n + 1)
    keys = [devnet_validator_key(i) for i in range(n)]
    nodes = [
        NodePlan(
            index=i,
            name=f"validator-{i}",
            home=root / f"validator-{i}",
            grpc=f"{HOST}:{ports[2 * i]}",
            metrics=f"{HOST}:{ports[2 * i + 1]}",
            key=keys[i],
        )
        for i in range(n)
    ]
    chain = devnet_chain(n, accounts, genesis_time_ms, keys)
    return Plan(root, chain, nodes, f"{HOST}:{ports[-1]}", template or NodeConfig())


def node_config(
    plan: Plan, node: NodePlan, peer_address: Callable[[int, int], str] | None = None
) -> NodeConfig:
    peers = []
    for other in plan.nodes:
        if other.index == node.index:
            continue
        address = peer_address(node.index, other.index) if peer_address is not None else other.grpc
        host, _, port = address.rpartition(":")
        peers.append(PeerConfig(host, int(port), other.key.public_key))
    return dataclasses.replace(
        plan.template,
        moniker=node.name,
        grpc_listen=node.grpc,
        metrics_listen=node.metrics,
        peers=tuple(peers),
    )


def write_home(home: Path, key: Key, chain: ChainConfig, config: NodeConfig) -> None:
    """A node home as `ita init` makes it (keys 0600, dirs 0700)."""
    layout = NodeHome(home)
    layout.ensure_dirs()
    if not layout.validator_key_file.exists():
        key.save(layout.validator_key_file)
    if not layout.node_key_file.exists():
        Key.generate().save(layout.node_key_file)
    write_genesis(layout.genesis_file, chain)
    write_config(layout.config_file, config)


def create_homes(plan: Plan, peer_address: Callable[[int, int], str] | None = None) -> None:
    plan.root.mkdir(parents=True, exist_ok=True)
    write_genesis(plan.genesis_file, plan.chain)
    for node in plan.nodes:
        write_home(node.home, node.key, plan.chain, node_config(plan, node, peer_address))
    plan.indexer_home.mkdir(parents=True, exist_ok=True)
    write_genesis(plan.indexer_home / "genesis.json", plan.chain)  # rpc.service reads HOME/genesis.json


# ---------------------------------------------------------------------------- processes


def _child_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)  # a crash point is only ever set explicitly per process
    env["PYTHONUNBUFFERED"] = "1"
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if extra:
        env.update(extra)
    return env


CRASH_ENV = "ITA_CRASH_AT"


class ManagedProcess:
    """One child in its own session; output appended to ``log``."""

    def __init__(
        self, name: str, kind: str, argv: list[str], log: Path, info: dict[str, Any] | None = None
    ) -> None:
        self.name = name
        self.kind = kind
        self.argv = argv
        self.log = log
        self.info = dict(info or {})
        self.popen: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    def start(self, env: dict[str, str] | None = None) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.env = dict(env or {})
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start {' '.join(self.argv)}"
                f"{' env ' + str(self.env) if self.env else ''}\n".encode()
            )
            out.flush()
            self.popen = subprocess.Popen(  # noqa: S603 (our own argv)
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_child_env(self.env),
                start_new_session=True,
                cwd=str(self.log.parent),
            )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def _signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> int | None:
        """SIGKILL the whole process group (like kill -9, verifier workers included); reap it."""
        if self.popen is None:
            return None
        self._signal_group(signal.SIGKILL)
        return self.popen.wait()

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM (clean shutdown), SIGKILL after ``grace`` seconds; the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait()
        self._signal_group(signal.SIGKILL)  # leftovers of the group (worker processes)
        return self.popen.returncode

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; subprocess.TimeoutExpired otherwise."""
        assert self.popen is not None
        code = self.popen.wait(timeout)
        self._signal_group(signal.SIGKILL)
        return code

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "pid": self.pid,
            "alive": self.alive(),
            "log": str(self.log),
            **self.info,
        }


def python_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class Network:
    """The processes of a planned network (validators, optional indexer and load generator)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.validators: list[ManagedProcess] = [
            ManagedProcess(
                node.name,
                "validator",
                python_argv("node.cli", "start", "--home", str(node.home)),
                node.log,
                {
                    "home": str(node.home),
                    "grpc": node.grpc,
                    "metrics": node.metrics,
                    "address": node.key.address_hex,
                    "public_key": node.key.public_key.hex(),
                },
            )
            for node in plan.nodes
        ]
        self.extras: list[ManagedProcess] = []

    @property
    def processes(self) -> list[ManagedProcess]:
        return [*self.validators, *self.extras]

    def start_validators(self, env: dict[int, dict[str, str]] | None = None) -> None:
        for i, proc in enumerate(self.validators):
            proc.start((env or {}).get(i))

    def add_indexer(self) -> ManagedProcess:
        http = self.plan.indexer_http
        proc = ManagedProcess(
            "indexer",
            "indexer",
            python_argv(
                "node.cli",
                "indexer",
                "--node",
                self.plan.nodes[0].grpc,
                "--home",
                str(self.plan.indexer_home),
                "--listen",
                http,
            ),
            self.plan.indexer_home / "indexer.log",
            {
                "home": str(self.plan.indexer_home),
                "http": http,
                "url": f"http://{http}",
                "node": self.plan.nodes[0].grpc,
            },
        )
        self.extras.append(proc)
        return proc

    def add_loadgen(self, rate: float, accounts: str = "", seed: int = 0) -> ManagedProcess:
        n_accounts = len(self.plan.chain.accounts)
        args = [
            "--nodes",
            ",".join(n.grpc for n in self.plan.nodes),
            "--genesis",
            str(self.plan.genesis_file),
            "--rate",
            str(rate),
            "--accounts",
            accounts or f"0-{max(0, n_accounts - 1)}",
            "--seed",
            str(seed),
        ]
        proc = ManagedProcess(
            "loadgen",
            "loadgen",
            python_argv("devnet.loadgen", *args),
            self.plan.root / "loadgen.log",
            {"rate": rate},
        )
        self.extras.append(proc)
        return proc

    def stop_all(self, grace: float = STOP_GRACE_S) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for proc in [*self.extras, *self.validators]:  # load first, validators last
            if proc.popen is not None and proc.popen.poll() is None:
                proc._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in [*self.extras, *self.validators]:
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc._signal_group(signal.SIGKILL)
                proc.popen.wait()
            proc._signal_group(signal.SIGKILL)
            codes[proc.name] = proc.popen.returncode
        return codes

    def manifest(self) -> dict[str, Any]:
        return {
            "chain_id": self.plan.chain.chain_id,
            "root": str(self.plan.root),
            "genesis": str(self.plan.genesis_file),
            "supervisor_pid": os.getpid(),
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "processes": [p.manifest_entry() for p in self.processes],
        }

    def write_manifest(self) -> Path:
        path = self.plan.root / MANIFEST_NAME
        tmp = path.with_name(f".{MANIFEST_NAME}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.manifest(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("processes"), list):
        raise ValueError(f"{path} is not a devnet manifest")
    return doc


def reset_root(root: Path) -> None:
    """Delete a previous devnet's homes (only directories that look like ours)."""
    if not root.exists():
        return
    for child in root.iterdir():
        if child.is_dir() and (child.name.startswith("validator-") or child.name in ("indexer", "twin")):
            shutil.rmtree(child)
        elif child.name in (MANIFEST_NAME, "genesis.json", "loadgen.log"):
            child.unlink()
