"""One function per transaction action: validate fully, then mutate.

Each `process_*` takes the state, the sender's account, the decoded action
message, the transaction index and the block's event list, and returns a
`TxResult`. Validation raises `Rejected` before the first mutation, so the
dispatcher turns it into a result and nothing else happened (DESIGN.md
principle 4). Batches run each item this way: every item is atomic on its
own and gets its own result.
"""

from __future__ import annotations

from typing import Any, Final

from stf.events import (
    CANCEL_USER,
    FAUCET,
    MARKET_HALT,
    ORDER_REJECTED,
    TRANSFER,
    Event,
)
from stf.margin import compute_equity, initial_requirement
from stf.matching import MAX_PRICE, cancel_resting, execute_order, validate_order
from stf.prices import refresh_oracle_price
from stf.results import Code, Rejected, TxResult, ok, reject
from stf.state import Account, MarketState, State
from stf.units import decimal_text, usd_text

MAX_BATCH_ITEMS: Final = 50
ADDRESS_BYTES: Final = 20


def process_place_order(state: State, account: Account, po: Any, tx: int, events: list[Event]) -> TxResult:
    try:
        req = validate_order(
            state,
            account,
            po.market,
            po.side,
            po.kind,
            po.time_in_force,
            po.price,
            po.size,
            po.reduce_only,
            po.client_order_id,
        )
    except Rejected as r:
        market = state.get_market(po.market)
        market_id = market.spec.market_id if market is not None else -1
        events.append((ORDER_REJECTED, tx, account.address, market_id, int(r.code), po.client_order_id))
        return reject(r.code, r.reason)
    return ok(execute_order(state, account, req, tx, events))


def find_cancel_target(state: State, account: Account, cancel: Any) -> tuple[MarketState, int]:
    market = state.get_market(cancel.market)
    if market is None:
        raise Rejected(Code.UNKNOWN_MARKET, f"unknown market {cancel.market!r}")
    target = cancel.WhichOneof("target")
    if target == "order_id":
        order_id = cancel.order_id
    elif target == "client_order_id":
        found = account.cloids.get(cancel.client_order_id)
        if found is None:
            raise Rejected(Code.ORDER_NOT_FOUND, f"no open order with client id {cancel.client_order_id!r}")
        order_id = found
    else:
        raise Rejected(Code.ORDER_NOT_FOUND, "cancel needs an order id or a client order id")
    order = account.orders.get(order_id)
    if order is None or order.market_id != market.spec.market_id:
        raise Rejected(Code.ORDER_NOT_FOUND, f"no open order {order_id} of this account in {cancel.market}")
    return market, order_id


def process_cancel(state: State, account: Account, cancel: Any, tx: int, events: list[Event]) -> TxResult:
    try:
        market, order_id = find_cancel_target(state, account, cancel)
    except Rejected as r:
        return reject(r.code, r.reason)
    cancel_resting(state, account.orders[order_id], market, CANCEL_USER, tx, events)
    return ok(order_id)


def process_cancel_all(state: State, account: Account, action: Any, tx: int, events: list[Event]) -> TxResult:
    market_id = -1
    if action.market:
        market = state.get_market(action.market)
        if market is None:
            return reject(Code.UNKNOWN_MARKET, f"unknown market {action.market!r}")
        market_id = market.spec.market_id
    victims = [o for o in account.orders.values() if market_id < 0 or o.market_id == market_id]
    for order in victims:
        cancel_resting(state, order, state.markets[order.market_id], CANCEL_USER, tx, events)
    return ok()


def process_batch(state: State, account: Account, batch: Any, tx: int, events: list[Event]) -> TxResult:
    if not batch.items:
        return reject(Code.NESTED_OR_EMPTY_BATCH_ITEM, "batch has no items")
    if len(batch.items) > MAX_BATCH_ITEMS:
        return reject(Code.BATCH_TOO_LARGE, f"batch has {len(batch.items)} items; at most {MAX_BATCH_ITEMS}")
    items: list[TxResult] = []
    for item in batch.items:
        which = item.WhichOneof("item")
        if which == "place":
            items.append(process_place_order(state, account, item.place, tx, events))
        elif which == "cancel":
            items.append(process_cancel(state, account, item.cancel, tx, events))
        else:
            items.append(reject(Code.NESTED_OR_EMPTY_BATCH_ITEM, "batch item has no action"))
    return TxResult(Code.OK, "", 0, items)


