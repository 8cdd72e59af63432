"""Optimization services against PostgreSQL: submitting (checks, plan limits, nothing saved on
error), chunks stored in any order and exactly once, the final step, cancel, and turning a row
into a backtest. The chunks run in this process here; test_optimize_workers.py runs them on
real worker processes."""

from __future__ import annotations

import math

import pytest

from accounts.models import Plan, Subscription, User
from backtester.engine.optimize import rank_rows
from backtester.engine.run import run_backtest
from backtester.marketdata.store import load_candles
from backtester.models import (
    Backtest,
    MarketSeries,
    OptimizationChunk,
    OptimizationJob,
    OptimizationRow,
    Strategy,
)
from backtester.services.backtests import sim_config
from backtester.services.optimization import (
    MIN_CHUNK,
    TARGET_CHUNKS,
    chunk_bounds,
    optimization_cancel,
    optimization_create,
    optimization_finalize,
    optimization_row_backtest,
    optimization_run_chunk,
    optimization_state,
)
from backtester.services.strategies import spec_from_dict
from config.exceptions import ApplicationError, Conflict, NotFound, PlanRequired
from tests.backtester.backtest_factories import make_series, make_strategy, make_user
from tests.research.optimize_support import chunks_of, request_args

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    user = make_user()
    series = make_series(n=1500, seed=4)
    return {"user": user, "series": series, "strategy": make_strategy(user)}


def _limit(world, **limits) -> None:
    """Change the Pro plan's limits; the user is read again, as the next request would."""
    Plan.objects.filter(code=Plan.PRO).update(**limits)
    world["user"] = User.objects.get(pk=world["user"].pk)


def _create(world, capture, **overrides) -> OptimizationJob:
    with capture(execute=False) as callbacks:
        job = optimization_create(
            **request_args(world["user"], world["strategy"], world["series"], **overrides)
        )
    assert len(callbacks) == 1  # the chord is sent after commit, once
    return job


def _run_all(job: OptimizationJob, *, order=None) -> None:
    chunks = chunks_of(job)
    for index in order or range(len(chunks)):
        i, first, combos = chunks[index]
        info = optimization_run_chunk(
            job_id=job.pk, chunk=i, first=first, combinations=combos, worker="here@test"
        )
        assert info["stored"], info
    optimization_finalize(job_id=job.pk, results=[{"worker": "here@test", "seconds": 0.1}])
    job.refresh_from_db()


# --- submit ---------------------------------------------------------------------------------


def test_create_saves_a_queued_job_with_its_snapshot_and_combinations(
    world, django_capture_on_commit_callbacks
):
    job = _create(world, django_capture_on_commit_callbacks)
    assert job.status == OptimizationJob.Status.QUEUED
    assert job.ranges == {"fast": [5, 10, 15, 20], "slow": [20, 40, 60]}
    # 12 lattice points; fast < slow drops (20, 20).
    assert job.space_size == 12
    assert job.combinations == 11
    assert job.chunk_count == 1
    assert job.spec["entry_long"] == world["strategy"].entry_long
    assert job.settings["taker_fee"] == 0.001
    assert job.settings["initial_cash"] == 10_000.0
    assert job.name == f"{world['strategy'].name} · BTC/USDT 1h"
    assert job.end_ts == world["series"].last_ts
    assert job.candle_count == 1500


