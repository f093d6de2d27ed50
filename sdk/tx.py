"""Build and sign ita transactions.

Theory of operation
-------------------
Three layers, each usable on its own:

1. *Action builders* taking integers exactly as they go on the wire
   (``place_order``, ``cancel_order``, ``cancel_all``, ``batch``,
   ``transfer``, ``oracle_prices``, ``faucet``, ``set_market_halt``). They
   check what the SDK can know without chain state (uint64 range, non-empty
   market, client-order-id length, ...) and raise ``TxBuildError``.
2. *Convenience builders* taking decimal strings and a ``MarketSpec``
   (``limit_order``, ``market_order``, ``oracle_price``, ``usd``): they
   convert with ``sdk.units.to_units`` (refusing lossy input) and refuse
   prices off the tick grid or sizes off the lot grid / below the minimum
   size, before anything is signed.
3. *Signing*: ``tx_body`` wraps an action with chain id and nonce;
   ``sign_tx`` serializes the body once, signs those exact bytes with the
   domain-separated message of ``stf.signing`` and embeds the same bytes in
   the ``SignedTx``. ``NonceClock`` hands out strictly increasing millisecond
   nonces; ``Signer`` bundles key + chain id + clock for bots.

Order conventions: limit orders carry an explicit time-in-force (GTC, IOC or
POST_ONLY); market orders are ``ORDER_KIND_MARKET`` with
``TIME_IN_FORCE_UNSPECIFIED`` and a protective worst price in ``price``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Literal

from proto.ita.v1 import tx_pb2
from sdk.keys import Key
from sdk.units import UnitsError, from_units, to_units
from stf.config import COLLATERAL_DECIMALS, MarketSpec
from stf.signing import ADDRESS_LEN, parse_address, signing_message

__all__ = [
    "MAX_CLIENT_ORDER_ID_BYTES",
    "NonceClock",
    "Signer",
    "TxBuildError",
    "batch",
    "cancel_all",
    "cancel_order",
    "faucet",
    "limit_order",
    "market_order",
    "oracle_price",
    "oracle_prices",
    "place_order",
    "set_market_halt",
    "sign_tx",
    "transfer",
    "tx_body",
    "usd",
]

UINT64_MAX = 2**64 - 1
MAX_CLIENT_ORDER_ID_BYTES = 36

SideName = Literal["buy", "sell"]
TifName = Literal["gtc", "ioc", "post_only"]
Action = (
    tx_pb2.PlaceOrder
    | tx_pb2.CancelOrder
    | tx_pb2.CancelAll
    | tx_pb2.Batch
    | tx_pb2.Transfer
    | tx_pb2.OraclePrices
    | tx_pb2.Faucet
    | tx_pb2.SetMarketHalt
)

_SIDES = {"buy": tx_pb2.SIDE_BUY, "sell": tx_pb2.SIDE_SELL}
_TIFS = {
    "gtc": tx_pb2.TIME_IN_FORCE_GTC,
    "ioc": tx_pb2.TIME_IN_FORCE_IOC,
    "post_only": tx_pb2.TIME_IN_FORCE_POST_ONLY,
}
# TxBody oneof field name for each action type.
_ACTION_FIELD: dict[type, str] = {
    tx_pb2.PlaceOrder: "place_order",
    tx_pb2.CancelOrder: "cancel_order",
    tx_pb2.CancelAll: "cancel_all",
    tx_pb2.Batch: "batch",
    tx_pb2.Transfer: "transfer",
    tx_pb2.OraclePrices: "oracle_prices",
    tx_pb2.Faucet: "faucet",
    tx_pb2.SetMarketHalt: "set_market_halt",
}


class TxBuildError(ValueError):
    """A transaction the SDK refuses to build or sign; the message says which field and why."""


# --- small checks ---------------------------------------------------------------------------------


def _uint64(name: str, value: int, *, positive: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TxBuildError(f"{name} must be an int, got {type(value).__name__}")
    low = 1 if positive else 0
    if not low <= value <= UINT64_MAX:
        raise TxBuildError(f"{name} must be in {low}..2^64-1, got {value}")
    return value


def _market(market: str) -> str:
    if not isinstance(market, str) or market == "":
        raise TxBuildError(f"market must be a non-empty symbol like 'BTC-PERP', got {market!r}")
    return market


def _client_order_id(coid: str, *, required: bool = False) -> str:
    if not isinstance(coid, str):
        raise TxBuildError(f"client_order_id must be a str, got {type(coid).__name__}")
    if required and coid == "":
        raise TxBuildError("client_order_id must not be empty")
    if len(coid.encode("utf-8")) > MAX_CLIENT_ORDER_ID_BYTES:
        raise TxBuildError(f"client_order_id {coid!r} is longer than {MAX_CLIENT_ORDER_ID_BYTES} bytes")
    return coid


def _side(side: SideName | int) -> tx_pb2.Side:
    if isinstance(side, str) and side in _SIDES:
        return _SIDES[side]
    for value in _SIDES.values():
        if side == value and not isinstance(side, bool | str):
            return value
    raise TxBuildError(f"side must be 'buy' or 'sell', got {side!r}")


# --- action builders (integer units) -------------------------------------------------------------


def place_order(
    market: str,
    side: SideName | int,
    *,
    price: int,
    size: int,
    kind: Literal["limit", "market"] = "limit",
    tif: TifName | None = None,
    reduce_only: bool = False,
    client_order_id: str = "",
) -> tx_pb2.PlaceOrder:
    """A PlaceOrder in integer price/size units.

    ``tif`` applies to limit orders only (``None`` means GTC); market orders are IOC by definition.
    """
    if kind == "limit":
        tif = "gtc" if tif is None else tif
        if tif not in _TIFS:
            raise TxBuildError(f"tif must be one of {sorted(_TIFS)}, got {tif!r}")
        kind_value, tif_value = tx_pb2.ORDER_KIND_LIMIT, _TIFS[tif]
    elif kind == "market":
        if tif is not None:
            raise TxBuildError(f"a market order takes no tif (it is IOC by definition), got {tif!r}")
        kind_value, tif_value = tx_pb2.ORDER_KIND_MARKET, tx_pb2.TIME_IN_FORCE_UNSPECIFIED
    else:
        raise TxBuildError(f"kind must be 'limit' or 'market', got {kind!r}")
    if not isinstance(reduce_only, bool):
        raise TxBuildError("reduce_only must be a bool")
    return tx_pb2.PlaceOrder(
        market=_market(market),
        side=_side(side),
        kind=kind_value,
        time_in_force=tif_value,
        price=_uint64("price", price),
        size=_uint64("size", size),
        reduce_only=reduce_only,
        client_order_id=_client_order_id(client_order_id),
    )


def cancel_order(
    market: str, *, order_id: int | None = None, client_order_id: str | None = None
) -> tx_pb2.CancelOrder:
    """Cancel one order by exactly one of ``order_id`` or ``client_order_id``."""
    if (order_id is None) == (client_order_id is None):
        raise TxBuildError("cancel_order needs exactly one of order_id or client_order_id")
    if order_id is not None:
        return tx_pb2.CancelOrder(
            market=_market(market), order_id=_uint64("order_id", order_id, positive=False)
        )
    assert client_order_id is not None
    return tx_pb2.CancelOrder(
        market=_market(market), client_order_id=_client_order_id(client_order_id, required=True)
    )


def cancel_all(market: str = "") -> tx_pb2.CancelAll:
    """Cancel every open order of the signer, in one market or (``""``) in all markets."""
    if not isinstance(market, str):
        raise TxBuildError(f"market must be a str, got {type(market).__name__}")
    return tx_pb2.CancelAll(market=market)


def batch(items: Iterable[tx_pb2.PlaceOrder | tx_pb2.CancelOrder]) -> tx_pb2.Batch:
    """Many places/cancels in one signed tx; each gets its own result."""
    out = tx_pb2.Batch()
    for index, item in enumerate(items):
        if isinstance(item, tx_pb2.PlaceOrder):
            out.items.add().place.CopyFrom(item)
        elif isinstance(item, tx_pb2.CancelOrder):
            out.items.add().cancel.CopyFrom(item)
        else:
            raise TxBuildError(
                f"batch item {index} must be a PlaceOrder or CancelOrder, got {type(item).__name__}"
            )
    if not out.items:
        raise TxBuildError("a batch needs at least one item")
    return out


def transfer(to: bytes | str, amount: int) -> tx_pb2.Transfer:
    """Send ``amount`` micro-USD to address ``to`` (20 bytes or "0x…")."""
    if isinstance(to, str):
        try:
            to = parse_address(to)
        except ValueError as exc:
            raise TxBuildError(f"transfer destination: {exc}") from None
    if not isinstance(to, bytes) or len(to) != ADDRESS_LEN:
        raise TxBuildError(f"transfer destination must be a {ADDRESS_LEN}-byte address")
    return tx_pb2.Transfer(to=to, amount=_uint64("amount", amount))


def oracle_prices(prices: Iterable[tuple[str, int]] | dict[str, int]) -> tx_pb2.OraclePrices:
    """Validator oracle submission: (market, price units) pairs, each market at most once."""
    pairs = list(prices.items()) if isinstance(prices, dict) else list(prices)
    out = tx_pb2.OraclePrices()
    seen: list[str] = []
    for market, price in pairs:
        if market in seen:
            raise TxBuildError(f"oracle price for {market!r} given twice")
        seen.append(market)
        out.prices.add(market=_market(market), price=_uint64(f"oracle price of {market}", price))
    if not out.prices:
        raise TxBuildError("oracle_prices needs at least one price")
    return out


def faucet(amount: int) -> tx_pb2.Faucet:
    """Devnet faucet request of ``amount`` micro-USD (only valid when genesis enables it)."""
    return tx_pb2.Faucet(amount=_uint64("amount", amount))


def set_market_halt(market: str, halted: bool) -> tx_pb2.SetMarketHalt:
    """Validator-only: halt or resume a market."""
    if not isinstance(halted, bool):
        raise TxBuildError("halted must be a bool")
    return tx_pb2.SetMarketHalt(market=_market(market), halted=halted)


# --- convenience builders (decimal strings + MarketSpec) ------------------------------------------


def _units(what: str, text: str, decimals: int) -> int:
    try:
        return to_units(text, decimals)
    except UnitsError as exc:
        raise TxBuildError(f"{what}: {exc}") from None


def _on_grid(spec: MarketSpec, what: str, text: str, value: int, step: int, decimals: int) -> None:
    if value % step:
        below = value - value % step
        raise TxBuildError(
            f"{what} {text!r} is not on the {spec.symbol} grid of {from_units(step, decimals)}: "
            f"nearest valid values are {from_units(below, decimals)} and {from_units(below + step, decimals)}"
        )


def spec_price(spec: MarketSpec, text: str, *, what: str = "price") -> int:
    """A price string as price units of ``spec``, refused if lossy, non-positive or off the tick grid."""
    value = _units(f"{spec.symbol} {what}", text, spec.price_decimals)
    if value <= 0:
        raise TxBuildError(f"{spec.symbol} {what} must be positive, got {text!r}")
    _on_grid(spec, what, text, value, spec.tick_size, spec.price_decimals)
    return value


def spec_size(spec: MarketSpec, text: str) -> int:
    """A size string as size units of ``spec``, refused if off the lot grid or below the minimum size."""
    value = _units(f"{spec.symbol} size", text, spec.size_decimals)
    _on_grid(spec, "size", text, value, spec.lot_size, spec.size_decimals)
    if value < spec.min_size:
        raise TxBuildError(
            f"{spec.symbol} size {text!r} is below the minimum size "
            f"{from_units(spec.min_size, spec.size_decimals)}"
        )
    return value


def limit_order(
    spec: MarketSpec,
    *,
    side: SideName,
    price: str,
    size: str,
    tif: TifName = "gtc",
    reduce_only: bool = False,
    client_order_id: str = "",
) -> tx_pb2.PlaceOrder:
    """A limit order from decimal strings.

    e.g. ``limit_order(btc, side="buy", price="65000.5", size="0.01")``.
    """
    return place_order(
        spec.symbol,
        side,
        price=spec_price(spec, price),
        size=spec_size(spec, size),
        kind="limit",
        tif=tif,
        reduce_only=reduce_only,
        client_order_id=client_order_id,
    )


def market_order(
    spec: MarketSpec,
    *,
    side: SideName,
    size: str,
    worst_price: str,
    reduce_only: bool = False,
    client_order_id: str = "",
) -> tx_pb2.PlaceOrder:
    """An IOC market order that never trades beyond ``worst_price`` (protective limit)."""
    return place_order(
        spec.symbol,
        side,
        price=spec_price(spec, worst_price, what="worst price"),
        size=spec_size(spec, size),
        kind="market",
        reduce_only=reduce_only,
        client_order_id=client_order_id,
    )


def oracle_price(spec: MarketSpec, price: str) -> tuple[str, int]:
    """One ``oracle_prices`` entry: exact in the market's precision and positive (tick grid not required)."""
    value = _units(f"{spec.symbol} oracle price", price, spec.price_decimals)
    if value <= 0:
        raise TxBuildError(f"{spec.symbol} oracle price must be positive, got {price!r}")
    return (spec.symbol, value)


