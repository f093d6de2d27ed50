"""The one state object of the exchange and its change tracking.

Theory of operation
- `State` holds everything the chain agrees on: accounts (collateral, nonces,
  open orders, positions), markets (spec, book, oracle, halt flag), resting
  orders by id, the fee pool, the insurance fund and block height/time.
- Hashed state is a set of *entries* (see stf/codec.py): one per account,
  kept nonce, resting order, position, market, oracle submission, plus one
  global entry. Indexes (books, per-account order maps, client-id maps,
  market holders, liquidation triggers) are derived from those entries and
  not hashed separately.
- Before any code mutates an entry it calls one of the `touch_*` methods,
  which records the entry's encoding as it was at the start of the block
  (first touch only). At the end of the block `commit_hash` re-encodes each
  touched entry and updates the LtHash accumulator by (new - old): cost is
  O(entries touched in the block), independent of the state's size. The old
  element usually comes from `elements` (stf.apphash.ElementCache), saved
  when that value was added, rather than from hashing it again.
- Mutations happen only after an action has been fully validated, so a
  rejected action never needs rolling back (stf/results.py).
"""

from __future__ import annotations

from typing import Final

from stf.apphash import ElementCache, LtHash, prefix_key
from stf.book import Book, Order
from stf.codec import encode_entry
from stf.config import ChainConfig, MarketSpec
from stf.keys import K_ACCOUNT, K_GLOBAL, K_MARKET, K_NONCE, K_ORACLE, K_ORDER, K_POSITION

MAX_KEPT_NONCES: Final = 100
# The insurance fund is an account at a reserved address (no ed25519 key hashes to 20 zero bytes
# in practice). Its collateral is the fund; it takes over positions the book cannot absorb.
INSURANCE_FUND: Final = bytes(20)


class Position:
    __slots__ = ("size", "open_notional", "funding_index")

    def __init__(self, size: int = 0, open_notional: int = 0, funding_index: int = 0) -> None:
        self.size = size  # signed size units: > 0 long, < 0 short
        self.open_notional = open_notional  # micro-USD cost basis of |size|, >= 0
        self.funding_index = funding_index  # market funding index at last settlement


class Exposure:
    """Aggregate of an account's open (non-reduce-only) orders in one market, for margin."""

    __slots__ = ("buy_size", "buy_value", "sell_size", "sell_value")

    def __init__(self) -> None:
        self.buy_size = 0  # size units
        self.buy_value = 0  # sum of price * size (price units x size units)
        self.sell_size = 0
        self.sell_value = 0

    def is_empty(self) -> bool:
        return self.buy_size == 0 and self.sell_size == 0


class Account:
    __slots__ = (
        "address",
        "collateral",
        "faucet_used",
        "nonces",
        "orders",
        "cloids",
        "positions",
        "exposure",
    )

    def __init__(self, address: bytes, collateral: int = 0) -> None:
        self.address = address
        self.collateral = collateral  # micro-USD, realized PnL and fees included
        self.faucet_used = 0  # micro-USD minted by the faucet so far
        self.nonces: list[int] = []  # ascending; at most MAX_KEPT_NONCES
        self.orders: dict[int, Order] = {}  # open orders by id, in placement order
        self.cloids: dict[str, int] = {}  # client order id -> order id (open orders only)
        self.positions: dict[int, Position] = {}  # market_id -> non-zero position
        self.exposure: dict[int, Exposure] = {}  # market_id -> open-order aggregate (derived)


class MarketState:
    __slots__ = (
        "spec",
        "notional_scale",
        "book",
        "oracle_price",
        "mark_price",
        "halted",
        "oracle_subs",
        "funding_index",
        "funding_rate",
        "premium_sum",
        "premium_samples",
        "next_funding_ms",
        "funding_pool",
        "holders",
    )

    def __init__(self, spec: MarketSpec, genesis_time_ms: int) -> None:
        self.spec = spec
        self.notional_scale = spec.notional_scale  # a property of the spec, read on every fill: cached
        self.book = Book(spec.market_id)
        self.oracle_price = spec.initial_oracle_price
        self.mark_price = spec.initial_oracle_price
        self.halted = spec.halted
        # validator address -> (price, time_ms) of its latest submission
        self.oracle_subs: dict[bytes, tuple[int, int]] = {}
        # cumulative funding per size unit, in micro-USD x PPM (see stf/funding.py)
        self.funding_index = 0
        self.funding_rate = 0  # ppm per interval, last applied
        self.premium_sum = 0  # sum of per-block premium samples (ppm) this interval
        self.premium_samples = 0
        self.next_funding_ms = genesis_time_ms + spec.funding_interval_ms
        self.funding_pool = 0  # micro-USD paid by settled payers not yet claimed (see stf/funding.py)
        self.holders: dict[bytes, None] = {}  # addresses with a non-zero position (derived)


Entry = tuple[int, int, bytes]  # (heap key, seq, address) of stf/triggers.py; longs store -trigger


