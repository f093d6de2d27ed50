"""Block events: what the indexer builds its diffs from.

Events are plain tuples (cheap to make on the hot path) whose first element is
the event kind; `EVENT_FIELDS` names the remaining fields and `event_to_dict`
turns one into a JSON-friendly dict. Order within a block is deterministic:
transaction events in execution order (cancels, then post-only, then the rest,
each in proposer order), then end-of-block events (book level changes sorted
by market, side, price).

`tx` is the transaction's index in the block as proposed; addresses are bytes.
"""

from __future__ import annotations

from typing import Any, Final

Event = tuple[Any, ...]

# ORDER_ACCEPTED: tx, order_id, account, market_id, is_buy, price, size, tif, reduce_only, client_order_id
ORDER_ACCEPTED: Final = 1
ORDER_REJECTED: Final = 2  # tx, account, market_id, code, client_order_id
ORDER_CANCELLED: Final = 3  # tx, order_id, account, market_id, remaining, reason
ORDER_FILLED: Final = 4  # tx, order_id, account, market_id  (fully filled, leaves the book)
TRADE: Final = 5  # tx, market_id, price, size, taker_order, maker_order, taker, maker, taker_is_buy, fees
BOOK_LEVEL: Final = 6  # market_id, is_buy, price, total_size (0 = level gone)
TRANSFER: Final = 7  # tx, sender, recipient, amount
FAUCET: Final = 8  # tx, account, amount
ORACLE_PRICE: Final = 9  # market_id, price (the new stake-weighted median)
MARKET_HALT: Final = 10  # tx, market_id, halted
POSITION: Final = 11  # tx, account, market_id, size, open_notional, realized_pnl
MARK_PRICE: Final = 12  # market_id, price
FUNDING: Final = 13  # market_id, rate_ppm, index
LIQUIDATION: Final = 14  # account, equity, maintenance  (start of a liquidation; tx = -1 for what follows)
# TAKEOVER: market_id, account, size, price  (insurance fund takes the rest at the bankruptcy price)
TAKEOVER: Final = 15
ADL: Final = 16  # market_id, account, counterparty, size, price  (auto-deleveraging at the bankruptcy price)
DEFICIT_COVERED: Final = 17  # account, amount  (insurance fund pays a negative balance back to zero)

EVENT_NAMES: dict[int, str] = {
    ORDER_ACCEPTED: "order_accepted",
    ORDER_REJECTED: "order_rejected",
    ORDER_CANCELLED: "order_cancelled",
    ORDER_FILLED: "order_filled",
    TRADE: "trade",
    BOOK_LEVEL: "book_level",
    TRANSFER: "transfer",
    FAUCET: "faucet",
    ORACLE_PRICE: "oracle_price",
    MARKET_HALT: "market_halt",
    POSITION: "position",
    MARK_PRICE: "mark_price",
    FUNDING: "funding",
    LIQUIDATION: "liquidation",
    TAKEOVER: "takeover",
    ADL: "adl",
    DEFICIT_COVERED: "deficit_covered",
}

EVENT_FIELDS: dict[int, tuple[str, ...]] = {
    ORDER_ACCEPTED: (
        "tx",
        "order_id",
        "account",
        "market_id",
        "is_buy",
        "price",
        "size",
        "tif",
        "reduce_only",
        "client_order_id",
    ),
    ORDER_REJECTED: ("tx", "account", "market_id", "code", "client_order_id"),
    ORDER_CANCELLED: ("tx", "order_id", "account", "market_id", "remaining", "reason"),
    ORDER_FILLED: ("tx", "order_id", "account", "market_id"),
    TRADE: (
        "tx",
        "market_id",
        "price",
        "size",
        "taker_order_id",
        "maker_order_id",
        "taker",
        "maker",
        "taker_is_buy",
        "taker_fee",
        "maker_fee",
    ),
    BOOK_LEVEL: ("market_id", "is_buy", "price", "size"),
    TRANSFER: ("tx", "sender", "recipient", "amount"),
    FAUCET: ("tx", "account", "amount"),
    ORACLE_PRICE: ("market_id", "price"),
    MARKET_HALT: ("tx", "market_id", "halted"),
    POSITION: ("tx", "account", "market_id", "size", "open_notional", "realized_pnl"),
    MARK_PRICE: ("market_id", "price"),
    FUNDING: ("market_id", "rate_ppm", "index"),
    LIQUIDATION: ("account", "equity", "maintenance"),
    TAKEOVER: ("market_id", "account", "size", "price"),
    ADL: ("market_id", "account", "counterparty", "size", "price"),
    DEFICIT_COVERED: ("account", "amount"),
}

# cancellation reasons carried by ORDER_CANCELLED
CANCEL_USER: Final = "user"
CANCEL_SELF_TRADE: Final = "self_trade"
CANCEL_IOC_REMAINDER: Final = "ioc_remainder"
CANCEL_REDUCE_ONLY: Final = "reduce_only"
CANCEL_LIQUIDATION: Final = "liquidation"
# `tx` of events raised by the end-of-block risk engine rather than by a transaction
END_OF_BLOCK: Final = -1


def event_to_dict(event: Event) -> dict[str, Any]:
    kind = event[0]
    out: dict[str, Any] = {"type": EVENT_NAMES[kind]}
    for name, value in zip(EVENT_FIELDS[kind], event[1:], strict=True):
        out[name] = "0x" + value.hex() if isinstance(value, bytes) else value
    return out
