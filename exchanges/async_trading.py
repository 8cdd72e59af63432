"""Async ccxt for work that talks to many accounts at once (one leader fill to its followers).

The synchronous adapter (``exchanges.clients``) is one ccxt instance per job and one request at
a time: right for a bot's step, too slow for a fan-out where a hundred followers each need a
balance read and an order. Here:

* one process-wide event loop runs on a daemon thread (``hub()``); callers on any thread hand it
  a coroutine with ``hub().run(...)`` and wait for the result. No database work happens on the
  loop: it only talks to exchanges;
* one ``ccxt.async_support`` instance per account is kept across calls (its HTTP session and
  keep-alive connection included), rebuilt when the account's stored secrets change;
* market metadata is loaded once per exchange (and set of endpoints) and shared by every
  account's instance for ``MARKETS_TTL_SECONDS``;
* the error policy is the synchronous adapter's: an order whose request may have left the
  process without an answer raises ``OrderStatusUnknown`` (look it up by client order id, never
  resend), a refusal raises ``OrderRejected``, and a "Duplicate order sent." refusal is answered
  with the order already holding that client order id.

Like ``exchanges/clients.py``, this module (and only these two) imports ccxt.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from exchanges.clients import (
    CLIENT_ORDER_ID_PARAM,
    CLIENT_ORDER_LOOKUP_PARAM,
    MARKETS_TTL_SECONDS,
    Credentials,
    ExchangeRefused,
    ExchangeUnavailable,
    OrderRejected,
    UnknownSymbol,
    _configured_exchange,
    _dec,
    _markets_key,
    balances_from_ccxt,
    create_order_args,
    exchange_label,
    exchange_message,
    is_duplicate_order,
    market_rules_from_ccxt,
    order_send_failure,
    order_state_from_ccxt,
)
from exchanges.trading import Balance, MarketRules, OrderRequest, OrderState

T = TypeVar("T")
MAX_CLIENTS = 5000  # accounts whose instance is kept (least recently used go first)
RATE_LIMIT_ATTEMPTS = 4


def _ccxt_async() -> Any:
    import ccxt.async_support as ccxt_async

    return ccxt_async


@dataclass
class AsyncAccountClient:
    """One account's ccxt instance, used only on the hub's loop."""

    exchange_id: str
    exchange: Any
    markets_cache: dict[tuple[str, str], tuple[float, Any, Any]]
    _rules: dict[str, MarketRules] = field(default_factory=dict)
    _endpoints: tuple[str, str] | None = None

    @property
    def label(self) -> str:
        return exchange_label(self.exchange_id)

    def endpoints_key(self) -> tuple[str, str]:
        """Which exchange and API addresses this instance talks to (its URLs are set when it is
        built and never change, so the key is worked out once: a fan-out asks for it several
        times per account)."""
        if self._endpoints is None:
            self._endpoints = _markets_key(self.exchange)
        return self._endpoints

    async def ensure_markets(self) -> None:
        if self.exchange.markets:
            return
        key = self.endpoints_key()
        cached = self.markets_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < MARKETS_TTL_SECONDS:
            self.exchange.set_markets(cached[1], cached[2])
            return
        await self._call(self.exchange.load_markets)
        self.markets_cache[key] = (
            time.monotonic(),
            self.exchange.markets,
            getattr(self.exchange, "currencies", None),
        )

    async def market(self, symbol: str) -> MarketRules:
        await self.ensure_markets()
        rules = self._rules.get(symbol)
        if rules is None:
            market = (self.exchange.markets or {}).get(symbol)
            if market is None or not market.get("spot", True):
                raise UnknownSymbol(f"{self.label} has no market {symbol}", field="symbol")
            mode = int(getattr(self.exchange, "precisionMode", 0) or 0)
            rules = self._rules[symbol] = market_rules_from_ccxt(market, mode)
        return rules

    async def _call(self, fn: Any, *args: Any) -> Any:
        """A read with the sync client's policy, shortened for live work: rate limits and
        transient failures are retried twice (0.2 s, 0.4 s), then ``ExchangeUnavailable``."""
        ccxt = _ccxt_async()
        delay = 0.2
        for attempt in range(1, 4):
            try:
                return await fn(*args)
            except ccxt.BadSymbol as exc:
                raise UnknownSymbol(f"{self.label} has no such market", field="symbol") from exc
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection, ccxt.OperationFailed) as exc:
                if attempt == 3:
                    raise ExchangeUnavailable(
                        f"{self.label} did not answer after {attempt} attempts "
                        f"({type(exc).__name__})"
                    ) from exc
            except ccxt.BaseError as exc:
                raise ExchangeRefused(
                    f"{self.label} refused the request: {exchange_message(exc)}"
                ) from exc
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def balances(self) -> dict[str, Balance]:
        return balances_from_ccxt(await self._call(self.exchange.fetch_balance) or {})

    async def last_price(self, symbol: str) -> Decimal:
        await self.market(symbol)
        ticker = await self._call(self.exchange.fetch_ticker, symbol) or {}
        price = _dec(ticker.get("last") or ticker.get("close"), None)
        if price is None:
            raise ExchangeRefused(f"{self.label} reported no last price for {symbol}")
        return price

    async def fetch_order_by_client_id(
        self, symbol: str, client_order_id: str
    ) -> OrderState | None:
        ccxt = _ccxt_async()
        key = CLIENT_ORDER_LOOKUP_PARAM.get(self.exchange_id, "clientOrderId")
        try:
            order = await self._call(
                self.exchange.fetch_order, None, symbol, {key: client_order_id}
            )
        except ExchangeRefused as exc:
            if isinstance(exc.__cause__, ccxt.OrderNotFound):
                return None
            raise
        return order_state_from_ccxt(order, client_order_id)

    async def create_order(self, request: OrderRequest) -> OrderState:
        """Send one order (rounded and size-checked as the sync adapter does) with the caller's
        client order id. Raises ``OrderStatusUnknown`` for any failure after which the request
        may have reached the exchange, ``OrderRejected`` for a refusal."""
        ccxt = _ccxt_async()
        rules = await self.market(request.symbol)
        amount = rules.round_amount(Decimal(request.amount))
        price: Decimal | None = None
        if request.type == "limit":
            if request.price is None or Decimal(request.price) <= 0:
                raise OrderRejected("A limit order needs a positive price")
            price = rules.round_price(Decimal(request.price), request.side)
            rules.check_size(amount, price)
        if request.reduce_only:
            raise OrderRejected(
                f"{request.symbol} on {self.label} cannot take reduce-only orders (spot market)"
            )
        params: dict[str, Any] = {
            CLIENT_ORDER_ID_PARAM.get(self.exchange_id, "clientOrderId"): request.client_order_id
        }
        if request.type == "limit" and request.time_in_force == "IOC":
            params["timeInForce"] = "IOC"
        delay = 0.25
        for attempt in range(1, RATE_LIMIT_ATTEMPTS + 1):
            try:
                order = await self.exchange.create_order(
                    *create_order_args(request, request.type, amount, price, params)
                )
                return order_state_from_ccxt(order, request.client_order_id)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                # Refused before it was taken: the same request may go again.
                if attempt == RATE_LIMIT_ATTEMPTS:
                    raise ExchangeUnavailable(
                        f"{self.label} rate-limited the order {attempt} times"
                    ) from exc
                await asyncio.sleep(delay)
                delay *= 2
            except ccxt.InvalidOrder as exc:
                if is_duplicate_order(exc):
                    existing = await self.fetch_order_by_client_id(
                        request.symbol, request.client_order_id
                    )
                    if existing is not None:
                        return existing
                raise order_send_failure(self.label, request.client_order_id, exc) from exc
            except (TimeoutError, ccxt.BaseError) as exc:
                raise order_send_failure(self.label, request.client_order_id, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover


def secrets_fingerprint(*parts: str) -> str:
    """A digest naming one version of an account's stored (sealed) secrets and endpoints, so a
    cached instance is rebuilt when the key is relinked. Never the secrets themselves."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


