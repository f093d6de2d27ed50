"""Integer amounts as decimal text: the one writer of the canonical form.

On chain every amount is an integer number of 10^-decimals units (a market's price and size
units, micro-USD); people and clients see decimal strings with exactly `decimals` fractional
digits (644632 price units at 1 decimal are "64463.2"). `decimal_text` writes that form with
integers only, so the STF can use it for its rejection reasons (a trader submits "64463.2", and
a reason saying "price 644632" would be in units they never see) and stays deterministic. The
SDK's `from_units` (after its argument checks) and the indexer's views (whose book checksum
hashes these strings) write through it too, so the three cannot drift apart.
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
