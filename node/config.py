"""Node home layout and ``config.toml``: load (tomllib), validate, write.

Theory of operation
- A node's home directory follows CometBFT's layout::

      HOME/config.toml                    this file's NodeConfig
      HOME/genesis.json                   the chain (genesis/schema.py)
      HOME/keys/validator_key.json        consensus signing key (sdk/keys.py format, 0600)
      HOME/keys/node_key.json             peer identity of a non-validator node
      HOME/data/                          block store (LevelDB), snapshots, state
      HOME/data/cs.wal/                   consensus write-ahead log (node/wal.py)
      HOME/data/priv_validator_state.json double-sign guard (node/signstate.py)

- ``load_config`` refuses unknown keys (a typo must not silently become a
  default) and wrong types, and checks every bound; each ``ConfigError``
  message starts with the dotted path of the offending key, e.g.
  ``consensus.timeout_propose_ms: must be an integer >= 1, got 0``.
- ``config_to_toml`` writes every key with its value (a small writer of our
  own: strings, integers, booleans, tables and arrays of tables are all this
  file needs), and ``load_config(config_to_toml(c)) == c``.
- Defaults suit a devnet on loopback: short timeouts, small mempool.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from consensus import ConsensusConfig
from node.heap import HeapSettings
from stf.block import MAX_TX_BYTES
from stf.config import ChainConfig

__all__ = [
    "BlockLimits",
    "ConfigError",
    "ConsensusTimeouts",
    "MempoolConfig",
    "NodeConfig",
    "NodeHome",
    "PeerConfig",
    "check_against_chain",
    "config_to_toml",
    "load_config",
    "parse_config",
    "parse_host_port",
    "write_config",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
_MONIKER_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_HEX32_RE = re.compile(r"[0-9a-fA-F]{64}")
_URL_RE = re.compile(r"https?://[^\s/]+(/\S*)?")


class ConfigError(ValueError):
    """config.toml is unreadable or a value is invalid; the message starts with the key path."""


@dataclass(frozen=True, slots=True)
class NodeHome:
    """Paths inside a node's home directory."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def genesis_file(self) -> Path:
        return self.root / "genesis.json"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def validator_key_file(self) -> Path:
        return self.keys_dir / "validator_key.json"

    @property
    def node_key_file(self) -> Path:
        return self.keys_dir / "node_key.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store.db"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "cs.wal"

    @property
    def sign_state_file(self) -> Path:
        return self.data_dir / "priv_validator_state.json"

    def ensure_dirs(self) -> None:
        """Create keys/, data/ and data/cs.wal/ (0700) if missing."""
        for directory in (self.root, self.keys_dir, self.data_dir, self.wal_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A persistent peer: where to dial it and the ed25519 key it must prove in its Hello."""

    host: str
    port: int
    public_key: bytes

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ConsensusTimeouts:
    """timeout(step, round) = base + round * delta (consensus/config.py); commit: wait after a commit."""

    timeout_propose_ms: int = 1000
    timeout_propose_delta_ms: int = 500
    timeout_prevote_ms: int = 500
    timeout_prevote_delta_ms: int = 250
    timeout_precommit_ms: int = 500
    timeout_precommit_delta_ms: int = 250
    timeout_commit_ms: int = 100  # pause before the next height, counted from the decision
    # Start the next height at once (no commit pause) when the commit certificate holds every
    # validator's precommit (nobody is left to wait for) and at least skip_timeout_commit_min_txs
    # txs wait in the mempool (a backlog, not a trickle). A lightly loaded or idle chain still
    # pauses timeout_commit_ms between blocks. Like CometBFT's skip_timeout_commit, limited to
    # when there is a backlog to commit.
    skip_timeout_commit: bool = True
    skip_timeout_commit_min_txs: int = 100

    def consensus_config(self) -> ConsensusConfig:
        """The core's config (everything but the commit pause, which the engine applies)."""
        return ConsensusConfig(
            timeout_propose_ms=self.timeout_propose_ms,
            timeout_propose_delta_ms=self.timeout_propose_delta_ms,
            timeout_prevote_ms=self.timeout_prevote_ms,
            timeout_prevote_delta_ms=self.timeout_prevote_delta_ms,
            timeout_precommit_ms=self.timeout_precommit_ms,
            timeout_precommit_delta_ms=self.timeout_precommit_delta_ms,
        )


@dataclass(frozen=True, slots=True)
class MempoolConfig:
    max_txs: int = 20_000
    max_bytes: int = 64 * 1024 * 1024
    max_txs_per_account: int = 200
    cache_size: int = 100_000  # recently seen tx hashes (duplicate filter)
    verify_workers: int = 2  # signature-verification processes
    verify_batch_max: int = 256  # txs per worker batch
    verify_nice: int = 10  # workers run this much nicer than the node (0: same priority)
    gossip_interval_ms: int = 10  # admitted client txs are relayed to the peers in one batch this often


@dataclass(frozen=True, slots=True)
class BlockLimits:
    """What this node puts into a block it proposes; at most the chain's limits (genesis)."""

    max_txs: int = 2_000
    max_bytes: int = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class NodeConfig:
    moniker: str = "node"
    grpc_listen: str = "127.0.0.1:26657"
    metrics_listen: str = "127.0.0.1:26660"  # "" disables the Prometheus endpoint
    log_level: str = "info"
    otlp_endpoint: str | None = None  # e.g. "http://127.0.0.1:4318"; None: no tracing export
    snapshot_interval: int = 100  # blocks between state snapshots
    snapshots_kept: int = 3  # newest snapshots the block store keeps; 0: every one
    oracle_interval_ms: int = 1000  # validators' oracle-price tx cadence; 0 disables
    peers: tuple[PeerConfig, ...] = ()
    consensus: ConsensusTimeouts = field(default_factory=ConsensusTimeouts)
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    block: BlockLimits = field(default_factory=BlockLimits)
    gc: HeapSettings = field(default_factory=HeapSettings)


# ---------------------------------------------------------------------------- validation


def parse_host_port(text: str, path: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[addr]:port``) with 1 <= port <= 65535."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{path}: expected 'host:port', got {text!r}")
    host, _, port_text = text.rpartition(":")
    if _HOST_RE.fullmatch(host) is None:
        raise ConfigError(f"{path}: bad host {host!r} in {text!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{path}: port must be 1..65535 in {text!r}")
    return host, int(port_text)


