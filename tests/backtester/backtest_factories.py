"""Builders shared by the strategy and backtest tests: users on each plan, series with real
candles in the store, strategies from presets."""

from __future__ import annotations

import itertools

import numpy as np

from accounts.models import Plan, User
from accounts.services import plans_ensure, subscription_grant
from backtester.engine.candles import Candles, timeframe_ms
from backtester.marketdata.store import write_candles
from backtester.models import MarketSeries, Strategy
from backtester.services.strategies import strategy_from_preset

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_emails = itertools.count(1)


def make_user(*, pro: bool = True, email: str | None = None) -> User:
    plans_ensure()
    user = User.objects.create_user(
        email=email or f"user{next(_emails)}@example.com", password="x-unused-pass-9"
    )
    if pro:
        subscription_grant(user=user, plan_code=Plan.PRO)
    return user


def candles(
    n: int, *, seed: int = 1, timeframe: str = "1h", start_ms: int = START_MS, symbol: str = ""
) -> Candles:
    """A random walk with fat tails and a trend change, valid OHLCV, ``n`` bars."""
    rng = np.random.default_rng(seed)
    # The trend is scaled down on long series so prices stay realistic (an unscaled drift over
    # 300,000 bars would leave the engine's price range); series up to 20,000 bars are unchanged.
    trend = min(1.0, 20_000 / n)
    steps = rng.standard_t(4, n) * 0.004 + trend * np.where(np.arange(n) < n // 2, 0.0004, -0.0003)
    close = 100.0 * np.exp(np.cumsum(steps))
    open_ = np.concatenate(([close[0]], close[:-1]))
    high = np.maximum(open_, close) * (1 + rng.random(n) * 0.003)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 0.003)
    ts = start_ms + np.arange(n, dtype=np.int64) * timeframe_ms(timeframe)
    return Candles(
        ts, open_, high, low, close, rng.random(n) * 50 + 1, symbol=symbol, timeframe=timeframe
    )


def make_series(
    *,
    symbol: str = "BTC/USDT",
    timeframe: str = "1h",
    n: int = 2000,
    seed: int = 1,
    owner: User | None = None,
    exchange: str = "demo",
    start_ms: int = START_MS,
) -> MarketSeries:
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
        candles=candles(n, seed=seed, timeframe=timeframe, start_ms=start_ms, symbol=symbol),
    )
    series.refresh_from_db()
    return series


def make_strategy(user: User, preset: str = "sma_cross") -> Strategy:
    return strategy_from_preset(user=user, preset=preset)


def span(series: MarketSeries) -> tuple[int, int]:
    """(start, end) in ms covering the whole series, end inclusive."""
    assert series.first_ts is not None
    assert series.last_ts is not None
    return int(series.first_ts), int(series.last_ts)
