"""TEST DOUBLE of a spot exchange account, implementing ``exchanges.trading.TradingAdapter``.

A stand-in, not the product's exchange code. The exactly-once cases that the loopback fake
Binance (tests/fakes/binance_private.py) can stage run there, through the real ccxt adapter
(tests/copytrading/test_exactly_once_binance.py). This double stays for what the fake has no
knob for (a request lost before the exchange saw it, a delay before processing, a refusal
injected on one adapter) and for the planner/page tests that only need balances and prices
set in one line. It models a real exchange's behaviour:

* client order ids are unique among *open* orders only (Binance's rule: a duplicate
  ``newClientOrderId`` of an open order is refused). An IOC order is closed at once, so a
  blind resend of the same id places a *second* order, which is exactly what the tests must
  be able to catch (``orders()`` lists every order placed);
* accept-then-timeout: the order is placed, then the caller gets ``OrderStatusUnknown``; and
  the opposite, a timeout where the request never arrived (nothing placed);
* lookup by client order id (the newest order with that id);
* a hang-after-accept knob (the order is placed, the call never returns) so a test can kill
  the process between sending and recording;
* a configurable delay before the order is processed, to widen race windows.

State lives in Redis (one namespace per account), so a Celery worker process, a subprocess the
test kills, and the test itself all see one order book.
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from typing import Any

import redis

from config.exceptions import ApplicationError
from exchanges.trading import (
    Balance,
    Fill,
    MarketRules,
    OrderRequest,
    OrderState,
    OrderStatusUnknown,
    Position,
)
from risk import rules

MARKETS = {
    "BTC/USDT": MarketRules(
        "BTC/USDT",
        "BTC",
        "USDT",
        Decimal("0.00001"),
        Decimal("0.01"),
        Decimal("0.00001"),
        Decimal("5"),
    ),
    "ETH/USDT": MarketRules(
        "ETH/USDT",
        "ETH",
        "USDT",
        Decimal("0.0001"),
        Decimal("0.01"),
        Decimal("0.0001"),
        Decimal("5"),
    ),
    "BTC/USD": MarketRules(
        "BTC/USD",
        "BTC",
        "USD",
        Decimal("0.00000001"),
        Decimal("0.1"),
        Decimal("0.0001"),
        Decimal("0"),
    ),
}
FEE = Decimal("0.001")


class ExchangeRejected(ApplicationError):
    code = "exchange_rejected"


def _redis() -> Any:  # decode_responses: str in and out (the stubs say bytes | str)
    return redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)


def namespace_for(account_id: int) -> str:
    return f"{os.environ.get('EXCHANGE_DOUBLE_PREFIX', 'xdouble')}:acct:{account_id}"


def adapter_for(account: Any) -> ExchangeDouble:
    """The factory the copy services are pointed at in these tests (a setting / env var)."""
    return ExchangeDouble(namespace_for(account.pk))


def approve_all(*, request: OrderRequest, **_: Any) -> rules.Decision:
    """A risk check that approves every copy as sized, returning the risk app's own
    ``Decision``. Used where a test is about the exchange side and the follower's risk limits
    would only get in the way; tests/copytrading/test_real_risk.py runs the real check."""
    return rules.Decision(rules.APPROVED, float(request.amount))


class ExchangeDouble:
    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.r = _redis()

    # --- set-up and inspection for tests ------------------------------------------------

    def fund(self, **assets: str) -> None:
        for asset, amount in assets.items():
            self.r.hset(f"{self.ns}:bal", asset, str(amount))

    def set_price(self, symbol: str, price: str) -> None:
        self.r.hset(f"{self.ns}:px", symbol, str(price))

    def set_knob(self, name: str, value: str | int) -> None:
        self.r.hset(f"{self.ns}:knobs", name, str(value))

    def add_fill(self, fill: Fill) -> None:
        self.r.rpush(f"{self.ns}:fills", json.dumps(_fill_json(fill)))

    def orders(self) -> list[dict[str, Any]]:
        """Every order placed, in order (a resend shows up as a second entry)."""
        return [json.loads(x) for x in self.r.lrange(f"{self.ns}:orders", 0, -1)]

    def create_calls(self) -> int:
        return int(self.r.get(f"{self.ns}:calls") or 0)

    def accepted_flag(self) -> bool:
        return bool(self.r.exists(f"{self.ns}:accepted"))

    def clear(self) -> None:
        keys = list(self.r.scan_iter(f"{self.ns}:*"))
        if keys:
            self.r.delete(*keys)

    # --- TradingAdapter -----------------------------------------------------------------

    def markets(self) -> dict[str, MarketRules]:
        return dict(MARKETS)

    def market(self, symbol: str) -> MarketRules:
        if symbol not in MARKETS:
            raise ExchangeRejected(f"unknown market {symbol}")
        return MARKETS[symbol]

    def balances(self) -> dict[str, Balance]:
        raw = self.r.hgetall(f"{self.ns}:bal")
        return {a: Balance(a, Decimal(v), Decimal(0)) for a, v in raw.items()}

    def positions(self) -> list[Position]:
        return [
            Position(f"{a}/USDT", b.free)
            for a, b in self.balances().items()
            if a != "USDT" and b.free != 0
        ]

    def last_price(self, symbol: str) -> Decimal:
        value = self.r.hget(f"{self.ns}:px", symbol)
        if value is None:
            raise ExchangeRejected(f"no price for {symbol}")
        return Decimal(value)

    def _knob(self, name: str) -> str | None:
        return self.r.hget(f"{self.ns}:knobs", name)

    def create_order(self, request: OrderRequest) -> OrderState:
        self.r.incr(f"{self.ns}:calls")
        delay = self._knob("delay_ms")
        if delay:
            time.sleep(int(delay) / 1000)
        if self._knob("timeout_before_accept") and self.r.hincrby(
            f"{self.ns}:knobs", "drops_served", 1
        ) <= int(self._knob("timeout_before_accept") or 0):
            raise OrderStatusUnknown("connect timed out (the request never reached the double)")
        with self.r.lock(f"{self.ns}:lock", timeout=30):
            for order in self.orders():
                if order["client_order_id"] == request.client_order_id and order["status"] == (
                    "open"
                ):
                    raise ExchangeRejected("Duplicate order sent.")
            state = self._match(request)
            self.r.rpush(f"{self.ns}:orders", json.dumps(_state_json(state)))
        if self._knob("hang_after_accept"):
            self.r.set(f"{self.ns}:accepted", "1")
            time.sleep(3600)  # the test kills this process now
        if self._knob("timeout_after_accept") and self.r.hincrby(
            f"{self.ns}:knobs", "timeouts_served", 1
        ) <= int(self._knob("timeout_after_accept") or 0):
            raise OrderStatusUnknown("read timed out (the exchange double accepted the order)")
        return state

    def _match(self, request: OrderRequest) -> OrderState:
        market = self.market(request.symbol)
        price = self.last_price(request.symbol)
        n = self.r.incr(f"{self.ns}:seq")
        marketable = (
            request.type == "market"
            or (request.side == "buy" and request.price is not None and price <= request.price)
            or (request.side == "sell" and request.price is not None and price >= request.price)
        )
        bal = self.balances()
        zero = Balance("", Decimal(0), Decimal(0))
        quote, base = bal.get(market.quote, zero).free, bal.get(market.base, zero).free
        cost = request.amount * price
        fee = cost * FEE
        affordable = (request.side == "buy" and quote >= cost + fee) or (
            request.side == "sell" and base >= request.amount
        )
        filled = request.amount if marketable and affordable else Decimal(0)
        if filled:
            sign = 1 if request.side == "buy" else -1
            self.fund(
                **{
                    market.quote: str(quote - sign * cost - fee),
                    market.base: str(base + sign * filled),
                }
            )
        if not affordable:
            status = "rejected"
        elif filled:
            status = "closed"
        else:
            status = "canceled" if request.time_in_force == "IOC" else "open"
        return OrderState(
            client_order_id=request.client_order_id,
            exchange_order_id=f"X{n}",
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            # (type: ignore below) a choices column/value: only the Literal's strings
            status=status,  # type: ignore[arg-type]
            amount=request.amount,
            filled=filled,
            price=request.price,
            average_price=price if filled else None,
            fee=fee if filled else Decimal(0),
            fee_currency=market.quote,
            timestamp_ms=int(time.time() * 1000),
        )

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderState | None:
        matches = [
            o
            for o in self.orders()
            if o["client_order_id"] == client_order_id and o["symbol"] == symbol
        ]
        return _state_from_json(matches[-1]) if matches else None

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        found = self.fetch_order_by_client_id(symbol, client_order_id)
        if found is None:
            raise ExchangeRejected("Unknown order sent.")
        return found

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        return [
            _state_from_json(o)
            for o in self.orders()
            if o["status"] == "open" and (symbol is None or o["symbol"] == symbol)
        ]

    def fetch_fills(
        self, *, since_ms: int, symbol: str | None = None, limit: int | None = None
    ) -> list[Fill]:
        fills = [_fill_from_json(json.loads(x)) for x in self.r.lrange(f"{self.ns}:fills", 0, -1)]
        out = [
            f
            for f in fills
            if f.timestamp_ms >= since_ms and (symbol is None or f.symbol == symbol)
        ]
        return out[:limit] if limit else out


def _state_json(s: OrderState) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in s.__dict__.items()}


def _state_from_json(d: dict[str, Any]) -> OrderState:
    dec = ("amount", "filled", "price", "average_price", "fee")
    fields: dict[str, Any] = {
        k: (Decimal(v) if k in dec and v is not None else v) for k, v in d.items()
    }
    return OrderState(**fields)


def _fill_json(f: Fill) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in f.__dict__.items()}


def _fill_from_json(d: dict[str, Any]) -> Fill:
    dec = ("amount", "price", "fee")
    fields: dict[str, Any] = {k: (Decimal(v) if k in dec else v) for k, v in d.items()}
    return Fill(**fields)