_settle_lock = threading.Lock()


class AsyncHub:
    """The process's event loop for exchange I/O, and the account instances living on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="exchanges-async", daemon=True
        )
        self._thread.start()
        self._clients: OrderedDict[Any, tuple[str, AsyncAccountClient]] = OrderedDict()
        self.markets: dict[tuple[str, str], tuple[float, Any, Any]] = {}
        self._gate: asyncio.Semaphore | None = None
        self.built = 0  # instances built so far (the garbage collector's note reads it)
        self._frozen_at = 0

    def settle_memory(self) -> bool:
        """Once instances were built since the last call: collect the garbage, then move
        everything left (the new instances, their markets: long-lived) out of the collector's
        way, so later collections do not walk them. Call after the time-critical work (a full
        collection takes tens of milliseconds); True when it ran. Only live objects are
        frozen (the collection comes first), so nothing collectable is kept."""
        with _settle_lock:
            if self.built == self._frozen_at:
                return False
            self._frozen_at = self.built
            gc.collect()
            gc.freeze()
            return True

    def gate(self, limit: int) -> asyncio.Semaphore:
        """Caps the requests in flight from this process (on the loop only). Without it a
        thousand orders at once queue inside the client and the exchange until the client's
        timeout runs out, and a request that never left becomes an "unknown" order; a request
        waiting here has not started, so its timeout has not either."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(limit)
        return self._gate

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the hub's loop from any other thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def client(
        self,
        key: Any,
        fingerprint: str,
        *,
        exchange_id: str,
        credentials: Credentials,
        sandbox: bool = False,
        url_overrides: Mapping[str, str] | str | list[str] | None = None,
        timeout_ms: int = 10_000,
    ) -> AsyncAccountClient:
        """The kept instance of account ``key``, built (or rebuilt) when missing or when its
        ``fingerprint`` changed. Call on the hub's loop only."""
        found = self._clients.get(key)
        if found is not None and found[0] == fingerprint:
            self._clients.move_to_end(key)
            return found[1]
        if found is not None:
            self.loop.create_task(found[1].exchange.close())
        exchange = _configured_exchange(
            _ccxt_async(),
            exchange_id,
            credentials=credentials,
            sandbox=sandbox,
            url_overrides=url_overrides,
            timeout_ms=timeout_ms,
        )
        client = AsyncAccountClient(exchange_id, exchange, self.markets)
        self.built += 1
        self._clients[key] = (fingerprint, client)
        while len(self._clients) > MAX_CLIENTS:
            _old_key, (_fp, old) = self._clients.popitem(last=False)
            self.loop.create_task(old.exchange.close())
        return client

    def has_client(self, key: Any, fingerprint: str) -> bool:
        found = self._clients.get(key)
        return found is not None and found[0] == fingerprint

    def close(self, timeout: float = 5.0) -> None:
        """Close every kept instance's HTTP session (at process exit: an unclosed aiohttp
        session is reported on stderr by each instance otherwise)."""
        if not self.loop.is_running():
            return
        kept = [client for _fp, client in self._clients.values()]
        self._clients.clear()

        async def close_all() -> None:
            await asyncio.gather(*(c.exchange.close() for c in kept), return_exceptions=True)

        with contextlib.suppress(Exception):  # exiting anyway; nothing left to tell
            self.run(close_all(), timeout=timeout)


