"""Builders shared by the results, charts and exports tests (no tests here).

A backtest is built the way the task builds one: MarketSeries rows, a Backtest row with its
series order and snapshots, the real engine on synthetic candles, then ``result_save``.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict

import numpy as np

from accounts.models import User
from accounts.services import subscription_grant
from backtester.engine.candles import Candles
from backtester.engine.language import Param, StrategySpec
from backtester.engine.run import (
    BacktestResult,
    PortfolioBacktestResult,
    run_backtest,
    run_portfolio,
)
from backtester.engine.simulate import SimConfig
from backtester.models import Backtest, MarketSeries
from backtester.results.store import result_save

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_counter = itertools.count(1)
# Long and short on SMA crosses: trades on both sides, reversals on each cross.
SPEC = StrategySpec(
    name="sma_cross_both",
    entry_long="cross_above(sma(close, fast), sma(close, slow))",
    exit_long="cross_below(sma(close, fast), sma(close, slow))",
    entry_short="cross_below(sma(close, fast), sma(close, slow))",
    exit_short="cross_above(sma(close, fast), sma(close, slow))",
    params=(Param("fast", "int", 10, 2, 50), Param("slow", "int", 30, 5, 200)),
)


def synthetic_candles(
    n: int,
    *,
    symbol: str = "BTC/USDT",
    seed: int = 7,
    tf_ms: int = 3_600_000,
    start: int = START_MS,
) -> Candles:
    """A deterministic random walk with wicks: enough swings for an SMA cross to trade."""
    rng = np.random.default_rng(seed)
    scale = (tf_ms / 3_600_000) ** 0.5  # volatility grows with the square root of time
    steps = rng.normal(0.0, 0.004 * scale, n) + 0.0015 * scale * np.sin(np.arange(n) / 40.0)
    close = 100.0 * np.exp(np.cumsum(steps))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    volume = rng.uniform(1, 10, n)
    tf = {60_000: "1m", 3_600_000: "1h", 86_400_000: "1d"}.get(tf_ms, "")
    return Candles(
        timestamp=start + tf_ms * np.arange(n, dtype=np.int64),
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        symbol=symbol,
        timeframe=tf,
    )


def make_user(
    email: str | None = None,
    *,
    pro: bool = True,
    password: str = "pw-Results-1",  # noqa: S107
) -> User:
    user = User.objects.create_user(
        email=email or f"res{next(_counter)}@example.com", password=password
    )
    if pro:
        subscription_grant(user=user)
    return user


def make_backtest(
    owner: User,
    *,
    n: int = 600,
    symbols: tuple[str, ...] = ("BTC/USDT",),
    tf_ms: int = 3_600_000,
    config: SimConfig | None = None,
    status: str = Backtest.Status.COMPLETED,
    save: bool = True,
    name: str = "",
    params: dict[str, int] | None = None,
) -> tuple[Backtest, object, list[Candles]]:
    """A Backtest row, the engine's run on synthetic candles and those candles."""
    config = config or SimConfig(taker_fee=0.001)
    spec = SPEC
    candles = [
        synthetic_candles(n, symbol=s, seed=7 + i, tf_ms=tf_ms) for i, s in enumerate(symbols)
    ]
    tf = candles[0].timeframe or "1h"
    series = []
    for s in symbols:
        series.append(
            MarketSeries.objects.get_or_create(
                owner=None,
                exchange="synthetic",
                symbol=s,
                timeframe=tf,
                defaults={"source": MarketSeries.Source.DEMO, "synthetic": True},
            )[0]
        )
    params = params or {"fast": 5, "slow": 20}
    run: BacktestResult | PortfolioBacktestResult
    if len(candles) == 1:
        run = run_backtest(candles[0], spec, params, config)
    else:
        run = run_portfolio(candles, spec, params, config)
    backtest = Backtest.objects.create(
        owner=owner,
        name=name or f"SMA cross #{next(_counter)}",
        series_order=[s.pk for s in series],
        timeframe=tf,
        start_ts=int(candles[0].timestamp[0]),
        end_ts=int(candles[0].timestamp[-1]),
        spec={
            "name": spec.name,
            "entry_long": spec.entry_long,
            "exit_long": spec.exit_long,
            "entry_short": spec.entry_short,
            "exit_short": spec.exit_short,
        },
        param_values=dict(run.params),
        settings=asdict(config),
        status=status,
        progress=1.0 if status == Backtest.Status.COMPLETED else 0.0,
        candle_count=n,
        engine_seconds=run.engine_seconds,
    )
    backtest.series.set(series)
    if save:
        result_save(backtest=backtest, run=run, candles=candles if len(candles) > 1 else candles[0])
    return backtest, run, candles