def test_chunks_split_the_work_evenly_for_any_number_of_workers():
    assert chunk_bounds(11) == [(0, 11)]
    bounds = chunk_bounds(1000)
    assert len(bounds) == TARGET_CHUNKS
    assert sum(size for _, size in bounds) == 1000
    assert [first for first, _ in bounds] == [sum(s for _, s in bounds[:i]) for i in range(24)]
    assert all(size >= MIN_CHUNK for _, size in chunk_bounds(100)[:-1])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"objective": "alpha"}, "objective"),
        ({"method": "genetic"}, "method"),
        ({"method": "random", "samples": None}, "samples"),
        ({"method": "random", "samples": 0}, "samples"),
        ({"method": "random", "samples": "many"}, "samples"),
        ({"ranges": {"fast": {"low": 5, "high": 70}}}, "ranges"),
        ({"ranges": {"fast": {"low": 5, "high": 20, "step": -5}}}, "ranges"),
        ({"ranges": {"speed": [5]}}, "ranges"),
        ({"constraint": "fast <"}, "constraint"),
        ({"constraint": "fast < slower"}, "constraint"),
        ({"constraint": "fast > 1000"}, "constraint"),
        ({"min_trades": -1}, "min_trades"),
        ({"min_trades": "a few"}, "min_trades"),
        ({"seed": "lucky"}, "seed"),
        ({"start": 0}, "start"),
        ({"end": 9_999_999_999_999}, "end"),
        ({"settings": {"taker_fee": -1}}, "taker_fee"),
        ({"settings": {"bogus": 1}}, "bogus"),
        ({"name": "x" * 161}, "name"),
    ],
)
def test_bad_input_names_the_field_and_saves_nothing(world, overrides, field):
    with pytest.raises(ApplicationError) as caught:
        optimization_create(
            **request_args(world["user"], world["strategy"], world["series"], **overrides)
        )
    assert caught.value.field == field, caught.value.message
    assert caught.value.message
    assert not OptimizationJob.objects.exists()


def test_a_range_error_says_which_parameter(world):
    with pytest.raises(ApplicationError) as caught:
        optimization_create(
            **request_args(world["user"], world["strategy"], world["series"], ranges={"slow": [10]})
        )
    assert caught.value.extra == {"param": "slow"}
    assert "between 20 and 200" in caught.value.message


def test_someone_elses_strategy_or_market_is_not_found(world):
    other = make_user()
    foreign_series = make_series(owner=other, n=300)
    with pytest.raises(NotFound):
        optimization_create(**request_args(world["user"], make_strategy(other), world["series"]))
    with pytest.raises(ApplicationError) as caught:
        optimization_create(**request_args(world["user"], world["strategy"], foreign_series))
    assert caught.value.field == "series"
    assert not OptimizationJob.objects.exists()


def test_the_plan_limits_the_combinations(world):
    _limit(world, max_optimization_combinations=10)
    with pytest.raises(PlanRequired, match=r"11 combinations.*at most 10"):
        optimization_create(**request_args(world["user"], world["strategy"], world["series"]))
    with pytest.raises(PlanRequired, match="12 samples"):
        optimization_create(
            **request_args(
                world["user"], world["strategy"], world["series"], method="random", samples=12
            )
        )
    # A grid far past the limit is refused before it is even enumerated.
    with pytest.raises(PlanRequired, match="190 combinations"):
        optimization_create(
            **request_args(world["user"], world["strategy"], world["series"], ranges={})
        )
    assert not OptimizationJob.objects.exists()
    # Within the limit it goes through.
    _limit(world, max_optimization_combinations=11)
    job = optimization_create(**request_args(world["user"], world["strategy"], world["series"]))
    assert job.combinations == 11


def test_a_free_user_cannot_optimize(world):
    free = make_user(pro=False)
    with pytest.raises(PlanRequired):
        optimization_create(**request_args(free, make_strategy(world["user"]), world["series"]))


def test_concurrent_jobs_are_capped_by_the_plan(world, django_capture_on_commit_callbacks):
    _limit(world, max_concurrent_backtests=1)
    _create(world, django_capture_on_commit_callbacks)
    with pytest.raises(Conflict, match="already have 1"):
        optimization_create(**request_args(world["user"], world["strategy"], world["series"]))


def test_random_search_saves_its_seed_and_draws_the_same_sample_again(
    world, django_capture_on_commit_callbacks
):
    job = _create(
        world,
        django_capture_on_commit_callbacks,
        method="random",
        samples=7,
        seed=None,
        ranges={},
    )
    assert job.method == "random"
    assert job.samples == job.combinations == 7
    assert 0 <= job.seed < 2**31
    first = [c for _, _, combos in chunks_of(job) for c in combos]
    again = [c for _, _, combos in chunks_of(job) for c in combos]
    assert first == again
    assert all(c["fast"] < c["slow"] for c in first)


