"""Cross-margin accounting: equity, requirements, and the pre-trade rule.

Theory of operation (all integers, micro-USD; rounding against the account)
- unrealized(position) at mark: long: size*mark*scale - open_notional;
  short: open_notional - |size|*mark*scale.
- equity = collateral + sum(unrealized) - sum(pending funding owed).
- requirement of a size at mark with fraction f: ceil(|size|*mark*scale*f/PPM)
  (f = initial or maintenance margin fraction of the market).
- Open orders, worst case (the rule, close to dYdX's): per market, with
  position s and the account's open non-reduce-only orders aggregated as
  buys (size B, value BV) and sells (S, SV), the initial requirement is
      max( IM(s),
           IM(s + B) + (BV - B*mark)*scale,   # every buy fills at its price
           IM(s - S) + (S*mark - SV)*scale )  # every sell fills at its price
  i.e. the margin of the worst fill scenario plus the immediate loss of
  filling above (buys) or below (sells) the mark. Markets are summed.
- An order is accepted if equity - its worst-case taker fee >= the initial
  requirement with the order included, or if including it does not raise the
  requirement (so an account under initial margin can still reduce risk).
  Reduce-only orders are exempt (they can only shrink a position).
- A transfer must leave equity - amount >= the initial requirement.
- An account is liquidatable when it holds positions and equity < the
  maintenance requirement of its positions; `compute_buffer` is that
  difference computed in one pass (the liquidation pass's fast path, checked
  against `is_liquidatable` by the brute-force reference in the tests).
"""

from __future__ import annotations

from stf.config import PPM
from stf.funding import compute_owed
from stf.state import Account, MarketState, Position, State


def compute_unrealized(position: Position, mark: int, scale: int) -> int:
    value = position.size * mark * scale
    return value - position.open_notional if position.size > 0 else value + position.open_notional


def compute_requirement(size: int, mark: int, scale: int, fraction_ppm: int) -> int:
    return -(-abs(size) * mark * scale * fraction_ppm // PPM)


def compute_equity(state: State, account: Account) -> int:
    equity = account.collateral
    markets = state.markets
    for market_id, position in account.positions.items():
        market = markets[market_id]
        equity += compute_unrealized(position, market.mark_price, market.notional_scale)
        equity -= compute_owed(position, market.funding_index)
    return equity


def market_initial_requirement(
    market: MarketState, size: int, buy_size: int, buy_value: int, sell_size: int, sell_value: int
) -> int:
    """compute_requirement of the worst fill scenario (module doc). The products are regrouped
    (exact integers: the same values) so each scenario costs one multiplication by the margin
    per lot: micro-USD amounts exceed mypyc's fast multiply range, and every slow one counts."""
    scale = market.notional_scale
    lot_notional = market.mark_price * scale  # micro-USD notional of one lot at mark
    lot_margin = lot_notional * market.spec.initial_margin_ppm  # x PPM
    need = -(-abs(size) * lot_margin // PPM)
    if buy_size:
        worst = -(-abs(size + buy_size) * lot_margin // PPM) + buy_value * scale - buy_size * lot_notional
        need = max(need, worst)
    if sell_size:
        worst = -(-abs(size - sell_size) * lot_margin // PPM) + sell_size * lot_notional - sell_value * scale
        need = max(need, worst)
    return need


def market_requirement(
    account: Account,
    market: MarketState,
    extra_is_buy: bool = False,
    extra_price: int = 0,
    extra_size: int = 0,
) -> int:
    """Initial requirement of the account in one market (position and open orders, optionally
    with one more order)."""
    market_id = market.spec.market_id
    position = account.positions.get(market_id)
    size = position.size if position is not None else 0
    exp = account.exposure.get(market_id)
    b, bv, s, sv = (exp.buy_size, exp.buy_value, exp.sell_size, exp.sell_value) if exp else (0, 0, 0, 0)
    if extra_size:
        if extra_is_buy:
            b, bv = b + extra_size, bv + extra_price * extra_size
        else:
            s, sv = s + extra_size, sv + extra_price * extra_size
    return market_initial_requirement(market, size, b, bv, s, sv)


def requirement_elsewhere(state: State, account: Account, market_id: int) -> int:
    """Initial requirement of the account in every market but `market_id` (-1: all markets)."""
    markets = state.markets
    total = 0
    for other in account.positions:
        if other != market_id:
            total += market_requirement(account, markets[other])
    for other in account.exposure:
        if other != market_id and other not in account.positions:
            total += market_requirement(account, markets[other])
    return total


def initial_requirement(
    state: State,
    account: Account,
    extra_market: int = -1,
    extra_is_buy: bool = False,
    extra_price: int = 0,
    extra_size: int = 0,
) -> int:
    """Initial requirement of positions and open orders, optionally with one more order."""
    total = requirement_elsewhere(state, account, extra_market)
    if extra_market >= 0:
        market = state.markets[extra_market]
        total += market_requirement(account, market, extra_is_buy, extra_price, extra_size)
    return total


def maintenance_requirement(state: State, account: Account) -> int:
    total = 0
    for market_id, position in account.positions.items():
        market = state.markets[market_id]
        spec = market.spec
        total += compute_requirement(
            position.size, market.mark_price, market.notional_scale, spec.maintenance_margin_ppm
        )
    return total


def has_margin_for_order(
    state: State, account: Account, market: MarketState, is_buy: bool, price: int, size: int
) -> bool:
    """Equity and the other markets' requirement are computed once; when the order does not fit,
    only its own market decides whether it lowers the requirement."""
    spec = market.spec
    fee = -(-price * size * market.notional_scale * spec.taker_fee_ppm // PPM)
    after = market_requirement(account, market, is_buy, price, size)
    if compute_equity(state, account) - fee >= requirement_elsewhere(state, account, spec.market_id) + after:
        return True
    return after <= market_requirement(account, market)


def compute_buffer(state: State, account: Account) -> int:
    """equity - maintenance requirement (< 0: liquidatable), in one pass over the positions."""
    buffer = account.collateral
    markets = state.markets
    for market_id, position in account.positions.items():
        market = markets[market_id]
        spec = market.spec
        size = position.size
        value = size * market.mark_price * market.notional_scale
        buffer += value - position.open_notional if size > 0 else value + position.open_notional
        scaled = size * (market.funding_index - position.funding_index)
        buffer -= -(-scaled // PPM)  # pending funding: compute_owed
        notional = value if size > 0 else -value
        buffer -= -(-notional * spec.maintenance_margin_ppm // PPM)  # compute_requirement
    return buffer


def is_liquidatable(state: State, account: Account) -> bool:
    return bool(account.positions) and compute_equity(state, account) < maintenance_requirement(
        state, account
    )
