"""The copy planner: for one leader fill and one subscription, the follower's order or a skip.

Pure: no Django, no I/O, no clock. Everything it needs (the leader's fill and position, the
subscription's settings, a snapshot of the follower's account taken just before, and "now")
comes in as arguments, so every decision can be checked against a hand-computed case.

Conventions, stated once:

* A fill *opens* when it adds to the leader's position (or starts one) and *closes* when it
  takes from it. A close copies the same fraction of the follower's copy: a leader who sells
  0.3 of a 1.2 BTC position (25 %) makes the follower sell 25 % of what the copies hold.
  A fill that would flip the position (spot cannot) is copied as a full close.
* Closes always go: they ignore pause, filters, the slippage guard, signal expiry and the
  position cap, and are sent as market orders. Opens go as IOC limit orders capped at the
  slippage guard from the leader's price.
* Sizes are the follower's quote currency; quantities are rounded *down* to the market's
  lot step and checked against its minimums after rounding (too small → a skip).
* Partial fills of one leader order are copied as they come: equity-proportional and ratio
  sizing are proportional by construction, and the per-trade modes (fixed notional, fixed
  risk) scale by the fill's share of the leader's order amount when it is known; when it is
  not, the first fill is sized as the whole trade and later fills of the same order copy only
  what is left of it (never above the trade's size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, get_args

from exchanges.trading import MarketRules, OrderTooSmall, OrderType, Side, TimeInForce

SizingMode = Literal["proportional", "fixed_ratio", "fixed_notional", "fixed_risk"]
SkipReason = Literal[
    "below_min_notional",
    "symbol_filtered",
    "side_filtered",
    "paused",
    "no_stop_for_risk_sizing",
    "slippage_exceeded",
    "insufficient_balance",
    "expired",
    "max_positions",
    "stale_balance",
    "no_copy_position",
    "no_leader_equity",
    "order_already_copied",
]
SKIP_REASONS: tuple[str, ...] = get_args(SkipReason)

# Slippage guard defaults: the deep books of BTC and ETH allow a tight one.
TIGHT_GUARD_BASES = frozenset({"BTC", "ETH", "WBTC", "WETH"})
DEFAULT_GUARD_TIGHT = Decimal("0.005")
DEFAULT_GUARD_OTHER = Decimal("0.015")
DEFAULT_EXPIRY_MS = 60_000
DEFAULT_MAX_BALANCE_AGE_MS = 5_000
CLIENT_ID_PREFIX = "qf"
CLIENT_ID_HEX = 30  # "qf" + 30 hex = 32 alphanumerics: fits OKX (32) and Binance (36)


def client_order_id(subscription_id: int, leader_fill_id: int | str) -> str:
    """The copy's client order id: the same (subscription, leader fill) always gives the same
    id, and it is alphanumeric and 32 characters, within every supported exchange's limit."""
    digest = hashlib.sha256(f"copy:{subscription_id}:{leader_fill_id}".encode()).hexdigest()
    return CLIENT_ID_PREFIX + digest[:CLIENT_ID_HEX]


def default_slippage_guard(base: str) -> Decimal:
    """0.5 % for BTC and ETH, 1.5 % for everything else (as a fraction)."""
    return DEFAULT_GUARD_TIGHT if base.upper() in TIGHT_GUARD_BASES else DEFAULT_GUARD_OTHER


def base_of(symbol: str) -> str:
    return symbol.split("/", 1)[0].split(":", 1)[0]


@dataclass(frozen=True)
class LeaderFillView:
    """One execution of the leader, with the leader's state around it."""

    fill_id: str
    symbol: str
    side: Side
    amount: Decimal  # this fill's quantity (> 0)
    price: Decimal
    timestamp_ms: int  # exchange time
    position_before: Decimal  # the leader's signed position in ``symbol`` before this fill
    leader_equity: Decimal = Decimal(0)  # quote value of the leader's account (proportional)
    stop_price: Decimal | None = None  # the leader's stop for the trade (fixed risk)
    order_amount: Decimal | None = None  # the leader order's full amount, when known


