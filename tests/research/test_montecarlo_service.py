"""Monte Carlo runs through the service: what is checked before anything is saved, what the
worker stores (checked against the backtest's own numbers), and a run through a real Celery
worker process."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from accounts.models import Subscription
from backtester.models import Backtest, BacktestTrade, MonteCarloRun
from backtester.services.backtests import backtest_create, backtest_execute
from backtester.services.montecarlo import (
    MAX_ACTIVE_RUNS,
    montecarlo_create,
    montecarlo_execute,
)
from backtester.services.strategies import strategy_create
from config.exceptions import ApplicationError, Conflict, NotFound, PlanRequired
from config.runs import lifecycle
from tests.backtester.backtest_factories import make_series, make_strategy, make_user, span
from tests.worker_log import wait_for_log

SETTINGS = {"initial_cash": 10_000, "taker_fee": 0.001}


def finished_backtest(user, series, strategy=None, settings=SETTINGS) -> Backtest:
    strategy = strategy or make_strategy(user)
    start, end = span(series)
    backtest = backtest_create(
        user=user, strategy=strategy, series=[series], start=start, end=end, settings=settings
    )
    backtest_execute(backtest_id=backtest.pk)
    backtest.refresh_from_db()
    assert backtest.status == Backtest.Status.COMPLETED, backtest.error
    return backtest


@pytest.fixture
def world(db):
    user = make_user()
    series = make_series(n=2000, seed=3)
    backtest = finished_backtest(user, series)
    assert backtest.result.trade_count >= 10
    return {"user": user, "series": series, "backtest": backtest}


def _run(world, **kwargs) -> MonteCarloRun:
    args = {"user": world["user"], "backtest": world["backtest"], "method": "shuffle"}
    args.update(kwargs)
    run = montecarlo_create(**args)
    montecarlo_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == MonteCarloRun.Status.COMPLETED, run.error
    return run


def _pnl(backtest) -> np.ndarray:
    rows = BacktestTrade.objects.filter(backtest=backtest).order_by("seq")
    return np.array(rows.values_list("pnl", flat=True), dtype=float)


# --- submit ---------------------------------------------------------------------------------


def test_create_saves_a_queued_run_and_enqueues_after_commit(
    world, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = montecarlo_create(
            user=world["user"],
            backtest=world["backtest"],
            method="block",
            iterations=5_000,
            ruin_threshold=0.3,
            seed=77,
        )
    assert len(callbacks) == 1
    assert run.status == MonteCarloRun.Status.QUEUED
    assert (run.method, run.iterations, run.seed, run.ruin_threshold) == ("block", 5_000, 77, 0.3)
    # The default block is the cube root of the 2,000 bars.
    assert run.block_length == 13
    assert run.task_id


def test_a_trade_method_stores_no_block_length_and_a_random_seed_when_none_is_given(world):
    run = montecarlo_create(
        user=world["user"], backtest=world["backtest"], method="bootstrap", block_length=5
    )
    assert run.block_length is None
    assert 0 <= run.seed < 2**63
    other = montecarlo_create(user=world["user"], backtest=world["backtest"], method="bootstrap")
    assert other.seed != run.seed


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "jackknife"}, "method"),
        ({"iterations": 999}, "iterations"),
        ({"iterations": 100_001}, "iterations"),
        ({"iterations": "many"}, "iterations"),
        ({"ruin_threshold": 0.0}, "ruin_threshold"),
        ({"ruin_threshold": 1.5}, "ruin_threshold"),
        ({"ruin_threshold": float("nan")}, "ruin_threshold"),
        ({"seed": -1}, "seed"),
        ({"method": "block", "block_length": 0}, "block_length"),
        ({"method": "block", "block_length": 2_001}, "block_length"),
    ],
)
def test_bad_requests_are_refused_on_their_field_and_save_nothing(world, kwargs, field):
    args = {"user": world["user"], "backtest": world["backtest"], "method": "shuffle", **kwargs}
    with pytest.raises(ApplicationError) as caught:
        montecarlo_create(**args)
    assert caught.value.field == field
    assert caught.value.status == 400
    assert MonteCarloRun.objects.count() == 0


def test_someone_elses_backtest_is_not_found(world):
    with pytest.raises(NotFound):
        montecarlo_create(user=make_user(), backtest=world["backtest"], method="shuffle")
    assert MonteCarloRun.objects.count() == 0


def test_free_users_cannot_start_a_run(world):
    Subscription.objects.filter(user=world["user"]).update(status=Subscription.Status.CANCELED)
    world["user"].refresh_from_db()
    with pytest.raises(PlanRequired):
        montecarlo_create(user=world["user"], backtest=world["backtest"], method="shuffle")


def test_a_backtest_without_a_result_is_a_conflict(world, django_capture_on_commit_callbacks):
    start, end = span(world["series"])
    with django_capture_on_commit_callbacks(execute=False):
        queued = backtest_create(
            user=world["user"],
            strategy=make_strategy(world["user"], "ema_cross"),
            series=[world["series"]],
            start=start,
            end=end,
            settings={},
        )
    with pytest.raises(Conflict, match="queued"):
        montecarlo_create(user=world["user"], backtest=queued, method="shuffle")


def test_trade_methods_need_two_trades_but_the_block_bootstrap_does_not(world):
    user = world["user"]
    never = strategy_create(user=user, name="never", entry_long="close < 0")
    quiet = finished_backtest(user, world["series"], strategy=never)
    assert quiet.result.trade_count == 0
    for method in ("shuffle", "bootstrap"):
        with pytest.raises(ApplicationError, match="at least 2") as caught:
            montecarlo_create(user=user, backtest=quiet, method=method)
        assert caught.value.field == "method"
    run = _run({"user": user, "backtest": quiet}, method="block", iterations=1_000)
    # A flat equity curve: every path ends where it started.
    assert run.results["summaries"]["final_return"]["ci_high"] == 0.0
    assert run.results["ruin"]["probability"] == 0.0


def test_at_most_a_few_runs_queue_at_once_and_stuck_ones_are_failed(world):
    args = {"user": world["user"], "backtest": world["backtest"], "method": "shuffle"}
    runs = [montecarlo_create(**args) for _ in range(MAX_ACTIVE_RUNS)]
    with pytest.raises(Conflict, match="at once"):
        montecarlo_create(**args)
    # A run whose worker died is failed by the sweeper with a reason, and no longer counts.
    silent = timezone.now() - lifecycle.stale_after() - timedelta(seconds=1)
    MonteCarloRun.objects.filter(pk=runs[0].pk).update(
        status=MonteCarloRun.Status.RUNNING, started_at=silent, heartbeat_at=silent
    )
    assert ("montecarlo", runs[0].pk) in lifecycle.sweep()
    montecarlo_create(**args)
    runs[0].refresh_from_db()
    assert runs[0].status == MonteCarloRun.Status.FAILED
    assert "worker running this Monte Carlo run stopped answering" in runs[0].error


# --- execute --------------------------------------------------------------------------------


def test_a_shuffle_keeps_the_realized_return_on_every_path(world):
    run = _run(world, iterations=2_000, seed=5)
    res = run.results
    pnl = _pnl(world["backtest"])
    realized = pnl.sum() / 10_000
    final = res["summaries"]["final_return"]
    assert final["original"] == pytest.approx(realized, rel=1e-9)
    assert final["ci_low"] == pytest.approx(realized, rel=1e-9)
    assert final["ci_high"] == pytest.approx(realized, rel=1e-9)
    drawdown = res["summaries"]["max_drawdown"]
    assert drawdown["ci_low"] < drawdown["ci_high"] <= 0.0
    assert res["source"]["trades"] == pnl.shape[0]
    assert res["iterations"] == 2_000
    assert res["unit"] == "trade"
    # Bands in money: every path ends at the capital plus the realized profit.
    for band in res["fan"]["bands"].values():
        assert band[0] == pytest.approx(10_000)
        assert band[-1] == pytest.approx(10_000 + pnl.sum(), abs=1e-3)  # stored to 0.0001
    assert len(res["fan"]["x"]) == min(101, pnl.shape[0] + 1)
    assert sum(res["histograms"]["max_drawdown"]["counts"]) == 2_000
    assert {"queue", "load", "simulate", "total"} <= set(run.timings)
    assert run.finished_at is not None


def test_the_block_bootstrap_original_path_is_the_backtests_own_equity(world):
    run = _run(world, method="block", iterations=1_000, seed=1)
    metrics = world["backtest"].result.metrics
    summaries = run.results["summaries"]
    # The engine's metrics (checked against empyrical) are the oracle for the original path.
    assert summaries["final_return"]["original"] == pytest.approx(metrics["total_return"])
    assert summaries["max_drawdown"]["original"] == pytest.approx(metrics["max_drawdown"])
    assert summaries["cagr"]["original"] == pytest.approx(metrics["cagr"])
    assert summaries["sharpe"]["original"] == pytest.approx(metrics["sharpe"])
    assert run.results["block_bars"] == 13
    assert run.results["bars_per_step"] == 1
    assert run.results["fan"]["x"][-1] == 2_000


def test_the_same_seed_gives_the_same_results(world):
    first = _run(world, method="bootstrap", iterations=1_000, seed=123)
    second = _run(world, method="bootstrap", iterations=1_000, seed=123)
    assert first.results == second.results
    third = _run(world, method="bootstrap", iterations=1_000, seed=124)
    assert third.results["summaries"] != first.results["summaries"]


def test_execute_is_a_no_op_for_a_finished_run(world):
    run = _run(world, iterations=1_000, seed=2)
    before = run.results
    montecarlo_execute(run_id=run.pk)  # a duplicate delivery
    run.refresh_from_db()
    assert run.status == MonteCarloRun.Status.COMPLETED
    assert run.results == before
    montecarlo_execute(run_id=run.pk + 1000)  # a deleted run: nothing to do


def test_a_run_whose_owner_lost_pro_fails_with_the_reason(world):
    run = montecarlo_create(user=world["user"], backtest=world["backtest"], method="shuffle")
    Subscription.objects.filter(user=world["user"]).update(status=Subscription.Status.CANCELED)
    montecarlo_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == MonteCarloRun.Status.FAILED
    assert "Pro plan required" in run.error


def test_a_run_whose_trades_vanished_fails_with_a_message(world):
    run = montecarlo_create(user=world["user"], backtest=world["backtest"], method="shuffle")
    BacktestTrade.objects.filter(backtest=world["backtest"]).delete()
    montecarlo_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == MonteCarloRun.Status.FAILED
    assert "fewer than 2 closed trades" in run.error
    assert "total" in run.timings


# --- a real worker --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_run_goes_through_a_real_celery_worker(celery_worker_process):
    user = make_user()
    backtest = finished_backtest(user, make_series(n=1500, seed=8))
    run = montecarlo_create(
        user=user, backtest=backtest, method="bootstrap", iterations=20_000, seed=9
    )
    for _ in range(600):
        run.refresh_from_db()
        if not run.is_active:
            break
        time.sleep(0.1)
    assert run.status == MonteCarloRun.Status.COMPLETED, run.error
    assert run.results["iterations"] == 20_000
    assert sum(run.results["histograms"]["final_return"]["counts"]) == 20_000
    wait_for_log(celery_worker_process, f"backtester.run_montecarlo[{run.task_id}] succeeded")
