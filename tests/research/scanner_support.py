"""Builders for the scanner tests: candle series with chosen closes, and closes whose last
value lands where a test wants it relative to the bands."""

from __future__ import annotations

from typing import Any

import numpy as np

from accounts.models import User
from backtester.engine.candles import Candles, timeframe_ms
from backtester.marketdata.store import write_candles
from backtester.models import MarketSeries, ScanRun, Watchlist
from backtester.services.scan_watchlists import watchlist_create
from backtester.services.scanner import scan_execute
from tests.backtester.backtest_factories import make_user

__all__ = ["make_user"]

DAY_MS = 86_400_000
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
LOOKBACK = 30  # the smallest lookback the preset allows, so the series stay short


def line_closes(last_offset: float, n: int = 80, *, base: float = 100.0) -> np.ndarray:
    """A rising line with a small alternating wiggle (residual std about 0.4); the last close
    sits ``last_offset`` away from where the line would be."""
    i = np.arange(n, dtype=float)
    closes = base + 0.5 * i + np.where(i % 2 == 0, 0.4, -0.4)
    closes[-1] = base + 0.5 * (n - 1) + last_offset
    return closes


BUY_CLOSES = line_closes(-8.0)
SELL_CLOSES = line_closes(+8.0)
HOLD_CLOSES = line_closes(0.1)


def candles_from_closes(
    closes: np.ndarray, *, symbol: str, timeframe: str = "1d", start_ms: int = START_MS
) -> Candles:
    closes = np.asarray(closes, dtype=np.float64)
    opens = np.concatenate(([closes[0]], closes[:-1]))
    ts = start_ms + np.arange(closes.size, dtype=np.int64) * timeframe_ms(timeframe)
    return Candles(
        ts,
        opens,
        np.maximum(opens, closes) + 0.05,
        np.minimum(opens, closes) - 0.05,
        closes,
        np.full(closes.size, 10.0),
        symbol=symbol,
        timeframe=timeframe,
    )


def closes_series(
    symbol: str,
    closes: np.ndarray,
    *,
    timeframe: str = "1d",
    exchange: str = "demo",
    owner: User | None = None,
    start_ms: int = START_MS,
) -> MarketSeries:
    """A series in the candle store whose closes are ``closes`` (shared unless ``owner``)."""
    series = MarketSeries.objects.create(
        owner=owner,
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        source=MarketSeries.Source.DEMO if owner is None else MarketSeries.Source.UPLOAD,
        synthetic=owner is None,
    )
    write_candles(
        series=series,
        candles=candles_from_closes(closes, symbol=symbol, timeframe=timeframe, start_ms=start_ms),
    )
    series.refresh_from_db()
    return series


def demo_market() -> dict[str, MarketSeries]:
    """Four shared demo series: one BUY, one SELL, one HOLD and one too short to fit."""
    return {
        "BUY/USDT": closes_series("BUY/USDT", BUY_CLOSES),
        "SELL/USDT": closes_series("SELL/USDT", SELL_CLOSES),
        "HOLD/USDT": closes_series("HOLD/USDT", HOLD_CLOSES),
        "NEW/USDT": closes_series("NEW/USDT", line_closes(0.0, n=LOOKBACK - 10)),
    }


def demo_watchlist(
    user: User, symbols: list[str] | str | None = None, **kwargs: object
) -> Watchlist:
    fields: dict[str, Any] = {
        "name": "Demo majors",
        "exchange": "demo",
        "timeframe": "1d",
        "symbols": ["BUY/USDT", "SELL/USDT", "HOLD/USDT", "NEW/USDT"]
        if symbols is None
        else symbols,
        "lookback": LOOKBACK,
        "degree": 1,
        "k": 2.0,
    }
    fields.update(kwargs)
    return watchlist_create(user=user, **fields)


def run_scan_now(watchlist: Watchlist, *, trigger: str = ScanRun.Trigger.MANUAL) -> ScanRun:
    """Create a queued scan the way scan_start does, without the task, and run it here."""
    from backtester.services.scanner import _new_scan

    run = _new_scan(watchlist, trigger=trigger)
    result = scan_execute(scan_id=run.pk)
    assert result is not None
    return result