@dataclass(frozen=True)
class CopySettings:
    """A subscription's settings, as the planner needs them."""

    sizing_mode: SizingMode
    ratio: Decimal = Decimal(1)  # fixed_ratio: multiple of the leader's quantity
    notional: Decimal = Decimal(0)  # fixed_notional: quote per trade
    risk_fraction: Decimal = Decimal(0)  # fixed_risk: share of equity lost at the stop
    max_notional: Decimal | None = None  # per trade, quote; larger orders are cut to it
    max_positions: int | None = None  # distinct symbols held by copies at once
    allowed_symbols: frozenset[str] = frozenset()  # empty: all (leader's symbols)
    excluded_symbols: frozenset[str] = frozenset()
    allowed_sides: frozenset[str] = frozenset({"buy", "sell"})
    symbol_map: Mapping[str, str] = field(default_factory=dict)  # leader → follower symbol
    slippage_guard: Decimal | None = None  # fraction; None: the default for the base asset
    expiry_ms: int = DEFAULT_EXPIRY_MS
    max_balance_age_ms: int = DEFAULT_MAX_BALANCE_AGE_MS
    paused: bool = False  # subscription paused, leader paused/retired, or follower lost Pro


@dataclass(frozen=True)
class FollowerSnapshot:
    """The follower's account just before planning (balances fetched, never a cached copy)."""

    market: MarketRules  # the follower's market (after symbol mapping)
    price: Decimal  # the follower market's last price
    equity: Decimal  # account value in the market's quote currency
    free_quote: Decimal
    free_base: Decimal
    copy_position: Decimal  # what this subscription's copies hold in the market (signed)
    open_positions: int  # symbols in which this subscription's copies hold something
    taken_at_ms: int  # when the balances were read
    base_total: Decimal | None = None  # free + in orders (the reconciliation's baseline)
    # Base quantity this subscription already copied for earlier fills of the same leader
    # order (per-trade sizing when the order's full amount is unknown).
    order_qty_copied: Decimal = Decimal(0)


@dataclass(frozen=True)
class PlannedOrder:
    symbol: str
    side: Side
    amount: Decimal
    type: OrderType
    price: Decimal | None  # the IOC limit for opens; None for market closes
    time_in_force: TimeInForce
    reduce_only: bool
    client_order_id: str
    reference_price: Decimal  # the leader's fill price (slippage is measured against it)
    closing: bool
    capped: bool = False  # cut to the subscription's max notional
    note: str = ""


@dataclass(frozen=True)
class Skip:
    reason: SkipReason
    detail: str
    closing: bool = False


Plan = PlannedOrder | Skip


def is_closing(fill: LeaderFillView) -> bool:
    """True when the fill reduces the leader's existing position."""
    pos = fill.position_before
    return (pos > 0 and fill.side == "sell") or (pos < 0 and fill.side == "buy")


def follower_symbol(settings: CopySettings, leader_symbol: str) -> str:
    return settings.symbol_map.get(leader_symbol, leader_symbol)


def plan_copy(
    *,
    subscription_id: int,
    leader_fill_pk: int | str,
    fill: LeaderFillView,
    settings: CopySettings,
    follower: FollowerSnapshot,
    now_ms: int,
) -> Plan:
    """Decide the follower's order for one leader fill (see the module docstring)."""
    coid = client_order_id(subscription_id, leader_fill_pk)
    if is_closing(fill):
        return _plan_close(coid=coid, fill=fill, follower=follower)
    return _plan_open(coid=coid, fill=fill, settings=settings, follower=follower, now_ms=now_ms)


def _plan_close(*, coid: str, fill: LeaderFillView, follower: FollowerSnapshot) -> Plan:
    market = follower.market
    held = follower.copy_position
    # Only what the copies hold in the direction the leader is closing.
    if (fill.side == "sell" and held <= 0) or (fill.side == "buy" and held >= 0):
        return Skip("no_copy_position", f"the copies hold no {market.base} to close", True)
    leader_pos = abs(fill.position_before)
    fraction = min(Decimal(1), fill.amount / leader_pos)
    wanted = abs(held) * fraction
    if fill.side == "sell":
        # Never sell more than the account holds (fees taken in the base asset, transfers).
        wanted = min(wanted, follower.free_base)
    amount = market.round_amount(wanted)
    try:
        market.check_size(amount, follower.price)
    except OrderTooSmall as exc:
        return Skip("below_min_notional", exc.message, True)
    return PlannedOrder(
        symbol=market.symbol,
        side=fill.side,
        amount=amount,
        type="market",
        price=None,
        time_in_force="IOC",
        reduce_only=True,
        client_order_id=coid,
        reference_price=fill.price,
        closing=True,
        note=f"closes {fraction:.6f} of the copy",
    )


