"""The devnet genesis: three markets, deterministic (public!) validator and account keys.

``genesis/devnet.json`` is exactly ``genesis_to_json(devnet_config())``;
regenerate it with ``python -m genesis.devnet > genesis/devnet.json`` (a test
checks they agree). The keys come from ``sdk.keys.devnet_validator_key`` and
``devnet_account_key``, whose seeds are public: this genesis is for local
development only.
"""

from __future__ import annotations

import sys

from genesis.schema import genesis_to_json, parse_genesis
from sdk.keys import devnet_account_key, devnet_validator_key
from stf.config import ChainConfig

__all__ = ["DEVNET_CHAIN_ID", "DEVNET_MARKETS", "devnet_config", "devnet_genesis_dict"]

DEVNET_CHAIN_ID = "ita-devnet-1"
DEVNET_GENESIS_TIME = "2025-01-01T00:00:00Z"
DEVNET_VALIDATOR_POWER = 10
DEVNET_ACCOUNT_BALANCE = "1000000.00"

_HOUR_MS = 3_600_000

DEVNET_MARKETS: tuple[dict[str, object], ...] = (
    {
        "symbol": "BTC-PERP",
        "price_decimals": 1,
        "size_decimals": 4,
        "tick_size": "0.1",
        "lot_size": "0.0001",
        "min_size": "0.0010",
        "initial_margin_fraction": "0.05",
        "maintenance_margin_fraction": "0.03",
        "max_leverage": 20,
        "maker_fee": "0.0002",
        "taker_fee": "0.0005",
        "funding_interval_ms": _HOUR_MS,
        "funding_cap": "0.04",
        "interest_rate": "0.00001",
        "price_band": "0.1",
        "initial_oracle_price": "65000.0",
    },
    {
        "symbol": "ETH-PERP",
        "price_decimals": 2,
        "size_decimals": 3,
        "tick_size": "0.01",
        "lot_size": "0.001",
        "min_size": "0.010",
        "initial_margin_fraction": "0.05",
        "maintenance_margin_fraction": "0.03",
        "max_leverage": 20,
        "maker_fee": "0.0002",
        "taker_fee": "0.0005",
        "funding_interval_ms": _HOUR_MS,
        "funding_cap": "0.04",
        "interest_rate": "0.00001",
        "price_band": "0.1",
        "initial_oracle_price": "3500.00",
    },
    {
        # Toyota Motor (TSE: 7203), quoted in USD per share.
        "symbol": "7203-T-PERP",
        "price_decimals": 3,
        "size_decimals": 1,
        "tick_size": "0.001",
        "lot_size": "0.1",
        "min_size": "1.0",
        "initial_margin_fraction": "0.1",
        "maintenance_margin_fraction": "0.05",
        "max_leverage": 10,
        "maker_fee": "0.0001",
        "taker_fee": "0.0004",
        "funding_interval_ms": _HOUR_MS,
        "funding_cap": "0.01",
        "interest_rate": "0.00001",
        "price_band": "0.05",
        "initial_oracle_price": "18.500",
    },
)


def devnet_genesis_dict(validators: int = 4, accounts: int = 50) -> dict[str, object]:
    """The devnet genesis JSON object with ``validators`` validators and ``accounts`` funded accounts."""
    if validators < 1 or accounts < 0:
        raise ValueError("need at least one validator and a non-negative number of accounts")
    return {
        "chain_id": DEVNET_CHAIN_ID,
        "genesis_time": DEVNET_GENESIS_TIME,
        "faucet_enabled": True,
        "faucet_max_per_account": "100000",
        "insurance_fund": "1000000",
        "validators": [
            {
                "name": f"devnet-validator-{i}",
                "public_key": devnet_validator_key(i).public_key.hex(),
                "power": DEVNET_VALIDATOR_POWER,
            }
            for i in range(validators)
        ],
        "markets": [dict(m) for m in DEVNET_MARKETS],
        "accounts": [
            {"address": devnet_account_key(i).address_hex, "balance": DEVNET_ACCOUNT_BALANCE}
            for i in range(accounts)
        ],
    }


def devnet_config(validators: int = 4, accounts: int = 50) -> ChainConfig:
    """The validated devnet ChainConfig (see ``devnet_genesis_dict``)."""
    return parse_genesis(devnet_genesis_dict(validators, accounts))


if __name__ == "__main__":
    sys.stdout.write(genesis_to_json(devnet_config()))
