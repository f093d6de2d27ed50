"""Property tests: random order/cancel streams against invariants and a naive reference book.

The reference (`NaiveBook`) is deliberately simple: a flat list of resting
orders, matched by sorting on (price, id) every time (DESIGN.md principle 11:
a simple reference and a fast path, checked against each other).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sdk import tx as sdk_tx
from stf.events import TRADE
from stf.invariants import find_violations, total_value
from stf.snapshot import full_hash
from tests.stf_support import Chain, keys, make_config, order

ACCOUNTS = keys(4, b"prop")
MID = 600_000
TICK = 5
LOT = 10


@dataclass
class RefOrder:
    order_id: int
    owner: int
    is_buy: bool
    price: int
    size: int
    cloid: str


class NaiveBook:
    def __init__(self) -> None:
        self.orders: list[RefOrder] = []
        self.next_id = 1
        self.trades: list[tuple[int, int, int, int]] = []  # (taker id, maker id, price, size)

    def place(self, owner: int, is_buy: bool, price: int, size: int, tif: str, cloid: str) -> None:
        if cloid and any(o.owner == owner and o.cloid == cloid for o in self.orders):
            return  # duplicate client id: rejected
        if tif != "ioc" and sum(o.owner == owner for o in self.orders) >= 50:
            return
        opposite = [o for o in self.orders if o.is_buy != is_buy]
        crosses = [o for o in opposite if (o.price <= price if is_buy else o.price >= price)]
        if tif == "post_only" and crosses:
            return
        order_id = self.next_id
        self.next_id += 1
        crosses.sort(key=lambda o: ((o.price if is_buy else -o.price), o.order_id))
        remaining = size
        for maker in crosses:
            if remaining == 0:
                break
            if maker.owner == owner:
                self.orders.remove(maker)  # self-trade prevention: cancel the resting order
                continue
            q = min(remaining, maker.size)
            self.trades.append((order_id, maker.order_id, maker.price, q))
            maker.size -= q
            remaining -= q
            if maker.size == 0:
                self.orders.remove(maker)
        if remaining and tif != "ioc":
            self.orders.append(RefOrder(order_id, owner, is_buy, price, remaining, cloid))

    def cancel(self, owner: int, order_id: int) -> None:
        self.orders = [o for o in self.orders if not (o.order_id == order_id and o.owner == owner)]

    def cancel_cloid(self, owner: int, cloid: str) -> None:
        self.orders = [o for o in self.orders if not (o.cloid == cloid and o.owner == owner)]

    def cancel_all(self, owner: int) -> None:
        self.orders = [o for o in self.orders if o.owner != owner]


prices = st.integers(-6, 6).map(lambda k: MID + k * TICK)
sizes = st.integers(2, 12).map(lambda k: k * LOT)
tifs = st.sampled_from(["gtc", "gtc", "ioc", "post_only", "market"])
owners = st.integers(0, len(ACCOUNTS) - 1)
cloids = st.sampled_from(["", "", "", "a", "b"])


class OrderStream(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.chain = Chain(make_config(ACCOUNTS), verify=False)
        self.ref = NaiveBook()
        self.pending: list[tuple[int, int, bytes, tuple[object, ...]]] = []  # (class, seq, tx, ref op)
        self.value = total_value(self.chain.state)
        self.trades: list[tuple[int, int, int, int]] = []

    def queue(self, klass: int, owner: int, action: sdk_tx.Action, op: tuple[object, ...]) -> None:
        self.pending.append((klass, len(self.pending), self.chain.tx(ACCOUNTS[owner], action), op))

    @rule(owner=owners, buy=st.booleans(), price=prices, size=sizes, tif=tifs, cloid=cloids)
    def place(self, owner: int, buy: bool, price: int, size: int, tif: str, cloid: str) -> None:
        side = "buy" if buy else "sell"
        if tif == "market":
            action = order(side, price, size, kind="market", client_order_id=cloid)
        else:
            action = order(side, price, size, tif=tif, client_order_id=cloid)
        self.queue(
            1 if tif == "post_only" else 2,
            owner,
            action,
            ("place", owner, buy, price, size, "ioc" if tif == "market" else tif, cloid),
        )

    @rule(owner=owners, buy=st.booleans(), price=prices, size=sizes, tif=tifs, cloid=cloids)
    def place_more(self, owner: int, buy: bool, price: int, size: int, tif: str, cloid: str) -> None:
        self.place(owner, buy, price, size, tif, cloid)  # a second rule doubles the order flow

    @precondition(lambda self: bool(self.chain.state.orders))
    @rule(data=st.data(), by_cloid=st.booleans())
    def cancel_resting(self, data: st.DataObject, by_cloid: bool) -> None:
        target = data.draw(st.sampled_from(sorted(self.chain.state.orders)))
        o = self.chain.state.orders[target]
        owner = [a.address for a in ACCOUNTS].index(o.account)
        if by_cloid and o.client_order_id:
            action = sdk_tx.cancel_order("BTC-PERP", client_order_id=o.client_order_id)
            self.queue(0, owner, action, ("cancel_cloid", owner, o.client_order_id))
        else:
            self.queue(0, owner, sdk_tx.cancel_order("BTC-PERP", order_id=target), ("cancel", owner, target))

    @rule(owner=owners)
    def cancel_everything(self, owner: int) -> None:
        self.queue(0, owner, sdk_tx.cancel_all("BTC-PERP"), ("cancel_all", owner))

    @rule()
    def end_block(self) -> None:
        batch = sorted(self.pending, key=lambda p: (p[0], p[1]))
        result = self.chain.block([p[2] for p in self.pending])
        self.pending = []
        for _, _, _, op in batch:
            getattr(self.ref, op[0])(*op[1:])
        got = [(e[5], e[6], e[3], e[4]) for e in result.events if e[0] == TRADE]
        self.trades += got
        assert self.trades == self.ref.trades
        assert result.app_hash == full_hash(self.chain.state)

    @invariant()
    def book_matches_reference(self) -> None:
        if self.pending:
            return
        state = self.chain.state
        assert find_violations(state) == []
        mine = sorted((o.order_id, o.is_buy, o.price, o.size) for o in state.orders.values())
        theirs = sorted((o.order_id, o.is_buy, o.price, o.size) for o in self.ref.orders)
        assert mine == theirs
        assert total_value(state) == self.value  # fees move value to the pool; nothing is created


OrderStream.TestCase.settings = settings(
    max_examples=100, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestOrderStream = OrderStream.TestCase


class LongOrderStream(OrderStream):
    pass


LongOrderStream.TestCase.settings = settings(
    max_examples=2_000, stateful_step_count=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLongOrderStream = pytest.mark.slow(LongOrderStream.TestCase)