def process_transfer(state: State, account: Account, transfer: Any, tx: int, events: list[Event]) -> TxResult:
    to = bytes(transfer.to)
    amount = transfer.amount
    if len(to) != ADDRESS_BYTES:
        return reject(Code.BAD_ADDRESS, f"recipient must be a {ADDRESS_BYTES}-byte address")
    if to == account.address:
        return reject(Code.SELF_TRANSFER, "cannot transfer to the sending account")
    if amount == 0:
        return reject(Code.ZERO_AMOUNT, "amount must be positive")
    if account.collateral < amount:
        return reject(
            Code.INSUFFICIENT_FUNDS,
            f"collateral {usd_text(account.collateral)} is less than the amount {usd_text(amount)}",
        )
    required = initial_requirement(state, account)
    if compute_equity(state, account) - amount < required:
        return reject(
            Code.INSUFFICIENT_MARGIN,
            f"transfer would leave equity below the initial requirement {usd_text(required)}",
        )
    recipient = state.ensure_account(to)
    state.touch_account(account.address)
    state.touch_account(to)
    account.collateral -= amount
    recipient.collateral += amount
    events.append((TRANSFER, tx, account.address, to, amount))
    return ok()


def process_faucet(state: State, account: Account, faucet: Any, tx: int, events: list[Event]) -> TxResult:
    config = state.config
    if not config.faucet_enabled:
        return reject(Code.FAUCET_DISABLED, "the faucet is disabled on this chain")
    if faucet.amount == 0:
        return reject(Code.ZERO_AMOUNT, "amount must be positive")
    if account.faucet_used + faucet.amount > config.faucet_max_per_account:
        left = config.faucet_max_per_account - account.faucet_used
        return reject(Code.FAUCET_LIMIT, f"faucet allows {usd_text(left)} more for this account")
    state.touch_account(account.address)
    account.collateral += faucet.amount
    account.faucet_used += faucet.amount
    events.append((FAUCET, tx, account.address, faucet.amount))
    return ok()


def process_oracle_prices(
    state: State, account: Account, action: Any, tx: int, events: list[Event]
) -> TxResult:
    validator = account.address
    if validator not in state.validator_power:
        return reject(Code.NOT_A_VALIDATOR, "only validators may submit oracle prices")
    updates: dict[int, int] = {}
    for item in action.prices:
        market = state.get_market(item.market)
        if market is None:
            return reject(Code.UNKNOWN_MARKET, f"unknown market {item.market!r}")
        if item.price == 0 or item.price > MAX_PRICE:
            pd = market.spec.price_decimals
            return reject(
                Code.BAD_ORACLE_PRICE,
                f"oracle price for {item.market} must be in "
                f"[{decimal_text(1, pd)}, {decimal_text(MAX_PRICE, pd)}]",
            )
        if market.spec.market_id in updates:
            return reject(Code.BAD_ORACLE_PRICE, f"{item.market} appears twice")
        updates[market.spec.market_id] = item.price
    if not updates:
        return reject(Code.BAD_ORACLE_PRICE, "no prices given")
    for market_id, price in updates.items():
        market = state.markets[market_id]
        state.touch_oracle(market_id, validator)
        market.oracle_subs[validator] = (price, state.time_ms)
        refresh_oracle_price(state, market, events)
    return ok()


def process_set_market_halt(
    state: State, account: Account, action: Any, tx: int, events: list[Event]
) -> TxResult:
    if account.address not in state.validator_power:
        return reject(Code.NOT_A_VALIDATOR, "only validators may halt or resume a market")
    market = state.get_market(action.market)
    if market is None:
        return reject(Code.UNKNOWN_MARKET, f"unknown market {action.market!r}")
    if market.halted != action.halted:
        state.touch_market(market.spec.market_id)
        market.halted = action.halted
    events.append((MARKET_HALT, tx, market.spec.market_id, action.halted))
    return ok()


PROCESSORS = {
    "place_order": process_place_order,
    "cancel_order": process_cancel,
    "cancel_all": process_cancel_all,
    "batch": process_batch,
    "transfer": process_transfer,
    "faucet": process_faucet,
    "oracle_prices": process_oracle_prices,
    "set_market_halt": process_set_market_halt,
}