def usd(amount: str) -> int:
    """A USD amount string as micro-USD (6 decimals), for ``transfer``/``faucet``."""
    return _units("USD amount", amount, COLLATERAL_DECIMALS)


# --- body, signing, nonces ---------------------------------------------------------------------------


def tx_body(chain_id: str, nonce: int, action: Action) -> tx_pb2.TxBody:
    """Wrap one action into a TxBody."""
    field_name = _ACTION_FIELD.get(type(action))
    if field_name is None:
        raise TxBuildError(f"not a tx action: {type(action).__name__}")
    body = tx_pb2.TxBody(chain_id=chain_id, nonce=_uint64("nonce", nonce))
    getattr(body, field_name).CopyFrom(action)
    return body


def sign_tx(key: Key, chain_id: str, body: tx_pb2.TxBody) -> bytes:
    """Serialized SignedTx: the body is serialized once and those exact bytes are signed and embedded."""
    if body.chain_id != chain_id:
        raise TxBuildError(f"body.chain_id {body.chain_id!r} differs from the signing chain id {chain_id!r}")
    if body.WhichOneof("action") is None:
        raise TxBuildError("the tx body has no action")
    _uint64("nonce", body.nonce)
    body_bytes = body.SerializeToString(deterministic=True)
    try:
        message = signing_message(chain_id, body_bytes)
    except ValueError as exc:
        raise TxBuildError(str(exc)) from None
    signed = tx_pb2.SignedTx(body=body_bytes, public_key=key.public_key, signature=key.sign(message))
    return signed.SerializeToString(deterministic=True)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class NonceClock:
    """Strictly increasing millisecond nonces: the wall clock, but never <= the previous nonce.

    Thread-safe. ``clock`` returns integer milliseconds since the Unix epoch
    (injectable for tests); ``last`` seeds the floor, e.g. from a nonce
    persisted by a previous run.
    """

    def __init__(self, clock: Callable[[], int] = _wall_clock_ms, *, last: int = 0) -> None:
        self._clock = clock
        self._last = last
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def next(self) -> int:
        with self._lock:
            now = self._clock()
            if isinstance(now, bool) or not isinstance(now, int):
                raise TypeError(f"clock must return int milliseconds, got {type(now).__name__}")
            self._last = max(now, self._last + 1)
            return self._last


class Signer:
    """Key + chain id + nonce clock: ``Signer(key, "ita-devnet-1").sign(action)`` -> SignedTx bytes."""

    def __init__(self, key: Key, chain_id: str, nonces: NonceClock | None = None) -> None:
        self.key = key
        self.chain_id = chain_id
        self.nonces = nonces if nonces is not None else NonceClock()

    def sign(self, action: Action) -> bytes:
        return sign_tx(self.key, self.chain_id, tx_body(self.chain_id, self.nonces.next(), action))
