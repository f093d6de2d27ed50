"""Exact conversion between decimal strings and integer units.

Theory of operation
-------------------
On chain every quantity is an integer number of ``10**-decimals`` units (a
market's price units, its size units, micro-USD, ppm). Decimal strings exist
only at the edge (SDK, CLI, genesis JSON, indexer responses), and the
conversion between the two is exact or refused:

* ``to_units`` accepts only ``[-]DIGITS[.DIGITS]`` in ASCII: no whitespace,
  no ``+``, no exponent, no NaN/infinity, no ``.5`` or ``5.``, no ``_``.
  More fractional digits than ``decimals`` are accepted only when the extra
  digits are all zeros (``"1.500"`` with 2 decimals is 150); anything else
  would silently lose value and raises ``UnitsError``.
* ``from_units`` writes the canonical form: no exponent, and exactly
  ``decimals`` fractional digits (``from_units(150, 2) == "1.50"``,
  ``from_units(7, 0) == "7"``). Fixed width is the chosen canonical form
  because it is what a market's precision means, and because the indexer's
  book checksum hashes prices and sizes "exactly as sent". ``trim=True`` drops
  trailing fractional zeros for human-facing output (``"1.5"``, ``"2"``).

No floats and no ``Decimal`` are used anywhere: only ``str`` and ``int``.
"""

from __future__ import annotations

import re

from stf.units import decimal_text

__all__ = ["MAX_DECIMALS", "MAX_TEXT_LEN", "UnitsError", "from_units", "to_units"]

MAX_DECIMALS = 36
MAX_TEXT_LEN = 100

_DIGITS = re.compile(r"[0-9]+")  # explicit class: ASCII only (str.isdigit accepts other scripts)
_NON_FINITE = ("nan", "snan", "qnan", "inf", "infinity")


class UnitsError(ValueError):
    """A decimal string that cannot be converted exactly.

    ``reason`` is a stable code (``not_a_string``, ``empty``, ``too_long``,
    ``whitespace``, ``leading_plus``, ``negative``, ``exponent``,
    ``not_finite``, ``bad_format``, ``too_many_decimals``, ``bad_decimals``);
    ``text`` is the offending input; for ``too_many_decimals``,
    ``fraction_digits`` is how many significant fractional digits it had.
    """

    def __init__(
        self, text: object, reason: str, detail: str, *, decimals: int = 0, fraction_digits: int = 0
    ) -> None:
        super().__init__(f"{text!r}: {detail}")
        self.text = text
        self.reason = reason
        self.detail = detail
        self.decimals = decimals
        self.fraction_digits = fraction_digits


def _check_decimals(decimals: int) -> None:
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= MAX_DECIMALS:
        raise UnitsError(decimals, "bad_decimals", f"decimals must be an int in 0..{MAX_DECIMALS}")


def _reject_obvious(text: str, signed: bool) -> tuple[bool, str]:
    """Split off the sign after the checks that have a specific message: (negative, unsigned body)."""
    if text == "":
        raise UnitsError(text, "empty", "empty string is not a number")
    if len(text) > MAX_TEXT_LEN:
        raise UnitsError(text[:20] + "...", "too_long", f"longer than {MAX_TEXT_LEN} characters")
    if any(ch.isspace() for ch in text):
        raise UnitsError(text, "whitespace", "whitespace is not allowed")
    if text[0] == "+":
        raise UnitsError(text, "leading_plus", "a leading '+' is not allowed")
    negative = text[0] == "-"
    body = text[1:] if negative else text
    if body.lower() in _NON_FINITE:
        raise UnitsError(text, "not_finite", "NaN and infinity are not numbers of units")
    if "e" in body or "E" in body:
        raise UnitsError(text, "exponent", "exponent notation is not allowed; write all digits")
    if negative and not signed:
        raise UnitsError(text, "negative", "negative values are not allowed here")
    return negative, body


def _split(text: str, body: str) -> tuple[str, str]:
    whole, dot, frac = body.partition(".")
    if not dot:
        frac = ""
    if _DIGITS.fullmatch(whole) is None:
        if whole == "" and dot:
            raise UnitsError(text, "bad_format", "need a digit before the decimal point (write 0.5, not .5)")
        raise UnitsError(text, "bad_format", "expected [-]digits[.digits] with ASCII digits 0-9")
    if dot and _DIGITS.fullmatch(frac) is None:
        if frac == "":
            raise UnitsError(text, "bad_format", "need a digit after the decimal point (write 5 or 5.0)")
        raise UnitsError(text, "bad_format", "expected [-]digits[.digits] with ASCII digits 0-9")
    return whole, frac


def to_units(text: str, decimals: int, *, signed: bool = False) -> int:
    """``text`` as an exact integer number of ``10**-decimals`` units, or UnitsError."""
    _check_decimals(decimals)
    if not isinstance(text, str):
        raise UnitsError(text, "not_a_string", f"expected a decimal string, got {type(text).__name__}")
    negative, body = _reject_obvious(text, signed)
    whole, frac = _split(text, body)
    significant = frac.rstrip("0")
    if len(significant) > decimals:
        raise UnitsError(
            text,
            "too_many_decimals",
            f"has {len(significant)} decimals but at most {decimals} are allowed (would lose precision)",
            decimals=decimals,
            fraction_digits=len(significant),
        )
    magnitude = int(whole) * 10**decimals + (int(significant.ljust(decimals, "0")) if decimals else 0)
    return -magnitude if negative else magnitude


def from_units(value: int, decimals: int, *, trim: bool = False) -> str:
    """Canonical decimal string of ``value`` units of ``10**-decimals``.

    Exactly ``decimals`` fractional digits (none and no point when 0); with
    ``trim=True`` trailing fractional zeros and a bare point are dropped.
    """
    _check_decimals(decimals)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"value must be an int, got {type(value).__name__}")
    text = decimal_text(value, decimals)  # the STF's own writer: one canonical form everywhere
    if trim and decimals:
        text = text.rstrip("0").rstrip(".")
    return text
