"""The order book of one market: price levels in price-time priority.

Theory of operation
- A side is a dict price -> Level plus a sorted list of *keys* where the best
  price is always the last element (bids: key = price; asks: key = -price), so
  reading, adding behind and removing the best level are O(1)/O(log n) and a
  new level is placed with `bisect.insort`.
- A Level keeps its orders in an OrderedDict in arrival order (time priority),
  so the oldest order is O(1) to find and any order is O(1) to remove, and a
  running `total` of resting size, so level sizes never need re-summing.
- Invariants (checked by tests/stf property tests): no empty level is kept, no
  order with size <= 0 rests, `total` equals the sum of its orders' sizes, and
  the best bid is strictly below the best ask after every transaction.
- The Book never decides anything about accounts, fees or margin; the
  matching module drives it. It records which levels changed (`touched`) so
  the block can emit one BOOK_LEVEL event per changed level at the end.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import OrderedDict


class Order:
    __slots__ = (
        "order_id",
        "account",
        "market_id",
        "is_buy",
        "price",
        "size",
        "orig_size",
        "tif",
        "reduce_only",
        "client_order_id",
    )

    def __init__(
        self,
        order_id: int,
        account: bytes,
        market_id: int,
        is_buy: bool,
        price: int,
        size: int,
        orig_size: int,
        tif: int,
        reduce_only: bool,
        client_order_id: str,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.market_id = market_id
        self.is_buy = is_buy
        self.price = price
        self.size = size
        self.orig_size = orig_size
        self.tif = tif
        self.reduce_only = reduce_only
        self.client_order_id = client_order_id

    def __repr__(self) -> str:
        side = "buy" if self.is_buy else "sell"
        return f"Order(#{self.order_id} {side} {self.size}@{self.price} m{self.market_id})"


class Level:
    __slots__ = ("price", "total", "orders")

    def __init__(self, price: int) -> None:
        self.price = price
        self.total = 0
        self.orders: OrderedDict[int, Order] = OrderedDict()


class Book:
    __slots__ = ("market_id", "bids", "asks", "bid_keys", "ask_keys", "touched")

    def __init__(self, market_id: int) -> None:
        self.market_id = market_id
        self.bids: dict[int, Level] = {}
        self.asks: dict[int, Level] = {}
        self.bid_keys: list[int] = []  # ascending prices; best bid last
        self.ask_keys: list[int] = []  # ascending negated prices; best ask last
        # (is_buy, price) of levels changed since the last drain, in first-touch order
        self.touched: dict[tuple[bool, int], None] = {}

    # -- accessors ---------------------------------------------------------
    def best_bid(self) -> int:
        """Highest bid price, or 0 when there are no bids."""
        keys = self.bid_keys
        return keys[-1] if keys else 0

    def best_ask(self) -> int:
        """Lowest ask price, or 0 when there are no asks."""
        keys = self.ask_keys
        return -keys[-1] if keys else 0

    def best_level(self, is_buy_side: bool) -> Level | None:
        if is_buy_side:
            return self.bids[self.bid_keys[-1]] if self.bid_keys else None
        return self.asks[-self.ask_keys[-1]] if self.ask_keys else None

    def level_size(self, is_buy: bool, price: int) -> int:
        level = (self.bids if is_buy else self.asks).get(price)
        return level.total if level is not None else 0

    def depth(self, is_buy: bool, levels: int) -> list[tuple[int, int]]:
        """Up to `levels` (price, total) pairs, best first."""
        if is_buy:
            return [(p, self.bids[p].total) for p in reversed(self.bid_keys[-levels:])] if levels else []
        return [(-k, self.asks[-k].total) for k in reversed(self.ask_keys[-levels:])] if levels else []

    def order_count(self) -> int:
        return sum(len(lv.orders) for lv in self.bids.values()) + sum(
            len(lv.orders) for lv in self.asks.values()
        )

    # -- mutators ----------------------------------------------------------
    def add(self, order: Order) -> None:
        """Rest `order` behind every order at its price."""
        price = order.price
        if order.is_buy:
            level = self.bids.get(price)
            if level is None:
                level = self.bids[price] = Level(price)
                insort(self.bid_keys, price)
        else:
            level = self.asks.get(price)
            if level is None:
                level = self.asks[price] = Level(price)
                insort(self.ask_keys, -price)
        level.orders[order.order_id] = order
        level.total += order.size
        self.touched[(order.is_buy, price)] = None

    def remove(self, order: Order) -> None:
        """Take a resting order out of the book (cancel or full fill)."""
        side = self.bids if order.is_buy else self.asks
        level = side[order.price]
        del level.orders[order.order_id]
        level.total -= order.size
        self.touched[(order.is_buy, order.price)] = None
        if not level.orders:
            self._drop_level(order.is_buy, order.price)

    def reduce(self, order: Order, by: int) -> None:
        """Shrink a resting order in place (partial fill); keeps its priority."""
        side = self.bids if order.is_buy else self.asks
        side[order.price].total -= by
        order.size -= by
        self.touched[(order.is_buy, order.price)] = None

    def _drop_level(self, is_buy: bool, price: int) -> None:
        if is_buy:
            del self.bids[price]
            keys = self.bid_keys
            key = price
        else:
            del self.asks[price]
            keys = self.ask_keys
            key = -price
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def drain_touched(self) -> list[tuple[bool, int, int]]:
        """(is_buy, price, total) for every level changed since the last drain, sorted."""
        out = [(is_buy, price, self.level_size(is_buy, price)) for (is_buy, price) in self.touched]
        self.touched = {}
        out.sort()
        return out
