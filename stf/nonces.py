"""Replay protection: millisecond nonces, the 100 highest kept per account.

A nonce is accepted when (DESIGN.md, Hyperliquid's scheme):
- it lies in [block_time - past_window, block_time + future_window];
- it is not among the account's kept nonces;
- the account keeps fewer than 100 nonces or the nonce exceeds the smallest.
Accepting it adds it to the kept set and drops the smallest beyond 100, so
parallel submissions with nearby timestamps stay valid in any order, while a
replayed transaction is always refused.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from stf.results import Code, Rejected
from stf.state import MAX_KEPT_NONCES, Account, State


def check_nonce(state: State, account: Account | None, nonce: int) -> None:
    config = state.config
    if (
        nonce < state.time_ms - config.nonce_window_past_ms
        or nonce > state.time_ms + config.nonce_window_future_ms
    ):
        raise Rejected(
            Code.NONCE_OUT_OF_WINDOW,
            f"nonce {nonce} is outside the window [{state.time_ms - config.nonce_window_past_ms}, "
            f"{state.time_ms + config.nonce_window_future_ms}] around block time {state.time_ms}",
        )
    if account is None:
        return
    kept = account.nonces
    if not kept or nonce > kept[-1]:  # above every kept nonce (the usual case): unused, not too old
        return
    i = bisect_left(kept, nonce)
    if i < len(kept) and kept[i] == nonce:
        raise Rejected(Code.NONCE_USED, f"nonce {nonce} was already used")
    if len(kept) >= MAX_KEPT_NONCES and nonce < kept[0]:
        raise Rejected(Code.NONCE_TOO_OLD, f"nonce {nonce} is below the smallest kept nonce {kept[0]}")


def record_nonce(state: State, account: Account, nonce: int) -> None:
    """Keep a nonce that `check_nonce` accepted for this account."""
    address = account.address
    state.touch_new_nonce(address, nonce)
    kept = account.nonces
    if not kept or nonce > kept[-1]:
        kept.append(nonce)
    else:
        insort(kept, nonce)
    if len(kept) > MAX_KEPT_NONCES:
        state.touch_nonce(address, kept[0])
        del kept[0]