def _int(table: dict[str, Any], key: str, path: str, default: int, minimum: int) -> int:
    value = table.pop(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value > 2**63 - 1:
        raise ConfigError(f"{path}.{key}: must be an integer >= {minimum}, got {value!r}".lstrip("."))
    return value


def _bool(table: dict[str, Any], key: str, path: str, default: bool) -> bool:
    value = table.pop(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}.{key}: must be true or false, got {value!r}".lstrip("."))
    return value


def _str(table: dict[str, Any], key: str, path: str, default: str) -> str:
    value = table.pop(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{path}.{key}: must be a string, got {value!r}".lstrip("."))
    return value


def _table(table: dict[str, Any], key: str) -> dict[str, Any]:
    value = table.pop(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a table, got {value!r}")
    return dict(value)


def _no_extra(table: dict[str, Any], path: str) -> None:
    if table:
        name = sorted(table)[0]
        raise ConfigError(f"{path}.{name}: unknown key".lstrip("."))


def _parse_peer(value: object, index: int) -> PeerConfig:
    path = f"peers[{index}]"
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: must be a table with address and public_key")
    table = dict(value)
    host, port = parse_host_port(_str(table, "address", path, ""), f"{path}.address")
    key_hex = _str(table, "public_key", path, "")
    if _HEX32_RE.fullmatch(key_hex) is None:
        raise ConfigError(f"{path}.public_key: must be 64 hex digits (ed25519 public key), got {key_hex!r}")
    _no_extra(table, path)
    return PeerConfig(host, port, bytes.fromhex(key_hex))


def _parse_consensus(table: dict[str, Any]) -> ConsensusTimeouts:
    d = ConsensusTimeouts()
    values: dict[str, Any] = {
        f.name: _int(table, f.name, "consensus", getattr(d, f.name), 0 if "delta" in f.name else 1)
        for f in fields(ConsensusTimeouts)
        if f.name != "skip_timeout_commit"
    }
    values["skip_timeout_commit"] = _bool(table, "skip_timeout_commit", "consensus", d.skip_timeout_commit)
    _no_extra(table, "consensus")
    return ConsensusTimeouts(**values)


def _parse_mempool(table: dict[str, Any]) -> MempoolConfig:
    d = MempoolConfig()
    values = {
        f.name: _int(table, f.name, "mempool", getattr(d, f.name), 0 if f.name == "verify_nice" else 1)
        for f in fields(MempoolConfig)
    }
    _no_extra(table, "mempool")
    config = MempoolConfig(**values)
    if config.max_txs_per_account > config.max_txs:
        raise ConfigError(
            f"mempool.max_txs_per_account: {config.max_txs_per_account} exceeds "
            f"mempool.max_txs {config.max_txs}"
        )
    if config.max_bytes < MAX_TX_BYTES:
        raise ConfigError(f"mempool.max_bytes: must hold at least one maximal tx ({MAX_TX_BYTES} bytes)")
    if config.verify_workers > 64:
        raise ConfigError(f"mempool.verify_workers: at most 64, got {config.verify_workers}")
    if config.verify_nice > 19:
        raise ConfigError(f"mempool.verify_nice: at most 19, got {config.verify_nice}")
    if config.gossip_interval_ms > 1_000:
        raise ConfigError(f"mempool.gossip_interval_ms: at most 1000, got {config.gossip_interval_ms}")
    return config


def _parse_gc(table: dict[str, Any]) -> HeapSettings:
    d = HeapSettings()
    values: dict[str, Any] = {
        f.name: _int(table, f.name, "gc", getattr(d, f.name), 700 if f.name == "young_threshold" else 0)
        for f in fields(HeapSettings)
        if f.name != "freeze_after_block"
    }
    values["freeze_after_block"] = _bool(table, "freeze_after_block", "gc", d.freeze_after_block)
    _no_extra(table, "gc")
    return HeapSettings(**values)


def _parse_block(table: dict[str, Any]) -> BlockLimits:
    d = BlockLimits()
    values = {f.name: _int(table, f.name, "block", getattr(d, f.name), 1) for f in fields(BlockLimits)}
    _no_extra(table, "block")
    limits = BlockLimits(**values)
    if limits.max_bytes < MAX_TX_BYTES:
        raise ConfigError(f"block.max_bytes: must hold at least one maximal tx ({MAX_TX_BYTES} bytes)")
    return limits


def parse_config(doc: dict[str, Any]) -> NodeConfig:
    """Validate a parsed TOML document into a NodeConfig (raises ConfigError)."""
    top = dict(doc)
    d = NodeConfig()
    moniker = _str(top, "moniker", "", d.moniker)
    if _MONIKER_RE.fullmatch(moniker) is None:
        raise ConfigError(f"moniker: 1..64 characters of [A-Za-z0-9._-], got {moniker!r}")
    log_level = _str(top, "log_level", "", d.log_level)
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    otlp = _str(top, "otlp_endpoint", "", "")
    if otlp and _URL_RE.fullmatch(otlp) is None:
        raise ConfigError(f"otlp_endpoint: must be an http(s):// URL or empty, got {otlp!r}")
    snapshot_interval = _int(top, "snapshot_interval", "", d.snapshot_interval, 1)
    snapshots_kept = _int(top, "snapshots_kept", "", d.snapshots_kept, 0)
    oracle_interval_ms = _int(top, "oracle_interval_ms", "", d.oracle_interval_ms, 0)
    grpc = _table(top, "grpc")
    grpc_listen = _str(grpc, "listen", "grpc", d.grpc_listen)
    parse_host_port(grpc_listen, "grpc.listen")
    _no_extra(grpc, "grpc")
    metrics = _table(top, "metrics")
    metrics_listen = _str(metrics, "listen", "metrics", d.metrics_listen)
    if metrics_listen:
        parse_host_port(metrics_listen, "metrics.listen")
        if metrics_listen == grpc_listen:
            raise ConfigError(f"metrics.listen: same address as grpc.listen ({grpc_listen})")
    _no_extra(metrics, "metrics")
    raw_peers = top.pop("peers", [])
    if not isinstance(raw_peers, list):
        raise ConfigError("peers: must be an array of tables ([[peers]])")
    peers = tuple(_parse_peer(p, i) for i, p in enumerate(raw_peers))
    _check_unique_peers(peers)
    consensus = _parse_consensus(_table(top, "consensus"))
    mempool = _parse_mempool(_table(top, "mempool"))
    block = _parse_block(_table(top, "block"))
    gc_settings = _parse_gc(_table(top, "gc"))
    _no_extra(top, "")
    return NodeConfig(
        moniker=moniker,
        grpc_listen=grpc_listen,
        metrics_listen=metrics_listen,
        log_level=log_level,
        otlp_endpoint=otlp or None,
        snapshot_interval=snapshot_interval,
        snapshots_kept=snapshots_kept,
        oracle_interval_ms=oracle_interval_ms,
        peers=peers,
        consensus=consensus,
        mempool=mempool,
        block=block,
        gc=gc_settings,
    )


def _check_unique_peers(peers: tuple[PeerConfig, ...]) -> None:
    seen_addr: dict[str, int] = {}
    seen_key: dict[bytes, int] = {}
    for i, peer in enumerate(peers):
        if peer.address in seen_addr:
            raise ConfigError(f"peers[{i}].address: {peer.address} repeats peers[{seen_addr[peer.address]}]")
        if peer.public_key in seen_key:
            raise ConfigError(f"peers[{i}].public_key: repeats peers[{seen_key[peer.public_key]}]")
        seen_addr[peer.address] = i
        seen_key[peer.public_key] = i


def check_against_chain(config: NodeConfig, chain: ChainConfig) -> None:
    """The node's block limits must not exceed the chain's (genesis) limits."""
    if config.block.max_txs > chain.max_block_txs:
        raise ConfigError(
            f"block.max_txs: {config.block.max_txs} exceeds the chain limit {chain.max_block_txs}"
        )
    if config.block.max_bytes > chain.max_block_bytes:
        raise ConfigError(
            f"block.max_bytes: {config.block.max_bytes} exceeds the chain limit {chain.max_block_bytes}"
        )


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return parse_config(doc)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


# ---------------------------------------------------------------------------- writing


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)  # a JSON string is a valid TOML basic string
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def config_to_toml(config: NodeConfig) -> str:
    lines = [
        "# ita node configuration (see node/config.py for every key and its bounds)",
        f"moniker = {_value(config.moniker)}",
        f"log_level = {_value(config.log_level)}  # {' | '.join(LOG_LEVELS)}",
        f"otlp_endpoint = {_value(config.otlp_endpoint or '')}  # empty: no trace export",
        f"snapshot_interval = {config.snapshot_interval}  # blocks",
        f"snapshots_kept = {config.snapshots_kept}  # newest snapshots kept; 0: all",
        f"oracle_interval_ms = {config.oracle_interval_ms}  # 0: no oracle txs",
        "",
        "[grpc]",
        f"listen = {_value(config.grpc_listen)}",
        "",
        "[metrics]",
        f"listen = {_value(config.metrics_listen)}  # empty: disabled",
    ]
    sections = (
        ("consensus", config.consensus),
        ("mempool", config.mempool),
        ("block", config.block),
        ("gc", config.gc),
    )
    for title, section in sections:
        lines += ["", f"[{title}]"]
        lines += [f"{f.name} = {_value(getattr(section, f.name))}" for f in fields(section)]
    for peer in config.peers:
        lines += ["", "[[peers]]", f"address = {_value(peer.address)}"]
        lines += [f"public_key = {_value(peer.public_key.hex())}"]
    return "\n".join(lines) + "\n"


def write_config(path: str | os.PathLike[str], config: NodeConfig) -> None:
    """Write config.toml atomically (temp file, fsync, rename)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(config_to_toml(config))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
