"""Builders for the market data tests: users on each plan, candles with exact decimal prices,
series in the store, and a running fake Binance."""

from __future__ import annotations

import itertools

import numpy as np

from accounts.models import Plan, User
from accounts.services import plans_ensure, subscription_grant
from backtester.engine.candles import Candles, timeframe_ms
from backtester.marketdata import store
from backtester.models import MarketSeries

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOUR = 3_600_000
_emails = itertools.count(1)


def make_user(*, pro: bool = True) -> User:
    plans_ensure()
    user = User.objects.create_user(
        email=f"md{next(_emails)}@example.com", password="x-unused-pass-9"
    )
    if pro:
        subscription_grant(user=user, plan_code=Plan.PRO)
    return user


def decimal_candles(
    n: int,
    *,
    start_ms: int = START_MS,
    timeframe: str = "1h",
    seed: int = 7,
    symbol: str = "BTC/USDT",
    extra: dict[str, np.ndarray] | None = None,
) -> Candles:
    """``n`` valid candles with prices on a 0.01 grid and volume on 1e-5, like an exchange's."""
    rng = np.random.default_rng(seed)
    close = np.round(40_000 * np.exp(np.cumsum(rng.standard_t(4, n) * 0.002)), 2)
    open_ = np.round(np.concatenate((np.array([40_000.0]), close[:-1])), 2)
    high = np.round(np.maximum(open_, close) + np.round(rng.random(n) * 20, 2), 2)
    low = np.round(np.minimum(open_, close) - np.round(rng.random(n) * 20, 2), 2)
    volume = np.round(rng.random(n) * 100, 5)
    ts = start_ms + np.arange(n, dtype=np.int64) * timeframe_ms(timeframe)
    return Candles(
        ts, open_, high, low, close, volume, extra=extra or {}, symbol=symbol, timeframe=timeframe
    )


def make_series(
    *,
    owner: User | None = None,
    exchange: str = "binance",
    symbol: str = "BTC/USDT",
    timeframe: str = "1h",
    source: str | None = None,
    candles: Candles | None = None,
) -> MarketSeries:
    series = MarketSeries.objects.create(
        owner=owner,
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        source=source or (MarketSeries.Source.UPLOAD if owner else MarketSeries.Source.CCXT),
    )
    if candles is not None:
        store.write_candles(series=series, candles=candles)
        series.refresh_from_db()
    return series
