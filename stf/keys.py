"""Keys of hashed state entries: a one-byte kind prefix then fixed-width fields."""

from __future__ import annotations

from typing import Final

# entry key prefixes (one byte each)
K_GLOBAL: Final = b"G"
K_MARKET: Final = b"M"
K_ORACLE: Final = b"V"
K_ACCOUNT: Final = b"A"
K_NONCE: Final = b"N"
K_ORDER: Final = b"O"
K_POSITION: Final = b"P"
# the same prefixes as integers (key[0]): dispatch on an entry's kind without slicing its key
KIND_GLOBAL: Final = 0x47  # G
KIND_MARKET: Final = 0x4D  # M
KIND_ORACLE: Final = 0x56  # V
KIND_ACCOUNT: Final = 0x41  # A
KIND_NONCE: Final = 0x4E  # N
KIND_ORDER: Final = 0x4F  # O
KIND_POSITION: Final = 0x50  # P


def order_key(order_id: int) -> bytes:
    return K_ORDER + order_id.to_bytes(8, "big")


def account_key(address: bytes) -> bytes:
    return K_ACCOUNT + address


def nonce_key(address: bytes, nonce: int) -> bytes:
    return K_NONCE + address + nonce.to_bytes(8, "big")


def position_key(address: bytes, market_id: int) -> bytes:
    return K_POSITION + address + market_id.to_bytes(2, "big")


def market_key(market_id: int) -> bytes:
    return K_MARKET + market_id.to_bytes(2, "big")


def oracle_key(market_id: int, validator: bytes) -> bytes:
    return K_ORACLE + market_id.to_bytes(2, "big") + validator
