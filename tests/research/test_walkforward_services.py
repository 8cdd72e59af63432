"""Walk-forward services against PostgreSQL: submitting (windows, step, the plan's budget of
windows x combinations), the run stored window by window and equal to the engine's own walk-
forward, cancel, and the task on the real worker process."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Plan, User
from backtester.engine.optimize import (
    plan_combinations,
    search_space,
    walk_forward,
    walk_forward_windows,
)
from backtester.marketdata.store import load_candles
from backtester.models import OptimizationJob, WalkForwardJob
from backtester.services.backtests import sim_config
from backtester.services.optimization import optimization_create
from backtester.services.strategies import spec_from_dict
from backtester.services.walkforward import (
    walkforward_cancel,
    walkforward_create,
    walkforward_execute,
    walkforward_state,
)
from config.exceptions import ApplicationError, Conflict, NotFound, PlanRequired
from tests.backtester.backtest_factories import make_series, make_strategy, make_user
from tests.research.optimize_support import request_args
from tests.worker_log import wait_for_log

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    user = make_user()
    series = make_series(n=2000, seed=6)
    return {"user": user, "series": series, "strategy": make_strategy(user)}


def _create(world, capture=None, **overrides) -> WalkForwardJob:
    args: dict[str, Any] = {"train": 600, "test": 300, "unit": "bars"}
    args.update(overrides)
    base = request_args(world["user"], world["strategy"], world["series"])
    base.update({k: v for k, v in args.items() if k in base})
    extra = {k: v for k, v in args.items() if k not in base}
    if capture is None:
        return walkforward_create(**base, **extra)
    with capture(execute=False) as sent:
        job = walkforward_create(**base, **extra)
    assert len(sent) == 1
    return job


def test_create_saves_the_windows_and_the_search(world, django_capture_on_commit_callbacks):
    job = _create(world, django_capture_on_commit_callbacks)
    assert job.status == WalkForwardJob.Status.QUEUED
    assert (job.train, job.test, job.step, job.mode, job.unit) == (600, 300, 300, "rolling", "bars")
    assert job.window_count == 4  # tests at 600, 900, 1200, 1500 .. 1800; 1800+300 > 2000
    assert job.combinations == 11
    assert job.ranges == {"fast": [5, 10, 15, 20], "slow": [20, 40, 60]}
    anchored = _create(
        world, django_capture_on_commit_callbacks, mode="anchored", unit="days", train=40, test=10
    )
    assert anchored.window_count == 4  # 83 days of hours: tests start on days 40, 50, 60, 70


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"step": 100}, "step"),
        ({"train": 1900}, "train"),
        ({"train": 0}, "train"),
        ({"test": "ten"}, "test"),
        ({"mode": "sliding"}, "mode"),
        ({"unit": "weeks"}, "unit"),
        ({"objective": "alpha"}, "objective"),
        ({"constraint": "fast <"}, "constraint"),
    ],
)
def test_bad_input_names_the_field_and_saves_nothing(world, overrides, field):
    with pytest.raises(ApplicationError) as caught:
        _create(world, **overrides)
    assert caught.value.field == field, caught.value.message
    assert not WalkForwardJob.objects.exists()


def test_the_plan_budget_counts_every_windows_search(world):
    Plan.objects.filter(code=Plan.PRO).update(max_optimization_combinations=40)
    world["user"] = User.objects.get(pk=world["user"].pk)
    with pytest.raises(PlanRequired, match=r"4 windows x 11 combinations is 44 runs"):
        _create(world)
    assert not WalkForwardJob.objects.exists()
    job = _create(world, train=900, test=500)  # 2 windows x 11 = 22
    assert job.window_count == 2


def test_research_jobs_share_the_concurrency_limit(world, django_capture_on_commit_callbacks):
    Plan.objects.filter(code=Plan.PRO).update(max_concurrent_backtests=2)
    world["user"] = User.objects.get(pk=world["user"].pk)
    _create(world, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        optimization_create(**request_args(world["user"], world["strategy"], world["series"]))
    with pytest.raises(Conflict):
        _create(world)
    with pytest.raises(Conflict):
        optimization_create(**request_args(world["user"], world["strategy"], world["series"]))
    assert OptimizationJob.objects.count() == 1


def test_the_run_equals_the_engines_walk_forward(world, django_capture_on_commit_callbacks):
    job = _create(world, django_capture_on_commit_callbacks, objective="sortino")
    walkforward_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == WalkForwardJob.Status.COMPLETED, job.error
    assert job.windows_done == job.window_count == len(job.windows) == 4

    # The oracle: the engine's walk-forward on the same data, combinations and settings.
    candles = load_candles(world["series"], start_ts=job.start_ts, end_ts=job.end_ts + 1)
    spec = spec_from_dict(job.spec)
    plan = plan_combinations(
        spec, search_space(spec, job.ranges), constraint=job.constraint or None
    )
    windows = walk_forward_windows(candles.timestamp, train=600, test=300)
    expected = walk_forward(
        candles, spec, plan.combinations, sim_config(job.settings), windows, objective="sortino"
    )
    for stored, want in zip(job.windows, expected.windows, strict=True):
        assert stored["params"] == want.params
        assert stored["test_start"] == want.window.test_start
        assert stored["train_from"] == int(candles.timestamp[want.window.train_start])
        assert stored["test_to"] == int(candles.timestamp[want.window.test_end - 1])
        assert stored["in_sample"]["sortino"] == pytest.approx(want.in_sample["sortino"])
        assert stored["out_of_sample"]["total_return"] == pytest.approx(
            want.out_of_sample["total_return"]
        )
        assert stored["end_equity"] == pytest.approx(want.end_equity)
    assert job.oos_metrics["total_return"] == pytest.approx(expected.metrics["total_return"])
    if math.isfinite(expected.efficiency):
        assert job.efficiency == pytest.approx(expected.efficiency)
    else:
        assert job.efficiency is None
    assert job.stability["fast"]["values"] == [w.params["fast"] for w in expected.windows]
    # The stitched curve ends where the last window ended, on the last test bar.
    assert job.curve["y"][-1] == pytest.approx(expected.windows[-1].end_equity)
    assert job.curve["x"][-1] == int(candles.timestamp[windows[-1].test_end - 1])
    assert np.all(np.diff(job.curve["x"]) > 0)
    state = walkforward_state(job)
    assert state["finished"]
    assert state["done"] == state["total"] == 4


def test_a_queued_walkforward_cancelled_never_runs(world, django_capture_on_commit_callbacks):
    job = _create(world, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        walkforward_cancel(user=world["user"], job=job)
    walkforward_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == WalkForwardJob.Status.CANCELLED
    assert job.windows == []
    with pytest.raises(Conflict):
        walkforward_cancel(user=world["user"], job=job)
    with pytest.raises(NotFound):
        walkforward_cancel(user=make_user(), job=job)


def test_a_walkforward_whose_data_went_away_fails_with_the_reason(
    world, django_capture_on_commit_callbacks
):
    job = _create(world, django_capture_on_commit_callbacks)
    world["series"].delete()
    walkforward_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == WalkForwardJob.Status.FAILED
    assert job.error == "The market this job uses was deleted."


def _wait(predicate, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_a_walkforward_and_reports_each_window(celery_worker_process):
    user = make_user()
    client = Client()
    client.force_login(user)
    series = make_series(n=3000, seed=7)
    world = {"user": user, "series": series, "strategy": make_strategy(user)}
    job = _create(world, train=1000, test=500)
    url = reverse("run_state", kwargs={"kind": "walkforward", "pk": job.pk})
    seen: list[int] = []
    for _ in range(2400):  # poll as the page does when its socket cannot connect
        state = client.get(url).json()
        seen.append(state["done"])
        if state["finished"]:
            break
        time.sleep(0.05)
    assert state["status"] == "completed", state
    assert seen == sorted(seen)
    assert seen[-1] == state["total"] == 4
    wait_for_log(celery_worker_process, f"walk-forward {job.pk} completed")


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_walkforward_keeps_the_windows_done(celery_worker_process):
    user = make_user()
    client = Client()
    client.force_login(user)
    series = make_series(n=20_000, seed=8)
    world = {"user": user, "series": series, "strategy": make_strategy(user)}
    job = _create(
        world,
        train=4000,
        test=1000,
        ranges={"fast": {"low": 5, "high": 50, "step": 2}, "slow": {"low": 20, "high": 200}},
    )
    assert job.window_count == 16
    _wait(
        lambda: WalkForwardJob.objects.filter(pk=job.pk, windows_done__gte=1).exists(),
        "the first window",
    )
    response = client.post(reverse("backtester:walkforward_cancel", kwargs={"pk": job.pk}))
    assert response.status_code == 302
    log = celery_worker_process.log_path
    _wait(lambda: f"walk-forward {job.pk} was cancelled" in log.read_text(), "the worker to stop")
    job.refresh_from_db()
    assert job.status == WalkForwardJob.Status.CANCELLED
    assert 1 <= job.windows_done < job.window_count
    assert len(job.windows) == job.windows_done
