"""The adapter to exchanges: the only module in the project that imports ccxt.

``make_client("binance")`` gives an ``ExchangeClient`` with the few calls the rest of the code
needs (markets, one page of OHLCV candles) and one error policy:

* rate limits (HTTP 429/418, ccxt ``RateLimitExceeded``/``DDoSProtection``): wait as long as the
  exchange's ``Retry-After`` header says (else the current backoff), then retry;
* temporary failures (5xx, timeouts, connection errors: ccxt ``OperationFailed``, the parent
  of ``NetworkError``, which Binance's "internal error, try again" code -1001 also maps to):
  retry with exponential backoff (1 s, 2 s, 4 s ... capped at 60 s);
* after ``max_attempts`` tries in a row the call raises ``ExchangeUnavailable``;
* an unknown symbol raises ``UnknownSymbol`` ("Binance has no market BTC/XYZ"), an unsupported
  timeframe ``ApplicationError`` on the ``timeframe`` field, any other refusal ``ExchangeRefused``.
  These are ApplicationErrors, so forms, the API and tasks show them as they are.

Time is injectable (``sleep``) so tests of the retry policy do not wait. Exchange URLs can be
overridden (``url_overrides``, or the ``EXCHANGE_URL_OVERRIDES`` environment variable) so the
tests can point ccxt at a fake exchange on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from config.exceptions import ApplicationError
from exchanges.trading import (
    Balance,
    Fill,
    MarketRules,
    OrderRequest,
    OrderState,
    OrderStatusUnknown,
    Position,
    StopOrdersNotSupported,
    check_stop_request,
)

# Exchanges offered in forms: (ccxt id, label). Any ccxt id with fetchOHLCV also works from the
# command line; these are the ones with deep public candle history.
SUPPORTED_EXCHANGES: tuple[tuple[str, str], ...] = (
    ("binance", "Binance"),
    ("bybit", "Bybit"),
    ("okx", "OKX"),
    ("kraken", "Kraken"),
    ("coinbase", "Coinbase"),
    ("kucoin", "KuCoin"),
    ("bitfinex", "Bitfinex"),
)
_LABELS = dict(SUPPORTED_EXCHANGES)
DEFAULT_PAGE_LIMIT = 500
ENV_OVERRIDES = "EXCHANGE_URL_OVERRIDES"


def _ccxt() -> Any:
    """ccxt itself, imported on first use: it takes most of a second to import, and pages
    that only list exchanges (and every management command) should not pay for it."""
    import ccxt

    return ccxt


class ExchangeRefused(ApplicationError):
    """The exchange answered and said no (a request it will not serve as asked)."""

    status = 502
    code = "exchange_error"


class ExchangeUnavailable(ApplicationError):
    """The exchange kept failing or rate-limiting us after every retry."""

    status = 503
    code = "exchange_unavailable"


class ExchangeUnreachable(ExchangeUnavailable):
    """The exchange's host did not resolve or refused the connection: a network problem on
    our side or theirs, not an answer. Said plainly ("cannot reach Binance (network)")."""


NETWORK_ATTEMPTS = 2  # a host that does not resolve or connect is not retried for long


def _unreachable(exc: BaseException | None) -> bool:
    """True for a failure to resolve or connect (ccxt's bare NetworkError over a requests
    ConnectionError), not for timeouts or HTTP errors."""
    import requests

    ccxt = _ccxt()
    return (
        exc is not None
        and type(exc) is ccxt.NetworkError
        and isinstance(exc.__cause__, requests.exceptions.ConnectionError)
    )


class UnknownSymbol(ApplicationError):
    """The exchange lists no market with that symbol."""


def exchange_label(exchange_id: str) -> str:
    """A human name for an exchange id ("binance" -> "Binance")."""
    return _LABELS.get(exchange_id, exchange_id.capitalize())


def parse_url_overrides(values: Any) -> dict[str, str]:
    """Overrides from a mapping, a JSON object, or "key=url" / bare-URL strings.

    A bare URL (``http://127.0.0.1:8123``) is stored under ``"*"``: it replaces the scheme and
    host of every API URL of the exchange, keeping each path. ``public=http://...`` replaces the
    one entry ``urls["api"]["public"]``.
    """
    if not values:
        return {}
    if isinstance(values, Mapping):
        return {str(k): str(v) for k, v in values.items()}
    if isinstance(values, str):
        text = values.strip()
        if text.startswith("{"):
            return {str(k): str(v) for k, v in json.loads(text).items()}
        values = [part for part in text.split(",") if part.strip()]
    out: dict[str, str] = {}
    for item in values:
        item = str(item).strip()
        key, sep, url = item.partition("=")
        if sep and "://" not in key:
            out[key.strip()] = url.strip()
        else:
            out["*"] = item
    return out


def _env_overrides(exchange_id: str) -> dict[str, str]:
    """``EXCHANGE_URL_OVERRIDES='{"binance": "http://127.0.0.1:8123"}'`` (tests, mirrors), or
    ``@<path>`` of a file holding that JSON."""
    raw = os.environ.get(ENV_OVERRIDES, "").strip()
    if raw.startswith("@"):
        # "@/path/file.json": read the JSON from a file at each use, so a process started
        # earlier (the tests' Celery worker) follows a fake exchange started later.
        try:
            with open(raw[1:], encoding="utf-8") as fh:
                raw = fh.read().strip()
        except OSError:
            return {}
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    entry = doc.get(exchange_id) if isinstance(doc, dict) else None
    return parse_url_overrides(entry)


def _rebase(url: str, base: str) -> str:
    target = urlsplit(base)
    parts = urlsplit(url)
    path = target.path.rstrip("/") + parts.path
    return urlunsplit((target.scheme, target.netloc, path, parts.query, parts.fragment))


def _apply_overrides(exchange: Any, overrides: Mapping[str, str]) -> None:
    api = exchange.urls.get("api")
    if not isinstance(api, dict):
        api = {"public": api} if isinstance(api, str) else {}
    base = overrides.get("*")
    if base:
        api = {k: _rebase(v, base) if isinstance(v, str) else v for k, v in api.items()}
    for key, url in overrides.items():
        if key != "*":
            api[key] = url
    exchange.urls["api"] = api


@dataclass
class ExchangeClient:
    """One exchange with the project's retry policy. Not thread-safe; make one per job."""

    exchange_id: str
    exchange: Any
    sleep: Callable[[float], None] = time.sleep
    max_attempts: int = 5
    backoff_start: float = 1.0
    backoff_max: float = 60.0
    requests_made: int = 0
    retries: list[tuple[str, float]] = field(default_factory=list)
    # Trading adapters share one market list per exchange and process (see load_markets).
    share_markets: bool = False
    _markets_loaded: bool = False

    @property
    def label(self) -> str:
        return exchange_label(self.exchange_id)

    @property
    def ohlcv_limit(self) -> int:
        """Most candles one request may return (ccxt's feature table; 500 when unknown)."""
        features = getattr(self.exchange, "features", None) or {}
        spot = features.get("spot") or {}
        limit = (spot.get("fetchOHLCV") or {}).get("limit")
        return int(limit) if limit else DEFAULT_PAGE_LIMIT

    def timeframes(self) -> list[str]:
        return list((getattr(self.exchange, "timeframes", None) or {}).keys())

    def check_timeframe(self, timeframe: str) -> None:
        supported = self.timeframes()
        if supported and timeframe not in supported:
            raise ApplicationError(
                f"{self.label} has no {timeframe} candles (it offers {', '.join(supported)})",
                field="timeframe",
            )

    def now_ms(self) -> int:
        """The exchange's clock when it serves one (so "now" is its now), else ours."""
        if self.exchange.has.get("fetchTime"):
            return int(self._call(self.exchange.fetch_time))
        return int(time.time() * 1000)

    def load_markets(self) -> dict[str, Any]:
        """The exchange's markets. A trading adapter (``share_markets``) takes them from this
        process's cache when another one of the same exchange (same endpoints) loaded them
        within ``MARKETS_TTL_SECONDS``: adapters are short-lived, one per order path, and a
        market list (Binance's runs to megabytes) is the same for every account."""
        if not self._markets_loaded:
            key = _markets_key(self.exchange)
            cached = _MARKETS_CACHE.get(key) if self.share_markets else None
            if cached is not None and time.monotonic() - cached[0] < MARKETS_TTL_SECONDS:
                self.exchange.set_markets(cached[1], cached[2])
            else:
                self._call(self.exchange.load_markets)
                _MARKETS_CACHE[key] = (
                    time.monotonic(),
                    self.exchange.markets,
                    getattr(self.exchange, "currencies", None),
                )
            self._markets_loaded = True
        return dict(self.exchange.markets or {})

    def market(self, symbol: str) -> dict[str, Any]:
        """The exchange's market for a unified symbol like "BTC/USDT"; UnknownSymbol if none."""
        markets = self.load_markets()
        if symbol not in markets:
            raise UnknownSymbol(f"{self.label} has no market {symbol}", field="symbol")
        return dict(markets[symbol])

    def fetch_ohlcv_page(
        self,
        *,
        symbol: str,
        timeframe: str,
        since_ms: int,
        limit: int | None = None,
        until_ms: int | None = None,
    ) -> list[list[float]]:
        """One page of candles ``[ms, open, high, low, close, volume]`` opening at or after
        ``since_ms`` (and at or before ``until_ms`` when given), at most ``limit`` (default and
        cap: the exchange's own limit), oldest first."""
        self.market(symbol)
        self.check_timeframe(timeframe)
        page = min(int(limit or self.ohlcv_limit), self.ohlcv_limit)
        params: dict[str, Any] = {}
        if until_ms is not None:
            params["until"] = int(until_ms)
        rows = self._call(self.exchange.fetch_ohlcv, symbol, timeframe, int(since_ms), page, params)
        return [list(r) for r in rows or []]

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        ccxt = _ccxt()
        delay = self.backoff_start
        last: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            self.requests_made += 1
            try:
                return fn(*args)
            except ccxt.BadSymbol as exc:
                symbol = next((a for a in args if isinstance(a, str) and "/" in a), "")
                raise UnknownSymbol(
                    f"{self.label} has no market {symbol}".rstrip(), field="symbol"
                ) from exc
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                last = exc
                told = self._retry_after()
                wait = delay if told is None else told
                kind = "rate_limit"
            except ccxt.OperationFailed as exc:  # 5xx, timeouts, refused connections, -1001
                last = exc
                wait = delay
                kind = "unavailable"
            except ccxt.AuthenticationError as exc:
                raise ExchangeRefused(
                    f"{self.label} refused the request: {exchange_message(exc)}"
                ) from exc
            except ccxt.BaseError as exc:
                raise ExchangeRefused(
                    f"{self.label} refused the request: {exchange_message(exc)}"
                ) from exc
            if attempt == self.max_attempts or (_unreachable(last) and attempt >= NETWORK_ATTEMPTS):
                break
            wait = min(float(wait), self.backoff_max)
            self.retries.append((kind, wait))
            self.sleep(wait)
            delay = min(delay * 2, self.backoff_max)
        if _unreachable(last):
            raise ExchangeUnreachable(
                f"cannot reach {self.label} (network): its host did not resolve or refused the "
                "connection. Check the connection and try again."
            )
        raise ExchangeUnavailable(
            f"{self.label} did not answer after {self.max_attempts} attempts "
            f"(last error: {_short(last)})"
        )

    def _retry_after(self) -> float | None:
        headers = getattr(self.exchange, "last_response_headers", None) or {}
        value = None
        for key in ("Retry-After", "retry-after"):
            if key in headers:
                value = headers[key]
                break
        if value is None:
            return None
        text = str(value).strip()
        try:
            return max(0.0, float(text))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def exchange_message(exc: Exception) -> str:
    """The exchange's own words from a ccxt error ("binance {"code":-2015,"msg":"Invalid
    API-key, IP, or permissions for action."}" -> "Invalid API-key, IP, or permissions for
    action. (code -2015)"); the whole text, shortened, when it carries no JSON body."""
    text = str(exc)
    start = text.find("{")
    if start >= 0:
        try:
            body = json.loads(text[start:])
        except ValueError:
            body = None
        if isinstance(body, dict):
            msg = next(
                (body[k] for k in ("msg", "retMsg", "message", "error_description") if body.get(k)),
                None,
            )
            if isinstance(body.get("error"), list) and body["error"]:
                msg = msg or ", ".join(str(e) for e in body["error"])
            if msg:
                code = body.get("code", body.get("retCode"))
                return _short(Exception(f"{msg} (code {code})" if code is not None else str(msg)))
    return _short(exc)


def _short(exc: Exception | None) -> str:
    text = str(exc) if exc is not None else "none"
    return text if len(text) <= 300 else text[:297] + "..."


def make_client(
    exchange_id: str,
    *,
    url_overrides: Mapping[str, str] | str | list[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = 5,
    backoff_start: float = 1.0,
    timeout_ms: int = 15_000,
) -> ExchangeClient:
    """A client for a ccxt exchange id; ApplicationError (field "exchange") if there is none."""
    exchange_id = (exchange_id or "").strip().lower()
    ccxt = _ccxt()
    cls = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
    if cls is None:
        raise ApplicationError(f"Unknown exchange {exchange_id!r}", field="exchange")
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms}
    if exchange_id == "binance":
        # Spot only: loading the futures and options catalogs would take three more requests.
        config["options"] = {"fetchMarkets": {"types": ["spot"]}}
    exchange = cls(config)
    if not exchange.has.get("fetchOHLCV"):
        raise ApplicationError(
            f"{exchange_label(exchange_id)} does not serve candles", field="exchange"
        )
    overrides = {**_env_overrides(exchange_id), **parse_url_overrides(url_overrides)}
    if overrides:
        _apply_overrides(exchange, overrides)
        # A local fake answers at once; ccxt's own pacing would only slow the tests.
        exchange.enableRateLimit = False
    return ExchangeClient(
        exchange_id=exchange_id,
        exchange=exchange,
        sleep=sleep,
        max_attempts=max_attempts,
        backoff_start=backoff_start,
    )


# --- top symbols by volume (the signal scanner) ------------------------------------------------

# Bases that track a fiat currency: bands fitted to a peg flag noise, not stretched markets.
STABLECOINS: frozenset[str] = frozenset(
    {"USDT", "USDC", "FDUSD", "TUSD", "BUSD", "DAI", "USDP", "PYUSD", "USDD", "EUR", "EURI"}
)
MAX_TOP_SYMBOLS = 500


def _number(value: Any) -> float:
    """A finite, non-negative float, else 0 (exchanges send None, strings, NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _quote_volume(ticker: Mapping[str, Any]) -> float:
    """A ticker's 24 h volume in the quote currency (base volume x last price when the exchange
    reports only the base volume); 0 when neither is known."""
    if ticker.get("quoteVolume") is not None:
        return _number(ticker.get("quoteVolume"))
    return _number(ticker.get("baseVolume")) * _number(ticker.get("last") or ticker.get("close"))


def fetch_top_symbols(
    exchange: str | ExchangeClient,
    n: int,
    quote: str = "USDT",
    *,
    url_overrides: Mapping[str, str] | str | list[str] | None = None,
) -> list[tuple[str, float]]:
    """The ``n`` spot markets quoted in ``quote`` with the largest 24 h quote volume, as
    ``(symbol, quote_volume)`` pairs, largest first (ties by symbol).

    One ``fetch_tickers`` call (after the markets), through the client's retry policy. Markets
    that are inactive, not spot, or whose base is a stablecoin are left out. ``exchange`` is a
    ccxt id or an ExchangeClient; ApplicationError (field ``n``/``quote``) for bad arguments,
    ExchangeRefused when the exchange has no tickers endpoint.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TOP_SYMBOLS:
        raise ApplicationError(
            f"The number of symbols must be a whole number from 1 to {MAX_TOP_SYMBOLS}", field="n"
        )
    quote = (quote or "").strip().upper()
    if not quote.isalnum() or len(quote) > 10:
        raise ApplicationError("The quote currency is letters and digits, like USDT", field="quote")
    client = (
        exchange
        if isinstance(exchange, ExchangeClient)
        else make_client(exchange, url_overrides=url_overrides)
    )
    if not client.exchange.has.get("fetchTickers"):
        raise ExchangeRefused(f"{client.label} does not list its tickers, so it cannot rank them")
    markets = client.load_markets()
    tickers = client._call(client.exchange.fetch_tickers) or {}
    ranked: list[tuple[str, float]] = []
    for symbol, ticker in tickers.items():
        market = markets.get(symbol)
        if not market or not market.get("spot", True) or market.get("active") is False:
            continue
        if str(market.get("quote") or "").upper() != quote:
            continue
        if str(market.get("base") or "").upper() in STABLECOINS:
            continue
        ranked.append((str(symbol), _quote_volume(ticker or {})))
    ranked.sort(key=lambda pair: (-pair[1], pair[0]))
    return ranked[:n]


