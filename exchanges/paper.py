"""The paper exchange: ``TradingAdapter`` for paper accounts, in-process, state in PostgreSQL.

Behaves like a spot exchange so that copy trading and bots cannot tell it from a real one:

* **market** orders fill at once at the current price moved against the trader by
  ``PAPER_SLIPPAGE_BPS`` (a buy pays more, a sell gets less; rounded to the tick against the
  trader) and pay the **taker** fee;
* **limit** orders that cross the price on arrival fill at once like a taker (at the better of
  the limit and the slipped price); otherwise they **rest**, holding their funds back
  (``used``), until the price crosses them (``paper_match``), then fill at the limit price and
  pay the **maker** fee; an **IOC** limit that cannot fill on arrival is canceled;
* **stop-loss / take-profit** orders (``stop_market``, ``stop_limit``, ``take_profit_market``,
  ``take_profit_limit``) rest until the price feed reaches their ``trigger_price``: a sell stop
  when the lowest price since it was placed (the low of every candle of the ``PriceSource``
  that began at or after its placement, and the last price) is at or below the trigger, a sell
  target when the highest is at or above it (a buy the other way round). A ``*_market`` order
  then fills like a market order (taker fee, slippage against the trader) from the trigger
  price, or from the last price when that is already beyond the trigger (a gap, as the engine
  fills a gap at the open); a ``*_limit`` order becomes a limit order at its ``price``. An order
  that would trigger on arrival is refused (as Binance refuses it). Stop orders hold nothing
  back while they rest (so a stop and a target can both cover one position; the bot cancels
  the other when one fills); one whose balance is gone when it triggers is ``expired``;
* fees are charged in the quote currency (a buy pays ``cost + fee``, a sell receives
  ``cost - fee``), rounded up to 8 decimals;
* a second order with a client order id the account already used is refused
  (``DuplicateClientOrderId``), and ``fetch_order_by_client_id`` finds the first one;
* an order bigger than the free balance is refused with the balance in the message
  (``InsufficientPaperBalance``); amounts and prices are rounded to the real market's rules
  (``clients.fetch_market_rules`` on ``PAPER_MARKET_EXCHANGE``, or defaults when the market
  cannot be asked) and an order under its minimum is refused (``OrderTooSmall``);
* every change of balances and orders happens in one transaction holding the account row's
  lock (``select_for_update``), so two workers placing orders for one account cannot spend
  the same balance twice; every fill is a ``PaperFill`` row and a ``fill_observed`` event.

Prices come from a ``PriceSource``; the default (``LivePrices``) takes the latest candle in the
market-data store when it is fresh, else the exchange's public ticker, else (outside
production) the latest stored candle however old. Tests and the demo inject ``ManualPrices``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_UP, Decimal
from typing import Protocol

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.exceptions import ApplicationError, Conflict, NotFound
from exchanges.events import publish_fill
from exchanges.models import ExchangeAccount
from exchanges.paper_models import PaperBalance, PaperFill, PaperOrder
from exchanges.trading import (
    STOP_ORDER_TYPES,
    Balance,
    Fill,
    MarketRules,
    OrderRequest,
    OrderState,
    Position,
    Side,
    check_stop_request,
)

EIGHT = Decimal("0.00000001")
DEFAULT_STEP = EIGHT
DEFAULT_MIN_NOTIONAL = Decimal("1")
RULES_TTL_S = 3600.0
RULES_FAILED_TTL_S = 60.0


class DuplicateClientOrderId(Conflict):
    """The account already has an order with this client order id (as Binance's -2010)."""

    code = "duplicate_client_order_id"


class InsufficientPaperBalance(ApplicationError):
    code = "insufficient_balance"


class NoPrice(ApplicationError):
    """Neither the store nor the exchange gives a current price for the symbol."""

    status = 503
    code = "no_price"


# --- prices --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceRange:
    """Lowest and highest traded price over a stretch of time, and the latest price in it."""

    low: Decimal
    high: Decimal
    last: Decimal


class PriceSource(Protocol):
    """Where the paper exchange reads prices. ``None`` means "no price known"."""

    def last_price(self, symbol: str) -> Decimal | None: ...

    def range_since(self, symbol: str, since_ms: int) -> PriceRange | None:
        """Low/high of every candle (or tick) that began at or after ``since_ms``."""
        ...


@dataclass
class ManualPrices:
    """Prices set by hand (tests, demos): each ``set``/``bar`` is one point on the timeline."""

    bars: dict[str, list[tuple[int, Decimal, Decimal, Decimal]]] = field(default_factory=dict)

    def set(self, symbol: str, price: Decimal | str | int, *, at_ms: int = 0) -> None:
        p = Decimal(str(price))
        self.bars.setdefault(symbol, []).append((at_ms, p, p, p))

    def bar(
        self,
        symbol: str,
        *,
        at_ms: int,
        low: Decimal | str | int,
        high: Decimal | str | int,
        close: Decimal | str | int,
    ) -> None:
        values = (Decimal(str(low)), Decimal(str(high)), Decimal(str(close)))
        self.bars.setdefault(symbol, []).append((at_ms, *values))

    def last_price(self, symbol: str) -> Decimal | None:
        rows = self.bars.get(symbol)
        return rows[-1][3] if rows else None

    def range_since(self, symbol: str, since_ms: int) -> PriceRange | None:
        rows = [r for r in self.bars.get(symbol, []) if r[0] >= since_ms]
        if not rows:
            return None
        return PriceRange(min(r[1] for r in rows), max(r[2] for r in rows), rows[-1][3])


def _dec(value: float) -> Decimal:
    # Candles are float64 in the store; 12 significant digits hold every exchange price.
    return Decimal(f"{value:.12g}")


class StorePrices:
    """The latest candles of the shared market-data store (``backtester.marketdata``)."""

    def __init__(self, *, prefer_exchange: str = "") -> None:
        self.prefer_exchange = prefer_exchange

    def series(self, symbol: str):  # -> MarketSeries | None
        from backtester.engine.candles import timeframe_ms
        from backtester.models import MarketSeries

        rows = list(
            MarketSeries.objects.filter(owner__isnull=True, symbol=symbol, count__gt=0).exclude(
                last_ts__isnull=True
            )
        )
        if not rows:
            return None
        # Newest data first; then the preferred exchange; then the finest timeframe.
        rows.sort(
            # (last_ts is never null here: filtered above)
            key=lambda s: (
                -((s.last_ts or 0) + timeframe_ms(s.timeframe)),
                s.exchange != self.prefer_exchange,
                timeframe_ms(s.timeframe),
            )
        )
        return rows[0]

    def latest_close_ms(self, symbol: str) -> int | None:
        """When the latest stored candle of ``symbol`` closed (ms), or None."""
        from backtester.engine.candles import timeframe_ms

        s = self.series(symbol)
        return None if s is None else int(s.last_ts) + timeframe_ms(s.timeframe)

    def last_price(self, symbol: str) -> Decimal | None:
        from backtester.marketdata.store import load_candles

        s = self.series(symbol)
        if s is None:
            return None
        c = load_candles(s, start_ts=int(s.last_ts))
        return _dec(float(c.close[-1])) if len(c.close) else None

    def range_since(self, symbol: str, since_ms: int) -> PriceRange | None:
        from backtester.marketdata.store import load_candles

        s = self.series(symbol)
        if s is None or s.last_ts < since_ms:
            return None
        c = load_candles(s, start_ts=since_ms)
        if not len(c.close):
            return None
        return PriceRange(
            _dec(float(c.low.min())), _dec(float(c.high.max())), _dec(float(c.close[-1]))
        )


class TickerPrices:
    """The exchange's public ticker (``clients.fetch_last_price``): a last price, no history."""

    def __init__(self, exchange_id: str, *, memo_s: float = 2.0) -> None:
        self.exchange_id = exchange_id
        self.memo_s = memo_s  # one matching pass asks once per symbol, not once per order
        self._memo: dict[str, tuple[float, Decimal | None]] = {}

    def last_price(self, symbol: str) -> Decimal | None:
        from exchanges.clients import fetch_last_price

        if not self.exchange_id:
            return None
        hit = self._memo.get(symbol)
        if hit and time.monotonic() - hit[0] < self.memo_s:
            return hit[1]
        try:
            price: Decimal | None = fetch_last_price(self.exchange_id, symbol)
        except ApplicationError:
            price = None
        self._memo[symbol] = (time.monotonic(), price)
        return price

    def range_since(self, symbol: str, since_ms: int) -> PriceRange | None:
        price = self.last_price(symbol)
        return None if price is None else PriceRange(price, price, price)


class LivePrices:
    """The default source: a fresh stored candle, else the ticker, else a stale stored candle
    (only where ``PAPER_ALLOW_STALE_PRICES``, i.e. the embedded demo without internet)."""

    def __init__(self, *, clock: Callable[[], int] | None = None) -> None:
        exchange = getattr(settings, "PAPER_MARKET_EXCHANGE", "")
        self.store = StorePrices(prefer_exchange=exchange)
        self.ticker = TickerPrices(exchange)
        self.clock = clock or _now_ms
        self.max_age_ms = int(getattr(settings, "PAPER_CANDLE_MAX_AGE_SECONDS", 180)) * 1000
        self.allow_stale = bool(getattr(settings, "PAPER_ALLOW_STALE_PRICES", False))

    def _store_is_fresh(self, symbol: str) -> bool:
        closed = self.store.latest_close_ms(symbol)
        return closed is not None and self.clock() - closed <= self.max_age_ms

    def last_price(self, symbol: str) -> Decimal | None:
        if self._store_is_fresh(symbol):
            return self.store.last_price(symbol)
        price = self.ticker.last_price(symbol)
        if price is None and self.allow_stale:
            price = self.store.last_price(symbol)
        return price

    def range_since(self, symbol: str, since_ms: int) -> PriceRange | None:
        stored = self.store.range_since(symbol, since_ms)
        if stored is not None and self._store_is_fresh(symbol):
            return stored
        price = self.ticker.last_price(symbol)
        if price is not None:
            if stored is None:
                return PriceRange(price, price, price)
            return PriceRange(min(stored.low, price), max(stored.high, price), price)
        return stored if self.allow_stale else None


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- market rules --------------------------------------------------------------------------------

_rules_cache: dict[tuple[str, str], tuple[float, MarketRules]] = {}
_rules_lock = threading.Lock()


def _default_fee() -> Decimal:
    return Decimal(str(getattr(settings, "PAPER_DEFAULT_FEE", "0.001")))


def default_rules(symbol: str) -> MarketRules:
    """Rules for a market the real exchange could not describe: 8-decimal steps, 1 quote unit
    minimum order value, the default fee both ways."""
    base, _, quote = symbol.partition("/")
    fee = _default_fee()
    return MarketRules(
        symbol=symbol,
        base=base,
        quote=quote,
        amount_step=DEFAULT_STEP,
        price_tick=DEFAULT_STEP,
        min_notional=DEFAULT_MIN_NOTIONAL,
        taker_fee=fee,
        maker_fee=fee,
    )


def market_rules(symbol: str) -> MarketRules:
    """The real market's rules (``PAPER_MARKET_EXCHANGE``), cached for an hour; defaults when
    the exchange is not configured, unreachable, or does not list the symbol."""
    exchange = str(getattr(settings, "PAPER_MARKET_EXCHANGE", "") or "")
    key = (exchange, symbol)
    now = time.monotonic()
    with _rules_lock:
        hit = _rules_cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
    rules, ttl = default_rules(symbol), RULES_FAILED_TTL_S
    if exchange:
        from exchanges.clients import fetch_market_rules

        with contextlib.suppress(ApplicationError):  # unreachable or unlisted: defaults
            rules, ttl = fetch_market_rules(exchange, symbol), RULES_TTL_S
    with _rules_lock:
        _rules_cache[key] = (now + ttl, rules)
    return rules


def clear_rules_cache() -> None:
    with _rules_lock:
        _rules_cache.clear()


def _split(symbol: str) -> tuple[str, str]:
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote:
        raise ApplicationError(f"{symbol!r} is not a market symbol like BTC/USDT", field="symbol")
    return base.upper(), quote.upper()


def _q8(value: Decimal, rounding: str = ROUND_UP) -> Decimal:
    return value.quantize(EIGHT, rounding=rounding)


def _to_tick(price: Decimal, tick: Decimal, rounding: str) -> Decimal:
    if tick <= 0:
        return _q8(price, rounding)
    units = (price / tick).to_integral_value(rounding=rounding)
    return (units * tick).normalize()


# --- the adapter ---------------------------------------------------------------------------------


class PaperExchange:
    """``TradingAdapter`` for one paper account (``account.kind == "paper"``)."""

    def __init__(
        self,
        account: ExchangeAccount,
        *,
        price_source: PriceSource | None = None,
        clock: Callable[[], int] | None = None,
        rules: Callable[[str], MarketRules] | None = None,
    ) -> None:
        if account.kind != ExchangeAccount.Kind.PAPER:
            raise ApplicationError(f"{account.label} is not a paper account")
        self.account = account
        self.clock = clock or _now_ms
        self.prices: PriceSource = price_source or LivePrices(clock=self.clock)
        self._rules = rules or market_rules
        self.slippage = Decimal(str(getattr(settings, "PAPER_SLIPPAGE_BPS", 5))) / Decimal(10_000)

    # --- reads -----------------------------------------------------------------------------
    def market(self, symbol: str) -> MarketRules:
        _split(symbol)
        return self._rules(symbol)

    def markets(self) -> dict[str, MarketRules]:
        """Rules of every market this account holds or has traded."""
        symbols = set(
            PaperOrder.objects.filter(account=self.account).values_list("symbol", flat=True)
        )
        symbols |= {p.symbol for p in self.positions()}
        return {s: self.market(s) for s in sorted(symbols)}

    def balances(self) -> dict[str, Balance]:
        return {
            b.asset: Balance(asset=b.asset, free=b.free.normalize(), used=b.used.normalize())
            for b in PaperBalance.objects.filter(account=self.account)
            if b.free or b.used
        }

    def positions(self) -> list[Position]:
        quote = self.account.paper_quote
        return [
            Position(symbol=f"{b.asset}/{quote}", amount=b.total)
            for b in self.balances().values()
            if b.asset != quote and b.total > 0
        ]

    def last_price(self, symbol: str) -> Decimal:
        price = self.prices.last_price(symbol)
        if price is None or price <= 0:
            raise NoPrice(f"No current price for {symbol}: try again shortly", field="symbol")
        return price

    def supports_stop_orders(self, symbol: str) -> bool:
        """Paper accounts rest stop-loss and take-profit orders on every market."""
        _split(symbol)
        return True

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderState | None:
        order = PaperOrder.objects.filter(
            account=self.account, client_order_id=client_order_id
        ).first()
        return None if order is None else _state(order)

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        rows = PaperOrder.objects.filter(account=self.account, status=PaperOrder.Status.OPEN)
        if symbol:
            rows = rows.filter(symbol=symbol)
        return [_state(o) for o in rows]

    def fetch_fills(
        self, *, since_ms: int, symbol: str | None = None, limit: int | None = None
    ) -> list[Fill]:
        rows = PaperFill.objects.filter(account=self.account, timestamp_ms__gte=since_ms)
        if symbol:
            rows = rows.filter(symbol=symbol)
        rows = rows.select_related("order").order_by("timestamp_ms", "pk")
        if limit:
            rows = rows[:limit]
        return [_fill(f) for f in rows]

    # --- writes ----------------------------------------------------------------------------
    def create_order(self, request: OrderRequest) -> OrderState:
        """Place an order (see the module docstring for how it fills)."""
        base, quote = _split(request.symbol)
        if request.side not in ("buy", "sell"):
            raise ApplicationError("The side is buy or sell", field="side")
        stop = request.type in STOP_ORDER_TYPES
        if request.type not in ("market", "limit") and not stop:
            raise ApplicationError(
                "The order type is market, limit, stop_market, stop_limit, take_profit_market "
                "or take_profit_limit",
                field="type",
            )
        if not request.client_order_id or len(request.client_order_id) > 64:
            raise ApplicationError("A client order id of 1-64 characters is required")
        rules = self.market(request.symbol)
        amount = rules.round_amount(Decimal(request.amount))
        limit: Decimal | None = None
        trigger: Decimal | None = None
        if stop:
            trigger, limit = check_stop_request(request, rules)
        elif request.type == "limit":
            if request.price is None or Decimal(request.price) <= 0:
                raise ApplicationError("A limit order needs a price above 0", field="price")
            limit = rules.round_price(Decimal(request.price), request.side)
            if limit <= 0:
                raise ApplicationError("The price rounds to 0 at this market's tick", field="price")
        if request.reduce_only and request.side == "buy":
            raise ApplicationError(
                "A paper (spot) account holds no short position for a reduce-only buy to reduce",
                field="reduce_only",
            )
        market_price = self.last_price(request.symbol)
        reference = limit if limit is not None else (trigger or market_price)
        rules.check_size(amount, reference)
        if trigger is not None and _triggered(request.type, request.side, trigger, market_price):
            raise ApplicationError(
                f"The {request.type} order would trigger immediately: the price "
                f"({market_price.normalize():f}) is already beyond its trigger "
                f"({trigger.normalize():f})",
                field="trigger_price",
            )
        now = self.clock()

        with transaction.atomic():
            account = ExchangeAccount.objects.select_for_update().get(pk=self.account.pk)
            if PaperOrder.objects.filter(
                account=account, client_order_id=request.client_order_id
            ).exists():
                raise DuplicateClientOrderId(
                    f"Duplicate order: client order id {request.client_order_id} was already used",
                    field="client_order_id",
                )
            if request.reduce_only:
                held = self._wallet(account, base).free
                amount = min(amount, rules.round_amount(held))
                rules.check_size(amount, reference)
            order = PaperOrder(
                account=account,
                client_order_id=request.client_order_id,
                exchange_order_id=f"P{uuid.uuid4().hex[:20].upper()}",
                symbol=request.symbol,
                side=request.side,
                type=request.type,
                time_in_force=request.time_in_force,
                amount=amount,
                price=limit,
                trigger_price=trigger,
                placed_ms=now,
                updated_ms=now,
            )
            slipped = self._slipped(market_price, request.side, rules)
            if stop:
                self._save_order(order)  # rests, holding nothing, until it triggers
            elif request.type == "market":
                self._fill_now(account, order, rules, base, quote, slipped, maker=False)
            elif limit is not None and _crosses(request.side, limit, market_price):
                better = min(limit, slipped) if request.side == "buy" else max(limit, slipped)
                self._fill_now(account, order, rules, base, quote, better, maker=False)
            elif request.time_in_force == "IOC":
                order.status = PaperOrder.Status.CANCELED
                self._save_order(order)
            else:
                self._rest(account, order, rules, base, quote)
            snapshot_balances(account)
        return _state(order)

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        """Cancel a resting order and release what it held; a finished order is returned as
        it is (cancel is idempotent), an unknown id is ``NotFound``."""
        with transaction.atomic():
            account = ExchangeAccount.objects.select_for_update().get(pk=self.account.pk)
            order = PaperOrder.objects.filter(
                account=account, client_order_id=client_order_id, symbol=symbol
            ).first()
            if order is None:
                raise NotFound(f"No paper order {client_order_id} on {symbol}")
            if order.status == PaperOrder.Status.OPEN:
                self._release(account, order)
                order.status = PaperOrder.Status.CANCELED
                order.updated_ms = self.clock()
                order.save(update_fields=["status", "updated_ms", "reserved"])
                snapshot_balances(account)
        return _state(order)

    def match(self) -> list[Fill]:
        """Fill every resting limit order the price has crossed since it was placed: a buy when
        a candle's low reached its price, a sell when a high did. Fills at the limit price,
        maker fee. Stop/target orders whose trigger the price reached are triggered first
        (see the module docstring). Returns the fills made."""
        fills: list[Fill] = []
        open_orders = PaperOrder.objects.filter(
            account=self.account, status=PaperOrder.Status.OPEN
        ).order_by("placed_ms", "pk")
        last_prices: dict[str, Decimal | None] = {}
        for order in list(open_orders):
            if order.symbol not in last_prices:
                last_prices[order.symbol] = self.prices.last_price(order.symbol)
            last = last_prices[order.symbol]
            if order.type in STOP_ORDER_TYPES and order.triggered_ms is None:
                fill = self._maybe_trigger(order, last)
                if fill is not None:
                    fills.append(fill)
                continue
            assert order.price is not None
            window = self.prices.range_since(order.symbol, order.triggered_ms or order.placed_ms)
            lows = [x for x in (window.low if window else None, last) if x is not None]
            highs = [x for x in (window.high if window else None, last) if x is not None]
            if not lows:
                continue
            if (order.side == "buy" and min(lows) <= order.price) or (
                order.side == "sell" and max(highs) >= order.price
            ):
                fill = self._fill_resting(order.pk, self.market(order.symbol))
                if fill is not None:
                    fills.append(fill)
        return fills

    def _maybe_trigger(self, order: PaperOrder, last: Decimal | None) -> Fill | None:
        """Trigger ``order`` when the feed reached its trigger since it was placed."""
        assert order.trigger_price is not None
        window = self.prices.range_since(order.symbol, order.placed_ms)
        lows_highs = (window.low, window.high) if window else (None, None)
        seen = [x for x in (*lows_highs, last) if x is not None]
        if not seen:
            return None
        falls = order.type.startswith("stop") == (order.side == "sell")
        extreme = min(seen) if falls else max(seen)
        if not _triggered(order.type, order.side, order.trigger_price, extreme):
            return None
        return self._fill_triggered(order.pk, self.market(order.symbol), last)

    def _fill_triggered(
        self, order_pk: int, rules: MarketRules, last: Decimal | None
    ) -> Fill | None:
        with transaction.atomic():
            account = ExchangeAccount.objects.select_for_update().get(pk=self.account.pk)
            order = PaperOrder.objects.get(pk=order_pk)
            if order.status != PaperOrder.Status.OPEN or order.triggered_ms is not None:
                return None  # another worker triggered it or someone canceled it meanwhile
            assert order.trigger_price is not None
            base, quote = _split(order.symbol)
            order.triggered_ms = self.clock()
            if order.type.endswith("_limit"):
                assert order.price is not None
                market = last if last is not None else order.trigger_price
                try:
                    if _crosses(order.side, order.price, market):
                        better = self._slipped(market, order.side, rules)  # type: ignore[arg-type]
                        better = (
                            min(order.price, better)
                            if order.side == "buy"
                            else max(order.price, better)
                        )
                        self._fill_now(account, order, rules, base, quote, better, maker=False)
                    else:
                        self._rest(account, order, rules, base, quote)
                except InsufficientPaperBalance:
                    self._expire(account, order)
                    return None
                snapshot_balances(account)
                last_fill = order.fills.order_by("-pk").first()
                return _fill(last_fill) if order.filled and last_fill is not None else None
            # From the trigger, or from the last price when it is already beyond it (a gap).
            base_price = order.trigger_price
            if last is not None and _triggered(order.type, order.side, order.trigger_price, last):
                base_price = last
            try:
                self._fill_now(
                    account, order, rules, base, quote,
                    # PaperOrder.side holds "buy"/"sell" only (its choices).
                    self._slipped(base_price, order.side, rules),  # type: ignore[arg-type]
                    maker=False,
                )  # fmt: skip
            except InsufficientPaperBalance:
                self._expire(account, order)
                return None
            snapshot_balances(account)
        return _fill(order.fills.order_by("-pk").first())  # type: ignore[arg-type]

    def _expire(self, account: ExchangeAccount, order: PaperOrder) -> None:
        order.status = PaperOrder.Status.EXPIRED
        order.updated_ms = self.clock()
        order.save(update_fields=["status", "updated_ms", "triggered_ms"])
        snapshot_balances(account)
        return None

    # --- internals (all called inside transaction.atomic with the account row locked) -------
    def _slipped(self, price: Decimal, side: Side, rules: MarketRules) -> Decimal:
        if side == "buy":
            return _to_tick(price * (1 + self.slippage), rules.price_tick, ROUND_CEILING)
        return _to_tick(price * (1 - self.slippage), rules.price_tick, ROUND_FLOOR)

    def _wallet(self, account: ExchangeAccount, asset: str) -> PaperBalance:
        wallet, _ = PaperBalance.objects.select_for_update().get_or_create(
            account=account, asset=asset
        )
        return wallet

    def _refuse(self, wallet: PaperBalance, need: Decimal, what: str) -> None:
        raise InsufficientPaperBalance(
            f"Not enough {wallet.asset} on paper account {self.account.label}: {what} needs "
            f"{need.normalize():f} {wallet.asset}, the free balance is "
            f"{wallet.free.normalize():f} {wallet.asset}",
            field="amount",
            extra={"asset": wallet.asset, "free": str(wallet.free), "needed": str(need)},
        )

    def _save_order(self, order: PaperOrder) -> None:
        try:
            with transaction.atomic():
                order.save()
        except IntegrityError as exc:  # another process used the id between check and insert
            raise DuplicateClientOrderId(
                f"Duplicate order: client order id {order.client_order_id} was already used",
                field="client_order_id",
            ) from exc

    def _fill_now(
        self,
        account: ExchangeAccount,
        order: PaperOrder,
        rules: MarketRules,
        base: str,
        quote: str,
        price: Decimal,
        *,
        maker: bool,
    ) -> None:
        # Rounded against the trader: a buy's cost up, a sell's proceeds down; the fee up.
        cost = _q8(order.amount * price, ROUND_UP if order.side == "buy" else ROUND_FLOOR)
        fee = _q8(cost * (rules.maker_fee if maker else rules.taker_fee))
        quote_wallet = self._wallet(account, quote)
        base_wallet = self._wallet(account, base)
        if order.side == "buy":
            if quote_wallet.free < cost + fee:
                self._refuse(quote_wallet, cost + fee, f"buying {order.amount} {base}")
            quote_wallet.free -= cost + fee
            base_wallet.free += order.amount
        else:
            if base_wallet.free < order.amount:
                self._refuse(base_wallet, order.amount, "this sell")
            base_wallet.free -= order.amount
            quote_wallet.free += cost - fee
        quote_wallet.save(update_fields=["free"])
        base_wallet.save(update_fields=["free"])
        self._record_fill(order, price, fee, quote, maker=maker)

    def _rest(
        self,
        account: ExchangeAccount,
        order: PaperOrder,
        rules: MarketRules,
        base: str,
        quote: str,
    ) -> None:
        assert order.price is not None
        if order.side == "buy":
            wallet = self._wallet(account, quote)
            cost = _q8(order.amount * order.price)
            hold = cost + _q8(cost * rules.maker_fee)
            what = f"a limit buy of {order.amount} {base}"
        else:
            wallet = self._wallet(account, base)
            hold = order.amount
            what = "this limit sell"
        if wallet.free < hold:
            self._refuse(wallet, hold, what)
        wallet.free -= hold
        wallet.used += hold
        wallet.save(update_fields=["free", "used"])
        order.reserved_asset, order.reserved = wallet.asset, hold
        self._save_order(order)

    def _release(self, account: ExchangeAccount, order: PaperOrder) -> None:
        if order.reserved and order.reserved_asset:
            wallet = self._wallet(account, order.reserved_asset)
            wallet.used -= order.reserved
            wallet.free += order.reserved
            wallet.save(update_fields=["free", "used"])
            order.reserved = Decimal(0)

    def _fill_resting(self, order_pk: int, rules: MarketRules) -> Fill | None:
        with transaction.atomic():
            account = ExchangeAccount.objects.select_for_update().get(pk=self.account.pk)
            order = PaperOrder.objects.get(pk=order_pk)
            if order.status != PaperOrder.Status.OPEN:
                return None  # another worker matched or someone canceled it meanwhile
            assert order.price is not None
            base, quote = _split(order.symbol)
            self._release(account, order)
            self._fill_now(account, order, rules, base, quote, order.price, maker=True)
            snapshot_balances(account)
        # (type: ignore below) the order has just filled: it has a fill
        return _fill(order.fills.order_by("-pk").first())  # type: ignore[arg-type]

    def _record_fill(
        self, order: PaperOrder, price: Decimal, fee: Decimal, quote: str, *, maker: bool
    ) -> None:
        now = self.clock()
        order.status = PaperOrder.Status.CLOSED
        order.filled = order.amount
        order.average_price = price
        order.fee = fee
        order.fee_currency = quote
        order.updated_ms = now
        self._save_order(order)
        row = PaperFill.objects.create(
            account_id=order.account_id,
            order=order,
            fill_id=f"paper-{order.exchange_order_id}-1",
            symbol=order.symbol,
            side=order.side,
            amount=order.amount,
            price=price,
            fee=fee,
            fee_currency=quote,
            is_maker=maker,
            timestamp_ms=now,
        )
        publish_fill(account_id=order.account_id, fill=_fill(row))


def _triggered(order_type: str, side: str, trigger: Decimal, price: Decimal) -> bool:
    """Whether ``price`` reaches a stop/target's trigger: a sell stop (or buy target) below
    or at it, a sell target (or buy stop) above or at it."""
    falls = order_type.startswith("stop") == (side == "sell")
    return price <= trigger if falls else price >= trigger


def _crosses(side: str, limit: Decimal | None, price: Decimal) -> bool:
    assert limit is not None
    return price <= limit if side == "buy" else price >= limit


def _state(order: PaperOrder) -> OrderState:
    return OrderState(
        client_order_id=order.client_order_id,
        exchange_order_id=order.exchange_order_id,
        symbol=order.symbol,
        # (type: ignore below) a choices column/value: only the Literal's strings
        side=order.side,  # type: ignore[arg-type]
        # (type: ignore below) a choices column/value: only the Literal's strings
        type=order.type,  # type: ignore[arg-type]
        # (type: ignore below) a choices column/value: only the Literal's strings
        status=order.status,  # type: ignore[arg-type]
        amount=order.amount.normalize(),
        filled=order.filled.normalize(),
        price=order.price.normalize() if order.price is not None else None,
        average_price=order.average_price.normalize() if order.average_price else None,
        fee=order.fee.normalize(),
        fee_currency=order.fee_currency,
        timestamp_ms=order.placed_ms,
        trigger_price=order.trigger_price.normalize() if order.trigger_price else None,
    )


def _fill(row: PaperFill) -> Fill:
    return Fill(
        fill_id=row.fill_id,
        exchange_order_id=row.order.exchange_order_id,
        client_order_id=row.order.client_order_id,
        symbol=row.symbol,
        # (type: ignore below) a choices column/value: only the Literal's strings
        side=row.side,  # type: ignore[arg-type]
        amount=row.amount.normalize(),
        price=row.price.normalize(),
        fee=row.fee.normalize(),
        fee_currency=row.fee_currency,
        timestamp_ms=row.timestamp_ms,
    )


def snapshot_balances(account: ExchangeAccount) -> None:
    """Copy the paper balances onto ``account.balances`` (what the accounts page shows), in
    the caller's transaction."""
    account.balances = {
        b.asset: {"free": f"{b.free.normalize():f}", "used": f"{b.used.normalize():f}"}
        for b in PaperBalance.objects.filter(account=account)
        if b.free or b.used
    }
    account.checked_at = timezone.now()
    account.save(update_fields=["balances", "checked_at", "updated_at"])


def open_paper_accounts() -> Iterable[int]:
    """Ids of paper accounts with resting orders (what the matching task walks)."""
    return (
        PaperOrder.objects.filter(status=PaperOrder.Status.OPEN)
        .values_list("account_id", flat=True)
        .distinct()
    )
