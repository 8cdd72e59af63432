"""A Binance-compatible spot REST server on loopback, enough for ccxt's ``binance`` to load
markets and page through klines.

Served: ``/api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo`` (a few symbols),
``/api/v3/ticker/24hr`` (every symbol's 24 h statistics, for ranking by volume) and
``/api/v3/klines`` with Binance's semantics: ``startTime``/``endTime`` bound the candles' open
times (both inclusive), ``limit`` defaults to 500 and may not exceed ``max_limit`` (1000), no
``startTime`` gives the latest candles, results oldest first, prices as decimal strings.

History is deterministic: every symbol has candles at every interval step from ``listed_ms`` up
to ``now_ms`` (the fake's clock, settable), except inside ``gaps``. A candle's prices depend only
on its symbol, interval and open time, so a refetch returns the same candle, except the one
still forming at ``now_ms``, whose close and volume grow as the clock moves (like a live market).

Knobs for the tests, all changeable while the server runs:
    rate_limit_on      klines request numbers (1-based) answered 429 with ``Retry-After``
    retry_after        the header's value in seconds (string)
    error_on           klines request numbers answered 503
    hard_error_from    from this klines request number on, a 400 Binance error (code -1104)
    hold_from          from this klines request number on, answers wait until ``release`` (an
                       Event) is set, so a test can look at a download mid-way
    gaps               [(start_ms, end_ms)] spans with no candles
    requests           the log: one ``LoggedRequest`` per request, in order
    extra_symbols      more markets, tuples shaped like ``SYMBOLS``, listed and served too
    quote_volumes      {symbol id: 24 h quote volume} for ``/api/v3/ticker/24hr`` (default: a
                       fixed figure per symbol)
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

INTERVALS_MS = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
# (id, base, quote, base price, tick decimals, qty decimals)
SYMBOLS: tuple[tuple[str, str, str, int, int, int], ...] = (
    ("BTCUSDT", "BTC", "USDT", 40_000, 2, 5),
    ("ETHUSDT", "ETH", "USDT", 2_000, 2, 4),
    ("SOLUSDT", "SOL", "USDT", 100, 3, 3),
)
DEFAULT_NOW_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z
DEFAULT_LISTED_MS = 1_672_531_200_000  # 2023-01-01T00:00:00Z


@dataclass(frozen=True)
class LoggedRequest:
    path: str
    params: dict[str, str]
    status: int


@dataclass
class FakeBinance:
    """State and knobs of one fake exchange; ``serve()`` starts it on a free loopback port."""

    now_ms: int = DEFAULT_NOW_MS
    listed_ms: int = DEFAULT_LISTED_MS
    max_limit: int = 1000
    rate_limit_on: set[int] = field(default_factory=set)
    retry_after: str = "1"
    error_on: set[int] = field(default_factory=set)
    hard_error_from: int | None = None
    hold_from: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    requests: list[LoggedRequest] = field(default_factory=list)
    klines_served: int = 0
    extra_symbols: list[tuple[str, str, str, int, int, int]] = field(default_factory=list)
    quote_volumes: dict[str, float] = field(default_factory=dict)
    # What exchangeInfo lists per symbol (a test drops the stop types to get a market
    # without resting stop orders).
    order_types: list[str] = field(
        default_factory=lambda: [
            "LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
            "TAKE_PROFIT_LIMIT",
        ]
    )  # fmt: skip
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- server lifecycle -----------------------------------------------------------------
    def serve(self) -> str:
        """Start on 127.0.0.1 at a free port; returns the base URL (``http://127.0.0.1:N``)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- what the tests read --------------------------------------------------------------
    def klines_requests(self) -> list[LoggedRequest]:
        return [r for r in self.requests if r.path == "/api/v3/klines"]

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.klines_served = 0

    def candle(self, symbol_id: str, interval: str, open_ms: int) -> list[Any]:
        """The kline Binance would send for this open time (deterministic)."""
        info = self._symbol_info(symbol_id)
        step = INTERVALS_MS[interval]
        _, _, _, base, tick, qty = info
        i = (open_ms - self.listed_ms) // 60_000  # minutes since listing: same scale for all
        # A smooth, bounded path: integer arithmetic keeps it exact and machine-independent.
        wave = (i * 7919) % 2000 - 1000  # -1000 .. 999
        drift = (i // 1440) % 400
        unit = Decimal(1).scaleb(-tick)
        open_ = Decimal(base) + Decimal(drift) + Decimal(wave) * unit * 10
        move = Decimal((i * 104_729) % 400 - 200) * unit * 5
        close = open_ + move
        forming = open_ms + step > self.now_ms
        if forming:
            # The live candle: its close drifts with the clock until the interval ends.
            close = open_ + Decimal((self.now_ms - open_ms) // 60_000 % 50) * unit
        high = max(open_, close) + unit * (i % 7 + 1)
        low = min(open_, close) - unit * (i % 5 + 1)
        volume = Decimal((i * 31) % 997 + 3).scaleb(-1) * (Decimal(step) / 60_000)
        if forming:
            volume = volume * Decimal((self.now_ms - open_ms) + 1) / Decimal(step)
        volume = volume.quantize(Decimal(1).scaleb(-qty))
        q = f"{{:.{tick}f}}"
        v = f"{{:.{qty}f}}"
        return [
            open_ms,
            q.format(open_),
            q.format(high),
            q.format(low),
            q.format(close),
            v.format(volume),
            open_ms + step - 1,
            "0",
            100,
            "0",
            "0",
            "0",
        ]

    def history(self, interval: str) -> list[int]:
        """Every open time the fake has for ``interval`` (up to now, gaps left out)."""
        step = INTERVALS_MS[interval]
        first = -(-self.listed_ms // step) * step
        return [t for t in range(first, self.now_ms + 1, step) if not self._in_gap(t)]

    # --- request handling -----------------------------------------------------------------
    def _in_gap(self, t: int) -> bool:
        return any(start <= t < end for start, end in self.gaps)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        status, headers = 200, {}
        body: Any = None
        with self._lock:
            if path == "/api/v3/ping":
                body = {}
            elif path == "/api/v3/time":
                body = {"serverTime": self.now_ms}
            elif path == "/api/v3/exchangeInfo":
                body = self._exchange_info()
            elif path == "/api/v3/ticker/24hr":
                status, body = self._tickers(params)
            elif path == "/api/v3/klines":
                self.klines_served += 1
                n = self.klines_served
                if self.hold_from is not None and n >= self.hold_from:
                    self._lock.release()
                    try:
                        self.release.wait(60)
                    finally:
                        self._lock.acquire()
                if self.hard_error_from is not None and n >= self.hard_error_from:
                    status = 400
                    body = {"code": -1104, "msg": "Not all sent parameters were read."}
                elif n in self.rate_limit_on:
                    status = 429
                    headers["Retry-After"] = self.retry_after
                    body = {"code": -1003, "msg": "Too many requests; current limit exceeded."}
                elif n in self.error_on:
                    status = 503
                    body = {"code": -1001, "msg": "Internal error; unable to process your request."}
                else:
                    status, body = self._klines(params)
            else:
                status, body = 404, {"code": -1000, "msg": f"no route {path}"}
            self.requests.append(LoggedRequest(path=path, params=params, status=status))
        payload = json.dumps(body).encode("utf-8")
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json;charset=UTF-8")
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _klines(self, params: dict[str, str]) -> tuple[int, Any]:
        symbol_id = params.get("symbol", "")
        interval = params.get("interval", "")
        if not any(s[0] == symbol_id for s in self._symbols()):
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if interval not in INTERVALS_MS:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        try:
            limit = int(params.get("limit", "500"))
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in parameter 'limit'."}
        if limit < 1 or limit > self.max_limit:
            return 400, {"code": -1130, "msg": "Invalid data sent for a parameter."}
        step = INTERVALS_MS[interval]
        start = int(params["startTime"]) if "startTime" in params else None
        end = int(params["endTime"]) if "endTime" in params else None
        first = -(-self.listed_ms // step) * step
        out: list[list[Any]] = []
        if start is not None:
            t = max(first, -(-start // step) * step)
            last = self.now_ms if end is None else min(end, self.now_ms)
            while t <= last and len(out) < limit:
                if not self._in_gap(t):
                    out.append(self.candle(symbol_id, interval, t))
                t += step
        else:
            last = self.now_ms if end is None else min(end, self.now_ms)
            t = last // step * step
            while t >= first and len(out) < limit:
                if not self._in_gap(t):
                    out.append(self.candle(symbol_id, interval, t))
                t -= step
            out.reverse()
        return 200, out

    # --- 24 h tickers (the scanner's top-N by volume) ------------------------------------
    def _symbols(self) -> tuple[tuple[str, str, str, int, int, int], ...]:
        return (*SYMBOLS, *self.extra_symbols)

    def _symbol_info(self, symbol_id: str) -> tuple[str, str, str, int, int, int]:
        for info in self._symbols():
            if info[0] == symbol_id:
                return info
        raise KeyError(symbol_id)

    def quote_volume(self, symbol_id: str) -> float:
        """The 24 h quote volume the ticker reports (``quote_volumes`` or a fixed default)."""
        if symbol_id in self.quote_volumes:
            return float(self.quote_volumes[symbol_id])
        ids = [s[0] for s in self._symbols()]
        return float(1_000_000 * (len(ids) - ids.index(symbol_id)))

    def _ticker(self, symbol_id: str) -> dict[str, Any]:
        """Binance's 24 h statistics of one symbol, from its 1-minute candles' path."""
        day = 86_400_000
        now = self.now_ms // 60_000 * 60_000
        first = self.candle(symbol_id, "1m", now - day + 60_000)
        last = self.candle(symbol_id, "1m", now)
        open_, close = Decimal(first[1]), Decimal(last[4])
        quote_volume = Decimal(str(self.quote_volume(symbol_id)))
        volume = (quote_volume / close).quantize(Decimal("0.00001")) if close else Decimal(0)
        change = close - open_
        return {
            "symbol": symbol_id,
            "priceChange": str(change),
            "priceChangePercent": f"{(change / open_ * 100) if open_ else 0:.3f}",
            "weightedAvgPrice": str(close),
            "prevClosePrice": str(open_),
            "lastPrice": str(close),
            "lastQty": "0.01000000",
            "bidPrice": str(close),
            "bidQty": "1.00000000",
            "askPrice": str(close),
            "askQty": "1.00000000",
            "openPrice": str(open_),
            "highPrice": str(max(open_, close)),
            "lowPrice": str(min(open_, close)),
            "volume": str(volume),
            "quoteVolume": f"{quote_volume:.8f}",
            "openTime": self.now_ms - day,
            "closeTime": self.now_ms,
            "firstId": 1,
            "lastId": 1000,
            "count": 1000,
        }

    def _tickers(self, params: dict[str, str]) -> tuple[int, Any]:
        ids = [s[0] for s in self._symbols()]
        if "symbol" in params:
            if params["symbol"] not in ids:
                return 400, {"code": -1121, "msg": "Invalid symbol."}
            return 200, self._ticker(params["symbol"])
        if "symbols" in params:
            try:
                wanted = [str(x) for x in json.loads(params["symbols"])]
            except ValueError:
                return 400, {"code": -1100, "msg": "Illegal characters found in 'symbols'."}
            if any(w not in ids for w in wanted):
                return 400, {"code": -1121, "msg": "Invalid symbol."}
            ids = wanted
        return 200, [self._ticker(sid) for sid in ids]

    def _exchange_info(self) -> dict[str, Any]:
        symbols = []
        for sid, base, quote, _, tick, qty in self._symbols():
            tick_size = f"{Decimal(1).scaleb(-tick):.8f}"
            step_size = f"{Decimal(1).scaleb(-qty):.8f}"
            symbols.append(
                {
                    "symbol": sid,
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": list(self.order_types),
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": False,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": tick_size,
                            "maxPrice": "1000000.00000000",
                            "tickSize": tick_size,
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": step_size,
                            "maxQty": "9000.00000000",
                            "stepSize": step_size,
                        },
                        {"filterType": "NOTIONAL", "minNotional": "5.00000000"},
                    ],
                    "permissions": ["SPOT"],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                }
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }
