"""Additive multiset hash over the state's entries (DESIGN.md principle 10).

Theory of operation
- Every state entry is a (key, value) pair of canonical bytes. Its element is
  the 2048-bit integer shake_256(len(key) || key || value), little-endian.
- The accumulator is the sum of all elements mod 2^2048; the app hash is
  SHA-256 of the accumulator's 256 bytes. Addition commutes, so the result
  does not depend on the order entries were added, and changing one entry
  costs one subtraction (old value) and one addition (new value): O(changes).
- A snapshot load recomputes the sum from scratch and must land on the same
  hash, which is how a restored state is verified.
"""

from __future__ import annotations

import hashlib
from typing import Final

ELEMENT_BYTES: Final = 256
_MASK: Final = (1 << (8 * ELEMENT_BYTES)) - 1
_SHAKE: Final = hashlib.shake_256()  # copied per element: ~0.5 us cheaper than looking the XOF up by name


def element(key: bytes, value: bytes) -> int:
    return prefixed_element(prefix_key(key), value)


def prefix_key(key: bytes) -> bytes:
    """len(key) || key: the part of an element's input shared by every value of one key."""
    return len(key).to_bytes(2, "big") + key


def prefixed_element(prefixed_key: bytes, value: bytes) -> int:
    """`element(key, value)` given `prefix_key(key)`."""
    h = _SHAKE.copy()
    h.update(prefixed_key + value)
    return int.from_bytes(h.digest(ELEMENT_BYTES), "little")


class LtHash:
    __slots__ = ("acc",)

    def __init__(self, acc: int = 0) -> None:
        self.acc = acc

    def add(self, key: bytes, value: bytes) -> None:
        self.acc = (self.acc + element(key, value)) & _MASK

    def remove(self, key: bytes, value: bytes) -> None:
        self.acc = (self.acc - element(key, value)) & _MASK

    def add_sum(self, added: int, removed: int) -> None:
        """Add the sum of some elements and remove the sum of others (sums of any size)."""
        self.acc = (self.acc + added - removed) & _MASK

    def digest(self) -> bytes:
        return hashlib.sha256(self.acc.to_bytes(ELEMENT_BYTES, "little")).digest()

    def copy(self) -> LtHash:
        return LtHash(self.acc)
