"""Chain configuration as the STF sees it: integers only, already validated.

`genesis/` turns the human JSON (decimal strings) into these objects; the STF
never parses text. Units:
- prices: integer *price units* of a market, 10^-price_decimals USD;
- sizes: integer *size units*, 10^-size_decimals of the base asset;
- collateral: integer micro-USD (6 decimals);
- fractions and rates: parts per million (ppm);
- times: milliseconds.

The notional of `size` at `price` in micro-USD is exactly
`price * size * notional_scale` with `notional_scale = 10^(6 - pd - sd)`;
genesis validation guarantees `pd + sd <= 6` so this is always an integer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

PPM: Final = 1_000_000
COLLATERAL_DECIMALS: Final = 6


_ADDRESSES: Final[dict[bytes, bytes]] = {}  # memo of address_of (a pure function); dropped when full
_ADDRESSES_MAX: Final = 1 << 16


def address_of(public_key: bytes) -> bytes:
    """The 20-byte account address of an ed25519 public key (DESIGN.md)."""
    address = _ADDRESSES.get(public_key)
    if address is None:
        if len(_ADDRESSES) >= _ADDRESSES_MAX:
            _ADDRESSES.clear()
        address = _ADDRESSES[public_key] = hashlib.sha256(public_key).digest()[:20]
    return address


@dataclass(frozen=True, slots=True)
class MarketSpec:
    market_id: int  # index in genesis order; stable for the chain's life
    symbol: str
    price_decimals: int
    size_decimals: int
    tick_size: int  # price units
    lot_size: int  # size units
    min_size: int  # size units
    initial_margin_ppm: int
    maintenance_margin_ppm: int
    max_leverage: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    funding_interval_ms: int
    funding_cap_ppm: int  # max |funding rate| per interval
    interest_rate_ppm: int  # interest component per interval
    price_band_ppm: int  # orders must be within oracle * (1 +- band)
    initial_oracle_price: int  # price units
    halted: bool = False

    @property
    def notional_scale(self) -> int:
        return 10 ** (COLLATERAL_DECIMALS - self.price_decimals - self.size_decimals)


@dataclass(frozen=True, slots=True)
class ValidatorSpec:
    public_key: bytes  # 32 bytes ed25519
    power: int
    name: str = ""

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)


@dataclass(frozen=True, slots=True)
class ChainConfig:
    chain_id: str
    genesis_time_ms: int
    validators: tuple[ValidatorSpec, ...]
    markets: tuple[MarketSpec, ...]
    accounts: tuple[tuple[bytes, int], ...]  # (address, micro-USD collateral)
    faucet_enabled: bool = False
    faucet_max_per_account: int = 0  # micro-USD, lifetime cap per account
    max_open_orders_per_account: int = 1000
    nonce_window_past_ms: int = 2 * 24 * 3600 * 1000
    nonce_window_future_ms: int = 24 * 3600 * 1000
    oracle_stale_ms: int = 60_000
    insurance_fund: int = 0  # micro-USD at genesis
    liquidation_fee_ppm: int = 5_000
    max_block_txs: int = 5_000
    max_block_bytes: int = 4 * 1024 * 1024
    market_by_symbol: dict[str, MarketSpec] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # a fresh dict per instance (dataclasses.replace must not share or clear another's index)
        object.__setattr__(self, "market_by_symbol", {spec.symbol: spec for spec in self.markets})

    def is_validator(self, address: bytes) -> bool:
        return any(v.address == address for v in self.validators)
