"""The indexer's core: (state, committed block) -> (new state, per-channel updates).

Theory of operation
- ``IndexerState`` wraps the stf ``State`` (replayed with the very same ``apply_block`` as
  the validators) plus what the API needs and the chain does not keep: the id of the last
  applied block, one sequence number per *topic* (``book:BTC-PERP``, ``trades:BTC-PERP``,
  ``account:0x...``; the book's is DESIGN.md's per-market ``seq``), the open candles, the
  most recent trades, open interest, references to resting orders so that an order
  leaving the book can still be described (price, side, original size), and the level
  sizes last published per market, so a book update is an exact diff: a level touched
  during a block but back to its old size (or created and emptied within the block) is
  not sent, and size "0" is sent only for a level the subscriber has.
- ``apply_committed(state, committed)`` verifies the block (rpc/verify.py), applies it,
  checks the replay against the node's report, and turns the block's events into
  ``ChannelUpdate`` values, each stamped with the height and its topic's next ``seq``
  (``prev_seq = seq - 1``). Parts only WebSocket subscribers read (a book's checksum unless
  cached, the market views, account positions and balances) are deferred to
  ``ChannelUpdate.materialize()``, which must run before the next block is applied (the hub
  does it in ``publish``; history reads only the rest). It does no I/O and reads no clock:
  the same blocks from the same state give the same updates, byte for byte (which is what
  lets a restarted indexer re-emit identical history records). It mutates ``state`` in
  place -- copying an order book per block would cost more than applying it -- and raises
  ``IndexerFatal`` *before* mutating anything when verification fails; after a replay
  mismatch the state is garbage and the caller must stop.
- Topics whose channel starts with ``_`` (``_txs``, ``_funding``) feed only the history
  store; the others are WebSocket channels (rpc/ws.py) and also feed history.
- Transaction signatures are not re-verified by default: the block is certified and the
  app hash is checked, so a replay that applied a badly signed tx would be caught. Txs the
  node reports as ``bad_signature`` are verified for real so their rejection replays
  faithfully; ``verify_tx_signatures=True`` verifies all of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from proto.ita.v1 import block_pb2, tx_pb2
from rpc.candles import INTERVALS, Candle, update_candles
from rpc.verify import BlockRejected, ChainVerifier, check_replay
from rpc.views import (
    ADDRESS_HEX,
    address_hex,
    balance_view,
    book_checksum,
    checksum_window,
    fmt,
    formatter,
    market_view,
    order_view,
    position_view,
    ppm,
    usd,
)
from stf import events as ev
from stf.block import BlockHeader, BlockResult, InvalidBlock, apply_block, skip_signature_check
from stf.book import Order
from stf.config import COLLATERAL_DECIMALS, ChainConfig, address_of
from stf.results import Code
from stf.signing import verify_signature
from stf.state import Account, State

RECENT_TRADES = 100
TRADE_ID_BASE = 1_000_000  # trade_id = height * TRADE_ID_BASE + index of the trade in the block
PUBLIC_CHANNELS = ("book", "trades", "candles", "markets", "blocks", "account")
SignatureCheck = Callable[[bytes, bytes, bytes], None]
_BAD_SIGNATURE = int(Code.BAD_SIGNATURE)  # an int: no enum attribute lookup per tx


@dataclass(slots=True)
class ChannelUpdate:  # not frozen (a frozen dataclass costs ~1 us more to build), but never mutated
    topic: str  # "book:BTC-PERP", "candles:BTC-PERP:1m", "markets", "account:0x..", "_txs", ...
    channel: str
    height: int
    seq: int
    message: dict[str, Any]  # the WebSocket message ("type": "update"), JSON-ready
    # parts computed only for subscribers (a book's checksum unless cached, the market views,
    # account positions and balance), each adding the message's last keys: they read the state,
    # so they must be materialized before the next block is applied (the hub does it in publish)
    pending: list[Callable[[], dict[str, Any]]] = field(default_factory=list)

    def materialize(self) -> dict[str, Any]:
        """The complete message (computes the deferred parts once)."""
        while self.pending:
            self.message.update(self.pending.pop()())
        return self.message


class IndexerState:
    __slots__ = (
        "stf",
        "config",
        "verifier",
        "last_block_id",
        "seqs",
        "resting",
        "positions",
        "open_interest",
        "candles",
        "recent_trades",
        "last_block",
        "verify_tx_signatures",
        "levels",
        "checksums",
    )

    def __init__(self, stf_state: State, verify_tx_signatures: bool = False) -> None:
        self.stf = stf_state
        self.config: ChainConfig = stf_state.config
        self.verifier = ChainVerifier(self.config)
        self.last_block_id: bytes | None = None
        self.seqs: dict[str, int] = {}
        self.verify_tx_signatures = verify_tx_signatures
        # resting orders by id: the stf Order objects themselves, kept after they leave the book
        self.resting: dict[int, Order] = dict(stf_state.orders)
        self.positions: dict[tuple[bytes, int], int] = {}
        self.open_interest = [0] * len(stf_state.markets)
        for address, account in stf_state.accounts.items():
            for market_id, position in account.positions.items():
                self.positions[(address, market_id)] = position.size
                if position.size > 0:
                    self.open_interest[market_id] += position.size
        self.candles: list[dict[str, Candle]] = [{} for _ in stf_state.markets]
        self.recent_trades: list[deque[dict[str, Any]]] = [
            deque(maxlen=RECENT_TRADES) for _ in stf_state.markets
        ]
        self.last_block: dict[str, Any] | None = None
        # level sizes as last published, per market: book updates are exact diffs against them
        self.levels: list[dict[tuple[bool, int], int]] = []
        for market in stf_state.markets:
            book = market.book
            published = {(True, p): lv.total for p, lv in book.bids.items()}
            published.update({(False, p): lv.total for p, lv in book.asks.items()})
            self.levels.append(published)
        # per market: (checksum, bid floor, ask ceiling) of the last book update (views.checksum_window)
        self.checksums: list[tuple[int, int, int] | None] = [None] * len(stf_state.markets)

    @property
    def height(self) -> int:
        return self.stf.height

    def seq(self, topic: str) -> int:
        return self.seqs.get(topic, 0)

    # -- persistence of what the stf snapshot does not hold ---------------------------------
    def to_meta(self) -> dict[str, Any]:
        symbols = [m.spec.symbol for m in self.stf.markets]
        return {
            "version": 1,
            "height": self.stf.height,
            "last_block_id": self.last_block_id.hex() if self.last_block_id is not None else None,
            "seqs": self.seqs,
            "candles": {
                symbols[i]: {name: c.to_list() for name, c in per.items()}
                for i, per in enumerate(self.candles)
            },
            "recent_trades": {symbols[i]: list(q) for i, q in enumerate(self.recent_trades)},
            "last_block": self.last_block,
        }

    def load_meta(self, meta: dict[str, Any]) -> None:
        if meta.get("version") != 1 or meta.get("height") != self.stf.height:
            raise ValueError(
                f"indexer metadata is for height {meta.get('height')}, state is {self.stf.height}"
            )
        last = meta["last_block_id"]
        self.last_block_id = bytes.fromhex(last) if last is not None else None
        self.seqs = {str(k): int(v) for k, v in meta["seqs"].items()}
        for market in self.stf.markets:
            symbol = market.spec.symbol
            mid = market.spec.market_id
            for name, values in meta["candles"].get(symbol, {}).items():
                if name in INTERVALS:
                    self.candles[mid][name] = Candle.from_list(values)
            self.recent_trades[mid].extend(meta["recent_trades"].get(symbol, []))
        self.last_block = meta["last_block"]


# -- the reducer ------------------------------------------------------------------------------


def vouch_run(state: IndexerState, run: Sequence[block_pb2.CommittedBlock]) -> list[bytes]:
    """Certify the consecutive blocks after ``state`` with the last one's certificate and the
    hash links back from it (rpc.verify.ChainVerifier.vouch_run); pass each returned id to
    ``apply_committed(..., vouched_id=...)`` in order. Nothing is applied here."""
    return state.verifier.vouch_run(run, state.stf.height + 1, state.last_block_id)


def apply_committed(
    state: IndexerState, committed: block_pb2.CommittedBlock, vouched_id: bytes | None = None
) -> list[ChannelUpdate]:
    """Verify, replay and describe one committed block (see the module docstring)."""
    stf_state = state.stf
    height = stf_state.height + 1
    block_id = state.verifier.verify(committed, height, stf_state.app_hash, state.last_block_id, vouched_id)
    header = committed.block.header
    txs = list(committed.block.txs)
    check = signature_policy(committed, state.verify_tx_signatures)
    try:
        result = apply_block(stf_state, BlockHeader(height, header.time_ms, header.proposer), txs, check)
    except InvalidBlock as exc:
        raise BlockRejected(height, str(exc)) from exc
    check_replay(committed, result.app_hash, result.results)
    state.last_block_id = block_id
    return _Describer(state, committed, block_id, result).run()


def signature_policy(committed: block_pb2.CommittedBlock, verify_all: bool) -> SignatureCheck:
    if verify_all:
        return verify_signature
    suspects: dict[bytes, None] = {}
    for raw, reported in zip(committed.block.txs, committed.results, strict=False):
        if reported.code == _BAD_SIGNATURE:
            try:
                suspects[tx_pb2.SignedTx.FromString(raw).signature] = None
            except DecodeError:
                continue
    if not suspects:
        return skip_signature_check

    def check(public_key: bytes, signature: bytes, message: bytes) -> None:
        if signature in suspects:
            verify_signature(public_key, signature, message)

    return check


class _AccountDelta:
    __slots__ = ("orders", "fills", "markets", "events")

    def __init__(self) -> None:
        self.orders: dict[int, None] = {}
        self.fills: list[dict[str, Any]] = []
        self.markets: dict[int, None] = {}  # positions changed
        self.events: list[dict[str, Any]] = []


class _Describer:
    """Turns one applied block's events into channel updates (one use)."""

    def __init__(
        self, state: IndexerState, committed: block_pb2.CommittedBlock, block_id: bytes, result: BlockResult
    ) -> None:
        self.state = state
        self.committed = committed
        self.block_id = block_id
        self.result = result
        self.height = state.stf.height
        self.time_ms = state.stf.time_ms
        self.updates: list[ChannelUpdate] = []
        self.accounts: dict[bytes, _AccountDelta] = {}
        self.accepted: dict[int, Order] = {}
        self.closed: dict[int, tuple[str, int, str]] = {}  # order id -> (status, leftover, reason)
        self.trades: dict[int, list[dict[str, Any]]] = {}
        self.bids: dict[int, list[list[str]]] = {}
        self.asks: dict[int, list[list[str]]] = {}
        self.funding: dict[int, list[dict[str, Any]]] = {}
        self.trade_count = 0
        self.changed_bids: dict[int, list[int]] = {}  # market -> prices of changed bid levels
        self.changed_asks: dict[int, list[int]] = {}

    def delta(self, address: bytes) -> _AccountDelta:
        d = self.accounts.get(address)
        if d is None:
            d = self.accounts[address] = _AccountDelta()
        return d

    def emit(self, topic: str, channel: str, keys: dict[str, Any], body: dict[str, Any]) -> None:
        seqs = self.state.seqs
        seq = seqs.get(topic, 0) + 1
        seqs[topic] = seq
        height = self.height
        message: dict[str, Any] = {
            "channel": channel,
            **keys,
            "type": "update",
            "height": height,
            "time_ms": self.time_ms,
            "seq": seq,
            "prev_seq": seq - 1,
            **body,
        }
        self.updates.append(ChannelUpdate(topic, channel, height, seq, message))

    def run(self) -> list[ChannelUpdate]:
        handlers = self._handlers()
        for event in self.result.events:
            handler = handlers.get(event[0])
            if handler is not None:
                handler(event)
        self.emit_books()
        self.emit_trades_and_candles()
        self.emit_accounts()
        self.emit_markets()
        self.emit_block()
        return self.updates

    def _handlers(self) -> dict[int, Callable[[tuple[Any, ...]], None]]:
        return {
            ev.BOOK_LEVEL: self.on_book_level,
            ev.TRADE: self.on_trade,
            ev.ORDER_ACCEPTED: self.on_accepted,
            ev.ORDER_CANCELLED: self.on_cancelled,
            ev.ORDER_FILLED: self.on_filled,
            ev.ORDER_REJECTED: self.on_rejected,
            ev.POSITION: self.on_position,
            ev.FUNDING: self.on_funding,
            ev.TRANSFER: self.on_transfer,
            ev.FAUCET: self.on_account_event,
            ev.LIQUIDATION: self.on_account_event,
            ev.TAKEOVER: self.on_market_account_event,
            ev.ADL: self.on_adl,
            ev.DEFICIT_COVERED: self.on_account_event,
        }

    # -- event handlers ---------------------------------------------------------------------
    def on_book_level(self, e: tuple[Any, ...]) -> None:
        _, market_id, is_buy, price, size = e
        published = self.state.levels[market_id]
        key = (is_buy, price)
        if published.get(key, 0) == size:
            return  # touched during the block but back where it was (or never published)
        if size:
            published[key] = size
        else:
            del published[key]
        spec = self.state.stf.markets[market_id].spec
        # DESIGN.md: size "0" deletes the level (live sizes are in the market's precision)
        level = [formatter(spec.price_decimals)[price], formatter(spec.size_decimals)[size] if size else "0"]
        if is_buy:
            self.bids.setdefault(market_id, []).append(level)
            self.changed_bids.setdefault(market_id, []).append(price)
        else:
            self.asks.setdefault(market_id, []).append(level)
            self.changed_asks.setdefault(market_id, []).append(price)

    def on_trade(self, e: tuple[Any, ...]) -> None:
        _, _tx, market_id, price, size, taker_oid, maker_oid, taker, maker, taker_is_buy, tfee, mfee = e
        state = self.state
        spec = state.stf.markets[market_id].spec
        symbol = spec.symbol
        height, time_ms = self.height, self.time_ms
        trades = self.trades.get(market_id)
        if trades is None:
            trades = self.trades[market_id] = []
        trade_id = height * TRADE_ID_BASE + self.trade_count
        self.trade_count += 1
        px, sz = formatter(spec.price_decimals)[price], formatter(spec.size_decimals)[size]
        taker_side, maker_side = ("buy", "sell") if taker_is_buy else ("sell", "buy")
        trades.append(
            {
                "trade_id": trade_id,
                "market": symbol,
                "price": px,
                "size": sz,
                "side": taker_side,
                "height": height,
                "time_ms": time_ms,
                "taker_order_id": taker_oid,
                "maker_order_id": maker_oid,
                "taker": ADDRESS_HEX[taker],
                "maker": ADDRESS_HEX[maker],
            }
        )
        notional = price * size * spec.notional_scale
        update_candles(state.candles[market_id], time_ms, price, size, notional)
        usd_text = formatter(COLLATERAL_DECIMALS)
        for address, order_id, side, fee, liquidity in (
            (taker, taker_oid, taker_side, tfee, "taker"),
            (maker, maker_oid, maker_side, mfee, "maker"),
        ):
            d = self.delta(address)
            d.orders[order_id] = None
            d.fills.append(
                {
                    "trade_id": trade_id,
                    "order_id": order_id,
                    "market": symbol,
                    "side": side,
                    "price": px,
                    "size": sz,
                    "fee": usd_text[fee],
                    "liquidity": liquidity,
                    "height": height,
                    "time_ms": time_ms,
                }
            )

    def on_accepted(self, e: tuple[Any, ...]) -> None:
        _, _tx, order_id, account, market_id, is_buy, price, size, tif, reduce_only, cloid = e
        self.accepted[order_id] = Order(
            order_id, account, market_id, is_buy, price, size, size, tif, reduce_only, cloid
        )
        self.delta(account).orders[order_id] = None

    def on_cancelled(self, e: tuple[Any, ...]) -> None:
        _, _tx, order_id, account, _market_id, remaining, reason = e
        self.closed[order_id] = ("cancelled", remaining, reason)
        self.delta(account).orders[order_id] = None

    def on_filled(self, e: tuple[Any, ...]) -> None:
        _, _tx, order_id, account, _market_id = e
        self.closed[order_id] = ("filled", 0, "")
        self.delta(account).orders[order_id] = None

    def on_rejected(self, e: tuple[Any, ...]) -> None:
        _, tx, account, market_id, code, cloid = e
        markets = self.state.stf.markets
        symbol = markets[market_id].spec.symbol if 0 <= market_id < len(markets) else None
        try:
            status = Code(code).name.lower()
        except ValueError:
            status = str(code)
        self.delta(account).events.append(
            {
                "type": "order_rejected",
                "tx": tx,
                "market": symbol,
                "code": code,
                "status": status,
                "client_order_id": cloid,
            }
        )

    def on_position(self, e: tuple[Any, ...]) -> None:
        _, _tx, account, market_id, size, _open_notional, realized = e
        key = (account, market_id)
        positions = self.state.positions
        old = positions.get(key, 0)
        self.state.open_interest[market_id] += max(size, 0) - max(old, 0)
        if size:
            positions[key] = size
        else:
            positions.pop(key, None)
        d = self.delta(account)
        d.markets[market_id] = None
        if realized:
            d.events.append(
                {
                    "type": "realized_pnl",
                    "market": self.state.stf.markets[market_id].spec.symbol,
                    "amount": usd(realized),
                }
            )

    def on_funding(self, e: tuple[Any, ...]) -> None:
        _, market_id, rate, index = e
        self.funding.setdefault(market_id, []).append(
            {"height": self.height, "time_ms": self.time_ms, "rate": ppm(rate), "index": str(index)}
        )

    def on_transfer(self, e: tuple[Any, ...]) -> None:
        _, tx, sender, recipient, amount = e
        record = {
            "type": "transfer",
            "tx": tx,
            "from": address_hex(sender),
            "to": address_hex(recipient),
            "amount": usd(amount),
        }
        self.delta(sender).events.append(record)
        self.delta(recipient).events.append(record)

    def on_account_event(self, e: tuple[Any, ...]) -> None:
        record = ev.event_to_dict(e)
        for name in ("amount", "equity", "maintenance"):
            if name in record:
                record[name] = usd(record[name])
        address = e[2] if e[0] == ev.FAUCET else e[1]
        self.delta(address).events.append(record)

    def on_market_account_event(self, e: tuple[Any, ...]) -> None:
        record = self._market_record(e)
        self.delta(e[2]).events.append(record)

    def on_adl(self, e: tuple[Any, ...]) -> None:
        record = self._market_record(e)
        self.delta(e[2]).events.append(record)
        self.delta(e[3]).events.append(record)

    def _market_record(self, e: tuple[Any, ...]) -> dict[str, Any]:
        record = ev.event_to_dict(e)
        spec = self.state.stf.markets[record.pop("market_id")].spec
        record["market"] = spec.symbol
        record["size"] = fmt(record["size"], spec.size_decimals)
        record["price"] = fmt(record["price"], spec.price_decimals)
        return record

    # -- updates ----------------------------------------------------------------------------
    def emit_books(self) -> None:
        markets = self.state.stf.markets
        for market_id in sorted(self.bids.keys() | self.asks.keys()):
            market = markets[market_id]
            spec = market.spec
            bids = self.bids.get(market_id, [])
            bids.reverse()  # events come in ascending price; bids are shown best (highest) first
            asks = self.asks.get(market_id, [])
            body: dict[str, Any] = {"bids": bids, "asks": asks}
            checksum = self.cached_checksum(market_id)
            if checksum is not None:
                body["checksum"] = checksum
            self.emit(f"book:{spec.symbol}", "book", {"market": spec.symbol}, body)
            if checksum is None:  # computed for subscribers only (the last key either way)
                self.updates[-1].pending.append(_book_checksum(self.state, market_id))

    def cached_checksum(self, market_id: int) -> int | None:
        """The book checksum after this block if it is the last one computed (no change since
        reached the top 25 levels); else None, and the cache is dropped (_book_checksum)."""
        state = self.state
        cached = state.checksums[market_id]
        if cached is None:
            return None
        value, floor, ceiling = cached
        if all(p < floor for p in self.changed_bids.get(market_id, ())) and all(
            p > ceiling for p in self.changed_asks.get(market_id, ())
        ):
            return value
        state.checksums[market_id] = None
        return None

    def emit_trades_and_candles(self) -> None:
        state = self.state
        for market_id in sorted(self.trades):
            spec = state.stf.markets[market_id].spec
            trades = self.trades[market_id]
            state.recent_trades[market_id].extend(trades)
            self.emit(f"trades:{spec.symbol}", "trades", {"market": spec.symbol}, {"trades": trades})
            for name, candle in state.candles[market_id].items():
                self.emit(
                    f"candles:{spec.symbol}:{name}",
                    "candles",
                    {"market": spec.symbol, "interval": name},
                    {"candles": [candle.view(spec, name)]},
                )
        for market_id in sorted(self.funding):
            spec = state.stf.markets[market_id].spec
            self.emit(
                f"_funding:{spec.symbol}",
                "_funding",
                {"market": spec.symbol},
                {"funding": self.funding[market_id]},
            )

    def order_record(self, order_id: int) -> dict[str, Any] | None:
        state = self.state
        stf_state = state.stf
        resting = stf_state.orders.get(order_id)
        if resting is not None:
            state.resting[order_id] = resting
            spec = stf_state.markets[resting.market_id].spec
            return order_view(
                resting, spec, "open", resting.size, resting.orig_size - resting.size, self.height
            )
        closed = self.closed.get(order_id)
        order = state.resting.pop(order_id, None) or self.accepted.get(order_id)
        if closed is None or order is None:
            return None  # cannot happen for a consistent event stream
        status, leftover, reason = closed
        spec = stf_state.markets[order.market_id].spec
        return order_view(order, spec, status, 0, order.orig_size - leftover, self.height, reason)

    def emit_accounts(self) -> None:
        stf_state = self.state.stf
        accounts = self.accounts
        order_record = self.order_record
        for address in sorted(accounts):
            d = accounts[address]
            account = stf_state.accounts.get(address)
            orders = []
            for oid in d.orders:
                record = order_record(oid)
                if record is not None:
                    orders.append(record)
            body: dict[str, Any] = {"orders": orders, "fills": d.fills, "events": d.events}
            hex_address = ADDRESS_HEX[address]
            self.emit("account:" + hex_address, "account", {"address": hex_address}, body)
            self.updates[-1].pending.append(_account_extras(stf_state, account, sorted(d.markets)))

    def emit_markets(self) -> None:
        self.emit("markets", "markets", {}, {})
        self.updates[-1].pending.append(_market_views(self.state))  # for subscribers only

    def emit_block(self) -> None:
        committed = self.committed
        header = committed.block.header
        height, time_ms = self.height, self.time_ms
        txs: list[dict[str, Any]] = []
        summaries: list[dict[str, Any]] = []
        # sender, action and nonce of the txs the replay decoded (the others are decoded here)
        described: list[tuple[str | None, str | None, int | None] | None] = [None] * len(committed.block.txs)
        for decoded in self.result.decoded:
            described[decoded.index] = (ADDRESS_HEX[decoded.sender], decoded.action, decoded.nonce)
        for index, (raw, tx_hash, result) in enumerate(
            zip(committed.block.txs, committed.tx_hashes, self.result.results, strict=True)
        ):
            outcome = result.to_dict()
            hash_hex = tx_hash.hex()
            summaries.append({"hash": hash_hex, "code": int(result.code), "status": outcome["status"]})
            sender, action, nonce = described[index] or _describe_tx(raw)
            txs.append(
                {
                    "hash": hash_hex,
                    "height": height,
                    "index": index,
                    "time_ms": time_ms,
                    "sender": sender,
                    "action": action,
                    "nonce": nonce,
                    "result": outcome,
                }
            )
        block = {
            "height": self.height,
            "time_ms": self.time_ms,
            "block_id": self.block_id.hex(),
            "proposer": address_hex(header.proposer) if len(header.proposer) == 20 else header.proposer.hex(),
            "last_block_id": header.last_block_id.hex(),
            "app_hash": self.result.app_hash.hex(),
            "num_txs": len(txs),
            "txs": summaries,
        }
        self.state.last_block = block
        self.emit("blocks", "blocks", {}, {"block": block})
        self.emit("_txs", "_txs", {}, {"txs": txs})