# --- chunks and the final step --------------------------------------------------------------


def test_chunks_in_any_order_give_every_row_and_the_same_best(
    world, django_capture_on_commit_callbacks
):
    job = _create(
        world,
        django_capture_on_commit_callbacks,
        ranges={"fast": {"low": 5, "high": 50, "step": 5}, "slow": {"low": 20, "high": 200}},
        objective="sortino",
    )
    chunks = chunks_of(job)
    assert len(chunks) > 3
    _run_all(job, order=list(reversed(range(len(chunks)))))
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.COMPLETED
    assert job.done == job.combinations == OptimizationRow.objects.filter(job=job).count()
    assert job.chunks_done == job.chunk_count == len(chunks)
    rows = list(OptimizationRow.objects.filter(job=job))
    assert sorted(r.index for r in rows) == list(range(job.combinations))
    ranked = rank_rows(
        [
            {"index": r.index, "objective": math.nan if r.objective is None else r.objective}
            for r in rows
        ]
    )
    assert job.best_index == ranked[0]["index"]
    best = next(r for r in rows if r.index == job.best_index)
    assert job.best_params == best.params
    assert job.best_objective == best.objective == best.sortino
    assert job.qualified == sum(1 for r in rows if r.qualified)
    assert job.timings["workers"] == ["here@test"]
    state = optimization_state(job)
    assert state["finished"]
    assert state["progress"] == 1.0
    assert state["done"] == job.combinations


def test_stored_rows_equal_backtests_of_the_same_parameters(
    world, django_capture_on_commit_callbacks
):
    job = _create(world, django_capture_on_commit_callbacks, objective="profit_factor")
    _run_all(job)
    candles = load_candles(world["series"], start_ts=job.start_ts, end_ts=job.end_ts + 1)
    spec = spec_from_dict(job.spec)
    rows = list(OptimizationRow.objects.filter(job=job).order_by("index"))
    for row in rows[::3]:  # a spot-check of several
        single = run_backtest(candles, spec, row.params, sim_config(job.settings))
        m = single.metrics
        assert row.trades == single.sim.trades.shape[0]
        assert row.final_equity == pytest.approx(single.sim.equity[-1], rel=1e-12)
        for key in ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate"):
            expected = m[key]
            got = getattr(row, key)
            assert (got is None and math.isnan(expected)) or got == pytest.approx(
                expected, rel=1e-12
            ), key
        pf = m["profit_factor"]
        assert (row.profit_factor is None and math.isnan(pf)) or row.profit_factor == pf
        assert (row.objective is None) or row.objective == row.profit_factor


def test_a_chunk_delivered_twice_is_stored_once(world, django_capture_on_commit_callbacks):
    job = _create(world, django_capture_on_commit_callbacks)
    ((index, first, combos),) = chunks_of(job)
    one = optimization_run_chunk(job_id=job.pk, chunk=index, first=first, combinations=combos)
    two = optimization_run_chunk(job_id=job.pk, chunk=index, first=first, combinations=combos)
    assert one["stored"]
    assert not two["stored"]
    job.refresh_from_db()
    assert job.done == job.combinations == OptimizationRow.objects.filter(job=job).count()
    assert OptimizationChunk.objects.filter(job=job).count() == 1


def test_a_lost_chunk_fails_the_job_at_the_final_step(world, django_capture_on_commit_callbacks):
    job = _create(world, django_capture_on_commit_callbacks, ranges={"fast": [5, 10], "slow": {}})
    chunks = chunks_of(job)
    assert len(chunks) > 1
    i, first, combos = chunks[0]
    optimization_run_chunk(job_id=job.pk, chunk=i, first=first, combinations=combos)
    optimization_finalize(job_id=job.pk, results=[])
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.FAILED
    assert f"Only 1 of {len(chunks)} chunks" in job.error


