"""genesis/: schema validation (every rule names its JSON path), round trips, devnet.json."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genesis
from genesis.devnet import devnet_config, devnet_genesis_dict
from genesis.schema import (
    CHAIN_FIELD_TO_JSON,
    GenesisError,
    genesis_to_dict,
    genesis_to_json,
    load_genesis,
    loads_genesis_json,
    parse_genesis,
    parse_genesis_time,
    write_genesis,
)
from sdk.keys import devnet_account_key, devnet_validator_key
from stf.config import ChainConfig, MarketSpec

DEVNET_JSON = Path(genesis.__file__).parent / "devnet.json"
DELETE = object()
IDENTITY_KEY = (1).to_bytes(32, "little").hex()  # small-order point


def _base() -> dict[str, Any]:
    return devnet_genesis_dict(validators=2, accounts=2)


def _set(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """Copy of ``doc`` with the value at ``markets[1].tick_size``-style ``path`` replaced (or deleted)."""
    doc = copy.deepcopy(doc)
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    target: Any = doc
    for part in parts[:-1]:
        target = target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return doc


def _error(doc: object) -> GenesisError:
    with pytest.raises(GenesisError) as info:
        parse_genesis(doc)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert str(info.value) == f"{info.value.path}: {info.value.problem}"
    return info.value


# --- devnet.json ----------------------------------------------------------------------------------


def test_devnet_json_parses_and_is_the_generated_file() -> None:
    config = load_genesis(DEVNET_JSON)
    assert config == devnet_config()
    assert DEVNET_JSON.read_text() == genesis_to_json(config), "regenerate: python -m genesis.devnet"


def test_devnet_keys_are_the_deterministic_devnet_keys() -> None:
    config = load_genesis(DEVNET_JSON)
    assert config.chain_id == "ita-devnet-1"
    assert [v.public_key for v in config.validators] == [devnet_validator_key(i).public_key for i in range(4)]
    assert [v.power for v in config.validators] == [10] * 4
    assert [a for a, _ in config.accounts] == [devnet_account_key(i).address for i in range(50)]
    assert {b for _, b in config.accounts} == {1_000_000 * 10**6}
    assert config.faucet_enabled and config.faucet_max_per_account > 0


def test_devnet_markets() -> None:
    config = load_genesis(DEVNET_JSON)
    btc, eth, toyota = config.markets
    assert [m.symbol for m in config.markets] == ["BTC-PERP", "ETH-PERP", "7203-T-PERP"]
    assert [m.market_id for m in config.markets] == [0, 1, 2]
    assert (btc.price_decimals, btc.size_decimals, eth.price_decimals, eth.size_decimals) == (1, 4, 2, 3)
    assert (btc.tick_size, btc.lot_size, btc.min_size, btc.initial_oracle_price) == (1, 1, 10, 650_000)
    assert (btc.initial_margin_ppm, btc.maintenance_margin_ppm, btc.max_leverage) == (50_000, 30_000, 20)
    assert (btc.maker_fee_ppm, btc.taker_fee_ppm) == (200, 500)
    assert all(m.funding_interval_ms == 3_600_000 for m in config.markets)
    assert toyota.price_decimals + toyota.size_decimals <= 6 and toyota.initial_oracle_price == 18_500
    assert config.market_by_symbol["7203-T-PERP"] is toyota


# --- round trips and coverage of ChainConfig --------------------------------------------------------


def test_every_chain_config_field_has_a_json_key() -> None:
    names = {f.name for f in dataclasses.fields(ChainConfig)} - {"market_by_symbol"}
    assert set(CHAIN_FIELD_TO_JSON) == names
    written = genesis_to_dict(devnet_config(1, 1))
    assert set(written) == set(CHAIN_FIELD_TO_JSON.values())
    market_keys = set(written["markets"][0])  # type: ignore[index]
    assert len(market_keys) == len(dataclasses.fields(MarketSpec)) - 1  # all but the derived market_id


def test_every_optional_field_is_settable() -> None:
    doc = _base()
    doc.update(
        faucet_enabled=False,
        faucet_max_per_account="0",
        max_open_orders_per_account=7,
        nonce_window_past_ms=11,
        nonce_window_future_ms=13,
        oracle_stale_ms=17,
        insurance_fund="19.5",
        liquidation_fee="0.0123",
        max_block_txs=23,
        max_block_bytes=2048,
    )
    doc["validators"][0]["name"] = "alice"
    doc["markets"][0]["halted"] = True
    config = parse_genesis(doc)
    got = {
        name: getattr(config, name) for name in CHAIN_FIELD_TO_JSON if name not in ("validators", "markets")
    }
    assert got == {
        "chain_id": "ita-devnet-1",
        "genesis_time_ms": 1_735_689_600_000,
        "accounts": config.accounts,
        "faucet_enabled": False,
        "faucet_max_per_account": 0,
        "max_open_orders_per_account": 7,
        "nonce_window_past_ms": 11,
        "nonce_window_future_ms": 13,
        "oracle_stale_ms": 17,
        "insurance_fund": 19_500_000,
        "liquidation_fee_ppm": 12_300,
        "max_block_txs": 23,
        "max_block_bytes": 2048,
    }
    assert config.validators[0].name == "alice" and config.markets[0].halted
    assert parse_genesis(genesis_to_dict(config)) == config


def test_omitted_optional_fields_take_the_dataclass_defaults() -> None:
    doc = {
        k: v
        for k, v in _base().items()
        if k in ("chain_id", "genesis_time", "validators", "markets", "accounts")
    }
    for v in doc["validators"]:
        v.pop("name")
    config = parse_genesis(doc)
    reference = ChainConfig(
        chain_id=config.chain_id,
        genesis_time_ms=config.genesis_time_ms,
        validators=config.validators,
        markets=config.markets,
        accounts=config.accounts,
    )
    assert config == reference
    assert config.validators[0].name == "" and not config.markets[0].halted


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    config = devnet_config(3, 5)
    path = tmp_path / "genesis.json"
    write_genesis(path, config)
    assert load_genesis(path) == config
    assert path.read_text() == genesis_to_json(config)
    assert [p.name for p in tmp_path.iterdir()] == ["genesis.json"]


@settings(max_examples=40, deadline=None)
@given(
    pd=st.integers(0, 3),
    sd=st.integers(0, 3),
    tick=st.integers(1, 50),
    lot=st.integers(1, 50),
    min_lots=st.integers(1, 20),
    oracle_ticks=st.integers(1, 10**6),
    leverage=st.integers(1, 100),
    fee=st.integers(0, 10_000),
    balance=st.integers(0, 10**15),
)
def test_generated_configs_round_trip(
    pd: int,
    sd: int,
    tick: int,
    lot: int,
    min_lots: int,
    oracle_ticks: int,
    leverage: int,
    fee: int,
    balance: int,
) -> None:
    config = devnet_config(1, 1)
    initial = -(-1_000_000 // leverage)  # ceil(1/leverage) in ppm
    market = dataclasses.replace(
        config.markets[0],
        price_decimals=pd,
        size_decimals=sd,
        tick_size=tick,
        lot_size=lot,
        min_size=lot * min_lots,
        initial_oracle_price=tick * oracle_ticks,
        max_leverage=leverage,
        initial_margin_ppm=max(initial, 2),
        maintenance_margin_ppm=max(initial, 2) // 2,
        maker_fee_ppm=fee,
    )
    config = dataclasses.replace(config, markets=(market,), accounts=((config.accounts[0][0], balance),))
    assert parse_genesis(json.loads(genesis_to_json(config))) == config


# --- rejections ----------------------------------------------------------------------------------

REJECTIONS: list[tuple[str, object, str, str]] = [
    # (path to change, new value or DELETE, expected error path, expected fragment of the problem)
    ("chain_id", DELETE, "genesis", 'missing required key "chain_id"'),
    ("chain_id", "ita devnet", "chain_id", "must be 1..64 characters of [A-Za-z0-9._-]"),
    ("chain_id", "x" * 65, "chain_id", "must be 1..64 characters"),
    ("chain_id", 5, "chain_id", "expected a string, got number 5"),
    ("chainid", "ita", "genesis", 'unknown key "chainid"'),
    ("genesis_time", "2025-01-01 00:00:00Z", "genesis_time", "not an RFC 3339 UTC time"),
    ("genesis_time", "2025-01-01T00:00:00+09:00", "genesis_time", "not an RFC 3339 UTC time"),
    ("genesis_time", "2025-01-01T00:00:00", "genesis_time", "not an RFC 3339 UTC time"),
    ("genesis_time", "2025-02-30T00:00:00Z", "genesis_time", "not a valid date/time"),
    ("genesis_time", "2025-01-01T24:00:00Z", "genesis_time", "not a valid date/time"),
    ("genesis_time", "2025-01-01T00:00:00.0001Z", "genesis_time", "sub-millisecond precision"),
    ("genesis_time", "1969-12-31T23:59:59Z", "genesis_time", "before 1970"),
    ("genesis_time", 1735689600000, "genesis_time", "expected a string, got number"),
    # validators
    ("validators", [], "validators", "at least one validator is required"),
    ("validators", {}, "validators", "expected an array, got object"),
    ("validators[0]", "abc", "validators[0]", "expected an object, got string"),
    ("validators[0].power", DELETE, "validators[0]", 'missing required key "power"'),
    ("validators[0].power", 0, "validators[0].power", "0 is out of range 1.."),
    ("validators[0].power", "10", "validators[0].power", 'expected an integer, got string "10"'),
    ("validators[0].power", True, "validators[0].power", "expected an integer, got boolean true"),
    ("validators[0].power", 10.0, "validators[0].power", "expected an integer, got number 10.0"),
    ("validators[1].power", 2**60, "validators", "total power exceeds"),
    ("validators[0].public_key", "zz" * 32, "validators[0].public_key", "must be 64 hex digits"),
    ("validators[0].public_key", "ab" * 31, "validators[0].public_key", "must be 64 hex digits"),
    ("validators[0].public_key", IDENTITY_KEY, "validators[0].public_key", "not a valid ed25519 public key"),
    ("validators[0].name", 3, "validators[0].name", "expected a string"),
    ("validators[0].name", "x" * 65, "validators[0].name", "at most 64 printable characters"),
    ("validators[0].name", "a\nb", "validators[0].name", "printable"),
    ("validators[0].pubkey", "ab", "validators[0]", 'unknown key "pubkey"'),
    # markets
    ("markets", [], "markets", "at least one market is required"),
    (
        "markets[2].tick_size",
        "0.0005",
        "markets[2].tick_size",
        '"0.0005" has 4 decimals but price_decimals is 3',
    ),
    ("markets[0].tick_size", "0.05", "markets[0].tick_size", '"0.05" has 2 decimals but price_decimals is 1'),
    (
        "markets[0].tick_size",
        0.1,
        "markets[0].tick_size",
        'expected a decimal string like "0.1", got number 0.1',
    ),
    ("markets[0].tick_size", "0", "markets[0].tick_size", '"0" is out of range 0.1..'),
    ("markets[0].tick_size", "1e-1", "markets[0].tick_size", "exponent"),
    ("markets[0].tick_size", " 0.1", "markets[0].tick_size", "whitespace"),
    ("markets[0].tick_size", "-0.1", "markets[0].tick_size", '"-0.1" is negative'),
    ("markets[0].lot_size", "0.0000", "markets[0].lot_size", "out of range 0.0001.."),
    ("markets[0].lot_size", "0.00001", "markets[0].lot_size", "has 5 decimals but size_decimals is 4"),
    ("markets[0].min_size", "0.0000", "markets[0].min_size", "out of range"),
    ("markets[0].lot_size", "0.0003", "markets[0].min_size", 'is not a multiple of lot_size "0.0003"'),
    ("markets[0].symbol", "btc-perp", "markets[0].symbol", "must be 1..32 characters of [A-Z0-9-]"),
    ("markets[0].symbol", "BTC PERP", "markets[0].symbol", "[A-Z0-9-]"),
    ("markets[0].symbol", "", "markets[0].symbol", "[A-Z0-9-]"),
    ("markets[0].symbol", "A" * 33, "markets[0].symbol", "1..32"),
    ("markets[1].symbol", "BTC-PERP", "markets[1].symbol", '"BTC-PERP" duplicates markets[0].symbol'),
    ("markets[0].price_decimals", 7, "markets[0].price_decimals", "out of range 0..6"),
    ("markets[0].price_decimals", -1, "markets[0].price_decimals", "out of range 0..6"),
    (
        "markets[0].price_decimals",
        3,
        "markets[0].size_decimals",
        "price_decimals + size_decimals = 7 exceeds 6",
    ),
    (
        "markets[0].initial_margin_fraction",
        "0",
        "markets[0].initial_margin_fraction",
        "out of range 0.000001..1",
    ),
    ("markets[0].initial_margin_fraction", "1.5", "markets[0].initial_margin_fraction", "out of range"),
    (
        "markets[0].initial_margin_fraction",
        "0.04",
        "markets[0].initial_margin_fraction",
        "below 1/max_leverage = 1/20",
    ),
    (
        "markets[0].maintenance_margin_fraction",
        "0.05",
        "markets[0].maintenance_margin_fraction",
        "must be below initial",
    ),
    ("markets[0].maintenance_margin_fraction", "0", "markets[0].maintenance_margin_fraction", "out of range"),
    ("markets[0].max_leverage", 0, "markets[0].max_leverage", "out of range 1..1000"),
    ("markets[0].maker_fee", "0.02", "markets[0].maker_fee", "out of range 0..0.01"),
    ("markets[0].taker_fee", "-0.0001", "markets[0].taker_fee", "is negative"),
    (
        "markets[0].taker_fee",
        "0.0000001",
        "markets[0].taker_fee",
        "has 7 decimals but fractions have at most 6",
    ),
    ("markets[0].funding_interval_ms", 0, "markets[0].funding_interval_ms", "out of range"),
    ("markets[0].funding_interval_ms", "1h", "markets[0].funding_interval_ms", "expected an integer"),
    ("markets[0].funding_cap", "-0.01", "markets[0].funding_cap", "is negative"),
    ("markets[0].funding_cap", "1.1", "markets[0].funding_cap", "out of range 0..1"),
    ("markets[0].interest_rate", "0.02", "markets[0].interest_rate", "out of range 0..0.01"),
    ("markets[0].price_band", "0", "markets[0].price_band", "out of range 0.000001..0.999999"),
    ("markets[0].price_band", "1", "markets[0].price_band", "out of range"),
    ("markets[0].initial_oracle_price", "0.0", "markets[0].initial_oracle_price", "out of range"),
    ("markets[0].initial_oracle_price", "65000.05", "markets[0].initial_oracle_price", "has 2 decimals"),
    ("markets[0].halted", "no", "markets[0].halted", 'expected true or false, got string "no"'),
    ("markets[0].tick", "0.1", "markets[0]", 'unknown key "tick"'),
    ("markets[0].price_band", DELETE, "markets[0]", 'missing required key "price_band"'),
    # accounts
    ("accounts", None, "accounts", "expected an array, got null"),
    ("accounts[0].address", "0x1234", "accounts[0].address", "exactly 40 hex digits"),
    ("accounts[0].address", "ab" * 20, "accounts[0].address", "must start with '0x'"),
    (
        "accounts[1].address",
        devnet_account_key(0).address_hex,
        "accounts[1].address",
        "duplicates accounts[0]",
    ),
    ("accounts[0].balance", "-1", "accounts[0].balance", '"-1" is negative'),
    ("accounts[0].balance", 1000, "accounts[0].balance", "expected a decimal string"),
    (
        "accounts[0].balance",
        "1.0000001",
        "accounts[0].balance",
        "has 7 decimals but USD amounts have at most 6",
    ),
    ("accounts[0].balance", "NaN", "accounts[0].balance", "not a plain decimal"),
    ("accounts[0].balance", str(2**63), "accounts[0].balance", "out of range"),
    ("accounts[0].owner", "x", "accounts[0]", 'unknown key "owner"'),
    # chain parameters
    ("faucet_enabled", "true", "faucet_enabled", 'expected true or false, got string "true"'),
    ("faucet_max_per_account", "0", "faucet_max_per_account", "must be positive when faucet_enabled is true"),
    ("faucet_max_per_account", DELETE, "faucet_max_per_account", "must be positive when faucet_enabled"),
    ("insurance_fund", "-5", "insurance_fund", "is negative"),
    ("liquidation_fee", "0.2", "liquidation_fee", "out of range 0..0.1"),
    ("max_block_bytes", 100, "max_block_bytes", "out of range 1024.."),
    ("max_block_txs", 1.5, "max_block_txs", "expected an integer, got number 1.5"),
    ("nonce_window_past_ms", 0, "nonce_window_past_ms", "out of range 1.."),
    ("nonce_window_future_ms", -1, "nonce_window_future_ms", "out of range"),
    ("oracle_stale_ms", 0, "oracle_stale_ms", "out of range"),
    ("max_open_orders_per_account", 0, "max_open_orders_per_account", "out of range"),
]


@pytest.mark.parametrize(
    ("change", "value", "path", "fragment"),
    REJECTIONS,
    ids=[r[0] + "-" + str(i) for i, r in enumerate(REJECTIONS)],
)
def test_rejections_name_the_path_and_the_problem(
    change: str, value: object, path: str, fragment: str
) -> None:
    doc = _base()
    parse_genesis(doc)  # the base document is valid, so the change alone is the cause
    err = _error(_set(doc, change, value))
    assert err.path == path
    assert fragment in err.problem


def test_exact_message_of_the_documented_example() -> None:
    err = _error(_set(_base(), "markets[1].tick_size", "0.005"))
    assert str(err) == 'markets[1].tick_size: "0.005" has 3 decimals but price_decimals is 2'


def test_duplicate_validator_keys() -> None:
    doc = _base()
    doc["validators"][1]["public_key"] = doc["validators"][0]["public_key"]
    err = _error(doc)
    assert (err.path, err.problem) == ("validators[1].public_key", "duplicates validators[0].public_key")


def test_oracle_price_must_be_on_the_tick_grid() -> None:
    doc = _set(_base(), "markets[0].tick_size", "0.5")
    parse_genesis(_set(doc, "markets[0].initial_oracle_price", "65000.5"))
    err = _error(_set(doc, "markets[0].initial_oracle_price", "65000.3"))
    assert err.path == "markets[0].initial_oracle_price"
    assert err.problem == '"65000.3" is not on the tick grid of "0.5"'


def test_leverage_boundary_is_inclusive() -> None:
    doc = _set(_base(), "markets[0].max_leverage", 20)
    assert (
        parse_genesis(_set(doc, "markets[0].initial_margin_fraction", "0.05")).markets[0].initial_margin_ppm
        == 50_000
    )
    assert _error(_set(doc, "markets[0].initial_margin_fraction", "0.049999")).path.endswith(
        "initial_margin_fraction"
    )


def test_top_level_must_be_an_object() -> None:
    assert _error([]).problem == "expected an object, got array"


def test_accounts_may_be_empty_and_faucet_may_be_off() -> None:
    doc = _set(_set(_base(), "accounts", []), "faucet_enabled", False)
    config = parse_genesis(_set(doc, "faucet_max_per_account", "0"))
    assert config.accounts == () and not config.faucet_enabled


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2025-01-01T00:00:00Z", 1_735_689_600_000),
        ("2025-01-01T00:00:00+00:00", 1_735_689_600_000),
        ("2025-01-01T00:00:00.250Z", 1_735_689_600_250),
        ("2025-01-01T00:00:00.1Z", 1_735_689_600_100),
        ("2025-01-01T00:00:00.123000000Z", 1_735_689_600_123),
        ("2024-02-29T12:34:56Z", 1_709_210_096_000),
    ],
)
def test_genesis_time(text: str, ms: int) -> None:
    assert parse_genesis_time(text) == ms
    config = parse_genesis(_set(_base(), "genesis_time", text))
    assert config.genesis_time_ms == ms
    assert parse_genesis(genesis_to_dict(config)).genesis_time_ms == ms


# --- JSON text layer --------------------------------------------------------------------------------


def test_duplicate_json_keys_are_refused_with_their_path() -> None:
    text = json.dumps(_base()).replace('"tick_size": "0.1"', '"tick_size": "0.1", "tick_size": "1.0"', 1)
    with pytest.raises(GenesisError) as info:
        parse_genesis(loads_genesis_json(text))
    assert str(info.value) == 'markets[0]: duplicate key "tick_size"'


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{", "invalid JSON at line 1"),
        (b'{"chain_id": NaN}', "NaN is not valid in a genesis file"),
        (b'{"chain_id": Infinity}', "Infinity is not valid"),
        (b"[1]", "expected an object, got array"),
        (b'{"chain_id": "\xff"}', "not UTF-8"),
    ],
)
def test_bad_json_text(raw: bytes, fragment: str) -> None:
    with pytest.raises(GenesisError) as info:
        loads_genesis_json(raw)
    assert info.value.path == "genesis"
    assert fragment in info.value.problem


def test_load_genesis_reports_problems_from_files(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps(_set(_base(), "markets[0].maker_fee", "0.5")))
    with pytest.raises(GenesisError, match=r"^markets\[0\]\.maker_fee: "):
        load_genesis(path)
