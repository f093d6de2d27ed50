"""sdk/units.py: exact decimal <-> integer conversion and every refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk.units import MAX_DECIMALS, MAX_TEXT_LEN, UnitsError, from_units, to_units


@pytest.mark.parametrize(
    ("text", "decimals", "expected"),
    [
        ("0", 0, 0),
        ("7", 0, 7),
        ("7.000", 0, 7),
        ("65000.5", 1, 650005),
        ("65000.5", 4, 650005000),
        ("0.0001", 4, 1),
        ("0.01", 4, 100),
        ("1.500", 2, 150),
        ("1000000.00", 6, 1_000_000_000_000),
        ("007.5", 1, 75),
        ("0.000000", 6, 0),
        ("18446744073709551615", 0, 2**64 - 1),
        ("1." + "0" * 40, 0, 1),
    ],
)
def test_to_units_happy_path(text: str, decimals: int, expected: int) -> None:
    assert to_units(text, decimals) == expected


@pytest.mark.parametrize(
    ("text", "decimals", "expected"),
    [("-1.5", 2, -150), ("-0", 2, 0), ("-0.00", 2, 0), ("-65000.5", 1, -650005), ("12", 1, 120)],
)
def test_to_units_signed(text: str, decimals: int, expected: int) -> None:
    assert to_units(text, decimals, signed=True) == expected


@pytest.mark.parametrize(
    ("text", "decimals", "reason", "fragment"),
    [
        ("", 2, "empty", "empty string"),
        (" 1", 2, "whitespace", "whitespace"),
        ("1 ", 2, "whitespace", "whitespace"),
        ("1\n", 2, "whitespace", "whitespace"),
        ("1\u00a00", 2, "whitespace", "whitespace"),
        ("+1", 2, "leading_plus", "leading '+'"),
        ("-1", 2, "negative", "negative"),
        ("-0", 2, "negative", "negative"),
        ("1e5", 2, "exponent", "exponent"),
        ("1E-2", 2, "exponent", "exponent"),
        ("2.5e0", 2, "exponent", "exponent"),
        ("NaN", 2, "not_finite", "NaN"),
        ("nan", 2, "not_finite", "NaN"),
        ("inf", 2, "not_finite", "infinity"),
        ("-Infinity", 2, "not_finite", "infinity"),
        ("Infinity", 2, "not_finite", "infinity"),
        (".5", 2, "bad_format", "digit before the decimal point"),
        ("5.", 2, "bad_format", "digit after the decimal point"),
        (".", 2, "bad_format", "digit before"),
        ("-", 2, "negative", "negative"),
        ("1.2.3", 2, "bad_format", "[-]digits[.digits]"),
        ("1_000", 2, "bad_format", "[-]digits[.digits]"),
        ("1,000", 2, "bad_format", "[-]digits[.digits]"),
        ("0x10", 2, "bad_format", "[-]digits[.digits]"),
        ("١٢", 2, "bad_format", "ASCII digits"),
        ("1.٢", 2, "bad_format", "ASCII digits"),
        ("--1", 2, "negative", "negative"),
        ("1.005", 2, "too_many_decimals", "has 3 decimals but at most 2"),
        ("0.00001", 4, "too_many_decimals", "would lose precision"),
        ("1.5", 0, "too_many_decimals", "has 1 decimals but at most 0"),
        ("1" * (MAX_TEXT_LEN + 1), 2, "too_long", "longer than"),
    ],
)
def test_to_units_refusals(text: str, decimals: int, reason: str, fragment: str) -> None:
    with pytest.raises(UnitsError) as info:
        to_units(text, decimals)
    assert info.value.reason == reason
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_signed_input_still_refuses_other_problems() -> None:
    for text, reason in [
        ("--1", "bad_format"),
        ("-+1", "bad_format"),
        ("-.5", "bad_format"),
        ("-1e3", "exponent"),
    ]:
        with pytest.raises(UnitsError) as info:
            to_units(text, 2, signed=True)
        assert info.value.reason == reason, text


def test_too_many_decimals_reports_counts() -> None:
    with pytest.raises(UnitsError) as info:
        to_units("0.05000", 1)
    assert (info.value.reason, info.value.fraction_digits, info.value.decimals) == ("too_many_decimals", 2, 1)
    assert info.value.text == "0.05000"


@pytest.mark.parametrize("bad", [1.5, 15, None, b"1.5"])
def test_to_units_refuses_non_strings(bad: object) -> None:
    with pytest.raises(UnitsError) as info:
        to_units(bad, 2)  # type: ignore[arg-type]
    assert info.value.reason == "not_a_string"


@pytest.mark.parametrize("decimals", [-1, MAX_DECIMALS + 1, True, 2.0, "2"])
def test_bad_decimals(decimals: object) -> None:
    with pytest.raises(UnitsError) as info:
        to_units("1", decimals)  # type: ignore[arg-type]
    assert info.value.reason == "bad_decimals"
    with pytest.raises(UnitsError):
        from_units(1, decimals)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "decimals", "expected", "trimmed"),
    [
        (0, 0, "0", "0"),
        (0, 2, "0.00", "0"),
        (7, 0, "7", "7"),
        (150, 2, "1.50", "1.5"),
        (-150, 2, "-1.50", "-1.5"),
        (5, 3, "0.005", "0.005"),
        (-5, 3, "-0.005", "-0.005"),
        (650005, 1, "65000.5", "65000.5"),
        (1_000_000_000_000, 6, "1000000.000000", "1000000"),
        (2000, 3, "2.000", "2"),
        (10**40, 2, "1" + "0" * 38 + ".00", "1" + "0" * 38),
    ],
)
def test_from_units(value: int, decimals: int, expected: str, trimmed: str) -> None:
    assert from_units(value, decimals) == expected
    assert from_units(value, decimals, trim=True) == trimmed


@pytest.mark.parametrize("bad", [1.0, "1", True, None])
def test_from_units_refuses_non_ints(bad: object) -> None:
    with pytest.raises(TypeError):
        from_units(bad, 2)  # type: ignore[arg-type]


values = st.integers(min_value=-(10**30), max_value=10**30)
decimals_st = st.integers(min_value=0, max_value=18)


@given(values, decimals_st)
def test_round_trip_from_units_to_units(value: int, decimals: int) -> None:
    text = from_units(value, decimals)
    assert to_units(text, decimals, signed=True) == value
    assert to_units(from_units(value, decimals, trim=True), decimals, signed=True) == value
    if value >= 0:
        assert to_units(text, decimals) == value


@given(values, decimals_st)
def test_canonical_form_shape(value: int, decimals: int) -> None:
    text = from_units(value, decimals)
    whole, _, frac = text.lstrip("-").partition(".")
    assert len(frac) == decimals
    assert whole == "0" or not whole.startswith("0")
    assert "e" not in text and "E" not in text
    assert text.startswith("-") == (value < 0)


@given(st.integers(0, 10**12), st.integers(0, 8), st.integers(0, 4))
def test_to_units_normalizes_to_canonical(value: int, decimals: int, extra_zeros: int) -> None:
    canonical = from_units(value, decimals)
    padded = canonical + ("." if decimals == 0 and extra_zeros else "") + "0" * extra_zeros
    assert from_units(to_units(padded, decimals), decimals) == canonical


@given(st.integers(1, 10**12), st.integers(0, 8))
def test_one_digit_too_many_is_always_refused(value: int, decimals: int) -> None:
    text = from_units(value, decimals + 1)
    if value % 10 == 0:
        assert to_units(text, decimals) == value // 10
    else:
        with pytest.raises(UnitsError) as info:
            to_units(text, decimals)
        assert info.value.reason == "too_many_decimals"
