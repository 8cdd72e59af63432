"""TEST DOUBLE of ``exchanges.trading.TradingAdapter`` for the risk tests.

This is a stand-in, not an exchange: an in-memory book (balances, positions, open orders,
last prices) with failure switches. The risk tests run against the real parts (the stateful
fake Binance through ccxt, and paper accounts) wherever they can; this double remains only for
what those cannot show: a SHORT position, i.e. a derivatives venue. The fake Binance and the
paper exchange are spot, so neither can hold a short for the kill switch to close with a
reduce-only buy, nor for the dashboard to value as negative exposure. It keeps the interface's
rules the risk code relies on: Decimal amounts, orders by client order id, reduce-only market
orders that close a position, ``OrderStatusUnknown`` on a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from exchanges.trading import (
    Balance,
    Fill,
    MarketRules,
    OrderRequest,
    OrderState,
    OrderStatusUnknown,
    Position,
)


class ExchangeDown(Exception):
    """What the double raises when it is switched to fail (a transport error)."""


@dataclass
class AdapterDouble:
    """In-memory TradingAdapter (test double). ``fail`` makes every call raise;
    ``timeout_orders`` makes create_order accept the order and then time out."""

    quote: str = "USDT"
    cash: Decimal = Decimal("10000")
    prices: dict[str, Decimal] = field(default_factory=dict)
    held: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[str, OrderState] = field(default_factory=dict)
    sent: list[OrderRequest] = field(default_factory=list)
    fail: bool = False
    timeout_orders: bool = False
    amount_step: Decimal = Decimal("0.001")
    min_notional: Decimal = Decimal("5")

    def _check(self) -> None:
        if self.fail:
            raise ExchangeDown("exchange unreachable (test double switched to fail)")

    def markets(self) -> dict[str, MarketRules]:
        self._check()
        return {s: self.market(s) for s in self.prices}

    def market(self, symbol: str) -> MarketRules:
        self._check()
        base, quote = symbol.split("/")
        return MarketRules(
            symbol=symbol,
            base=base,
            quote=quote,
            amount_step=self.amount_step,
            price_tick=Decimal("0.01"),
            min_notional=self.min_notional,
        )

    def balances(self) -> dict[str, Balance]:
        self._check()
        out = {self.quote: Balance(self.quote, self.cash, Decimal(0))}
        for symbol, amount in self.held.items():
            base = symbol.split("/")[0]
            out[base] = Balance(base, amount, Decimal(0))
        return out

    def positions(self) -> list[Position]:
        self._check()
        return [Position(s, a) for s, a in self.held.items() if a != 0]

    def last_price(self, symbol: str) -> Decimal:
        self._check()
        if symbol not in self.prices:
            raise ExchangeDown(f"no ticker for {symbol}")
        return self.prices[symbol]

    def place_resting(self, symbol: str, side: str, amount: str, price: str, cid: str) -> None:
        """Put a resting limit order on the book (test setup)."""
        self.orders[cid] = OrderState(
            client_order_id=cid,
            exchange_order_id=f"x-{cid}",
            symbol=symbol,
            side="buy" if side == "buy" else "sell",
            type="limit",
            status="open",
            amount=Decimal(amount),
            filled=Decimal(0),
            price=Decimal(price),
        )

    def create_order(self, request: OrderRequest) -> OrderState:
        self._check()
        self.sent.append(request)
        price = self.prices[request.symbol]
        held = self.held.get(request.symbol, Decimal(0))
        delta = request.amount if request.side == "buy" else -request.amount
        if request.reduce_only and (held == 0 or (held > 0) == (delta > 0)):
            raise ExchangeDown("reduce-only order would increase the position")
        self.held[request.symbol] = held + delta
        self.cash -= delta * price
        state = OrderState(
            client_order_id=request.client_order_id,
            exchange_order_id=f"x-{request.client_order_id}",
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            status="closed",
            amount=request.amount,
            filled=request.amount,
            average_price=price,
        )
        self.orders[request.client_order_id] = state
        if self.timeout_orders:
            raise OrderStatusUnknown("timed out after the order was accepted")
        return state

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderState | None:
        self._check()
        return self.orders.get(client_order_id)

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        self._check()
        order = self.orders[client_order_id]
        cancelled = OrderState(**{**order.__dict__, "status": "canceled"})
        self.orders[client_order_id] = cancelled
        return cancelled

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        self._check()
        return [
            o
            for o in self.orders.values()
            if o.status == "open" and (symbol is None or o.symbol == symbol)
        ]

    def fetch_fills(
        self, *, since_ms: int, symbol: str | None = None, limit: int | None = None
    ) -> list[Fill]:
        self._check()
        return []