def _plan_open(
    *,
    coid: str,
    fill: LeaderFillView,
    settings: CopySettings,
    follower: FollowerSnapshot,
    now_ms: int,
) -> Plan:
    market = follower.market
    if settings.paused:
        return Skip("paused", "copying is paused: new positions are not opened")
    age_ms = now_ms - fill.timestamp_ms
    if age_ms > settings.expiry_ms:
        return Skip(
            "expired",
            f"the leader's fill is {age_ms / 1000:.1f} s old (limit "
            f"{settings.expiry_ms / 1000:.0f} s for opening trades)",
        )
    symbol = market.symbol
    # Filters may name the market as the leader's exchange does or as the follower's does.
    names = {fill.symbol, symbol}
    if (settings.allowed_symbols and not names & settings.allowed_symbols) or (
        names & settings.excluded_symbols
    ):
        return Skip("symbol_filtered", f"{fill.symbol} is not copied by this subscription")
    if fill.side not in settings.allowed_sides:
        return Skip("side_filtered", f"{fill.side} entries are not copied by this subscription")
    balance_age = now_ms - follower.taken_at_ms
    if balance_age > settings.max_balance_age_ms:
        return Skip(
            "stale_balance",
            f"the follower's balance is {balance_age / 1000:.1f} s old; sizing needs one "
            f"no older than {settings.max_balance_age_ms / 1000:.0f} s",
        )
    cap = settings.max_positions
    if follower.copy_position == 0 and cap is not None and follower.open_positions >= cap:
        return Skip(
            "max_positions",
            f"the copies already hold {follower.open_positions} positions (limit {cap})",
        )

    guard = settings.slippage_guard
    if guard is None:
        guard = default_slippage_guard(market.base)
    if fill.side == "buy":
        limit = fill.price * (1 + guard)
        moved_past = follower.price > limit
    else:
        limit = fill.price * (1 - guard)
        moved_past = follower.price < limit
    if moved_past:
        move = (follower.price - fill.price) / fill.price * 100
        return Skip(
            "slippage_exceeded",
            f"the price moved {move:+.3f} % from the leader's {fill.price}; "
            f"the guard allows {guard * 100:.3f} %",
        )
    limit = market.round_price(limit, fill.side)

    sized = _size(fill=fill, settings=settings, follower=follower)
    if isinstance(sized, Skip):
        return sized
    quantity = sized
    capped = False
    note = ""
    if settings.max_notional is not None and quantity * limit > settings.max_notional:
        quantity = settings.max_notional / limit
        capped = True
        note = f"cut to the {settings.max_notional} {market.quote} per-trade cap"

    amount = market.round_amount(quantity)
    try:
        market.check_size(amount, limit)
    except OrderTooSmall as exc:
        return Skip("below_min_notional", exc.message)

    # What the account can pay for (a buy, fee included at the limit) or deliver (a sell).
    if fill.side == "buy":
        affordable = follower.free_quote / (limit * (1 + market.taker_fee))
    else:
        affordable = follower.free_base
    if amount > affordable:
        amount = market.round_amount(affordable)
        try:
            market.check_size(amount, limit)
        except OrderTooSmall:
            return Skip(
                "insufficient_balance",
                f"the account has {follower.free_quote} {market.quote} and "
                f"{follower.free_base} {market.base} free: not enough for the copy",
            )
        note = (note + "; " if note else "") + "reduced to the free balance"

    return PlannedOrder(
        symbol=symbol,
        side=fill.side,
        amount=amount,
        type="limit",
        price=limit,
        time_in_force="IOC",
        reduce_only=False,
        client_order_id=coid,
        reference_price=fill.price,
        closing=False,
        capped=capped,
        note=note,
    )


def _partial_share(fill: LeaderFillView) -> Decimal:
    """This fill's share of the leader's order (1 when the order amount is unknown)."""
    if fill.order_amount is None or fill.order_amount <= 0:
        return Decimal(1)
    return min(Decimal(1), fill.amount / fill.order_amount)


