"""Oracle price: the stake-weighted median of validators' latest submissions.

Each validator's most recent price per market is kept with the block time it
arrived in. Submissions older than `oracle_stale_ms` and from keys that are
no longer validators are ignored. The weighted median is the lowest price at
which the cumulative voting power (prices ascending, ties broken by
validator address) reaches at least half of the fresh submitters' total
power; with no fresh submission the market keeps its previous price.
A minority of the power (fewer than half) therefore cannot move the median
past the honest submissions, however extreme its prices are.
"""

from __future__ import annotations


def compute_oracle_price(
    subs: dict[bytes, tuple[int, int]], powers: dict[bytes, int], now_ms: int, stale_ms: int
) -> int:
    fresh = sorted(
        (price, validator, powers[validator])
        for validator, (price, at) in subs.items()
        if validator in powers and now_ms - at <= stale_ms
    )
    total = sum(power for _, _, power in fresh)
    if total == 0:
        return 0
    running = 0
    for price, _, power in fresh:
        running += power
        if 2 * running >= total:
            return price
    raise AssertionError("unreachable: cumulative power reaches the total")