# --- trading: the TradingAdapter for real exchanges ----------------------------------------------
#
# Order submission follows its own policy, stricter than ``_call``'s: a request that may have
# reached the exchange is never sent again by this module. A timeout, a dropped connection or a
# 5xx on ``create_order`` (Binance documents a 5xx as "execution status unknown") raises
# ``OrderStatusUnknown``; ``submit_order`` then looks the order up by its client order id.
# A 429 on submission is a definite refusal (the exchange did not take the order), so it waits
# for Retry-After and sends again with the same client order id.

# How each exchange names the caller's order id. ccxt reads the unified ``clientOrderId`` param
# for all of them and maps it to the same native field; passing the native name is explicit and
# is what ccxt would send anyway.
CLIENT_ORDER_ID_PARAM: dict[str, str] = {
    "binance": "newClientOrderId",
    "okx": "clOrdId",
    "bybit": "orderLinkId",
    "kucoin": "clientOid",
    "kraken": "cl_ord_id",
    "coinbase": "client_order_id",
}
# The field that fetch/cancel by client order id reads (Binance: origClientOrderId).
CLIENT_ORDER_LOOKUP_PARAM: dict[str, str] = {
    "binance": "origClientOrderId",
    "okx": "clOrdId",
    "bybit": "orderLinkId",
    "kucoin": "clientOid",
    "kraken": "cl_ord_id",
    "coinbase": "client_order_id",
}
# Exchanges whose "my trades" endpoint needs a symbol (ccxt raises ArgumentsRequired otherwise).
_MY_TRADES_NEED_SYMBOL = frozenset({"binance", "bybit"})