def _size(
    *, fill: LeaderFillView, settings: CopySettings, follower: FollowerSnapshot
) -> Decimal | Skip:
    """The follower's quantity in base units before caps and rounding."""
    mode = settings.sizing_mode
    if mode == "fixed_ratio":
        return fill.amount * settings.ratio
    if mode == "proportional":
        if fill.leader_equity <= 0:
            return Skip("no_leader_equity", "the leader's equity is unknown: cannot scale")
        fraction = fill.amount * fill.price / fill.leader_equity
        return fraction * follower.equity / follower.price
    if mode == "fixed_notional":
        return _per_trade(settings.notional / follower.price, fill, follower)
    # fixed_risk: lose risk_fraction of equity if the leader's stop is hit.
    stop = fill.stop_price
    if stop is None or stop <= 0:
        return Skip("no_stop_for_risk_sizing", "the leader's trade has no stop to size the risk")
    distance = fill.price - stop if fill.side == "buy" else stop - fill.price
    if distance <= 0:
        return Skip(
            "no_stop_for_risk_sizing",
            f"the leader's stop {stop} is on the wrong side of the entry {fill.price}",
        )
    risk = follower.equity * settings.risk_fraction
    return _per_trade(risk / distance, fill, follower)


def _per_trade(full: Decimal, fill: LeaderFillView, follower: FollowerSnapshot) -> Decimal | Skip:
    """A per-trade size for one fill of the leader's order: its share of ``full`` when the
    order's amount is known; otherwise what is left of ``full`` after the earlier fills of the
    same order were copied (the first fill takes the whole trade, later ones what remains:
    a trade is never copied above its size)."""
    if fill.order_amount is not None and fill.order_amount > 0:
        return full * _partial_share(fill)
    left = full - follower.order_qty_copied
    if left <= 0:
        return Skip(
            "order_already_copied",
            f"earlier fills of the leader's order already copied the trade's size "
            f"({follower.order_qty_copied} {follower.market.base})",
        )
    return left


# --- the copies' own position: average entry, stop-loss / take-profit -------------------------


@dataclass(frozen=True)
class Execution:
    """A filled copy (or adjustment) in time order: what it did to the copies' holding."""

    side: Side
    amount: Decimal
    price: Decimal


@dataclass(frozen=True)
class CopyHolding:
    position: Decimal  # long quantity the copies hold now (spot: never below 0)
    entry: Decimal  # its average entry price (average cost), 0 when flat
    entries: int  # buys ever filled: names each new position (a stop fires once per entry)


def copy_holding(executions: Sequence[Execution]) -> CopyHolding:
    """Average-cost accounting of the copies' long holding: a buy moves the average to the
    cost-weighted mean of the old holding and the buy; a sell lowers the holding at the same
    average; back to flat clears the average."""
    position = Decimal(0)
    cost = Decimal(0)
    entries = 0
    for ex in executions:
        if ex.amount <= 0:
            continue
        if ex.side == "buy":
            position += ex.amount
            cost += ex.amount * ex.price
            entries += 1
        elif position > 0:
            sold = min(ex.amount, position)
            cost -= cost * sold / position
            position -= sold
            if position <= 0:
                position, cost = Decimal(0), Decimal(0)
    entry = cost / position if position > 0 else Decimal(0)
    return CopyHolding(position=position, entry=entry, entries=entries)


ProtectionHit = Literal["stop_loss", "take_profit"]


def protection_hit(
    *,
    price: Decimal,
    entry: Decimal,
    stop_loss_pct: Decimal | None = None,
    take_profit_pct: Decimal | None = None,
    stop_price: Decimal | None = None,
) -> tuple[ProtectionHit, Decimal] | None:
    """Whether a long copy bought at ``entry`` must close at ``price``: the stop at
    ``stop_price`` (the leader's) or ``entry x (1 - stop_loss_pct / 100)``, the target at
    ``entry x (1 + take_profit_pct / 100)``; a touch counts. Returns (which, level) or None."""
    if entry <= 0 or price <= 0:
        return None
    stop = stop_price if stop_price is not None and stop_price > 0 else None
    if stop is None and stop_loss_pct is not None and stop_loss_pct > 0:
        stop = entry * (1 - stop_loss_pct / 100)
    if stop is not None and price <= stop:
        return "stop_loss", stop
    if take_profit_pct is not None and take_profit_pct > 0:
        target = entry * (1 + take_profit_pct / 100)
        if price >= target:
            return "take_profit", target
    return None
