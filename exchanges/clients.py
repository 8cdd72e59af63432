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

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from config.exceptions import ApplicationError

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
    """``EXCHANGE_URL_OVERRIDES='{"binance": "http://127.0.0.1:8123"}'`` (tests, mirrors)."""
    raw = os.environ.get(ENV_OVERRIDES, "").strip()
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
        if not self._markets_loaded:
            self._call(self.exchange.load_markets)
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
                raise ExchangeRefused(f"{self.label} refused the request: {exc}") from exc
            except ccxt.BaseError as exc:
                raise ExchangeRefused(f"{self.label} refused the request: {_short(exc)}") from exc
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
