"""Shared helpers for STF tests: a small chain config, keys, and a block runner."""

from __future__ import annotations

from collections.abc import Sequence

from sdk import tx as sdk_tx
from sdk.keys import Key
from stf.block import BlockHeader, BlockResult, apply_block, genesis_state, skip_signature_check
from stf.config import ChainConfig, MarketSpec, ValidatorSpec
from stf.margin import is_liquidatable
from stf.results import TxResult
from stf.state import INSURANCE_FUND, State

CHAIN_ID = "ita-test-1"
GENESIS_MS = 1_700_000_000_000
BLOCK_MS = 200
USD = 1_000_000


def make_market(market_id: int = 0, symbol: str = "BTC-PERP", **overrides: int) -> MarketSpec:
    fields: dict[str, object] = dict(
        market_id=market_id,
        symbol=symbol,
        price_decimals=1,
        size_decimals=4,
        tick_size=5,  # 0.5 USD
        lot_size=10,  # 0.001 BTC
        min_size=20,
        initial_margin_ppm=100_000,
        maintenance_margin_ppm=50_000,
        max_leverage=10,
        maker_fee_ppm=200,
        taker_fee_ppm=500,
        funding_interval_ms=3_600_000,
        funding_cap_ppm=5_000,
        interest_rate_ppm=10,
        price_band_ppm=100_000,  # 10 %
        initial_oracle_price=600_000,  # 60,000.0 USD
    )
    fields.update(overrides)
    return MarketSpec(**fields)  # type: ignore[arg-type]


def keys(n: int, prefix: bytes = b"acct") -> list[Key]:
    import hashlib

    return [Key.from_seed(hashlib.sha256(prefix + bytes([i])).digest()) for i in range(n)]


def make_config(
    funded: Sequence[Key],
    validators: Sequence[Key] = (),
    markets: Sequence[MarketSpec] | None = None,
    collateral: int = 1_000_000 * USD,
    **overrides: object,
) -> ChainConfig:
    fields: dict[str, object] = dict(
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
        validators=tuple(ValidatorSpec(v.public_key, 10) for v in validators),
        markets=tuple(markets) if markets is not None else (make_market(),),
        accounts=tuple((k.address, collateral) for k in funded),
        faucet_enabled=True,
        faucet_max_per_account=10_000 * USD,
        max_open_orders_per_account=50,
    )
    fields.update(overrides)
    return ChainConfig(**fields)  # type: ignore[arg-type]


class Chain:
    """A state plus a block clock and per-key nonces; signs every tx for real."""

    def __init__(self, config: ChainConfig, verify: bool = True) -> None:
        self.config = config
        self.state: State = genesis_state(config)
        self.nonce = GENESIS_MS
        self.verify = verify
        self.blocks: list[tuple[BlockHeader, list[bytes]]] = []

    def tx(
        self, key: Key, action: sdk_tx.Action, nonce: int | None = None, chain_id: str = CHAIN_ID
    ) -> bytes:
        if nonce is None:
            self.nonce += 1
            nonce = self.nonce
        return sdk_tx.sign_tx(key, chain_id, sdk_tx.tx_body(chain_id, nonce, action))

    def block(self, txs: Sequence[bytes]) -> BlockResult:
        header = BlockHeader(self.state.height + 1, self.state.time_ms + BLOCK_MS)
        self.blocks.append((header, list(txs)))
        if self.verify:
            return apply_block(self.state, header, txs)
        return apply_block(self.state, header, txs, skip_signature_check)

    def run(self, key: Key, action: sdk_tx.Action) -> TxResult:
        return self.block([self.tx(key, action)]).results[0]


def order(
    side: str, price: int, size: int, market: str = "BTC-PERP", **kw: object
) -> sdk_tx.tx_pb2.PlaceOrder:
    return sdk_tx.place_order(market, side, price=price, size=size, **kw)  # type: ignore[arg-type]


def reference_chain(config: ChainConfig) -> Chain:
    """A chain whose end-of-block liquidations use the brute-force scan (the reference)."""
    chain = Chain(config, verify=False)
    chain.state.reference_liquidations = True
    return chain


def liquidatable_accounts(state: State) -> list[bytes]:
    """Every non-fund account that is liquidatable right now, by brute force."""
    return [
        address
        for address, account in sorted(state.accounts.items())
        if address != INSURANCE_FUND and is_liquidatable(state, account)
    ]


def assert_same_block(fast: BlockResult, reference: BlockResult) -> None:
    """The indexed liquidation pass and the brute-force reference gave the same block."""
    assert [r.to_dict() for r in fast.results] == [r.to_dict() for r in reference.results]
    assert fast.events == reference.events
    assert fast.app_hash == reference.app_hash
