"""The sample backtest: one preset strategy run over the shared demo candles.

``seed_demo`` gives the demo user one strategy and one completed backtest, so a first visit
has something to look at; the same backtest is the read-only sample result that users
without Pro may open (``backtester.selectors.samples.sample_backtest``).
"""

from __future__ import annotations

import time

from django.db import transaction

from accounts.models import User
from backtester.models import Backtest, MarketSeries
from backtester.services.backtests import backtest_create, backtest_execute
from backtester.services.strategies import strategy_ensure_preset
from config.exceptions import ApplicationError

SAMPLE_PRESET = "sma_cross"
SAMPLE_SYMBOL = "BTC/USDT"
SAMPLE_TIMEFRAME = "1h"
SAMPLE_NAME = "Sample: SMA crossover on demo BTC/USDT 1h"
WAIT_SECONDS = 120


def sample_series() -> MarketSeries | None:
    """The shared demo series the sample runs on (None until the demo candles are seeded)."""
    return (
        MarketSeries.objects.filter(
            owner=None, exchange="demo", symbol=SAMPLE_SYMBOL, timeframe=SAMPLE_TIMEFRAME
        )
        .exclude(count=0)
        .first()
    )


def demo_backtest_ensure(*, user: User) -> Backtest:
    """``user``'s sample backtest, completed: their copy of the SMA crossover preset run over
    the demo BTC/USDT 1h year. Runs it here, in this process, when there is none yet (about a
    second), so it must not be called inside a transaction. Idempotent.

    Raises ApplicationError when the demo candles are missing (run ``demo_seed`` first) or the
    run fails; PlanRequired when ``user`` has no Pro.
    """
    series = sample_series()
    if series is None:
        raise ApplicationError("The demo candles are not stored yet: seed them first.")
    # A series with candles (count > 0) has both ends.
    assert series.first_ts is not None
    assert series.last_ts is not None
    with transaction.atomic():
        strategy = strategy_ensure_preset(user=user, preset=SAMPLE_PRESET)
        done = (
            Backtest.objects.filter(
                owner=user, strategy=strategy, name=SAMPLE_NAME, status=Backtest.Status.COMPLETED
            )
            .order_by("-finished_at")
            .first()
        )
        if done is not None:
            return done
        backtest = backtest_create(
            user=user,
            strategy=strategy,
            series=[series],
            start=int(series.first_ts),
            end=int(series.last_ts),
            settings={},
            name=SAMPLE_NAME,
        )
    # Run it here; the task sent after commit then finds it taken and does nothing. When a
    # worker claimed it first, wait for that worker instead.
    backtest_execute(backtest_id=backtest.pk)
    deadline = time.monotonic() + WAIT_SECONDS
    backtest.refresh_from_db()
    while backtest.status in Backtest.ACTIVE and time.monotonic() < deadline:
        time.sleep(0.5)
        backtest.refresh_from_db()
    if backtest.status != Backtest.Status.COMPLETED:
        raise ApplicationError(f"The sample backtest did not complete: {backtest.error}")
    return backtest