def test_cancel_stops_chunks_that_have_not_run(world, django_capture_on_commit_callbacks):
    job = _create(world, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        cancelled = optimization_cancel(user=world["user"], job=job)
    assert cancelled.status == OptimizationJob.Status.CANCELLED
    ((index, first, combos),) = chunks_of(job)
    info = optimization_run_chunk(job_id=job.pk, chunk=index, first=first, combinations=combos)
    assert info["skipped"]
    assert not info["stored"]
    optimization_finalize(job_id=job.pk, results=[info])
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.CANCELLED
    assert not OptimizationRow.objects.filter(job=job).exists()
    with pytest.raises(Conflict, match="already cancelled"):
        optimization_cancel(user=world["user"], job=job)
    with pytest.raises(NotFound):
        optimization_cancel(user=make_user(), job=job)


def test_a_job_whose_owner_lost_pro_fails_with_the_reason(
    world, django_capture_on_commit_callbacks
):
    job = _create(world, django_capture_on_commit_callbacks)
    Subscription.objects.filter(user=world["user"]).update(status=Subscription.Status.CANCELED)
    ((index, first, combos),) = chunks_of(job)
    info = optimization_run_chunk(job_id=job.pk, chunk=index, first=first, combinations=combos)
    assert info["skipped"]
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.FAILED
    assert "Pro plan required" in job.error


def test_a_market_deleted_before_the_run_fails_the_job(world, django_capture_on_commit_callbacks):
    job = _create(world, django_capture_on_commit_callbacks)
    MarketSeries.objects.filter(pk=world["series"].pk).delete()
    ((index, first, combos),) = chunks_of(job)
    info = optimization_run_chunk(job_id=job.pk, chunk=index, first=first, combinations=combos)
    assert "deleted" in info["error"]
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.FAILED
    assert job.error == "The market this job uses was deleted."


# --- from a row to a backtest ---------------------------------------------------------------


def test_a_row_becomes_a_backtest_of_its_parameters(world, django_capture_on_commit_callbacks):
    job = _create(world, django_capture_on_commit_callbacks)
    _run_all(job)
    row = OptimizationRow.objects.get(job=job, index=job.best_index)
    with django_capture_on_commit_callbacks(execute=False):
        backtest = optimization_row_backtest(user=world["user"], job=job, row=row)
    assert backtest.status == Backtest.Status.QUEUED
    assert backtest.param_values == row.params
    assert backtest.strategy_id == world["strategy"].pk
    assert backtest.series_order == [world["series"].pk]
    assert (backtest.start_ts, backtest.end_ts) == (job.start_ts, job.end_ts)
    assert backtest.settings == job.settings
    with pytest.raises(NotFound):
        optimization_row_backtest(user=make_user(), job=job, row=row)


def test_a_row_is_not_backtested_once_the_strategy_changed_or_went(
    world, django_capture_on_commit_callbacks
):
    job = _create(world, django_capture_on_commit_callbacks)
    _run_all(job)
    row = OptimizationRow.objects.filter(job=job).first()
    Strategy.objects.filter(pk=world["strategy"].pk).update(entry_long="close > sma(close, slow)")
    with pytest.raises(ApplicationError, match="was edited after this optimization ran"):
        optimization_row_backtest(user=world["user"], job=job, row=row)
    Strategy.objects.filter(pk=world["strategy"].pk).delete()
    job.refresh_from_db()
    with pytest.raises(ApplicationError, match="was deleted"):
        optimization_row_backtest(user=world["user"], job=job, row=row)
    assert not Backtest.objects.exists()


def test_a_job_whose_workers_died_stops_holding_a_slot(world, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from config.runs import lifecycle

    _limit(world, max_concurrent_backtests=1)
    job = _create(world, django_capture_on_commit_callbacks)
    silent = timezone.now() - lifecycle.stale_after() - timedelta(minutes=1)
    OptimizationJob.objects.filter(pk=job.pk).update(
        status=OptimizationJob.Status.RUNNING, started_at=silent, heartbeat_at=silent
    )
    assert lifecycle.sweep() == [("optimization", job.pk)]
    fresh = _create(world, django_capture_on_commit_callbacks)
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.FAILED
    assert "stopped answering" in job.error
    assert fresh.status == OptimizationJob.Status.QUEUED