def _book_checksum(state: IndexerState, market_id: int) -> Callable[[], dict[str, Any]]:
    def part() -> dict[str, Any]:
        market = state.stf.markets[market_id]
        value = book_checksum(market.book, market.spec)
        state.checksums[market_id] = (value, *checksum_window(market.book))
        return {"checksum": value}

    return part


def _market_views(state: IndexerState) -> Callable[[], dict[str, Any]]:
    def part() -> dict[str, Any]:
        open_interest = state.open_interest
        return {"markets": [market_view(m, open_interest[m.spec.market_id]) for m in state.stf.markets]}

    return part


def _account_extras(
    state: State, account: Account | None, markets: list[int]
) -> Callable[[], dict[str, Any]]:
    def extras() -> dict[str, Any]:
        if account is None:
            return {"positions": [], "balance": None}
        return {
            "positions": [position_view(state, account, m) for m in markets],
            "balance": balance_view(state, account),
        }

    return extras


def describe_tx(raw: bytes) -> dict[str, Any]:
    """Sender, action and nonce of a tx (None fields when it does not decode)."""
    sender, action, nonce = _describe_tx(raw)
    return {"sender": sender, "action": action, "nonce": nonce}


def _describe_tx(raw: bytes) -> tuple[str | None, str | None, int | None]:
    try:
        signed = tx_pb2.SignedTx.FromString(raw)
        body = tx_pb2.TxBody.FromString(signed.body)
    except DecodeError:
        return None, None, None
    sender = ADDRESS_HEX[address_of(signed.public_key)] if signed.public_key else None
    return sender, body.WhichOneof("action"), body.nonce