def balances_from_ccxt(raw: Mapping[str, Any]) -> dict[str, Balance]:
    """ccxt's ``fetch_balance`` answer as the assets with something free or held, by name."""
    out: dict[str, Balance] = {}
    free = raw.get("free") or {}
    used = raw.get("used") or {}
    for asset in sorted(set(free) | set(used)):
        f = _dec(free.get(asset)) or Decimal(0)
        u = _dec(used.get(asset)) or Decimal(0)
        if f or u:
            out[str(asset)] = Balance(asset=str(asset), free=f, used=u)
    return out


class OrderRejected(ExchangeRefused):
    """The exchange answered and refused the order (funds, filters, a duplicate id...)."""

    code = "order_rejected"


def create_order_args(
    request: OrderRequest,
    kind: str,
    amount: Decimal,
    price: Decimal | None,
    params: Mapping[str, Any],
) -> tuple[Any, ...]:
    """ccxt's ``create_order`` arguments for a rounded request: symbol, order type, side,
    amount and price as floats (ccxt's types) and a fresh copy of the params."""
    as_float = float(price) if price is not None else None
    return (request.symbol, kind, request.side, float(amount), as_float, dict(params))


def is_duplicate_order(exc: Exception) -> bool:
    """The exchange refused an id it already holds an open order under: that order is ours."""
    return "duplicate order" in str(exc).lower()


