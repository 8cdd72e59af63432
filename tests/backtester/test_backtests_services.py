"""Backtest services: submit checks everything and creates nothing on error, the result cache
answers at once, cancel works queued and running, and the worker's execution is idempotent."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from django.utils import timezone

from accounts.models import Plan, Subscription, User
from backtester.engine.language import PRESETS
from backtester.engine.run import run_backtest
from backtester.engine.simulate import SimConfig
from backtester.marketdata.store import load_candles, write_candles
from backtester.models import Backtest, BacktestResult, BacktestTrade, CandleChunk, Strategy
from backtester.results.store import result_curves
from backtester.services import backtests as svc
from backtester.services.backtests import (
    backtest_cancel,
    backtest_create,
    backtest_execute,
    normalize_settings,
)
from config.exceptions import ApplicationError, Conflict, NotFound, PlanRequired
from config.runs import lifecycle
from tests.backtester.backtest_factories import (
    START_MS,
    candles,
    make_series,
    make_strategy,
    make_user,
    span,
)

HOUR = 3_600_000


@pytest.fixture
def setup(db):
    user = make_user()
    series = make_series(n=2000)
    strategy = make_strategy(user)
    return user, series, strategy


def _submit(user, strategy, series, **kw):
    args = {
        "user": user,
        "strategy": strategy,
        "series": series if isinstance(series, list) else [series],
        "settings": {"initial_cash": 10_000, "taker_fee": 0.001},
    }
    args.update(kw)
    if "start" not in args or "end" not in args:
        start, end = span(args["series"][0])
        args.setdefault("start", start)
        args.setdefault("end", end)
    return backtest_create(**args)


def _refused(field, **kw):
    """Submit with one bad input; assert the field, that nothing was created, return the
    message."""
    before = (Backtest.objects.count(), Strategy.objects.count())
    with pytest.raises(ApplicationError) as err:
        _submit(**kw)
    assert err.value.field == field, err.value.message
    assert (Backtest.objects.count(), Strategy.objects.count()) == before
    return err.value.message


# --- submit ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_submit_snapshots_the_request_and_enqueues_after_commit(
    setup, django_capture_on_commit_callbacks
):
    user, series, strategy = setup
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        bt = _submit(user, strategy, series, param_values={"fast": 12})
    assert bt.status == Backtest.Status.QUEUED
    assert len(callbacks) == 1  # the task is sent only once the row is committed
    assert bt.task_id
    assert bt.series_order == [series.pk]
    assert list(bt.series.all()) == [series]
    assert bt.timeframe == "1h"
    assert (bt.start_ts, bt.end_ts) == span(series)
    assert bt.spec["entry_long"] == PRESETS["sma_cross"].entry_long
    assert bt.param_values == {"fast": 12, "slow": 30}
    assert bt.settings == normalize_settings({"initial_cash": 10_000.0, "taker_fee": 0.001})
    assert len(bt.cache_key) == 64
    # Editing the strategy later does not change what this backtest means.
    Strategy.objects.filter(pk=strategy.pk).update(entry_long="close > 0")
    bt.refresh_from_db()
    assert bt.spec["entry_long"] == PRESETS["sma_cross"].entry_long


@pytest.mark.django_db
def test_a_bare_end_date_includes_that_whole_day(setup):
    user, series, strategy = setup
    bt = _submit(user, strategy, series, start=date(2024, 1, 2), end=date(2024, 1, 20))
    assert bt.start_ts == START_MS + 24 * HOUR
    assert bt.end_ts == START_MS + 20 * 24 * HOUR - 1


@pytest.mark.django_db
def test_a_start_before_the_data_is_refused_saying_what_the_data_covers(setup):
    user, series, strategy = setup
    message = _refused("start", user=user, strategy=strategy, series=series, start=date(2023, 6, 1))
    assert "2024-01-01 00:00 UTC" in message
    assert "2024-03-24 07:00 UTC" in message  # the last of 2000 hourly candles


@pytest.mark.django_db
def test_an_end_after_the_data_is_refused(setup):
    user, series, strategy = setup
    message = _refused("end", user=user, strategy=strategy, series=series, end=date(2025, 1, 1))
    assert "after the data" in message


@pytest.mark.django_db
def test_an_empty_range_is_refused(setup):
    user, series, strategy = setup
    start, _ = span(series)
    _refused("end", user=user, strategy=strategy, series=series, start=start + HOUR, end=start)


@pytest.mark.django_db
def test_a_timeframe_the_data_lacks_is_refused(setup):
    user, series, strategy = setup
    message = _refused("timeframe", user=user, strategy=strategy, series=series, timeframe="1d")
    assert "BTC/USDT is 1h data, not 1d" in message


@pytest.mark.django_db
def test_markets_of_different_timeframes_cannot_be_mixed(setup):
    user, series, strategy = setup
    daily = make_series(symbol="ETH/USDT", timeframe="1d", n=200)
    _refused("series", user=user, strategy=strategy, series=[series, daily])


@pytest.mark.django_db
def test_zero_capital_is_refused(setup):
    user, series, strategy = setup
    message = _refused(
        "initial_cash", user=user, strategy=strategy, series=series, settings={"initial_cash": 0}
    )
    assert "more than 0" in message


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"taker_fee": 0.5}, "taker_fee"),
        ({"maker_fee": -0.001}, "maker_fee"),
        ({"slippage_bps": 5000}, "slippage_bps"),
        ({"stop_loss": 1.0}, "stop_loss"),
        ({"sizing": "risk", "size_value": 0.01}, "sizing"),
        ({"sizing": "fraction", "size_value": 2.0}, "size_value"),
        ({"max_position_fraction": 0}, "max_position_fraction"),
        ({"daily_loss_limit": 1.5}, "daily_loss_limit"),
        ({"fill": "midpoint"}, "fill"),
        ({"leverage": 10}, "leverage"),
        ({"weekly_loss_limit": 1.0}, "weekly_loss_limit"),
        ({"monthly_loss_limit": -0.1}, "monthly_loss_limit"),
        ({"max_leverage": -1}, "max_leverage"),
        ({"max_order_notional": 5.0, "min_notional": 10.0}, "max_order_notional"),
        ({"stoploss_guard_count": 2.5}, "stoploss_guard_count"),
        ({"stoploss_guard_lock_bars": -3}, "stoploss_guard_lock_bars"),
        ({"stoploss_guard_all": "yes"}, "stoploss_guard_all"),
        ({"low_profit_min": 2}, "low_profit_min"),
    ],
)
def test_settings_the_engine_refuses_are_refused_on_their_field(setup, settings, field):
    user, series, strategy = setup
    _refused(field, user=user, strategy=strategy, series=series, settings=settings)


@pytest.mark.django_db
def test_a_strategy_whose_rule_no_longer_compiles_is_refused(setup):
    user, series, strategy = setup
    Strategy.objects.filter(pk=strategy.pk).update(exit_long="sma(close, fast) >> 2")
    strategy.refresh_from_db()
    message = _refused("strategy", user=user, strategy=strategy, series=series)
    assert "exit long" in message
    assert "column" in message


@pytest.mark.django_db
def test_a_parameter_override_outside_its_range_is_refused(setup):
    user, series, strategy = setup
    with pytest.raises(ApplicationError) as err:
        _submit(user, strategy, series, param_values={"slow": 5000})
    assert err.value.field == "param_values"
    assert err.value.extra == {"param": "slow"}
    assert Backtest.objects.count() == 0


@pytest.mark.django_db
def test_a_range_shorter_than_the_strategys_warm_up_is_refused(setup):
    user, series, strategy = setup
    start, _ = span(series)
    message = _refused(
        "start", user=user, strategy=strategy, series=series, start=start, end=start + 20 * HOUR
    )
    assert "31 1h bars" in message  # cross_above looks one bar behind the 30-bar SMA


@pytest.mark.django_db
def test_someone_elses_strategy_or_market_is_not_found(setup):
    user, series, strategy = setup
    other = make_user()
    with pytest.raises(NotFound):
        _submit(other, strategy, series)
    private = make_series(owner=user, symbol="MY/COIN")
    theirs = make_strategy(other)
    _refused("series", user=other, strategy=theirs, series=private)
    assert Backtest.objects.count() == 0


@pytest.mark.django_db
def test_a_market_without_candles_is_refused(setup):
    user, series, strategy = setup
    start, end = span(series)
    series.count = 0
    series.first_ts = series.last_ts = None
    series.save()
    message = _refused("series", user=user, strategy=strategy, series=series, start=start, end=end)
    assert "no candles" in message


@pytest.mark.django_db
def test_the_plans_candle_limit_is_enforced(setup):
    user, series, strategy = setup
    Plan.objects.filter(code=Plan.PRO).update(max_candles_per_backtest=1500)
    with pytest.raises(PlanRequired) as err:
        _submit(User.objects.get(pk=user.pk), strategy, series)
    assert "2,000 candles" in err.value.message
    assert Backtest.objects.count() == 0


@pytest.mark.django_db
def test_the_plans_concurrency_limit_is_enforced(setup):
    user, series, strategy = setup
    Plan.objects.filter(code=Plan.PRO).update(max_concurrent_backtests=1)
    user = User.objects.get(pk=user.pk)  # the plan as it is now
    _submit(user, strategy, series)
    with pytest.raises(Conflict) as err:
        _submit(user, strategy, series, param_values={"fast": 11})
    assert "1 backtest(s) queued or running" in err.value.message
    assert Backtest.objects.count() == 1


@pytest.mark.django_db
def test_free_users_cannot_submit(setup):
    user, series, strategy = setup
    Subscription.objects.filter(user=user).update(status=Subscription.Status.CANCELED)
    with pytest.raises(PlanRequired):
        _submit(User.objects.get(pk=user.pk), strategy, series)


def test_the_protection_settings_default_to_off_and_keep_their_types():
    defaults = svc.default_settings()
    new = (
        "weekly_loss_limit", "monthly_loss_limit", "max_order_notional", "max_leverage",
        "stoploss_guard_count", "stoploss_guard_lookback_bars", "stoploss_guard_lock_bars",
        "stoploss_guard_all", "low_profit_lookback_bars", "low_profit_min",
        "low_profit_lock_bars",
    )  # fmt: skip
    assert {name: defaults[name] for name in new} == dict.fromkeys(new, 0) | {
        "stoploss_guard_all": False
    }
    given = normalize_settings(
        {"max_leverage": 2, "stoploss_guard_count": 3, "low_profit_min": -0.01}
    )
    assert (given["max_leverage"], type(given["max_leverage"])) == (2.0, float)
    assert (given["stoploss_guard_count"], given["low_profit_min"]) == (3, -0.01)


def test_settings_are_normalized_so_equal_requests_share_a_key():
    a = normalize_settings({"initial_cash": 10_000, "atr_period": 14})
    b = normalize_settings({"initial_cash": 10_000.0})
    assert a == b
    assert a["initial_cash"] == 10_000.0
    assert isinstance(a["atr_period"], int)
    assert set(a) == set(svc.SETTINGS_FIELDS)


# --- execute --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_execute_runs_the_engine_and_stores_what_run_backtest_computes():
    user = make_user()
    series = make_series(n=3000, seed=4)
    strategy = make_strategy(user)
    bt = _submit(user, strategy, series, settings={"taker_fee": 0.001, "stop_loss": 0.03})
    backtest_execute(backtest_id=bt.pk)
    bt.refresh_from_db()
    assert bt.status == Backtest.Status.COMPLETED, bt.error
    assert bt.progress == 1.0
    assert bt.candle_count == 3000
    assert bt.engine_seconds > 0
    assert {"queue", "load", "signals", "simulate", "metrics", "save"} <= set(bt.timings)
    # Oracle: the engine's own one-call run on the same candles and settings.
    expected = run_backtest(
        load_candles(series),
        PRESETS["sma_cross"],
        {},
        # Settings left out take the product's defaults (2 bps of slippage among them).
        SimConfig(taker_fee=0.001, stop_loss=0.03, slippage_bps=2.0),
    )
    assert bt.settings["slippage_bps"] == 2.0
    result = BacktestResult.objects.get(backtest=bt)
    assert result.trade_count == expected.sim.trades.shape[0] > 0
    assert BacktestTrade.objects.filter(backtest=bt).count() == result.trade_count
    assert result.metrics["total_return"] == pytest.approx(expected.metrics["total_return"])
    np.testing.assert_array_equal(result_curves(result)["equity"], expected.sim.equity)


@pytest.mark.django_db(transaction=True)
def test_an_identical_request_is_answered_from_the_cache_at_once():
    user = make_user()
    series = make_series(n=1500)
    strategy = make_strategy(user)
    first = _submit(user, strategy, series)
    backtest_execute(backtest_id=first.pk)
    first.refresh_from_db()
    again = _submit(user, strategy, series, name="same again")
    assert again.status == Backtest.Status.COMPLETED
    assert again.cached_from_id == first.pk
    assert again.cache_key == first.cache_key
    assert again.task_id == ""  # no task was needed
    assert again.result.metrics == first.result.metrics
    assert list(
        BacktestTrade.objects.filter(backtest=again).values_list("seq", "pnl", "exit_reason")
    ) == list(BacktestTrade.objects.filter(backtest=first).values_list("seq", "pnl", "exit_reason"))
    # Different settings, or changed data, are new runs.
    other = _submit(user, strategy, series, settings={"taker_fee": 0.002})
    assert other.status == Backtest.Status.QUEUED
    write_candles(series=series, candles=candles(1, seed=9, start_ms=int(series.last_ts) + HOUR))
    series.refresh_from_db()
    start, _ = span(series)
    changed = _submit(user, strategy, series, end=first.end_ts)
    assert changed.cache_key != first.cache_key
    assert changed.status == Backtest.Status.QUEUED
    assert start == first.start_ts


@pytest.mark.django_db(transaction=True)
def test_another_users_identical_request_is_not_served_from_my_cache():
    me, you = make_user(), make_user()
    series = make_series(n=1500)
    mine = _submit(me, make_strategy(me), series)
    backtest_execute(backtest_id=mine.pk)
    yours = _submit(you, make_strategy(you), series)
    assert yours.status == Backtest.Status.QUEUED
    assert yours.cached_from_id is None


@pytest.mark.django_db(transaction=True)
def test_execute_is_a_no_op_for_a_finished_backtest():
    user = make_user()
    series = make_series(n=1500)
    bt = _submit(user, make_strategy(user), series)
    backtest_execute(backtest_id=bt.pk)
    bt.refresh_from_db()
    finished, result_id = bt.finished_at, bt.result.pk
    backtest_execute(backtest_id=bt.pk)  # a duplicate delivery
    bt.refresh_from_db()
    assert bt.finished_at == finished
    assert bt.result.pk == result_id


@pytest.mark.django_db(transaction=True)
def test_execute_leaves_a_backtest_another_delivery_is_running_alone():
    user = make_user()
    series = make_series(n=1500)
    bt = _submit(user, make_strategy(user), series)
    Backtest.objects.filter(pk=bt.pk).update(status=Backtest.Status.RUNNING)
    backtest_execute(backtest_id=bt.pk)
    bt.refresh_from_db()
    assert bt.status == Backtest.Status.RUNNING
    assert not BacktestResult.objects.filter(backtest=bt).exists()


@pytest.mark.django_db(transaction=True)
def test_losing_pro_between_submit_and_run_fails_with_the_reason():
    user = make_user()
    series = make_series(n=1500)
    bt = _submit(user, make_strategy(user), series)
    Subscription.objects.filter(user=user).update(status=Subscription.Status.CANCELED)
    backtest_execute(backtest_id=bt.pk)
    bt.refresh_from_db()
    assert bt.status == Backtest.Status.FAILED
    assert bt.error.startswith("Pro plan required")
    assert not BacktestResult.objects.filter(backtest=bt).exists()


@pytest.mark.django_db(transaction=True)
def test_symbols_on_different_bars_fail_with_a_message_naming_both():
    user = make_user()
    btc = make_series(symbol="BTC/USDT", n=1500)
    eth = make_series(symbol="ETH/USDT", n=1500, seed=2)
    # Knock three bars out of ETH: same span, fewer bars.
    kept = load_candles(eth)
    CandleChunk.objects.filter(series=eth).delete()
    mask = np.ones(len(kept), bool)
    mask[[100, 200, 300]] = False
    from backtester.engine.candles import Candles

    write_candles(
        series=eth,
        candles=Candles(
            kept.timestamp[mask], kept.open[mask], kept.high[mask], kept.low[mask],
            kept.close[mask], kept.volume[mask], symbol="ETH/USDT", timeframe="1h",
        ),
    )  # fmt: skip
    eth.refresh_from_db()
    bt = _submit(user, make_strategy(user), [btc, eth])
    backtest_execute(backtest_id=bt.pk)
    bt.refresh_from_db()
    assert bt.status == Backtest.Status.FAILED
    assert "ETH/USDT and BTC/USDT do not have the same candles" in bt.error
    assert "3 only in BTC/USDT" in bt.error


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_error_fails_with_a_generic_message_and_the_exception_type():
    user = make_user()
    series = make_series(n=1500)
    bt = _submit(user, make_strategy(user), series)
    CandleChunk.objects.filter(series=series).update(data=b"not a chunk at all")
    backtest_execute(backtest_id=bt.pk)
    bt.refresh_from_db()
    assert bt.status == Backtest.Status.FAILED
    assert bt.error.startswith("The backtest stopped on an internal error (")
    assert "not a chunk" not in bt.error  # internals are logged, not shown


# --- cancel ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_queued_backtest_means_it_never_runs():
    user = make_user()
    series = make_series(n=1500)
    bt = _submit(user, make_strategy(user), series)
    cancelled = backtest_cancel(user=user, backtest=bt)
    assert cancelled.status == Backtest.Status.CANCELLED
    backtest_execute(backtest_id=bt.pk)  # the task arrives anyway
    bt.refresh_from_db()
    assert bt.status == Backtest.Status.CANCELLED
    assert not BacktestResult.objects.filter(backtest=bt).exists()


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_backtest_stops_it_at_the_next_checkpoint_without_saving():
    user = make_user()
    series = make_series(n=1500)
    bt = _submit(user, make_strategy(user), series)
    claimed = lifecycle.claim(Backtest, bt.pk)  # what the worker does first
    assert claimed is not None
    assert claimed.status == Backtest.Status.RUNNING
    backtest_cancel(user=user, backtest=bt)
    progress = svc._Progress(bt.pk)
    with pytest.raises(lifecycle.Cancelled):
        progress.stage_start("signals")
    bt.refresh_from_db()
    assert bt.status == Backtest.Status.CANCELLED
    assert bt.progress == 0.0  # the cancelled run's progress is no longer written


@pytest.mark.django_db(transaction=True)
def test_a_run_cancelled_just_before_saving_saves_nothing():
    user = make_user()
    series = make_series(n=1500)
    bt = _submit(user, make_strategy(user), series)
    lifecycle.claim(Backtest, bt.pk)
    backtest_cancel(user=user, backtest=bt)
    run = run_backtest(load_candles(series), PRESETS["sma_cross"])
    with pytest.raises(lifecycle.Cancelled):
        svc._save(bt.pk, run, [load_candles(series)], 0.1, {}, 0.0)
    assert not BacktestResult.objects.filter(backtest=bt).exists()


@pytest.mark.django_db
def test_a_finished_backtest_cannot_be_cancelled_and_strangers_get_not_found(setup):
    user, series, strategy = setup
    bt = _submit(user, strategy, series)
    with pytest.raises(NotFound):
        backtest_cancel(user=make_user(), backtest=bt)
    Backtest.objects.filter(pk=bt.pk).update(status=Backtest.Status.COMPLETED)
    bt.refresh_from_db()
    with pytest.raises(Conflict):
        backtest_cancel(user=user, backtest=bt)


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_worker_died_is_failed_by_the_sweeper_not_rerun_when_its_task_comes_back():
    user = make_user()
    series = make_series(n=1500)
    bt = _submit(user, make_strategy(user), series)
    long_ago = timezone.now() - lifecycle.stale_after() - timedelta(minutes=1)
    Backtest.objects.filter(pk=bt.pk).update(
        status=Backtest.Status.RUNNING, started_at=long_ago, heartbeat_at=long_ago
    )
    backtest_execute(backtest_id=bt.pk)  # the broker redelivers the unacknowledged task
    bt.refresh_from_db()
    assert bt.status == Backtest.Status.RUNNING  # not run a second time
    assert lifecycle.sweep() == [("backtest", bt.pk)]
    bt.refresh_from_db()
    assert bt.status == Backtest.Status.FAILED
    assert "worker running this backtest stopped answering" in bt.error
    assert not BacktestResult.objects.filter(backtest=bt).exists()


@pytest.mark.django_db
def test_a_stale_run_stops_counting_against_the_concurrency_limit(setup):
    user, series, strategy = setup
    Plan.objects.filter(code=Plan.PRO).update(max_concurrent_backtests=1)
    user = User.objects.get(pk=user.pk)
    stuck = _submit(user, strategy, series)
    silent = timezone.now() - lifecycle.stale_after() - timedelta(seconds=5)
    Backtest.objects.filter(pk=stuck.pk).update(
        status=Backtest.Status.RUNNING, started_at=silent, heartbeat_at=silent
    )
    lifecycle.sweep()
    fresh = _submit(user, strategy, series, param_values={"fast": 11})
    assert fresh.status == Backtest.Status.QUEUED
    stuck.refresh_from_db()
    assert stuck.status == Backtest.Status.FAILED
