"""State invariants, checked after every block by tests (and usable in debug runs).

`find_violations(state)` returns human-readable violations (empty = healthy):
- the book is never crossed (best bid < best ask);
- no resting order has size <= 0, no level is empty, level totals are exact;
- within a level, orders are in ascending order id (time priority);
- the order index equals the book's contents, and each account's open-order
  and client-id maps agree with it;
- per market, the sum of long sizes equals the sum of short sizes;
- positions have a non-negative cost basis and are never zero-sized;
- no account but the insurance fund is left flat with a negative balance
  (the end-of-block sweep of stf/liquidation.py pays such deficits back).
`total_value(state)` is the conserved quantity: collateral (the insurance
fund is an account) + fee pool + funding pools + cost bases signed so that
unrealized PnL at any common mark cancels out; it changes only by faucet
mints. `pending_funding(state)` is what open positions owe in total (exact,
x PPM); funding pools + pending / PPM is zero up to settlement rounding.
"""

from __future__ import annotations

from stf.book import Book, Level
from stf.state import INSURANCE_FUND, Account, State


def _level_violations(market_id: int, side: str, price: int, level: Level) -> list[str]:
    out: list[str] = []
    if not level.orders:
        out.append(f"m{market_id} {side} level {price} is empty but kept")
    total = 0
    last_id = 0
    for order_id, order in level.orders.items():
        if order.size <= 0:
            out.append(f"order {order_id} rests with size {order.size}")
        if order.price != price:
            out.append(f"order {order_id} at price {order.price} sits in level {price}")
        if order_id <= last_id:
            out.append(
                f"m{market_id} {side} level {price}: order {order_id} after {last_id} breaks time priority"
            )
        last_id = order_id
        total += order.size
    if total != level.total:
        out.append(f"m{market_id} {side} level {price}: total {level.total} != sum {total}")
    return out


def _book_violations(book: Book) -> list[str]:
    out: list[str] = []
    m = book.market_id
    if sorted(book.bids) != book.bid_keys:
        out.append(f"m{m} bid keys {book.bid_keys} disagree with levels")
    if sorted(-p for p in book.asks) != book.ask_keys:
        out.append(f"m{m} ask keys disagree with levels")
    bid, ask = book.best_bid(), book.best_ask()
    if bid and ask and bid >= ask:
        out.append(f"m{m} book crossed: bid {bid} >= ask {ask}")
    for price, level in book.bids.items():
        out += _level_violations(m, "bid", price, level)
        out += [
            f"order {o.order_id} is a sell on the bid side" for o in level.orders.values() if not o.is_buy
        ]
    for price, level in book.asks.items():
        out += _level_violations(m, "ask", price, level)
        out += [f"order {o.order_id} is a buy on the ask side" for o in level.orders.values() if o.is_buy]
    return out


def find_violations(state: State) -> list[str]:
    out: list[str] = []
    in_books: dict[int, object] = {}
    for market in state.markets:
        out += _book_violations(market.book)
        for side in (market.book.bids, market.book.asks):
            for level in side.values():
                in_books.update(level.orders)
    if sorted(in_books) != sorted(state.orders):
        out.append("order index differs from the books' contents")
    indexed = 0
    for address, account in state.accounts.items():
        for order_id, order in account.orders.items():
            indexed += 1
            if state.orders.get(order_id) is not order or order.account != address:
                out.append(f"account {address.hex()} lists order {order_id} it does not own")
        for cloid, order_id in account.cloids.items():
            if account.orders.get(order_id) is None or account.orders[order_id].client_order_id != cloid:
                out.append(f"client id {cloid!r} of {address.hex()} points at a wrong order")
        for market_id, position in account.positions.items():
            if position.size == 0 or position.open_notional < 0:
                out.append(
                    f"bad position {address.hex()} m{market_id}: {position.size} {position.open_notional}"
                )
            if address not in state.markets[market_id].holders:
                out.append(f"{address.hex()} holds m{market_id} but is not in its holders index")
        out += _exposure_violations(account)
        if account.collateral < 0 and not account.positions and address != INSURANCE_FUND:
            out.append(f"{address.hex()} is flat with a negative balance {account.collateral}")
    holders = sum(len(market.holders) for market in state.markets)
    positions = sum(len(account.positions) for account in state.accounts.values())
    if holders != positions:
        out.append(f"holders index lists {holders} positions, accounts hold {positions}")
    if indexed != len(state.orders):
        out.append(f"accounts list {indexed} open orders, the index has {len(state.orders)}")
    for market in state.markets:
        net = sum(
            a.positions[market.spec.market_id].size
            for a in state.accounts.values()
            if market.spec.market_id in a.positions
        )
        if net != 0:
            out.append(f"m{market.spec.market_id}: long and short sizes differ by {net}")
    return out


def _exposure_violations(account: Account) -> list[str]:
    expected: dict[int, list[int]] = {}
    for order in account.orders.values():
        if order.reduce_only:
            continue
        agg = expected.setdefault(order.market_id, [0, 0, 0, 0])
        i = 0 if order.is_buy else 2
        agg[i] += order.size
        agg[i + 1] += order.size * order.price
    actual = {m: [e.buy_size, e.buy_value, e.sell_size, e.sell_value] for m, e in account.exposure.items()}
    return [] if actual == expected else [f"{account.address.hex()} exposure {actual} != orders {expected}"]


def total_value(state: State) -> int:
    value = state.fee_pool + sum(market.funding_pool for market in state.markets)
    for account in state.accounts.values():
        value += account.collateral
        for position in account.positions.values():
            value += position.open_notional if position.size < 0 else -position.open_notional
    return value
