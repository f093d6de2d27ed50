"""Canonical byte encoding of state entries (hashed and snapshotted).

Every entry kind has a fixed layout, big-endian, money as signed 128-bit so
no realistic balance or PnL can overflow the encoding. `encode_entry` reads
the *live* state for a key and returns None when the entry does not exist;
`iter_entries` enumerates every entry of a state (for full hashes and
snapshots); `decode_*` are the inverses used when a snapshot is loaded.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from stf.keys import (
    K_ACCOUNT,
    K_GLOBAL,
    K_MARKET,
    K_NONCE,
    K_ORACLE,
    K_ORDER,
    K_POSITION,
    KIND_ACCOUNT,
    KIND_GLOBAL,
    KIND_MARKET,
    KIND_NONCE,
    KIND_ORACLE,
    KIND_ORDER,
    KIND_POSITION,
)

if TYPE_CHECKING:
    from stf.book import Order
    from stf.state import Account, MarketState, Position, State

_ORDER: Final = struct.Struct(">20sH?QQQB?")
_U64X2: Final = struct.Struct(">QQ")
_MARKET: Final = struct.Struct(">QQ?QqQQ")


def i128(value: int) -> bytes:
    return value.to_bytes(16, "big", signed=True)


def from_i128(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def encode_order(order: Order) -> bytes:
    cloid = order.client_order_id.encode()
    return (
        _ORDER.pack(
            order.account,
            order.market_id,
            order.is_buy,
            order.price,
            order.size,
            order.orig_size,
            order.tif,
            order.reduce_only,
        )
        + cloid
    )


def is_kept(nonces: list[int], nonce: int) -> bool:
    """`nonce in nonces` for an ascending list, by bisection."""
    if nonces and nonces[-1] == nonce:  # the account's latest nonce: what a block usually adds
        return True
    i = bisect_left(nonces, nonce)
    return i < len(nonces) and nonces[i] == nonce


def encode_account(account: Account) -> bytes:
    return i128(account.collateral) + account.faucet_used.to_bytes(8, "big")


def encode_position(position: Position) -> bytes:
    return i128(position.size) + i128(position.open_notional) + i128(position.funding_index)


def encode_market(market: MarketState) -> bytes:
    return (
        _MARKET.pack(
            market.oracle_price,
            market.mark_price,
            market.halted,
            market.premium_samples,
            market.funding_rate,
            market.next_funding_ms,
            0,
        )
        + i128(market.funding_index)
        + i128(market.premium_sum)
        + i128(market.funding_pool)
    )


def encode_global(state: State) -> bytes:
    return (
        _U64X2.pack(state.height, state.time_ms)
        + state.next_order_id.to_bytes(8, "big")
        + i128(state.fee_pool)
    )


def encode_entry(state: State, key: bytes) -> bytes | None:
    kind = key[0]
    if kind == KIND_ORDER:
        order = state.orders.get(int.from_bytes(key[1:9], "big"))
        return encode_order(order) if order is not None else None
    if kind == KIND_ACCOUNT:
        account = state.accounts.get(key[1:21])
        return encode_account(account) if account is not None else None
    if kind == KIND_NONCE:
        account = state.accounts.get(key[1:21])
        kept = account is not None and is_kept(account.nonces, int.from_bytes(key[21:29], "big"))
        return b"" if kept else None
    if kind == KIND_POSITION:
        account = state.accounts.get(key[1:21])
        position = account.positions.get(int.from_bytes(key[21:23], "big")) if account else None
        return encode_position(position) if position is not None else None
    if kind == KIND_MARKET:
        return encode_market(state.markets[int.from_bytes(key[1:3], "big")])
    if kind == KIND_ORACLE:
        market = state.markets[int.from_bytes(key[1:3], "big")]
        sub = market.oracle_subs.get(key[3:23])
        return _U64X2.pack(*sub) if sub is not None else None
    if kind == KIND_GLOBAL:
        return encode_global(state)
    raise ValueError(f"unknown state entry kind {key[:1]!r}")


def iter_entries(state: State) -> Iterator[tuple[bytes, bytes]]:
    """Every entry of the state, in a deterministic order (not necessarily sorted)."""
    yield K_GLOBAL, encode_global(state)
    for market in state.markets:
        mid = market.spec.market_id.to_bytes(2, "big")
        yield K_MARKET + mid, encode_market(market)
        for validator, sub in market.oracle_subs.items():
            yield K_ORACLE + mid + validator, _U64X2.pack(*sub)
    for address, account in state.accounts.items():
        yield K_ACCOUNT + address, encode_account(account)
        for nonce in account.nonces:
            yield K_NONCE + address + nonce.to_bytes(8, "big"), b""
        for market_id, position in account.positions.items():
            yield K_POSITION + address + market_id.to_bytes(2, "big"), encode_position(position)
    for order_id, order in state.orders.items():
        yield K_ORDER + order_id.to_bytes(8, "big"), encode_order(order)


def decode_order(order_id: int, value: bytes) -> Order:
    from stf.book import Order

    account, market_id, is_buy, price, size, orig, tif, reduce_only = _ORDER.unpack_from(value)
    cloid = value[_ORDER.size :].decode()
    return Order(order_id, account, market_id, is_buy, price, size, orig, tif, reduce_only, cloid)


def decode_global(value: bytes) -> tuple[int, int, int, int]:
    """(height, time_ms, next_order_id, fee_pool)"""
    height, time_ms = _U64X2.unpack_from(value)
    next_id = int.from_bytes(value[16:24], "big")
    return height, time_ms, next_id, from_i128(value[24:40])


def decode_market(market: MarketState, value: bytes) -> None:
    (
        market.oracle_price,
        market.mark_price,
        market.halted,
        market.premium_samples,
        market.funding_rate,
        market.next_funding_ms,
        _reserved,
    ) = _MARKET.unpack_from(value)
    rest = value[_MARKET.size :]
    market.funding_index = from_i128(rest[:16])
    market.premium_sum = from_i128(rest[16:32])
    market.funding_pool = from_i128(rest[32:48])


def decode_account(value: bytes) -> tuple[int, int]:
    return from_i128(value[:16]), int.from_bytes(value[16:24], "big")


def decode_position(value: bytes) -> tuple[int, int, int]:
    return from_i128(value[:16]), from_i128(value[16:32]), from_i128(value[32:48])


def decode_u64x2(value: bytes) -> tuple[int, int]:
    a, b = _U64X2.unpack(value)
    return a, b
