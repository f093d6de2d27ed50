"""Placing orders: validation, continuous price-time matching, resting.

Theory of operation
- `validate_order` checks everything (market, halt, side/kind/tif, tick, lot,
  min size, price band, client id, open-order cap, post-only, reduce-only)
  and raises `Rejected` *before* any state is touched, so a rejected order
  leaves no trace.
- `execute_order` then cannot fail: it assigns the next order id, walks the
  opposite side best price first and, within a price, oldest first; each fill
  trades at the maker's price, charges both fees (rounded up: the protocol's
  favour) into the fee pool and updates both positions.
- Self-trade prevention: when the incoming order meets a resting order of
  the same account, the *resting* order is cancelled (reason "self_trade")
  and matching continues; the two never trade.
- Reduce-only: an order marked reduce-only only ever fills up to the size
  that brings its account's position to zero; a resting reduce-only order
  whose position is gone is cancelled when it is reached.
- Time in force: GTC rests what is left; IOC and market orders cancel the
  remainder ("ioc_remainder"); post-only was checked not to cross at all.
"""

from __future__ import annotations

from typing import Final

from stf.book import Order
from stf.config import PPM, MarketSpec
from stf.events import (
    CANCEL_IOC_REMAINDER,
    CANCEL_REDUCE_ONLY,
    CANCEL_SELF_TRADE,
    ORDER_ACCEPTED,
    ORDER_CANCELLED,
    ORDER_FILLED,
    TRADE,
    Event,
)
from stf.margin import has_margin_for_order
from stf.positions import apply_fill, signed_position
from stf.results import Code, Rejected
from stf.state import Account, Exposure, MarketState, State
from stf.units import decimal_text

SIDE_BUY: Final = 1
SIDE_SELL: Final = 2
KIND_LIMIT: Final = 1
KIND_MARKET: Final = 2
TIF_GTC: Final = 1
TIF_IOC: Final = 2
TIF_POST_ONLY: Final = 3
MAX_PRICE: Final = (1 << 53) - 1
MAX_SIZE: Final = (1 << 53) - 1
MAX_CLIENT_ORDER_ID: Final = 36


class OrderRequest:
    """A validated order, ready to execute."""

    __slots__ = ("market", "is_buy", "price", "size", "tif", "reduce_only", "client_order_id", "liquidation")

    def __init__(
        self,
        market: MarketState,
        is_buy: bool,
        price: int,
        size: int,
        tif: int,
        reduce_only: bool,
        client_order_id: str,
        liquidation: bool = False,
    ) -> None:
        self.market = market
        self.is_buy = is_buy
        self.price = price
        self.size = size
        self.tif = tif
        self.reduce_only = reduce_only
        self.client_order_id = client_order_id
        # liquidation orders pay the liquidation fee to the insurance fund instead of the taker fee
        self.liquidation = liquidation


