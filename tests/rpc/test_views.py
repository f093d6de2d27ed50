"""Decimal formatting and the book checksum."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from rpc.views import book_checksum, checksum, compute_entry_price, fmt, formatter, levels
from sdk.units import from_units
from stf.book import Book, Order
from tests.stf_support import make_market


@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=0, max_value=12))
def test_fmt_is_from_units(value: int, decimals: int) -> None:
    assert fmt(value, decimals) == from_units(value, decimals)


@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=0, max_value=12))
def test_formatter_is_fmt(value: int, decimals: int) -> None:
    assert formatter(decimals)[value] == fmt(value, decimals) == from_units(value, decimals)


@given(
    st.lists(st.tuples(st.integers(1, 60), st.integers(1, 10**6)), max_size=40),
    st.lists(st.tuples(st.integers(61, 120), st.integers(1, 10**6)), max_size=40),
)
def test_book_checksum_is_checksum_of_levels(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]]
) -> None:
    spec = make_market()
    book = Book(0)
    for i, (price, size) in enumerate(bids + asks):
        book.add(Order(i + 1, b"\x01" * 20, 0, i < len(bids), price * 5, size, size, 1, False, ""))
    expected = checksum(levels(book, True, None, spec), levels(book, False, None, spec))
    assert book_checksum(book, spec) == expected


def test_checksum_interleaves_and_skips_missing_sides() -> None:
    bids = [["100.0", "1.5"], ["99.5", "2.0"], ["99.0", "0.1"]]
    asks = [["100.5", "3.0"]]
    expected = "100.0:1.5:100.5:3.0:99.5:2.0:99.0:0.1"
    assert checksum(bids, asks) == zlib.crc32(expected.encode()) & 0xFFFFFFFF
    assert checksum([], asks) == zlib.crc32(b"100.5:3.0")
    assert checksum([], []) == 0


def test_checksum_uses_top_25_levels_only() -> None:
    bids = [[f"{1000 - i}.0", "1.0"] for i in range(30)]
    asks = [[f"{2000 + i}.0", "2.0"] for i in range(40)]
    parts = []
    for i in range(25):
        parts += bids[i] + asks[i]
    assert checksum(bids, asks) == zlib.crc32(":".join(parts).encode())
    assert checksum(bids, asks) == checksum(bids[:25], asks[:25])


def test_entry_price_rounds_half_up() -> None:
    spec = make_market()  # pd 1, sd 4: notional scale 10
    assert compute_entry_price(open_notional=15 * 10, size=10, spec=spec) == 2  # 1.5 -> 2
    assert compute_entry_price(open_notional=14 * 10, size=10, spec=spec) == 1
    assert compute_entry_price(open_notional=600_000 * 10 * 3, size=-3, spec=spec) == 600_000
