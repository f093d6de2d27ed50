"""Genesis JSON <-> ChainConfig: parse, validate, write.

Theory of operation
-------------------
The genesis file is for humans: prices, sizes, fractions, fees and USD amounts
are decimal *strings* ("0.1", "0.0002", "1000000.00"), keys are hex, addresses
"0x…", the genesis time an RFC 3339 UTC string. ``parse_genesis`` converts
each of them exactly (``sdk.units.to_units``, which refuses lossy input) into
the integer units of ``stf.config.ChainConfig`` and checks every rule of
``genesis/README.md``. Any problem raises ``GenesisError`` whose message
starts with the JSON path of the offending value, e.g.
``markets[1].tick_size: "0.05" has 2 decimals but price_decimals is 1``.

``genesis_to_dict`` is the inverse: ``parse_genesis(genesis_to_dict(c)) == c``
for every valid config. JSON numbers are accepted only where the schema says
integer (decimals, leverage, powers, milliseconds, counts); a JSON number
where a decimal string is expected is an error, never silently converted.
Objects with duplicate keys are refused (``json`` would keep the last one).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sdk.units import UnitsError, from_units, to_units
from stf.config import COLLATERAL_DECIMALS, PPM, ChainConfig, MarketSpec, ValidatorSpec
from stf.signing import format_address, is_valid_chain_id, is_valid_public_key, parse_address

__all__ = [
    "GenesisError",
    "genesis_to_dict",
    "genesis_to_json",
    "load_genesis",
    "parse_genesis",
    "write_genesis",
]

MAX_INT = 2**63 - 1
MAX_TOTAL_POWER = 2**60
MAX_FEE_PPM = 10_000  # 1%
MAX_LIQUIDATION_FEE_PPM = 100_000  # 10%
MAX_INTEREST_PPM = 10_000  # 1% per funding interval
MAX_LEVERAGE = 1_000
MIN_FUNDING_INTERVAL_MS = 1_000
MAX_FUNDING_INTERVAL_MS = 7 * 24 * 3600 * 1000
MIN_BLOCK_BYTES = 1_024
MAX_SYMBOL_LEN = 32
MAX_NAME_LEN = 64

_SYMBOL_RE = re.compile(r"[A-Z0-9-]+")
_HEX_KEY_RE = re.compile(r"[0-9a-fA-F]{64}")
_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(Z|\+00:00)"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROOT = "genesis"

_TOP_REQUIRED = ("chain_id", "genesis_time", "validators", "markets", "accounts")
_TOP_OPTIONAL = (
    "faucet_enabled",
    "faucet_max_per_account",
    "max_open_orders_per_account",
    "nonce_window_past_ms",
    "nonce_window_future_ms",
    "oracle_stale_ms",
    "insurance_fund",
    "liquidation_fee",
    "max_block_txs",
    "max_block_bytes",
)
_MARKET_REQUIRED = (
    "symbol",
    "price_decimals",
    "size_decimals",
    "tick_size",
    "lot_size",
    "min_size",
    "initial_margin_fraction",
    "maintenance_margin_fraction",
    "max_leverage",
    "maker_fee",
    "taker_fee",
    "funding_interval_ms",
    "funding_cap",
    "interest_rate",
    "price_band",
    "initial_oracle_price",
)
_MARKET_OPTIONAL = ("halted",)
_VALIDATOR_REQUIRED = ("public_key", "power")
_VALIDATOR_OPTIONAL = ("name",)
_ACCOUNT_REQUIRED = ("address", "balance")

# JSON key of every ChainConfig field (tests check this covers the dataclass).
CHAIN_FIELD_TO_JSON = {
    "chain_id": "chain_id",
    "genesis_time_ms": "genesis_time",
    "validators": "validators",
    "markets": "markets",
    "accounts": "accounts",
    "faucet_enabled": "faucet_enabled",
    "faucet_max_per_account": "faucet_max_per_account",
    "max_open_orders_per_account": "max_open_orders_per_account",
    "nonce_window_past_ms": "nonce_window_past_ms",
    "nonce_window_future_ms": "nonce_window_future_ms",
    "oracle_stale_ms": "oracle_stale_ms",
    "insurance_fund": "insurance_fund",
    "liquidation_fee_ppm": "liquidation_fee",
    "max_block_txs": "max_block_txs",
    "max_block_bytes": "max_block_bytes",
}


class GenesisError(ValueError):
    """An invalid genesis document. ``path`` is the JSON path (``markets[1].tick_size``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class _DupKeyDict(dict[str, object]):
    """A JSON object that had repeated keys (recorded so the error can name its path)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    dups: list[str] = []
    for key, value in pairs:
        if key in out:
            dups.append(key)
        out[key] = value
    if not dups:
        return out
    flagged = _DupKeyDict(out)
    flagged.duplicates = dups
    return flagged


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if value is None:
        return "null"
    return (
        "array" if isinstance(value, list) else "object" if isinstance(value, dict) else type(value).__name__
    )


class _Obj:
    """A JSON object at ``path`` whose keys have been checked against the schema."""

    def __init__(
        self, value: object, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> None:
        if not isinstance(value, dict):
            raise GenesisError(path, f"expected an object, got {_describe(value)}")
        if isinstance(value, _DupKeyDict):
            raise GenesisError(path, f"duplicate key {json.dumps(value.duplicates[0])}")
        for key in required:
            if key not in value:
                raise GenesisError(path, f"missing required key {json.dumps(key)}")
        for key in value:
            if key not in required and key not in optional:
                raise GenesisError(
                    path, f"unknown key {json.dumps(key)}; allowed: {', '.join(required + optional)}"
                )
        self.value = value
        self.path = path

    def at(self, key: str) -> str:
        return key if self.path == _ROOT else f"{self.path}.{key}"

    def absent(self, key: str) -> bool:
        return key not in self.value

    def get_int(self, key: str, low: int, high: int = MAX_INT, default: int | None = None) -> int:
        if default is not None and self.absent(key):
            return default
        value = self.value[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise GenesisError(self.at(key), f"expected an integer, got {_describe(value)}")
        if not low <= value <= high:
            raise GenesisError(self.at(key), f"{value} is out of range {low}..{high}")
        return value

    def get_bool(self, key: str, default: bool | None = None) -> bool:
        if default is not None and self.absent(key):
            return default
        value = self.value[key]
        if not isinstance(value, bool):
            raise GenesisError(self.at(key), f"expected true or false, got {_describe(value)}")
        return value

    def get_str(self, key: str, default: str | None = None) -> str:
        if default is not None and self.absent(key):
            return default
        value = self.value[key]
        if not isinstance(value, str):
            raise GenesisError(self.at(key), f"expected a string, got {_describe(value)}")
        return value

    def get_list(self, key: str) -> list[object]:
        value = self.value[key]
        if not isinstance(value, list):
            raise GenesisError(self.at(key), f"expected an array, got {_describe(value)}")
        return value

    def get_decimal(
        self,
        key: str,
        decimals: int,
        precision: str,
        low: int = 0,
        high: int = MAX_INT,
        default: int | None = None,
    ) -> int:
        """A decimal string as integer units; ``precision`` completes "... has N decimals but <precision>"."""
        if default is not None and self.absent(key):
            return default
        value, path = self.value[key], self.at(key)
        if not isinstance(value, str):
            raise GenesisError(path, f'expected a decimal string like "0.1", got {_describe(value)}')
        try:
            units = to_units(value, decimals)
        except UnitsError as exc:
            if exc.reason == "too_many_decimals":
                raise GenesisError(
                    path, f"{json.dumps(value)} has {exc.fraction_digits} decimals but {precision}"
                ) from None
            if exc.reason == "negative":
                raise GenesisError(path, f"{json.dumps(value)} is negative; it must be >= 0") from None
            raise GenesisError(path, f"{json.dumps(value)} is not a plain decimal: {exc.detail}") from None
        if not low <= units <= high:
            bounds = f"{from_units(low, decimals, trim=True)}..{from_units(high, decimals, trim=True)}"
            raise GenesisError(path, f"{json.dumps(value)} is out of range {bounds}")
        return units

    def get_fraction(self, key: str, low: int = 0, high: int = PPM, default: int | None = None) -> int:
        """A fraction ("0.05") as parts per million."""
        return self.get_decimal(key, 6, "fractions have at most 6 (parts per million)", low, high, default)

    def get_usd(self, key: str, default: int | None = None) -> int:
        """A USD amount ("1000000.00") as micro-USD."""
        return self.get_decimal(
            key, COLLATERAL_DECIMALS, f"USD amounts have at most {COLLATERAL_DECIMALS}", default=default
        )


def _default_int(name: str) -> int:
    """The ChainConfig dataclass default of an optional field (bools are ints too)."""
    value = ChainConfig.__dataclass_fields__[name].default
    assert isinstance(value, int)
    return value


def parse_genesis_time(text: str, path: str = "genesis_time") -> int:
    """RFC 3339 UTC (``2025-01-01T00:00:00Z``, ``...00.250Z``, ``+00:00``) to ms since the epoch."""
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise GenesisError(
            path, f'{json.dumps(text)} is not an RFC 3339 UTC time like "2025-01-01T00:00:00Z"'
        )
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    nanos = int((match.group(7) or "").ljust(9, "0"))
    if nanos % 1_000_000:
        raise GenesisError(path, f"{json.dumps(text)} has sub-millisecond precision")
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise GenesisError(path, f"{json.dumps(text)} is not a valid date/time: {exc}") from None
    if moment < _EPOCH:
        raise GenesisError(path, f"{json.dumps(text)} is before 1970-01-01T00:00:00Z")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + nanos // 1_000_000


def format_genesis_time(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def _parse_market(value: object, index: int) -> MarketSpec:
    m = _Obj(value, f"markets[{index}]", _MARKET_REQUIRED, _MARKET_OPTIONAL)
    symbol = m.get_str("symbol")
    if _SYMBOL_RE.fullmatch(symbol) is None or len(symbol) > MAX_SYMBOL_LEN:
        raise GenesisError(
            m.at("symbol"),
            f"{json.dumps(symbol)} must be 1..{MAX_SYMBOL_LEN} characters of "
            '[A-Z0-9-], e.g. "BTC-PERP" or "7203-T-PERP"',
        )
    pd, sd = m.get_int("price_decimals", 0, 6), m.get_int("size_decimals", 0, 6)
    if pd + sd > COLLATERAL_DECIMALS:
        raise GenesisError(
            m.at("size_decimals"),
            f"price_decimals + size_decimals = {pd + sd} exceeds "
            f"{COLLATERAL_DECIMALS} (notional must be whole micro-USD)",
        )
    on_price, on_size = f"price_decimals is {pd}", f"size_decimals is {sd}"
    tick = m.get_decimal("tick_size", pd, on_price, low=1)
    lot = m.get_decimal("lot_size", sd, on_size, low=1)
    min_size = m.get_decimal("min_size", sd, on_size, low=1)
    if min_size % lot:
        raise GenesisError(
            m.at("min_size"),
            f"{json.dumps(m.value['min_size'])} is not a multiple of lot_size "
            f"{json.dumps(m.value['lot_size'])}",
        )
    initial = m.get_fraction("initial_margin_fraction", low=1)
    maintenance = m.get_fraction("maintenance_margin_fraction", low=1)
    if maintenance >= initial:
        raise GenesisError(m.at("maintenance_margin_fraction"), "must be below initial_margin_fraction")
    leverage = m.get_int("max_leverage", 1, MAX_LEVERAGE)
    if initial * leverage < PPM:
        raise GenesisError(
            m.at("initial_margin_fraction"),
            f"{json.dumps(m.value['initial_margin_fraction'])} is below 1/max_leverage = 1/{leverage}",
        )
    oracle = m.get_decimal("initial_oracle_price", pd, on_price, low=1)
    if oracle % tick:
        raise GenesisError(
            m.at("initial_oracle_price"),
            f"{json.dumps(m.value['initial_oracle_price'])} is not on "
            f"the tick grid of {json.dumps(m.value['tick_size'])}",
        )
    return MarketSpec(
        market_id=index,
        symbol=symbol,
        price_decimals=pd,
        size_decimals=sd,
        tick_size=tick,
        lot_size=lot,
        min_size=min_size,
        initial_margin_ppm=initial,
        maintenance_margin_ppm=maintenance,
        max_leverage=leverage,
        maker_fee_ppm=m.get_fraction("maker_fee", high=MAX_FEE_PPM),
        taker_fee_ppm=m.get_fraction("taker_fee", high=MAX_FEE_PPM),
        funding_interval_ms=m.get_int(
            "funding_interval_ms", MIN_FUNDING_INTERVAL_MS, MAX_FUNDING_INTERVAL_MS
        ),
        funding_cap_ppm=m.get_fraction("funding_cap"),
        interest_rate_ppm=m.get_fraction("interest_rate", high=MAX_INTEREST_PPM),
        price_band_ppm=m.get_fraction("price_band", low=1, high=PPM - 1),
        initial_oracle_price=oracle,
        halted=m.get_bool("halted", default=False),
    )


def _parse_validator(value: object, index: int) -> ValidatorSpec:
    v = _Obj(value, f"validators[{index}]", _VALIDATOR_REQUIRED, _VALIDATOR_OPTIONAL)
    hex_key = v.get_str("public_key")
    if _HEX_KEY_RE.fullmatch(hex_key) is None:
        raise GenesisError(v.at("public_key"), "must be 64 hex digits (a 32-byte ed25519 public key)")
    public_key = bytes.fromhex(hex_key)
    if not is_valid_public_key(public_key):
        raise GenesisError(
            v.at("public_key"), "is not a valid ed25519 public key (small-order or off the curve)"
        )
    name = v.get_str("name", default="")
    if len(name) > MAX_NAME_LEN or not name.isprintable():
        raise GenesisError(v.at("name"), f"must be at most {MAX_NAME_LEN} printable characters")
    return ValidatorSpec(public_key=public_key, power=v.get_int("power", 1, MAX_TOTAL_POWER), name=name)


def _parse_account(value: object, index: int) -> tuple[bytes, int]:
    a = _Obj(value, f"accounts[{index}]", _ACCOUNT_REQUIRED)
    try:
        address = parse_address(a.get_str("address"))
    except ValueError as exc:
        raise GenesisError(a.at("address"), str(exc)) from None
    return address, a.get_usd("balance")


def _first_duplicate(keys: list[object]) -> tuple[int, int] | None:
    first_seen: dict[object, int] = {}
    for index, key in enumerate(keys):
        if key in first_seen:
            return first_seen[key], index
        first_seen[key] = index
    return None


def _parse_lists(
    top: _Obj,
) -> tuple[tuple[ValidatorSpec, ...], tuple[MarketSpec, ...], tuple[tuple[bytes, int], ...]]:
    validators = tuple(_parse_validator(v, i) for i, v in enumerate(top.get_list("validators")))
    if not validators:
        raise GenesisError("validators", "at least one validator is required")
    if (dup := _first_duplicate([v.public_key for v in validators])) is not None:
        raise GenesisError(f"validators[{dup[1]}].public_key", f"duplicates validators[{dup[0]}].public_key")
    if sum(v.power for v in validators) > MAX_TOTAL_POWER:
        raise GenesisError("validators", f"total power exceeds {MAX_TOTAL_POWER}")
    markets = tuple(_parse_market(m, i) for i, m in enumerate(top.get_list("markets")))
    if not markets:
        raise GenesisError("markets", "at least one market is required")
    if (dup := _first_duplicate([m.symbol for m in markets])) is not None:
        raise GenesisError(
            f"markets[{dup[1]}].symbol",
            f"{json.dumps(markets[dup[1]].symbol)} duplicates markets[{dup[0]}].symbol",
        )
    accounts = tuple(_parse_account(a, i) for i, a in enumerate(top.get_list("accounts")))
    if (dup := _first_duplicate([a for a, _ in accounts])) is not None:
        raise GenesisError(f"accounts[{dup[1]}].address", f"duplicates accounts[{dup[0]}].address")
    if sum(balance for _, balance in accounts) > MAX_INT:
        raise GenesisError("accounts", "total balance exceeds 2^63-1 micro-USD")
    return validators, markets, accounts


def parse_genesis(obj: dict[str, object]) -> ChainConfig:
    """Validate a decoded genesis JSON object and convert it to a ChainConfig."""
    top = _Obj(obj, _ROOT, _TOP_REQUIRED, _TOP_OPTIONAL)
    chain_id = top.get_str("chain_id")
    if not is_valid_chain_id(chain_id):
        raise GenesisError("chain_id", f"{json.dumps(chain_id)} must be 1..64 characters of [A-Za-z0-9._-]")
    genesis_time_ms = parse_genesis_time(top.get_str("genesis_time"))
    validators, markets, accounts = _parse_lists(top)
    faucet_enabled = top.get_bool("faucet_enabled", default=bool(_default_int("faucet_enabled")))
    faucet_max = top.get_usd("faucet_max_per_account", default=_default_int("faucet_max_per_account"))
    if faucet_enabled and faucet_max <= 0:
        raise GenesisError("faucet_max_per_account", "must be positive when faucet_enabled is true")

    def opt_int(key: str, low: int) -> int:
        return top.get_int(key, low, default=_default_int(key))

    return ChainConfig(
        chain_id=chain_id,
        genesis_time_ms=genesis_time_ms,
        validators=validators,
        markets=markets,
        accounts=accounts,
        faucet_enabled=faucet_enabled,
        faucet_max_per_account=faucet_max,
        max_open_orders_per_account=opt_int("max_open_orders_per_account", 1),
        nonce_window_past_ms=opt_int("nonce_window_past_ms", 1),
        nonce_window_future_ms=opt_int("nonce_window_future_ms", 1),
        oracle_stale_ms=opt_int("oracle_stale_ms", 1),
        insurance_fund=top.get_usd("insurance_fund", default=_default_int("insurance_fund")),
        liquidation_fee_ppm=top.get_fraction(
            "liquidation_fee", high=MAX_LIQUIDATION_FEE_PPM, default=_default_int("liquidation_fee_ppm")
        ),
        max_block_txs=opt_int("max_block_txs", 1),
        max_block_bytes=opt_int("max_block_bytes", MIN_BLOCK_BYTES),
    )


def load_genesis(path: str | os.PathLike[str]) -> ChainConfig:
    """Read, validate and convert a genesis JSON file."""
    raw = Path(path).read_bytes()
    return parse_genesis(loads_genesis_json(raw))


def loads_genesis_json(raw: bytes | str) -> dict[str, object]:
    """Decode genesis JSON text, refusing NaN/Infinity; duplicate keys are reported by parse_genesis."""

    def no_constants(name: str) -> object:
        raise GenesisError(_ROOT, f"{name} is not valid in a genesis file")

    try:
        doc = json.loads(raw, object_pairs_hook=_pairs_hook, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise GenesisError(
            _ROOT, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise GenesisError(_ROOT, f"not UTF-8 text: {exc}") from None
    if not isinstance(doc, dict):
        raise GenesisError(_ROOT, f"expected an object, got {_describe(doc)}")
    return doc


def _market_to_dict(m: MarketSpec) -> dict[str, object]:
    def frac(ppm: int) -> str:
        return from_units(ppm, 6, trim=True)

    return {
        "symbol": m.symbol,
        "price_decimals": m.price_decimals,
        "size_decimals": m.size_decimals,
        "tick_size": from_units(m.tick_size, m.price_decimals),
        "lot_size": from_units(m.lot_size, m.size_decimals),
        "min_size": from_units(m.min_size, m.size_decimals),
        "initial_margin_fraction": frac(m.initial_margin_ppm),
        "maintenance_margin_fraction": frac(m.maintenance_margin_ppm),
        "max_leverage": m.max_leverage,
        "maker_fee": frac(m.maker_fee_ppm),
        "taker_fee": frac(m.taker_fee_ppm),
        "funding_interval_ms": m.funding_interval_ms,
        "funding_cap": frac(m.funding_cap_ppm),
        "interest_rate": frac(m.interest_rate_ppm),
        "price_band": frac(m.price_band_ppm),
        "initial_oracle_price": from_units(m.initial_oracle_price, m.price_decimals),
        "halted": m.halted,
    }


def genesis_to_dict(config: ChainConfig) -> dict[str, object]:
    """The canonical human JSON object of ``config`` (every field written, decimals trimmed)."""

    def usd_text(micro: int) -> str:
        return from_units(micro, COLLATERAL_DECIMALS, trim=True)

    return {
        "chain_id": config.chain_id,
        "genesis_time": format_genesis_time(config.genesis_time_ms),
        "faucet_enabled": config.faucet_enabled,
        "faucet_max_per_account": usd_text(config.faucet_max_per_account),
        "max_open_orders_per_account": config.max_open_orders_per_account,
        "nonce_window_past_ms": config.nonce_window_past_ms,
        "nonce_window_future_ms": config.nonce_window_future_ms,
        "oracle_stale_ms": config.oracle_stale_ms,
        "insurance_fund": usd_text(config.insurance_fund),
        "liquidation_fee": from_units(config.liquidation_fee_ppm, 6, trim=True),
        "max_block_txs": config.max_block_txs,
        "max_block_bytes": config.max_block_bytes,
        "validators": [
            {"name": v.name, "public_key": v.public_key.hex(), "power": v.power} for v in config.validators
        ],
        "markets": [_market_to_dict(m) for m in config.markets],
        "accounts": [{"address": format_address(a), "balance": usd_text(b)} for a, b in config.accounts],
    }


def genesis_to_json(config: ChainConfig) -> str:
    """``genesis_to_dict`` as indented JSON text with a trailing newline."""
    return json.dumps(genesis_to_dict(config), indent=2) + "\n"


def write_genesis(path: str | os.PathLike[str], config: ChainConfig) -> None:
    """Write ``config`` as genesis JSON atomically (temp file, fsync, rename)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(genesis_to_json(config))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
