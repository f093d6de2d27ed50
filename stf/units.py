"""Integer amounts as decimal text, for rejection reasons only.

A trader submits "64463.2" and the STF works in integer price units (644632); a reason that says
"price 644632" is in units the trader never sees. `decimal_text` writes an amount the way the
SDK and the indexer do (sdk.units.from_units: exactly `decimals` fractional digits), with
integers only, so reasons stay deterministic. Nothing hashed or stored depends on it.
"""

from __future__ import annotations

from stf.config import COLLATERAL_DECIMALS


def decimal_text(value: int, decimals: int) -> str:
    """`value` units of 10^-decimals as a decimal string, e.g. (644632, 1) -> "64463.2"."""
    sign = "-" if value < 0 else ""
    digits = str(-value if value < 0 else value)
    if decimals <= 0:
        return sign + digits
    digits = digits.rjust(decimals + 1, "0")
    return sign + digits[:-decimals] + "." + digits[-decimals:]


def usd_text(micro_usd: int) -> str:
    """A collateral amount in micro-USD as "12.500000 USD"."""
    return decimal_text(micro_usd, COLLATERAL_DECIMALS) + " USD"
