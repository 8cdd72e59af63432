"""The trading interface every live feature talks to, and the value types it exchanges.

No ccxt and no Django here: ``exchanges/clients.py`` implements this for real exchanges (ccxt)
and ``exchanges/paper.py`` for paper accounts; risk, copy trading and bots see only this
contract, so they cannot tell a paper account from a real one.

Rules every implementation keeps:

* Amounts, prices and fees are ``Decimal``. Requests are rounded to the market's rules
  (``MarketRules.round_amount`` / ``round_price``) *before* they are sent; an order below the
  market's minimum amount or minimum notional is refused locally (``OrderTooSmall``), never sent.
* Every order carries a ``client_order_id`` chosen by the caller and stored by the caller before
  ``create_order`` is called. A transport failure after the request may have left the process
  (timeout, dropped connection) raises ``OrderStatusUnknown``: the caller must look the order up
  with ``fetch_order_by_client_id`` and must never resubmit blindly.
* Times are epoch milliseconds, UTC.

Resting stop-loss and take-profit orders (``STOP_ORDER_TYPES``) carry a ``trigger_price``: a
sell ``stop_*`` triggers when the price falls to it, a sell ``take_profit_*`` when the price
rises to it (a buy the other way round); ``*_market`` then fills at market, ``*_limit`` rests
at ``price``. Not every adapter can rest them: ``supports_stop_orders(adapter, symbol)`` says
whether one can (an adapter without the method cannot), and callers that get False watch the
level themselves. The trigger is rounded to the tick with ``MarketRules.round_trigger``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Literal, Protocol, runtime_checkable

from config.exceptions import ApplicationError

Side = Literal["buy", "sell"]
OrderType = Literal[
    "market",
    "limit",
    "stop_market",
    "stop_limit",
    "take_profit_market",
    "take_profit_limit",
]
STOP_ORDER_TYPES = frozenset(
    {"stop_market", "stop_limit", "take_profit_market", "take_profit_limit"}
)
LIMIT_PRICED_TYPES = frozenset({"limit", "stop_limit", "take_profit_limit"})
TimeInForce = Literal["GTC", "IOC"]
# ccxt's unified order statuses, plus "rejected" for an order the exchange refused outright.
OrderStatus = Literal["open", "closed", "canceled", "expired", "rejected"]


class OrderTooSmall(ApplicationError):
    """Below the market's minimum amount or notional after rounding: refused, never sent."""

    code = "below_min_notional"


class StopOrdersNotSupported(ApplicationError):
    """The adapter (or this market) cannot rest stop-loss / take-profit orders."""

    code = "stop_orders_not_supported"


class OrderStatusUnknown(ApplicationError):
    """The request may have reached the exchange but no answer came back (timeout).

    Look the order up by its client order id before doing anything else.
    """

    status = 504
    code = "order_status_unknown"


def _quantize_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    """``value`` rounded to a whole multiple of ``step`` (any positive step, e.g. 0.005)."""
    if step <= 0:
        return value
    units = (value / step).to_integral_value(rounding=rounding)
    return (units * step).normalize() if units else Decimal(0)


@dataclass(frozen=True)
class MarketRules:
    """One spot market's trading rules as the exchange states them."""

    symbol: str  # unified, "BTC/USDT"
    base: str
    quote: str
    amount_step: Decimal  # lot size; Decimal(0) when the exchange states none
    price_tick: Decimal  # Decimal(0) when the exchange states none
    min_amount: Decimal = Decimal(0)
    min_notional: Decimal = Decimal(0)  # in the quote currency
    taker_fee: Decimal = Decimal("0.001")
    maker_fee: Decimal = Decimal("0.001")
    active: bool = True

    def round_amount(self, amount: Decimal) -> Decimal:
        """Amount rounded *down* to the lot step (never more than asked)."""
        return _quantize_step(Decimal(amount), self.amount_step, ROUND_DOWN)

    def round_price(self, price: Decimal, side: Side) -> Decimal:
        """Price rounded to the tick on the side that keeps a limit order no worse than asked:
        a buy limit rounds down, a sell limit rounds up."""
        rounding = ROUND_FLOOR if side == "buy" else ROUND_CEILING
        return _quantize_step(Decimal(price), self.price_tick, rounding)

    def round_trigger(self, price: Decimal, side: Side, order_type: str) -> Decimal:
        """A stop/target trigger rounded to the tick so that it fires no later than asked:
        toward the price it is protecting (a sell stop below the market rounds up, a sell
        target above it rounds down; a buy the other way round)."""
        stop = order_type.startswith("stop")
        up = stop == (side == "sell")
        return _quantize_step(Decimal(price), self.price_tick, ROUND_CEILING if up else ROUND_FLOOR)

    def check_size(self, amount: Decimal, price: Decimal) -> None:
        """Raise ``OrderTooSmall`` (with the figures) when a rounded order is under the minimum."""
        if amount <= 0 or amount < self.min_amount:
            raise OrderTooSmall(
                f"{amount} {self.base} is below {self.symbol}'s minimum amount "
                f"({self.min_amount} {self.base})",
                field="amount",
            )
        notional = amount * price
        if notional < self.min_notional:
            raise OrderTooSmall(
                f"{notional:.8f} {self.quote} is below {self.symbol}'s minimum order value "
                f"({self.min_notional} {self.quote})",
                field="amount",
            )


@dataclass(frozen=True)
class Balance:
    asset: str
    free: Decimal
    used: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.used


@dataclass(frozen=True)
class Position:
    """Net holding of a spot base asset (or a derivatives position where the venue has them)."""

    symbol: str
    amount: Decimal  # signed: > 0 long, < 0 short
    entry_price: Decimal | None = None


