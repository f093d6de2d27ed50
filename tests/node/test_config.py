from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from node.config import (
    BlockLimits,
    ConfigError,
    ConsensusTimeouts,
    MempoolConfig,
    NodeConfig,
    NodeHome,
    PeerConfig,
    check_against_chain,
    config_to_toml,
    load_config,
    parse_config,
    write_config,
)
from node.heap import HeapSettings
from tests.node.support import chain

KEY = "ab" * 32
PEER_A = f"[[peers]]\naddress = 'h:1'\npublic_key = '{KEY}'\n"


def test_defaults_are_a_loopback_devnet() -> None:
    config = parse_config({})
    assert config == NodeConfig()
    assert config.grpc_listen.startswith("127.0.0.1:") and config.metrics_listen.startswith("127.0.0.1:")
    assert config.otlp_endpoint is None and config.peers == ()
    check_against_chain(config, chain())


def test_round_trip_through_toml(tmp_path: Path) -> None:
    config = NodeConfig(
        moniker="val-0",
        grpc_listen="0.0.0.0:9000",
        metrics_listen="",
        log_level="debug",
        otlp_endpoint="http://127.0.0.1:4318",
        snapshot_interval=7,
        snapshots_kept=0,
        oracle_interval_ms=0,
        peers=(PeerConfig("127.0.0.1", 9001, bytes.fromhex(KEY)), PeerConfig("[::1]", 9002, b"\x01" * 32)),
        consensus=ConsensusTimeouts(timeout_propose_ms=3000, timeout_commit_ms=1),
        mempool=MempoolConfig(max_txs=10, max_txs_per_account=10, verify_workers=1, verify_nice=7),
        block=BlockLimits(max_txs=5, max_bytes=100_000),
        gc=HeapSettings(
            freeze_after_block=False, freeze_every_ms=0, young_threshold=2_000, full_collect_every_s=0
        ),
    )
    path = tmp_path / "config.toml"
    write_config(path, config)
    assert load_config(path) == config
    tomllib.loads(config_to_toml(NodeConfig()))  # defaults also produce valid TOML
    assert load_config_text(tmp_path, config_to_toml(NodeConfig())) == NodeConfig()


def load_config_text(tmp_path: Path, text: str) -> NodeConfig:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mooniker = 'x'", "mooniker: unknown key"),
        ("[consensus]\ntimeout_propose = 1", "consensus.timeout_propose: unknown key"),
        ("[consensus]\ntimeout_propose_ms = 0", "consensus.timeout_propose_ms: must be an integer >= 1"),
        ("[consensus]\ntimeout_prevote_delta_ms = -1", "timeout_prevote_delta_ms: must be an integer >= 0"),
        ("[consensus]\ntimeout_commit_ms = '5'", "consensus.timeout_commit_ms: must be an integer"),
        ("[mempool]\nmax_txs = true", "mempool.max_txs: must be an integer"),
        ("[mempool]\nmax_txs = 5\nmax_txs_per_account = 6", "mempool.max_txs_per_account: 6 exceeds"),
        ("[mempool]\nmax_bytes = 1000", "mempool.max_bytes: must hold at least one maximal tx"),
        ("[block]\nmax_bytes = 10", "block.max_bytes"),
        ("[mempool]\nverify_nice = 20", "mempool.verify_nice: at most 19"),
        ("[mempool]\ngossip_interval_ms = 0", "mempool.gossip_interval_ms: must be an integer >= 1"),
        ("[mempool]\ngossip_interval_ms = 1001", "mempool.gossip_interval_ms: at most 1000"),
        ("[gc]\nyoung_threshold = 10", "gc.young_threshold: must be an integer >= 700"),
        ("[gc]\nfreeze_after_block = 1", "gc.freeze_after_block: must be true or false"),
        ("[gc]\nfreeze_every_ms = -1", "gc.freeze_every_ms: must be an integer >= 0"),
        ("[gc]\nfreeze = true", "gc.freeze: unknown key"),
        ("moniker = 'has space'", "moniker:"),
        ("log_level = 'loud'", "log_level: one of"),
        ("otlp_endpoint = 'grpc://x'", "otlp_endpoint:"),
        ("snapshot_interval = 0", "snapshot_interval: must be an integer >= 1"),
        ("snapshots_kept = -1", "snapshots_kept: must be an integer >= 0"),
        ("[grpc]\nlisten = 'localhost'", "grpc.listen: expected 'host:port'"),
        ("[grpc]\nlisten = 'localhost:99999'", "grpc.listen: port must be 1..65535"),
        ("[metrics]\nlisten = '127.0.0.1:26657'", "metrics.listen: same address as grpc.listen"),
        ("grpc = 5", "grpc: must be a table"),
        ("peers = 'a'", "peers: must be an array"),
        (f"[[peers]]\naddress = 'h:1'\npublic_key = '{KEY[:-2]}'", "peers[0].public_key: must be 64 hex"),
        (f"[[peers]]\naddress = 'h'\npublic_key = '{KEY}'", "peers[0].address: expected 'host:port'"),
        (f"[[peers]]\naddress = 'h:1'\npublic_key = '{KEY}'\nweight = 1", "peers[0].weight: unknown key"),
        (
            PEER_A + f"[[peers]]\naddress = 'h:1'\npublic_key = '{'cd' * 32}'",
            "peers[1].address: h:1 repeats peers[0]",
        ),
        (
            PEER_A + f"[[peers]]\naddress = 'h:2'\npublic_key = '{KEY}'",
            "peers[1].public_key: repeats peers[0]",
        ),
    ],
)
def test_invalid_values_name_their_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(tmp_path, text)
    assert message in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "c.toml"))


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_text(tmp_path, "moniker = ")


def test_block_limits_cannot_exceed_the_chain() -> None:
    too_many = dataclasses.replace(NodeConfig(), block=BlockLimits(max_txs=chain().max_block_txs + 1))
    with pytest.raises(ConfigError, match="block.max_txs"):
        check_against_chain(too_many, chain())
    too_big = dataclasses.replace(NodeConfig(), block=BlockLimits(max_bytes=chain().max_block_bytes + 1))
    with pytest.raises(ConfigError, match="block.max_bytes"):
        check_against_chain(too_big, chain())


def test_home_layout(tmp_path: Path) -> None:
    home = NodeHome(tmp_path / "home")
    home.ensure_dirs()
    assert home.config_file == tmp_path / "home" / "config.toml"
    assert home.genesis_file.name == "genesis.json"
    assert home.validator_key_file == tmp_path / "home" / "keys" / "validator_key.json"
    assert home.node_key_file.parent == home.keys_dir
    assert home.wal_dir == tmp_path / "home" / "data" / "cs.wal" and home.wal_dir.is_dir()
    assert home.sign_state_file == tmp_path / "home" / "data" / "priv_validator_state.json"
    assert home.store_dir.parent == home.data_dir
    assert (home.keys_dir.stat().st_mode & 0o777) == 0o700
