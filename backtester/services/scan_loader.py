"""The scanner's candle loader: brings each symbol's candles up to date (from the exchange, or
the stored demo data) and reads the closed candles' closes a scan fits its bands to. Split from
services/scanner.py, which runs scans; only closed candles are read, so a signal never flickers
with the live price."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from django.db.models import Q

from accounts.models import User
from backtester.engine.candles import timeframe_ms
from backtester.marketdata.store import load_candles
from backtester.models import MarketSeries, ScanRun, Watchlist
from backtester.services.marketdata import candles_fetch
from config.exceptions import ApplicationError
from exchanges.clients import (
    ExchangeClient,
    ExchangeUnavailable,
    exchange_label,
    fetch_top_symbols,
    make_client,
)

logger = logging.getLogger(__name__)

DEMO_EXCHANGE = "demo"
# Candles kept per symbol: one Binance page, and enough history behind an alert for its
# one-click backtest to mean something.
HISTORY_BARS = 1000


@dataclass
class _Loaded:
    """One symbol's closes for the scan, or why there are none."""

    symbol: str
    closes: np.ndarray
    series: MarketSeries | None = None
    candle_ts: int | None = None
    bars: int = 0
    problem: str = ""


def _find_series(owner: User, exchange: str, symbol: str, timeframe: str) -> MarketSeries | None:
    """The owner's own series of (exchange, symbol, timeframe) if any, else the shared one."""
    rows = list(
        MarketSeries.objects.filter(
            Q(owner=owner) | Q(owner__isnull=True),
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
        )
    )
    rows.sort(key=lambda s: s.owner_id is None)
    return rows[0] if rows else None


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _closed_tail(
    series: MarketSeries, *, lookback: int, tf_ms: int, now_ms: int | None
) -> tuple[np.ndarray, int | None, int]:
    """The last ``lookback`` closed candles' closes of ``series``, the open time of the newest
    of them, and how many closed candles the series holds. A candle still forming at
    ``now_ms`` is left out (None: every candle counts)."""
    if not series.count or series.last_ts is None:
        return np.empty(0), None, 0
    newest = int(series.last_ts)
    forming = now_ms is not None and newest + tf_ms > now_ms
    closed = int(series.count) - int(forming)
    # Twice the span a gap-free series needs, so a few gaps still leave ``lookback`` candles.
    start = newest - 2 * (lookback + 1) * tf_ms
    candles = load_candles(series, start_ts=start)
    if candles.timestamp.shape[0] - int(forming) < min(lookback, closed):
        candles = load_candles(series)  # gappy history: read it all (rare)
    ts, close = candles.timestamp, candles.close
    if forming and ts.shape[0]:
        ts, close = ts[:-1], close[:-1]
    if ts.shape[0] == 0:
        return np.empty(0), None, 0
    return np.array(close[-lookback:], dtype=np.float64), int(ts[-1]), closed


class _Loader:
    """Brings each symbol's candles up to date and reads the closes the scan needs."""

    def __init__(self, run: ScanRun) -> None:
        self.run = run
        self.tf_ms = timeframe_ms(run.timeframe)
        self.on_exchange = run.exchange != DEMO_EXCHANGE
        self.client: ExchangeClient | None = None
        self.now_ms: int | None = None
        self.exchange_down = False
        self.warnings: list[str] = []

    def connect(self) -> None:
        if not self.on_exchange:
            return
        self.client = make_client(self.run.exchange)
        try:
            self.now_ms = self.client.now_ms()
        except ExchangeUnavailable as exc:
            self._down(exc)
            self.now_ms = int(time.time() * 1000)

    def _down(self, exc: ApplicationError) -> None:
        if not self.exchange_down:
            self.exchange_down = True
            self.warnings.append(
                f"{exchange_label(self.run.exchange)} did not answer ({exc.message}); the scan "
                "used the candles already stored."
            )

    def symbols(self) -> list[str]:
        if self.run.universe != Watchlist.Universe.TOP:
            return list(self.run.symbols or [])
        assert self.client is not None
        ranked = fetch_top_symbols(self.client, int(self.run.top_n), self.run.quote)
        if not ranked:
            raise ApplicationError(
                f"{exchange_label(self.run.exchange)} lists no {self.run.quote} markets to rank."
            )
        return [symbol for symbol, _ in ranked]

    def _since(self, symbol: str) -> int:
        """Where the download starts: HISTORY_BARS back, except that a stored series with
        enough candles for the lookback is not backfilled again (its market may be younger
        than that, which would cost a request per scan for nothing)."""
        assert self.now_ms is not None
        since = self.now_ms - max(HISTORY_BARS, self.run.lookback + 10) * self.tf_ms
        stored = (
            MarketSeries.objects.filter(
                owner__isnull=True,
                exchange=self.run.exchange,
                symbol=symbol,
                timeframe=self.run.timeframe,
            )
            .values_list("first_ts", "count")
            .first()
        )
        if stored is not None and stored[0] is not None and stored[1] >= self.run.lookback + 10:
            since = max(since, int(stored[0]))
        return since

    def load(self, symbol: str) -> _Loaded:
        owner = self.run.owner
        if self.on_exchange and not self.exchange_down:
            assert self.client is not None
            assert self.now_ms is not None
            since = self._since(symbol)
            try:
                candles_fetch(
                    exchange=self.run.exchange,
                    symbol=symbol,
                    timeframe=self.run.timeframe,
                    since_ts=since,
                    client=self.client,
                )
            except ExchangeUnavailable as exc:
                self._down(exc)
            except ApplicationError as exc:
                return _Loaded(
                    symbol, np.empty(0), problem=f"Could not fetch candles: {exc.message}"
                )
        series = _find_series(owner, self.run.exchange, symbol, self.run.timeframe)
        if series is None or not series.count:
            where = "the demo data" if not self.on_exchange else exchange_label(self.run.exchange)
            return _Loaded(
                symbol, np.empty(0), series=series,
                problem=f"No {self.run.timeframe} candles stored for {symbol} from {where}",
            )  # fmt: skip
        closes, newest, bars = _closed_tail(
            series, lookback=self.run.lookback, tf_ms=self.tf_ms, now_ms=self.now_ms
        )
        loaded = _Loaded(symbol, closes, series=series, candle_ts=newest, bars=bars)
        if self.on_exchange and self.now_ms is not None and newest is not None:
            # The newest closed candle opened one bar before the current one.
            expected = (self.now_ms // self.tf_ms - 1) * self.tf_ms
            if newest < expected - self.tf_ms:
                loaded.problem = (
                    f"Stale data: the newest closed candle is from {_fmt_ms(newest)}, so no "
                    "signal is given"
                )
        return loaded