def order_send_failure(
    label: str, client_order_id: str, exc: Exception
) -> OrderRejected | OrderStatusUnknown:
    """What a failed ``create_order`` means, one rule for the sync and the async client: a
    timeout, connection error or 5xx (ccxt's ``OperationFailed``) may have placed the order
    (look it up by its client order id, never resend it); any other error is a refusal."""
    if isinstance(exc, (TimeoutError, _ccxt().OperationFailed)):
        return OrderStatusUnknown(
            f"{label} did not confirm order {client_order_id} "
            f"({type(exc).__name__}); it may exist: look it up by its client order id",
            extra={"client_order_id": client_order_id},
        )
    return OrderRejected(f"{label} rejected the order: {exchange_message(exc)}")


_ZERO = Decimal(0)


def _dec(value: Any, default: Decimal | None = _ZERO) -> Decimal | None:
    if value is None or value == "":
        return default
    try:
        number = Decimal(str(value))
    except (ArithmeticError, ValueError):
        return default
    return number if number.is_finite() else default


def _step_from_precision(value: Any, mode: int) -> Decimal:
    """A ccxt precision entry as a step: under TICK_SIZE it is the step itself (0.01), under
    DECIMAL_PLACES a count of decimals (2 -> 0.01). SIGNIFICANT_DIGITS has no fixed step:
    Decimal(0), and the exchange's own rounding applies."""
    ccxt = _ccxt()
    if value is None:
        return Decimal(0)
    if mode == ccxt.TICK_SIZE:
        return _dec(value) or Decimal(0)
    if mode == ccxt.DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(Decimal(str(value))))
    return Decimal(0)


def market_rules_from_ccxt(market: Mapping[str, Any], precision_mode: int) -> MarketRules:
    """``exchanges.trading.MarketRules`` for one ccxt market structure."""
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}
    taker = _dec(market.get("taker"), Decimal("0.001"))
    maker = _dec(market.get("maker"), Decimal("0.001"))
    return MarketRules(
        symbol=str(market["symbol"]),
        base=str(market.get("base") or ""),
        quote=str(market.get("quote") or ""),
        amount_step=_step_from_precision(precision.get("amount"), precision_mode),
        price_tick=_step_from_precision(precision.get("price"), precision_mode),
        min_amount=_dec((limits.get("amount") or {}).get("min")) or Decimal(0),
        min_notional=_dec((limits.get("cost") or {}).get("min")) or Decimal(0),
        taker_fee=taker if taker is not None else Decimal("0.001"),
        maker_fee=maker if maker is not None else Decimal("0.001"),
        active=market.get("active") is not False,
    )


def _side(value: Any) -> Any:
    return "sell" if str(value).lower() == "sell" else "buy"


def _status(value: Any) -> Any:
    text = str(value or "open").lower()
    return text if text in ("open", "closed", "canceled", "expired", "rejected") else "open"


# ccxt's lowercased order types (as its parsers report them) -> the trading interface's types.
_CCXT_ORDER_TYPES = {
    "market": "market",
    "stop_loss": "stop_market",  # Binance spot STOP_LOSS (market when triggered)
    "stop_market": "stop_market",
    "stop_loss_limit": "stop_limit",
    "stop": "stop_limit",
    "stop_limit": "stop_limit",
    "take_profit": "take_profit_market",  # Binance spot TAKE_PROFIT
    "take_profit_market": "take_profit_market",
    "take_profit_limit": "take_profit_limit",
}
# Our stop/target types -> (ccxt's unified type, the unified param that carries the trigger).
# ccxt turns ('market', stopLossPrice) into Binance spot's STOP_LOSS with ``stopPrice``,
# ('limit', stopLossPrice) into STOP_LOSS_LIMIT, and takeProfitPrice into TAKE_PROFIT(_LIMIT).
_STOP_TO_CCXT = {
    "stop_market": ("market", "stopLossPrice"),
    "stop_limit": ("limit", "stopLossPrice"),
    "take_profit_market": ("market", "takeProfitPrice"),
    "take_profit_limit": ("limit", "takeProfitPrice"),
}
# Where a market lists the raw order types it takes (Binance's ``orderTypes``), the raw types
# our stop_market / take_profit_market orders become.
_RAW_STOP_TYPES = ("STOP_LOSS", "TAKE_PROFIT")


def order_state_from_ccxt(order: Mapping[str, Any], client_order_id: str = "") -> OrderState:
    """``OrderState`` from a ccxt order structure (Decimal from ccxt's numbers via str)."""
    fee = order.get("fee") or {}
    fees = order.get("fees") or ([fee] if fee else [])
    total_fee = sum(((_dec(f.get("cost")) or Decimal(0)) for f in fees if f), Decimal(0))
    currency = next((str(f.get("currency")) for f in fees if f and f.get("currency")), "")
    kind = str(order.get("type") or "limit").lower()
    order_type = _CCXT_ORDER_TYPES.get(kind, "limit")
    trigger = _dec(order.get("triggerPrice") or order.get("stopPrice"), None) or None
    if trigger is not None and order_type in ("market", "limit"):
        # ccxt reports Binance spot's STOP_LOSS as "market" with a triggerPrice, and sets
        # takeProfitPrice only for the take-profit types.
        target = order.get("takeProfitPrice") is not None
        order_type = ("take_profit_" if target else "stop_") + order_type
    return OrderState(
        client_order_id=str(order.get("clientOrderId") or client_order_id or ""),
        exchange_order_id=str(order.get("id") or ""),
        symbol=str(order.get("symbol") or ""),
        side=_side(order.get("side")),
        type=order_type,  # type: ignore[arg-type]
        status=_status(order.get("status")),
        amount=_dec(order.get("amount")) or Decimal(0),
        filled=_dec(order.get("filled")) or Decimal(0),
        price=_dec(order.get("price"), None),
        average_price=_dec(order.get("average"), None),
        fee=total_fee,
        fee_currency=currency,
        timestamp_ms=int(order.get("timestamp") or 0),
        trigger_price=trigger,
    )


def fill_from_ccxt(trade: Mapping[str, Any]) -> Fill:
    """``Fill`` from a ccxt trade structure (REST ``fetch_my_trades`` or ws ``watch_my_trades``)."""
    fee = trade.get("fee") or {}
    info = trade.get("info") or {}
    client_id = trade.get("clientOrderId") or (info.get("c") if isinstance(info, dict) else None)
    return Fill(
        fill_id=str(trade.get("id") or ""),
        exchange_order_id=str(trade.get("order") or ""),
        client_order_id=str(client_id) if client_id else None,
        symbol=str(trade.get("symbol") or ""),
        side=_side(trade.get("side")),
        amount=_dec(trade.get("amount")) or Decimal(0),
        price=_dec(trade.get("price")) or Decimal(0),
        fee=_dec(fee.get("cost")) or Decimal(0),
        fee_currency=str(fee.get("currency") or ""),
        timestamp_ms=int(trade.get("timestamp") or 0),
    )


@dataclass(frozen=True)
class Credentials:
    """What an exchange needs to sign requests. ``repr`` never shows the values."""

    api_key: str
    secret: str
    password: str = ""
    token: str = ""  # an OAuth access token (Coinbase), used instead of a key pair

    def __repr__(self) -> str:
        return f"Credentials(api_key=…{self.api_key[-4:]})"

    __str__ = __repr__

    def ccxt_config(self) -> dict[str, str]:
        config = {"apiKey": self.api_key, "secret": self.secret}
        if self.password:
            config["password"] = self.password
        if self.token:
            config["token"] = self.token
        return config


@functools.lru_cache(maxsize=256)
def required_credentials(exchange_id: str) -> dict[str, bool]:
    """Which credentials ccxt says the exchange needs: ``{"apiKey", "secret", "password"}``."""
    ccxt = _ccxt()
    cls = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
    if cls is None:
        return {}
    needed = cls().requiredCredentials
    return {k: bool(needed.get(k)) for k in ("apiKey", "secret", "password")}


@functools.lru_cache(maxsize=256)
def has_sandbox(exchange_id: str) -> bool:
    """True when ccxt knows a testnet/sandbox for the exchange (``urls['test']``)."""
    ccxt = _ccxt()
    cls = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
    return bool(cls is not None and cls().urls.get("test"))


@functools.lru_cache(maxsize=256)
def supports_trading(exchange_id: str) -> bool:
    ccxt = _ccxt()
    cls = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
    return bool(cls is not None and cls().has.get("createOrder") and cls().has.get("fetchBalance"))


def _apply_nested_overrides(exchange: Any, overrides: Mapping[str, str]) -> None:
    """Dotted keys reach nested URL entries: ``ws.ws-api.spot=ws://127.0.0.1:9/ws-api/v3``."""
    for key, url in overrides.items():
        if "." not in key:
            continue
        node = exchange.urls.setdefault("api", {})
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = url


def _configured_exchange(
    module: Any,
    exchange_id: str,
    *,
    credentials: Credentials,
    sandbox: bool,
    url_overrides: Mapping[str, str] | str | list[str] | None,
    timeout_ms: int,
) -> Any:
    cls = getattr(module, exchange_id, None) if exchange_id in module.exchanges else None
    if cls is None:
        raise ApplicationError(f"Unknown exchange {exchange_id!r}", field="exchange")
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": timeout_ms,
        **credentials.ccxt_config(),
    }
    if exchange_id == "binance":
        # Spot only: no futures/options catalogs, no margin pair lists (spot keys need none),
        # and open orders across every symbol are allowed without ccxt's warning.
        config["options"] = {
            "fetchMarkets": {"types": ["spot"]},
            "defaultType": "spot",
            "fetchMargins": False,
            "warnOnFetchOpenOrdersWithoutSymbol": False,
        }
    exchange = cls(config)
    if sandbox:
        if not exchange.urls.get("test"):
            raise ApplicationError(
                f"{exchange_label(exchange_id)} has no sandbox/testnet", field="sandbox"
            )
        exchange.set_sandbox_mode(True)
    overrides = {**_env_overrides(exchange_id), **parse_url_overrides(url_overrides)}
    if overrides:
        _apply_overrides(exchange, {k: v for k, v in overrides.items() if "." not in k})
        _apply_nested_overrides(exchange, overrides)
        exchange.enableRateLimit = False
    return exchange


MARKETS_TTL_SECONDS = 600.0
# (exchange id, its endpoints) -> (loaded at, markets, currencies). Keyed by the endpoints so a
# sandbox, a test fake or an override never shares another's markets.
_MARKETS_CACHE: dict[tuple[str, str], tuple[float, Any, Any]] = {}


def _markets_key(exchange: Any) -> tuple[str, str]:
    try:
        urls = json.dumps(exchange.urls.get("api"), sort_keys=True, default=str)
    except Exception:  # an exotic urls shape: do not share
        urls = f"id:{id(exchange)}"
    return (str(exchange.id), urls)


@dataclass
class KeyPermissions:
    """What an API key may do, as the exchange reports it."""

    verified: bool
    can_trade: bool
    can_withdraw: bool
    details: dict[str, Any]