class TriggerIndex:
    """Liquidation triggers per market (derived, not hashed; maintained by stf/triggers.py)."""

    __slots__ = ("longs", "shorts", "live", "always", "next_seq")

    def __init__(self, n_markets: int) -> None:
        self.longs: list[list[Entry]] = [[] for _ in range(n_markets)]  # max-heap: key = -trigger
        self.shorts: list[list[Entry]] = [[] for _ in range(n_markets)]  # min-heap: key = trigger
        self.live: dict[bytes, int] = {}  # address -> seq of its current entries
        self.always: dict[bytes, None] = {}  # accounts without a usable bound: candidates every block
        self.next_seq = 0


class State:
    __slots__ = (
        "config",
        "height",
        "time_ms",
        "next_order_id",
        "fee_pool",
        "accounts",
        "markets",
        "orders",
        "validator_power",
        "lthash",
        "elements",
        "dirty",
        "app_hash",
        "triggers",
        "reference_liquidations",
    )

    def __init__(self, config: ChainConfig) -> None:
        self.config = config
        self.height = 0
        self.time_ms = config.genesis_time_ms
        self.next_order_id = 1
        self.fee_pool = 0
        self.accounts: dict[bytes, Account] = {}
        self.markets: list[MarketState] = [
            MarketState(spec, config.genesis_time_ms) for spec in config.markets
        ]
        self.orders: dict[int, Order] = {}  # every resting order by id
        self.validator_power: dict[bytes, int] = {v.address: v.power for v in config.validators}
        self.lthash = LtHash()
        self.elements = ElementCache()  # recently added entries' elements: removing them costs no hash
        self.dirty: dict[bytes, bytes | None] = {}  # key -> encoding at block start (None: absent)
        self.app_hash = b""
        self.triggers = TriggerIndex(len(self.markets))  # derived: rebuilt on snapshot load
        # tests only: liquidate by a brute-force scan of every account (stf/liquidation.py)
        self.reference_liquidations = False

    # -- accessors ---------------------------------------------------------
    def get_account(self, address: bytes) -> Account | None:
        return self.accounts.get(address)

    @property
    def insurance(self) -> Account:
        return self.accounts[INSURANCE_FUND]

    def get_market(self, symbol: str) -> MarketState | None:
        spec = self.config.market_by_symbol.get(symbol)
        return self.markets[spec.market_id] if spec is not None else None

    # -- change tracking ---------------------------------------------------
    def touch(self, key: bytes) -> None:
        if key not in self.dirty:
            self.dirty[key] = encode_entry(self, key)

    def touch_absent(self, key: bytes) -> None:
        """`touch` for an entry the caller knows does not exist now: no encoding needed. (If the
        key is untouched in this block, its state now is its state at block start: absent.)"""
        if key not in self.dirty:
            self.dirty[key] = None

    def touch_account(self, address: bytes) -> None:
        self.touch(K_ACCOUNT + address)

    def touch_order(self, order_id: int) -> None:
        self.touch(K_ORDER + order_id.to_bytes(8, "big"))

    def touch_nonce(self, address: bytes, nonce: int) -> None:
        self.touch(K_NONCE + address + nonce.to_bytes(8, "big"))

    def touch_new_nonce(self, address: bytes, nonce: int) -> None:
        """Before keeping a nonce that stf.nonces.check_nonce found unused (so not kept now)."""
        self.touch_absent(K_NONCE + address + nonce.to_bytes(8, "big"))

    def touch_new_order(self, order_id: int) -> None:
        """Before resting an order under a fresh id (ids only grow: it never existed)."""
        self.touch_absent(K_ORDER + order_id.to_bytes(8, "big"))

    def touch_position(self, address: bytes, market_id: int) -> None:
        self.touch(K_POSITION + address + market_id.to_bytes(2, "big"))

    def touch_market(self, market_id: int) -> None:
        self.touch(K_MARKET + market_id.to_bytes(2, "big"))

    def touch_oracle(self, market_id: int, validator: bytes) -> None:
        self.touch(K_ORACLE + market_id.to_bytes(2, "big") + validator)

    def touch_global(self) -> None:
        self.touch(K_GLOBAL)

    def ensure_account(self, address: bytes) -> Account:
        """The account at `address`, created empty (and touched) if new."""
        account = self.accounts.get(address)
        if account is None:
            self.touch_absent(K_ACCOUNT + address)
            account = self.accounts[address] = Account(address)
        return account

    def commit_hash(self) -> bytes:
        """Fold this block's touched entries into the accumulator; return the app hash."""
        added = 0  # sums of the elements to add and to remove, folded into the accumulator once
        removed = 0
        elements = self.elements
        for key, old in self.dirty.items():
            new = encode_entry(self, key)
            if new == old:
                continue
            prefixed = prefix_key(key)
            if old is not None:
                removed += elements.removed(prefixed + old)
            if new is not None:
                added += elements.added(prefixed + new)
        self.dirty = {}
        lthash = self.lthash
        lthash.add_sum(added, removed)
        self.app_hash = lthash.digest()
        return self.app_hash