_hub: AsyncHub | None = None
_hub_pid = 0
_hub_lock = threading.Lock()


def hub() -> AsyncHub:
    """This process's hub (a forked child builds its own)."""
    global _hub, _hub_pid
    import os

    with _hub_lock:
        if _hub is None or _hub_pid != os.getpid():
            _hub = AsyncHub()
            _hub_pid = os.getpid()
            atexit.register(_hub.close)
        return _hub


# --- many accounts at once ------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRef:
    """What the hub needs to build one account's instance; ``credentials`` is only read when
    no instance with this ``fingerprint`` is kept yet (so keys are decrypted once)."""

    key: Any
    fingerprint: str
    exchange_id: str
    sandbox: bool
    credentials: Any  # a zero-argument callable returning ``Credentials``


def clients_for(
    refs: list[AccountRef], *, timeout_ms: int = 10_000
) -> dict[Any, AsyncAccountClient]:
    """The kept instance of each account (built where missing), by ``ref.key``. Call from any
    thread but the hub's. ``ref.credentials`` runs on the hub's loop, so it must not query
    the database (decrypt secrets already loaded)."""
    h = hub()

    async def build() -> dict[Any, AsyncAccountClient]:
        out = {}
        for ref in refs:
            if not h.has_client(ref.key, ref.fingerprint):
                # Building an instance is CPU work on the loop (~10 ms): let other callers'
                # requests move between builds, or a cold fan-out of hundreds of accounts
                # would hold every other one's answers (and age their balances) for seconds.
                await asyncio.sleep(0)
            if h.has_client(ref.key, ref.fingerprint):
                out[ref.key] = h.client(ref.key, ref.fingerprint, exchange_id=ref.exchange_id,
                                        credentials=Credentials("", ""))  # fmt: skip
                continue
            out[ref.key] = h.client(
                ref.key,
                ref.fingerprint,
                exchange_id=ref.exchange_id,
                credentials=ref.credentials(),
                sandbox=ref.sandbox,
                timeout_ms=timeout_ms,
            )
        return out

    return h.run(build())
