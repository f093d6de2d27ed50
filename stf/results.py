"""Transaction result codes and results.

Principle 4 of DESIGN.md: a rejected transaction is a *result*, never an
exception that escapes `apply_block`. Every transaction in a block yields one
`TxResult`; a batch yields one per item in `items`. Codes are stable integers
(they are part of block results and therefore of what validators agree on);
`reason` is a human sentence for clients and logs.

Envelope failures (undecodable, bad signature, wrong chain id, bad nonce)
change nothing at all. Action failures (e.g. an order outside the price band)
still consume the nonce, so a signed transaction that was rejected in a block
can never execute later by surprise.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    OK = 0
    # envelope
    MALFORMED_TX = 1
    BAD_SIGNATURE = 2
    WRONG_CHAIN_ID = 3
    NONCE_USED = 4
    NONCE_TOO_OLD = 5
    NONCE_OUT_OF_WINDOW = 6
    EMPTY_ACTION = 7
    TX_TOO_LARGE = 8
    # orders
    UNKNOWN_MARKET = 20
    MARKET_HALTED = 21
    BAD_SIDE = 22
    BAD_ORDER_KIND = 23
    BAD_TIME_IN_FORCE = 24
    ZERO_PRICE = 25
    PRICE_NOT_ON_TICK = 26
    SIZE_NOT_ON_LOT = 27
    SIZE_BELOW_MIN = 28
    PRICE_OUT_OF_BAND = 29
    POST_ONLY_WOULD_TAKE = 30
    TOO_MANY_OPEN_ORDERS = 31
    DUPLICATE_CLIENT_ORDER_ID = 32
    BAD_CLIENT_ORDER_ID = 33
    REDUCE_ONLY_WOULD_INCREASE = 34
    INSUFFICIENT_MARGIN = 35
    ORDER_NOT_FOUND = 36
    BATCH_TOO_LARGE = 37
    NESTED_OR_EMPTY_BATCH_ITEM = 38
    SIZE_TOO_LARGE = 39
    # transfers / faucet / validators
    UNKNOWN_ACCOUNT = 50
    ZERO_AMOUNT = 51
    INSUFFICIENT_FUNDS = 52
    BAD_ADDRESS = 53
    SELF_TRANSFER = 54
    FAUCET_DISABLED = 55
    FAUCET_LIMIT = 56
    NOT_A_VALIDATOR = 57
    BAD_ORACLE_PRICE = 58


class TxResult:
    """The outcome of one transaction (or one batch item)."""

    __slots__ = ("code", "reason", "order_id", "items")

    def __init__(
        self, code: Code, reason: str = "", order_id: int = 0, items: list[TxResult] | None = None
    ) -> None:
        self.code = code
        self.reason = reason
        self.order_id = order_id
        self.items = items if items is not None else []

    @property
    def ok(self) -> bool:
        return self.code == Code.OK

    def __repr__(self) -> str:
        return f"TxResult({self.code.name}, {self.reason!r}, order_id={self.order_id}, items={self.items!r})"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": int(self.code), "status": self.code.name.lower()}
        if self.reason:
            out["reason"] = self.reason
        if self.order_id:
            out["order_id"] = self.order_id
        if self.items:
            out["items"] = [item.to_dict() for item in self.items]
        return out


def ok(order_id: int = 0) -> TxResult:
    return TxResult(Code.OK, "", order_id)


def reject(code: Code, reason: str) -> TxResult:
    return TxResult(code, reason)


class Rejected(Exception):
    """Raised inside the STF while *validating* an action, before any mutation,
    and turned into a `TxResult` by the dispatcher. Never escapes `apply_block`."""

    def __init__(self, code: Code, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