@dataclass(frozen=True)
class OrderRequest:
    symbol: str
    side: Side
    type: OrderType
    amount: Decimal
    client_order_id: str
    price: Decimal | None = None  # required for limit orders
    time_in_force: TimeInForce = "GTC"
    reduce_only: bool = False
    trigger_price: Decimal | None = None  # required for STOP_ORDER_TYPES


@dataclass(frozen=True)
class OrderState:
    """An order as the exchange reports it now."""

    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: Side
    type: OrderType
    status: OrderStatus
    amount: Decimal
    filled: Decimal
    price: Decimal | None = None
    average_price: Decimal | None = None
    fee: Decimal = Decimal(0)
    fee_currency: str = ""
    timestamp_ms: int = 0
    trigger_price: Decimal | None = None  # stop/target orders


def check_stop_request(request: OrderRequest, rules: MarketRules) -> tuple[Decimal, Decimal | None]:
    """The rounded (trigger, limit price) of a stop/target request; a clear error when the
    trigger (or a ``*_limit`` type's price) is missing or not above 0."""
    if request.trigger_price is None or Decimal(request.trigger_price) <= 0:
        raise ApplicationError(
            f"A {request.type} order needs a trigger price above 0", field="trigger_price"
        )
    trigger = rules.round_trigger(Decimal(request.trigger_price), request.side, request.type)
    if trigger <= 0:
        raise ApplicationError(
            "The trigger price rounds to 0 at this market's tick", field="trigger_price"
        )
    limit: Decimal | None = None
    if request.type in LIMIT_PRICED_TYPES:
        if request.price is None or Decimal(request.price) <= 0:
            raise ApplicationError(f"A {request.type} order needs a price above 0", field="price")
        limit = rules.round_price(Decimal(request.price), request.side)
    return trigger, limit


def supports_stop_orders(adapter: object, symbol: str) -> bool:
    """Whether ``adapter`` can rest stop-loss and take-profit orders on ``symbol`` (adapters
    that do not implement ``supports_stop_orders`` cannot)."""
    probe = getattr(adapter, "supports_stop_orders", None)
    if probe is None:
        return False
    try:
        return bool(probe(symbol))
    except ApplicationError:
        return False


@dataclass(frozen=True)
class Fill:
    """One execution (ccxt "my trade"). ``fill_id`` is unique per exchange account."""

    fill_id: str
    exchange_order_id: str
    client_order_id: str | None
    symbol: str
    side: Side
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    timestamp_ms: int


def fee_in(state: OrderState | Fill, asset: str) -> bool:
    """Whether the exchange took ``state``'s fee in ``asset`` (e.g. a buy's base coin: Binance
    spot charges a buy in the coin bought unless BNB pays)."""
    return bool(state.fee_currency) and state.fee_currency.upper() == asset.upper()


def holdings_value(
    adapter: TradingAdapter,
    balances: Mapping[str, Balance],
    *,
    quote: str,
    unpriced: Callable[[str, Exception], None],
) -> Decimal:
    """``balances`` valued in ``quote``, in their order: the quote balance plus every other
    asset at its last ``<asset>/<quote>`` price. An asset whose price cannot be read goes to
    ``unpriced`` (which may raise) and counts as nothing."""
    total = Decimal(0)
    for asset, balance in balances.items():
        amount = balance.total
        if amount == 0:
            continue
        if asset == quote:
            total += amount
            continue
        try:
            price = adapter.last_price(f"{asset}/{quote}")
        except Exception as exc:
            unpriced(asset, exc)
            continue
        total += amount * Decimal(price)
    return total


def with_fill_fees(adapter: TradingAdapter, state: OrderState) -> OrderState:
    """``state`` with its fee read from the account's fills when the order itself states none.

    Some exchanges (Binance) put fees on fills only: an order looked up later (``GET order``)
    says nothing about them. For a finished order with a fill and no fee, the fills of that
    order are summed (in the currency of the first; an order's fills share one). Unchanged when
    the fills cannot be read."""
    if state.status == "open" or Decimal(state.filled or 0) <= 0 or Decimal(state.fee or 0) > 0:
        return state
    since = max(0, int(state.timestamp_ms or 0) - 60_000)
    try:
        fills = adapter.fetch_fills(since_ms=since, symbol=state.symbol)
    except ApplicationError:
        return state
    mine = [
        f
        for f in fills
        if (state.exchange_order_id and f.exchange_order_id == state.exchange_order_id)
        or (f.client_order_id and f.client_order_id == state.client_order_id)
    ]
    if not mine:
        return state
    currency = mine[0].fee_currency
    return dataclasses.replace(
        state,
        fee=sum((f.fee for f in mine if f.fee_currency == currency), Decimal(0)),
        fee_currency=currency,
    )


@runtime_checkable
class TradingAdapter(Protocol):
    """What a linked account can do. Implemented by the ccxt client and the paper exchange."""

    def markets(self) -> dict[str, MarketRules]: ...

    def market(self, symbol: str) -> MarketRules: ...

    def balances(self) -> dict[str, Balance]: ...

    def positions(self) -> list[Position]: ...

    def last_price(self, symbol: str) -> Decimal: ...

    def create_order(self, request: OrderRequest) -> OrderState: ...

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderState | None: ...

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState: ...

    def open_orders(self, symbol: str | None = None) -> list[OrderState]: ...

    def fetch_fills(
        self, *, since_ms: int, symbol: str | None = None, limit: int | None = None
    ) -> list[Fill]: ...