@dataclass
class CcxtTradingAdapter:
    """``TradingAdapter`` over one ccxt exchange with one account's credentials."""

    client: ExchangeClient
    order_timeouts: list[str] = field(default_factory=list)
    _rules: dict[str, Any] = field(default_factory=dict)

    @property
    def exchange(self) -> Any:
        return self.client.exchange

    @property
    def exchange_id(self) -> str:
        return self.client.exchange_id

    # --- markets ----------------------------------------------------------------------------
    def markets(self) -> dict[str, Any]:
        if not self._rules:
            mode = int(getattr(self.exchange, "precisionMode", 0) or 0)
            for symbol, market in self.client.load_markets().items():
                if market.get("spot", True):
                    self._rules[symbol] = market_rules_from_ccxt(market, mode)
        return dict(self._rules)

    def market(self, symbol: str) -> Any:
        rules = self.markets().get(symbol)
        if rules is None:
            raise UnknownSymbol(f"{self.client.label} has no market {symbol}", field="symbol")
        return rules

    # --- account ----------------------------------------------------------------------------
    def balances(self) -> dict[str, Any]:
        return balances_from_ccxt(self.client._call(self.exchange.fetch_balance) or {})

    def positions(self) -> list[Any]:
        """Derivatives positions where the venue has them; on spot, each non-quote holding
        valued against a USDT (else USD) market."""
        if self.exchange.has.get("fetchPositions") and self.exchange.options.get("defaultType") in (
            "swap",
            "future",
        ):
            rows = self.client._call(self.exchange.fetch_positions) or []
            out = []
            for row in rows:
                size = _dec(row.get("contracts")) or Decimal(0)
                if size:
                    signed = -size if row.get("side") == "short" else size
                    out.append(
                        Position(
                            symbol=str(row.get("symbol")),
                            amount=signed,
                            entry_price=_dec(row.get("entryPrice"), None),
                        )
                    )
            return out
        markets = self.markets()
        positions = []
        for asset, balance in self.balances().items():
            for quote in ("USDT", "USD", "USDC"):
                symbol = f"{asset}/{quote}"
                if symbol in markets:
                    positions.append(Position(symbol=symbol, amount=balance.total))
                    break
        return positions

    def last_price(self, symbol: str) -> Decimal:
        self.market(symbol)
        ticker = self.client._call(self.exchange.fetch_ticker, symbol) or {}
        price = _dec(ticker.get("last") or ticker.get("close"), None)
        if price is None:
            raise ExchangeRefused(f"{self.client.label} reported no last price for {symbol}")
        return price

    # --- orders -----------------------------------------------------------------------------
    def supports_stop_orders(self, symbol: str) -> bool:
        """Whether resting stop-loss and take-profit orders (``stop_market`` /
        ``take_profit_market``) can be placed on ``symbol``: ccxt's ``has`` says the exchange
        takes both, and where the market lists its raw order types (Binance's ``orderTypes``)
        they include STOP_LOSS and TAKE_PROFIT."""
        has = self.exchange.has
        if not (has.get("createStopLossOrder") and has.get("createTakeProfitOrder")):
            return False
        self.market(symbol)
        info = self.client.market(symbol).get("info") or {}
        listed = info.get("orderTypes") if isinstance(info, dict) else None
        if isinstance(listed, list):
            return all(kind in listed for kind in _RAW_STOP_TYPES)
        return True

    def prepare(self, request: OrderRequest) -> tuple[Decimal, Decimal | None, Decimal]:
        """The request's amount and price rounded to the market, and the price used for the
        minimum-notional check (the limit price, or the last price for a market order).
        Raises OrderTooSmall when under the market's minimums: the order is never sent."""
        rules = self.market(request.symbol)
        amount = rules.round_amount(Decimal(request.amount))
        price: Decimal | None = None
        if request.type in _STOP_TO_CCXT:
            trigger, price = check_stop_request(request, rules)
            reference = price if price is not None else trigger
            rules.check_size(amount, reference)
            return amount, price, reference
        if request.type == "limit":
            if request.price is None or Decimal(request.price) <= 0:
                raise ApplicationError("A limit order needs a positive price", field="price")
            price = rules.round_price(Decimal(request.price), request.side)
            reference = price
        else:
            reference = self.last_price(request.symbol)
        rules.check_size(amount, reference)
        return amount, price, reference

    def _order_params(self, request: OrderRequest) -> dict[str, Any]:
        key = CLIENT_ORDER_ID_PARAM.get(self.exchange_id, "clientOrderId")
        params: dict[str, Any] = {key: request.client_order_id}
        if request.type == "limit" and request.time_in_force == "IOC":
            params["timeInForce"] = "IOC"
        if request.reduce_only:
            # Reduce-only is a derivatives notion: on a spot market there is no position for it
            # to reduce, and some venues would silently drop the flag. Refuse rather than send
            # an order that behaves differently from what was asked.
            market = self.client.market(request.symbol)
            if market.get("spot", True) or not self.exchange.has.get("createReduceOnlyOrder"):
                raise ApplicationError(
                    f"{request.symbol} on {self.client.label} cannot take reduce-only orders "
                    "(spot market)",
                    field="reduce_only",
                )
            params["reduceOnly"] = True
        return params

    def create_order(self, request: OrderRequest) -> OrderState:
        """Send one order (rounded, checked) with the caller's client order id.

        OrderTooSmall: under the minimum, nothing sent. OrderStatusUnknown: the request may have
        reached the exchange (timeout, dropped connection, 5xx): look it up, do not resend.
        OrderRejected: the exchange refused it (a duplicate client id of an open order is
        answered with that order instead). ExchangeUnavailable: rate-limited every time.
        """
        ccxt = _ccxt()
        amount, price, _ = self.prepare(request)
        params = self._order_params(request)
        kind: str = request.type
        if request.type in _STOP_TO_CCXT:
            if not self.supports_stop_orders(request.symbol):
                raise StopOrdersNotSupported(
                    f"{self.client.label} cannot rest {request.type} orders on {request.symbol}",
                    field="type",
                )
            kind, trigger_param = _STOP_TO_CCXT[request.type]
            rules = self.market(request.symbol)
            trigger, _ = check_stop_request(request, rules)
            params[trigger_param] = format(trigger, "f")  # exact, as ccxt reads it (a string)
        delay = self.client.backoff_start
        for attempt in range(1, self.client.max_attempts + 1):
            self.client.requests_made += 1
            try:
                order = self.exchange.create_order(
                    *create_order_args(request, kind, amount, price, params)
                )
                return order_state_from_ccxt(order, request.client_order_id)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                told = self.client._retry_after()
                wait = min(float(delay if told is None else told), self.client.backoff_max)
                if attempt == self.client.max_attempts:
                    raise ExchangeUnavailable(
                        f"{self.client.label} rate-limited the order {attempt} times"
                    ) from exc
                self.client.retries.append(("rate_limit", wait))
                self.client.sleep(wait)
                delay = min(delay * 2, self.client.backoff_max)
            except ccxt.InvalidOrder as exc:
                if is_duplicate_order(exc):
                    existing = self.fetch_order_by_client_id(
                        request.symbol, request.client_order_id
                    )
                    if existing is not None:
                        return existing
                raise order_send_failure(self.client.label, request.client_order_id, exc) from exc
            except ccxt.BaseError as exc:
                if isinstance(exc, ccxt.OperationFailed):  # timeouts, connection errors, 5xx
                    self.order_timeouts.append(request.client_order_id)
                raise order_send_failure(self.client.label, request.client_order_id, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _by_client_id(self, method: Any, symbol: str, client_order_id: str) -> Any:
        """``method`` (the exchange's fetch_order or cancel_order) on the order with this client
        order id; ``ExchangeRefused`` caused by ccxt's ``OrderNotFound`` when there is none."""
        key = CLIENT_ORDER_LOOKUP_PARAM.get(self.exchange_id, "clientOrderId")
        order = self.client._call(method, None, symbol, {key: client_order_id})
        return order_state_from_ccxt(order, client_order_id)

    def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> Any:
        """The order with this client order id, or None when the exchange has none."""
        try:
            return self._by_client_id(self.exchange.fetch_order, symbol, client_order_id)
        except ExchangeRefused as exc:
            if isinstance(exc.__cause__, _ccxt().OrderNotFound):
                return None
            raise

    def cancel_order(self, symbol: str, client_order_id: str) -> Any:
        try:
            return self._by_client_id(self.exchange.cancel_order, symbol, client_order_id)
        except ExchangeRefused as exc:
            if isinstance(exc.__cause__, _ccxt().OrderNotFound):
                raise OrderRejected(
                    f"{self.client.label} has no open order {client_order_id} on {symbol}"
                ) from exc
            raise

    def open_orders(self, symbol: str | None = None) -> list[Any]:
        rows = self.client._call(self.exchange.fetch_open_orders, symbol) or []
        return [order_state_from_ccxt(o) for o in rows]

    def fetch_fills(
        self,
        *,
        since_ms: int,
        symbol: str | None = None,
        limit: int | None = None,
        symbols: list[str] | None = None,
    ) -> list[Any]:
        """My executions at or after ``since_ms``, oldest first. Where the exchange needs a
        symbol (Binance, Bybit) and none is given, every symbol in ``symbols`` (default: the
        markets of the assets the account holds) is asked in turn."""
        if symbol is not None:
            wanted: list[str | None] = [symbol]
        elif self.exchange_id in _MY_TRADES_NEED_SYMBOL:
            wanted = list(symbols) if symbols else [p.symbol for p in self.positions()]
        else:
            wanted = [None]
        fills: list[Fill] = []
        for sym in wanted:
            rows = self.client._call(self.exchange.fetch_my_trades, sym, int(since_ms), limit)
            fills.extend(fill_from_ccxt(t) for t in rows or [])
        fills.sort(key=lambda f: (f.timestamp_ms, f.fill_id))
        return fills[:limit] if limit else fills

    # --- key permissions --------------------------------------------------------------------
    def key_permissions(self) -> KeyPermissions:
        """What the key may do, read from the exchange where it has an endpoint for it.

        Binance ``GET /sapi/v1/account/apiRestrictions``; Bybit ``GET /v5/user/query-api``;
        OKX ``GET /api/v5/account/config`` (``perm``). Elsewhere ``verified`` is False and the
        details say it cannot be verified.
        """
        ex, label = self.exchange, self.client.label
        if self.exchange_id == "binance":
            r = self.client._call(ex.sapiGetAccountApiRestrictions) or {}
            keys = ("enableWithdrawals", "enableSpotAndMarginTrading", "enableFutures",
                    "enableReading", "ipRestrict", "enableMargin", "enableInternalTransfer",
                    "permitsUniversalTransfer")  # fmt: skip
            details = {k: bool(r[k]) for k in keys if k in r}
            return KeyPermissions(
                verified=True,
                can_trade=bool(r.get("enableSpotAndMarginTrading") or r.get("enableFutures")),
                can_withdraw=bool(r.get("enableWithdrawals") or r.get("permitsUniversalTransfer")),
                details=details,
            )
        if self.exchange_id == "bybit":
            r = (self.client._call(ex.privateGetV5UserQueryApi) or {}).get("result") or {}
            perms = r.get("permissions") or {}
            read_only = str(r.get("readOnly")) == "1"
            wallet = [str(p) for p in perms.get("Wallet") or []]
            trading = any(perms.get(k) for k in ("Spot", "ContractTrade", "Derivatives", "Options"))
            return KeyPermissions(
                verified=True,
                can_trade=trading and not read_only,
                can_withdraw="Withdraw" in wallet,
                details={"readOnly": read_only, "permissions": perms, "ips": r.get("ips")},
            )
        if self.exchange_id == "okx":
            data = (self.client._call(ex.privateGetAccountConfig) or {}).get("data") or [{}]
            perm = [p.strip() for p in str(data[0].get("perm") or "").split(",") if p.strip()]
            return KeyPermissions(
                verified=True,
                can_trade="trade" in perm,
                can_withdraw="withdraw" in perm,
                details={"perm": perm},
            )
        return KeyPermissions(
            verified=False,
            can_trade=True,
            can_withdraw=False,
            details={
                "unverifiable": f"Key permissions cannot be verified for {label}: it has no "
                "endpoint that reports them. Make sure the key cannot withdraw."
            },
        )


def make_trading_adapter(
    exchange_id: str,
    *,
    credentials: Credentials,
    sandbox: bool = False,
    url_overrides: Mapping[str, str] | str | list[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = 4,
    backoff_start: float = 1.0,
    timeout_ms: int = 10_000,
) -> CcxtTradingAdapter:
    """A trading adapter for a ccxt exchange id and one account's credentials."""
    exchange_id = (exchange_id or "").strip().lower()
    exchange = _configured_exchange(
        _ccxt(),
        exchange_id,
        credentials=credentials,
        sandbox=sandbox,
        url_overrides=url_overrides,
        timeout_ms=timeout_ms,
    )
    if not (exchange.has.get("createOrder") and exchange.has.get("fetchBalance")):
        raise ApplicationError(
            f"{exchange_label(exchange_id)} does not support trading through ccxt",
            field="exchange",
        )
    client = ExchangeClient(
        exchange_id=exchange_id,
        exchange=exchange,
        sleep=sleep,
        max_attempts=max_attempts,
        backoff_start=backoff_start,
        share_markets=True,
    )
    return CcxtTradingAdapter(client=client)


def submit_order(
    adapter: Any,
    request: OrderRequest,
    *,
    may_exist: bool = False,
    lookups: int = 3,
    spacing: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Place ``request`` once, resolving an ambiguous answer by looking, never by resending.

    ``may_exist``: the caller already sent this client order id once (a previous run stopped
    after sending): look first, and create only if the exchange has no such order.
    On ``OrderStatusUnknown`` the order is looked up ``lookups`` times, ``spacing`` seconds
    apart; found -> its state; still absent -> ``OrderStatusUnknown`` again (the caller keeps
    the order as "unknown" and reconciles later; resending could double the position, since
    Binance only refuses a reused client order id while the first order is still open).
    """
    if may_exist:
        found = adapter.fetch_order_by_client_id(request.symbol, request.client_order_id)
        if found is not None:
            return found
    try:
        return adapter.create_order(request)
    except OrderStatusUnknown as first:
        for _ in range(max(1, lookups)):
            sleep(spacing)
            try:
                found = adapter.fetch_order_by_client_id(request.symbol, request.client_order_id)
            except (ExchangeUnavailable, ExchangeRefused):
                found = None
            if found is not None:
                return found
        raise OrderStatusUnknown(
            f"Order {request.client_order_id} is still unknown after {lookups} lookups; "
            "it was not resent. Reconcile it before placing it again.",
            extra={"client_order_id": request.client_order_id},
        ) from first


# --- the account's own fills and order updates, live ---------------------------------------------


@dataclass
class FillStream:
    """Fills (and order updates) of one account as they happen.

    Uses ccxt's websocket classes (``ccxt.pro``: ``watch_my_trades`` and ``watch_orders``)
    where the exchange has them; when it has none, or the socket fails, it polls
    ``fetch_fills`` every ``poll_seconds`` from a cursor instead (the safety net). Each fill is
    reported once per stream (``seen``); receivers must still be idempotent, since another
    process may report the same fill. ``on_fill`` and ``on_order`` are plain callables, run in
    a worker thread so they may use the ORM.
    """

    exchange_id: str
    credentials: Credentials
    on_fill: Callable[[Any], None]
    on_order: Callable[[Any], None] | None = None
    symbols: list[str] = field(default_factory=list)
    since_ms: int = 0
    sandbox: bool = False
    url_overrides: Mapping[str, str] | str | list[str] | None = None
    poll_seconds: float = 5.0
    sweep_seconds: float = 60.0  # REST safety net while the websocket runs
    use_websocket: bool = True
    timeout_ms: int = 10_000
    mode: str = ""  # "websocket" or "poll", for the caller's status line
    errors: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    async def _emit(self, fill: Any) -> None:
        if not fill.fill_id or fill.fill_id in self.seen:
            return
        self.seen.add(fill.fill_id)
        self.since_ms = max(self.since_ms, fill.timestamp_ms)
        await asyncio.to_thread(self.on_fill, fill)

    async def run(self, stop: Any) -> None:
        """Until ``stop`` (an ``asyncio.Event``) is set."""
        if self.use_websocket:
            try:
                await self._run_websocket(stop)
                return
            except Exception as exc:  # the socket failed: fall back to polling
                self.errors.append(_short(exc))
        await self._run_poll(stop)

    async def _run_websocket(self, stop: Any) -> None:
        import ccxt.pro as ccxtpro

        exchange = _configured_exchange(
            ccxtpro,
            self.exchange_id,
            credentials=self.credentials,
            sandbox=self.sandbox,
            url_overrides=self.url_overrides,
            timeout_ms=self.timeout_ms,
        )
        if not exchange.has.get("watchMyTrades"):
            await exchange.close()
            raise ExchangeRefused(f"{exchange_label(self.exchange_id)} streams no private fills")
        self.mode = "websocket"

        async def trades() -> None:
            while not stop.is_set():
                for trade in await exchange.watch_my_trades():
                    await self._emit(fill_from_ccxt(trade))
                # ccxt resolves one waiter per message: a fill that arrived while the ones
                # above were being handled sits in its cache only. Report those too.
                for trade in list(getattr(exchange, "myTrades", None) or []):
                    await self._emit(fill_from_ccxt(trade))

        async def sweep() -> None:
            # The safety net: a REST look at the fills now and then, for whatever the socket
            # missed (a reconnect, a dropped message).
            adapter = make_trading_adapter(
                self.exchange_id,
                credentials=self.credentials,
                sandbox=self.sandbox,
                url_overrides=self.url_overrides,
                timeout_ms=self.timeout_ms,
            )
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.sweep_seconds)
                if stop.is_set():
                    return
                try:
                    fills = await asyncio.to_thread(
                        adapter.fetch_fills, since_ms=self.since_ms, symbols=self.symbols or None
                    )
                except ApplicationError as exc:
                    self.errors.append(exc.message)
                    continue
                for fill in fills:
                    await self._emit(fill)

        async def orders() -> None:
            while not stop.is_set() and self.on_order is not None:
                for order in await exchange.watch_orders():
                    await asyncio.to_thread(self.on_order, order_state_from_ccxt(order))

        tasks = [asyncio.ensure_future(trades()), asyncio.ensure_future(sweep())]
        if self.on_order is not None and exchange.has.get("watchOrders"):
            tasks.append(asyncio.ensure_future(orders()))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()
        finally:
            for task in [*tasks, stopper]:
                task.cancel()
            await exchange.close()

    async def _run_poll(self, stop: Any) -> None:
        self.mode = "poll"
        adapter = make_trading_adapter(
            self.exchange_id,
            credentials=self.credentials,
            sandbox=self.sandbox,
            url_overrides=self.url_overrides,
            timeout_ms=self.timeout_ms,
        )
        while not stop.is_set():
            try:
                fills = await asyncio.to_thread(
                    adapter.fetch_fills, since_ms=self.since_ms, symbols=self.symbols or None
                )
                for fill in fills:
                    await self._emit(fill)
            except ApplicationError as exc:
                self.errors.append(exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)


# --- public prices and market rules for the paper exchange -------------------------------------
# The paper exchange (exchanges/paper.py) asks the real market for its last price and trading
# rules, and needs nothing else from ccxt.


def fetch_last_price(
    exchange_id: str, symbol: str, *, max_attempts: int = 2, timeout_ms: int = 5_000
) -> Decimal:
    """The last traded price of ``symbol`` from the exchange's public ticker."""
    client = make_client(exchange_id, max_attempts=max_attempts, timeout_ms=timeout_ms)
    ticker = client._call(client.exchange.fetch_ticker, symbol) or {}
    value = ticker.get("last") or ticker.get("close")
    if value is None or _number(value) <= 0:
        raise ExchangeRefused(f"{client.label} reports no last price for {symbol}")
    return Decimal(str(value))


def fetch_market_rules(
    exchange_id: str, symbol: str, *, max_attempts: int = 2, timeout_ms: int = 5_000
) -> MarketRules:
    """``symbol``'s lot step, price tick, minimums and fees as the exchange states them."""
    client = make_client(exchange_id, max_attempts=max_attempts, timeout_ms=timeout_ms)
    market = {"symbol": symbol, **client.market(symbol)}
    return market_rules_from_ccxt(market, client.exchange.precisionMode)