def compute_band(oracle_price: int, band_ppm: int) -> tuple[int, int]:
    """[lowest, highest] acceptable order price around the oracle price (inclusive)."""
    low = -(-oracle_price * (PPM - band_ppm) // PPM)
    high = oracle_price * (PPM + band_ppm) // PPM
    return low, high


def compute_fee(notional: int, fee_ppm: int) -> int:
    """Fee in micro-USD, rounded up."""
    return -(-notional * fee_ppm // PPM)


def is_valid_client_order_id(cloid: str) -> bool:
    return len(cloid) <= MAX_CLIENT_ORDER_ID and cloid.isascii() and cloid.isprintable()


def resolve_tif(kind: int, tif: int) -> int:
    if kind == KIND_MARKET:
        if tif not in (0, TIF_IOC):
            raise Rejected(Code.BAD_TIME_IN_FORCE, "market orders are immediate-or-cancel")
        return TIF_IOC
    if kind != KIND_LIMIT:
        raise Rejected(Code.BAD_ORDER_KIND, f"unknown order kind {kind}")
    if tif == 0:
        return TIF_GTC
    if tif not in (TIF_GTC, TIF_IOC, TIF_POST_ONLY):
        raise Rejected(Code.BAD_TIME_IN_FORCE, f"unknown time in force {tif}")
    return tif


def validate_order(
    state: State,
    account: Account | None,
    symbol: str,
    side: int,
    kind: int,
    tif: int,
    price: int,
    size: int,
    reduce_only: bool,
    cloid: str,
) -> OrderRequest:
    market = state.get_market(symbol)
    if market is None:
        raise Rejected(Code.UNKNOWN_MARKET, f"unknown market {symbol!r}")
    spec = market.spec
    if market.halted:
        raise Rejected(Code.MARKET_HALTED, f"{symbol} is halted: only cancels are accepted")
    if side not in (SIDE_BUY, SIDE_SELL):
        raise Rejected(Code.BAD_SIDE, "side must be buy or sell")
    tif = resolve_tif(kind, tif)
    if price == 0:
        raise Rejected(Code.ZERO_PRICE, "price must be positive (market orders need a protective price)")
    if price > MAX_PRICE:
        raise Rejected(
            Code.PRICE_NOT_ON_TICK,
            f"price {_price(price, spec)} exceeds the maximum {_price(MAX_PRICE, spec)}",
        )
    if price % spec.tick_size:
        raise Rejected(
            Code.PRICE_NOT_ON_TICK,
            f"price {_price(price, spec)} is not a multiple of the tick {_price(spec.tick_size, spec)}",
        )
    if size > MAX_SIZE:
        raise Rejected(
            Code.SIZE_TOO_LARGE,
            f"size {_size(size, spec)} exceeds the maximum {_size(MAX_SIZE, spec)}",
        )
    if size == 0 or size % spec.lot_size:
        raise Rejected(
            Code.SIZE_NOT_ON_LOT,
            f"size {_size(size, spec)} is not a positive multiple of the lot {_size(spec.lot_size, spec)}",
        )
    if size < spec.min_size:
        raise Rejected(
            Code.SIZE_BELOW_MIN,
            f"size {_size(size, spec)} is below the minimum {_size(spec.min_size, spec)}",
        )
    low, high = compute_band(market.oracle_price, spec.price_band_ppm)
    if price < low or price > high:
        raise Rejected(
            Code.PRICE_OUT_OF_BAND,
            f"price {_price(price, spec)} is outside the band [{_price(low, spec)}, "
            f"{_price(high, spec)}] around the oracle price {_price(market.oracle_price, spec)}",
        )
    is_buy = side == SIDE_BUY
    validate_account_limits(state, account, tif, cloid)
    if tif == TIF_POST_ONLY:
        opposite = market.book.best_ask() if is_buy else market.book.best_bid()
        if opposite and (price >= opposite if is_buy else price <= opposite):
            raise Rejected(
                Code.POST_ONLY_WOULD_TAKE,
                f"post-only order at {_price(price, spec)} would take at {_price(opposite, spec)}",
            )
    if reduce_only:
        held = signed_position(account, spec.market_id) if account is not None else 0
        if held == 0 or (held > 0) == is_buy:
            raise Rejected(
                Code.REDUCE_ONLY_WOULD_INCREASE, "reduce-only order has no opposite position to reduce"
            )
    if not reduce_only and (
        account is None or not has_margin_for_order(state, account, market, is_buy, price, size)
    ):
        raise Rejected(Code.INSUFFICIENT_MARGIN, "equity would fall below the initial margin requirement")
    return OrderRequest(market, is_buy, price, size, tif, reduce_only, cloid)


def _price(value: int, spec: MarketSpec) -> str:
    """A price in the market's decimals, for a rejection reason (computed only when rejecting)."""
    return decimal_text(value, spec.price_decimals)


def _size(value: int, spec: MarketSpec) -> str:
    return decimal_text(value, spec.size_decimals)


def validate_account_limits(state: State, account: Account | None, tif: int, cloid: str) -> None:
    if cloid:
        if not is_valid_client_order_id(cloid):
            raise Rejected(
                Code.BAD_CLIENT_ORDER_ID, "client order id must be <= 36 printable ASCII characters"
            )
        if account is not None and cloid in account.cloids:
            raise Rejected(Code.DUPLICATE_CLIENT_ORDER_ID, f"client order id {cloid!r} is already open")
    if tif != TIF_IOC and account is not None:
        cap = state.config.max_open_orders_per_account
        if len(account.orders) >= cap:
            raise Rejected(Code.TOO_MANY_OPEN_ORDERS, f"account already has {cap} open orders")


def change_exposure(account: Account, order: Order, size: int) -> None:
    """Add (size > 0) or remove (size < 0) part of an order from its account's open-order aggregate."""
    if order.reduce_only:
        return
    exposure = account.exposure.get(order.market_id)
    if exposure is None:
        exposure = account.exposure[order.market_id] = Exposure()
    if order.is_buy:
        exposure.buy_size += size
        exposure.buy_value += size * order.price
    else:
        exposure.sell_size += size
        exposure.sell_value += size * order.price
    if exposure.is_empty():
        del account.exposure[order.market_id]


def rest_order(state: State, account: Account, market: MarketState, order: Order) -> None:
    """Put an order in the book and every index (also used to rebuild from a snapshot)."""
    market.book.add(order)
    state.orders[order.order_id] = order
    account.orders[order.order_id] = order
    if order.client_order_id:
        account.cloids[order.client_order_id] = order.order_id
    change_exposure(account, order, order.size)


def remove_resting(state: State, order: Order, market: MarketState) -> None:
    """Take a resting order out of the book and every index."""
    state.touch_order(order.order_id)
    market.book.remove(order)
    del state.orders[order.order_id]
    owner = state.accounts[order.account]
    del owner.orders[order.order_id]
    if order.client_order_id:
        del owner.cloids[order.client_order_id]
    change_exposure(owner, order, -order.size)


def cancel_resting(
    state: State, order: Order, market: MarketState, reason: str, tx: int, events: list[Event]
) -> None:
    remove_resting(state, order, market)
    events.append((ORDER_CANCELLED, tx, order.order_id, order.account, order.market_id, order.size, reason))


def reduce_capacity(account: Account, market_id: int, is_buy: bool) -> int:
    """How much a reduce-only order on this side may still fill."""
    held = signed_position(account, market_id)
    if is_buy:
        return -held if held < 0 else 0
    return held if held > 0 else 0


def execute_order(state: State, account: Account, req: OrderRequest, tx: int, events: list[Event]) -> int:
    """Run a validated order: match, then rest or cancel the remainder. Returns its order id."""
    market = req.market
    spec = market.spec
    market_id = spec.market_id
    state.touch_global()
    order_id = state.next_order_id
    state.next_order_id = order_id + 1
    is_buy = req.is_buy
    events.append(
        (
            ORDER_ACCEPTED,
            tx,
            order_id,
            account.address,
            market_id,
            is_buy,
            req.price,
            req.size,
            req.tif,
            req.reduce_only,
            req.client_order_id,
        )
    )
    remaining = match(state, account, req, order_id, tx, events)
    if remaining and req.reduce_only and reduce_capacity(account, market_id, is_buy) == 0:
        events.append(
            (ORDER_CANCELLED, tx, order_id, account.address, market_id, remaining, CANCEL_REDUCE_ONLY)
        )
    elif remaining == 0:
        events.append((ORDER_FILLED, tx, order_id, account.address, market_id))
    elif req.tif == TIF_IOC:
        events.append(
            (ORDER_CANCELLED, tx, order_id, account.address, market_id, remaining, CANCEL_IOC_REMAINDER)
        )
    else:
        order = Order(
            order_id,
            account.address,
            market_id,
            is_buy,
            req.price,
            remaining,
            req.size,
            req.tif,
            req.reduce_only,
            req.client_order_id,
        )
        state.touch_new_order(order_id)
        rest_order(state, account, market, order)
    return order_id


def match(
    state: State, taker: Account, req: OrderRequest, order_id: int, tx: int, events: list[Event]
) -> int:
    """Fill the incoming order against the book; returns the size left."""
    market = req.market
    spec = market.spec
    book = market.book
    is_buy = req.is_buy
    limit = req.price
    levels = book.asks if is_buy else book.bids
    keys = book.ask_keys if is_buy else book.bid_keys
    remaining = req.size
    accounts = state.accounts
    while remaining and keys:
        level_price = -keys[-1] if is_buy else keys[-1]
        if (level_price > limit) if is_buy else (level_price < limit):
            break
        orders = levels[level_price].orders
        while remaining and orders:
            maker = next(iter(orders.values()))
            if maker.account == taker.address:
                cancel_resting(state, maker, market, CANCEL_SELF_TRADE, tx, events)
                continue
            maker_account = accounts[maker.account]
            quantity = remaining if remaining < maker.size else maker.size
            if maker.reduce_only:
                cap = reduce_capacity(maker_account, spec.market_id, not is_buy)
                if cap == 0:
                    cancel_resting(state, maker, market, CANCEL_REDUCE_ONLY, tx, events)
                    continue
                quantity = min(quantity, cap)
            if req.reduce_only:
                quantity = min(quantity, reduce_capacity(taker, spec.market_id, is_buy))
                if quantity == 0:
                    return remaining
            fill(state, req, taker, maker_account, maker, level_price, quantity, order_id, tx, events)
            remaining -= quantity
    return remaining


def fill(
    state: State,
    req: OrderRequest,
    taker: Account,
    maker_account: Account,
    maker: Order,
    price: int,
    quantity: int,
    taker_order_id: int,
    tx: int,
    events: list[Event],
) -> None:
    market = req.market
    taker_is_buy = req.is_buy
    spec = market.spec
    notional = price * quantity * market.notional_scale
    maker_fee = -(-notional * spec.maker_fee_ppm // PPM)
    state.touch_account(taker.address)
    state.touch_account(maker_account.address)
    maker_account.collateral -= maker_fee
    if req.liquidation:
        taker_fee = -(-notional * state.config.liquidation_fee_ppm // PPM)
        state.touch_account(state.insurance.address)
        state.insurance.collateral += taker_fee
        state.fee_pool += maker_fee
    else:
        taker_fee = -(-notional * spec.taker_fee_ppm // PPM)
        state.fee_pool += taker_fee + maker_fee
    taker.collateral -= taker_fee
    events.append(
        (
            TRADE,
            tx,
            spec.market_id,
            price,
            quantity,
            taker_order_id,
            maker.order_id,
            taker.address,
            maker.account,
            taker_is_buy,
            taker_fee,
            maker_fee,
        )
    )
    if quantity == maker.size:
        remove_resting(state, maker, market)
        events.append((ORDER_FILLED, tx, maker.order_id, maker.account, spec.market_id))
    else:
        state.touch_order(maker.order_id)
        market.book.reduce(maker, quantity)
        change_exposure(maker_account, maker, -quantity)
    apply_fill(state, taker, market, taker_is_buy, price, quantity, tx, events)
    apply_fill(state, maker_account, market, not taker_is_buy, price, quantity, tx, events)
