"""Canonical state snapshots: encode, decode, verify.

Theory of operation
- A snapshot is the list of every state entry (stf/codec.py) sorted by key,
  framed as: magic "ITASNAP1", u16 chain-id length, chain id, u64 height,
  32-byte app hash, u64 entry count, then per entry u16 key length, key,
  u32 value length, value. Same state -> same bytes, on every machine.
- Decoding refuses anything non-canonical (bad magic, wrong chain, keys out of
  order or repeated, trailing bytes, unknown kinds, references to unknown
  accounts or markets), rebuilds the state and its indexes (books in
  price-time order: orders re-rest by ascending order id; liquidation
  triggers from every account's buffer at the loaded marks), recomputes the
  app hash from scratch and refuses the snapshot unless it equals the one
  recorded. A loaded snapshot is therefore as trustworthy as its app hash.
- Snapshots are taken between blocks (no touched entries pending).
"""

from __future__ import annotations

import struct
from typing import Final

from stf.apphash import LtHash
from stf.codec import (
    decode_account,
    decode_global,
    decode_market,
    decode_order,
    decode_position,
    decode_u64x2,
    iter_entries,
)
from stf.config import ChainConfig
from stf.keys import K_ACCOUNT, K_GLOBAL, K_MARKET, K_NONCE, K_ORACLE, K_ORDER, K_POSITION
from stf.matching import rest_order
from stf.state import Account, Position, State
from stf.triggers import rebuild_index

MAGIC: Final = b"ITASNAP1"
_HEADER: Final = struct.Struct(">Q32sQ")


class SnapshotError(ValueError):
    """The snapshot is malformed, for another chain, or its hash does not verify."""


def encode_snapshot(state: State) -> bytes:
    if state.dirty:
        raise SnapshotError("cannot snapshot in the middle of a block")
    chain = state.config.chain_id.encode()
    entries = sorted(iter_entries(state))
    parts = [
        MAGIC,
        len(chain).to_bytes(2, "big"),
        chain,
        _HEADER.pack(state.height, state.app_hash, len(entries)),
    ]
    for key, value in entries:
        parts.append(len(key).to_bytes(2, "big"))
        parts.append(key)
        parts.append(len(value).to_bytes(4, "big"))
        parts.append(value)
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise SnapshotError(f"snapshot truncated at byte {self.pos} (needed {n} more)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")


def read_entries(config: ChainConfig, data: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    reader = _Reader(data)
    if reader.take(len(MAGIC)) != MAGIC:
        raise SnapshotError("not an ita snapshot (bad magic)")
    chain = reader.take(reader.uint(2)).decode("utf-8", "replace")
    if chain != config.chain_id:
        raise SnapshotError(f"snapshot is for chain {chain!r}, expected {config.chain_id!r}")
    height, app_hash, count = _HEADER.unpack(reader.take(_HEADER.size))
    entries: list[tuple[bytes, bytes]] = []
    previous = b""
    for _ in range(count):
        key = reader.take(reader.uint(2))
        value = reader.take(reader.uint(4))
        if entries and key <= previous:
            raise SnapshotError(f"snapshot keys out of order at entry {len(entries)}")
        entries.append((key, value))
        previous = key
    if reader.pos != len(data):
        raise SnapshotError(f"{len(data) - reader.pos} trailing bytes after the last entry")
    return height, app_hash, entries


def decode_snapshot(config: ChainConfig, data: bytes) -> State:
    height, app_hash, entries = read_entries(config, data)
    state = State(config)
    lthash = LtHash()
    orders = []
    try:
        for key, value in entries:
            lthash.add(key, value)
            kind = key[:1]
            if kind == K_GLOBAL:
                state.height, state.time_ms, state.next_order_id, state.fee_pool = decode_global(value)
            elif kind == K_MARKET:
                decode_market(state.markets[int.from_bytes(key[1:3], "big")], value)
            elif kind == K_ORACLE:
                market = state.markets[int.from_bytes(key[1:3], "big")]
                market.oracle_subs[key[3:23]] = decode_u64x2(value)
            elif kind == K_ACCOUNT:
                account = state.accounts[key[1:21]] = Account(key[1:21])
                account.collateral, account.faucet_used = decode_account(value)
            elif kind == K_NONCE:
                state.accounts[key[1:21]].nonces.append(int.from_bytes(key[21:29], "big"))
            elif kind == K_POSITION:
                market_id = int.from_bytes(key[21:23], "big")
                state.accounts[key[1:21]].positions[market_id] = Position(*decode_position(value))
                state.markets[market_id].holders[key[1:21]] = None
            elif kind == K_ORDER:
                orders.append(decode_order(int.from_bytes(key[1:9], "big"), value))
            else:
                raise SnapshotError(f"unknown entry kind {kind!r}")
        for order in orders:  # ascending ids: time priority is restored
            rest_order(state, state.accounts[order.account], state.markets[order.market_id], order)
    except (KeyError, IndexError, struct.error, UnicodeDecodeError) as exc:
        raise SnapshotError(f"snapshot entry refers to something missing or is malformed: {exc!r}") from exc
    for market in state.markets:
        market.book.touched = {}
    rebuild_index(state)
    if state.height != height:
        raise SnapshotError(f"header height {height} disagrees with state height {state.height}")
    state.lthash = lthash
    state.app_hash = lthash.digest()
    if state.app_hash != app_hash:
        raise SnapshotError(
            f"snapshot hash mismatch: recorded {app_hash.hex()}, recomputed {state.app_hash.hex()}"
        )
    return state


def full_hash(state: State) -> bytes:
    """The app hash recomputed from every entry (slow; tests and verification)."""
    lthash = LtHash()
    for key, value in iter_entries(state):
        lthash.add(key, value)
    return lthash.digest()
