"""Canonical byte encoding primitives (big-endian fixed-width integers, length-prefixed bytes).

Every encoding in consensus/ is built from these, and decoding is strict: a decoder must
consume its input exactly, so one value has exactly one encoding (needed for sign-bytes,
equivocation detection and WAL records).
"""

from __future__ import annotations

import struct
from typing import Final

MAX_U8: Final = 0xFF
MAX_U32: Final = 0xFFFF_FFFF
MAX_U64: Final = 0xFFFF_FFFF_FFFF_FFFF

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class DecodeError(ValueError):
    """Raised for malformed, truncated or non-canonical encodings."""


class Writer:
    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        if not 0 <= value <= MAX_U8:
            raise ValueError(f"u8 out of range: {value}")
        self._parts.append(bytes((value,)))
        return self

    def u32(self, value: int) -> Writer:
        if not 0 <= value <= MAX_U32:
            raise ValueError(f"u32 out of range: {value}")
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        if not 0 <= value <= MAX_U64:
            raise ValueError(f"u64 out of range: {value}")
        self._parts.append(_U64.pack(value))
        return self

    def raw(self, value: bytes) -> Writer:
        self._parts.append(value)
        return self

    def short_bytes(self, value: bytes) -> Writer:
        """Bytes with a one-byte length prefix (ids, keys, signatures, chain id)."""
        self.u8(len(value))
        self._parts.append(value)
        return self

    def long_bytes(self, value: bytes) -> Writer:
        """Bytes with a four-byte length prefix (blocks, nested records)."""
        self.u32(len(value))
        self._parts.append(value)
        return self

    def finish(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise DecodeError("truncated input")
        chunk = self._data[self._pos:end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def short_bytes(self) -> bytes:
        return self._take(self.u8())

    def long_bytes(self) -> bytes:
        return self._take(self.u32())

    def boolean(self) -> bool:
        value = self.u8()
        if value > 1:
            raise DecodeError(f"non-canonical boolean {value}")
        return value == 1

    def done(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError(f"{len(self._data) - self._pos} trailing bytes")
