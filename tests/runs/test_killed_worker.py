"""A real worker process killed in the middle of a run: the run must not stay "running" for
ever. Its heartbeat stops with the process, and the sweeper fails it with a message once the
stated time (RUN_STALE_AFTER_SECONDS, shortened here) has passed without one; the page's
websocket hears it. Tried for a backtest and for an optimization's chord."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backtester.models import Backtest, OptimizationJob
from backtester.services.backtests import backtest_create
from backtester.services.optimization import optimization_create
from config.runs import lifecycle
from tests.backtester.backtest_factories import make_series, make_strategy, make_user
from tests.conftest import arun, subprocess_env
from tests.research.optimize_support import request_args, start_workers, stop_workers

pytestmark = pytest.mark.django_db(transaction=True)

STALE_SECONDS = 3.0  # the stated time, shortened for the test (3 minutes by default)


@pytest.fixture
def doomed_worker(django_db_blocker, tmp_path, settings):
    """One real ``celery worker`` process on a queue of its own, beating every 0.2 s."""
    queue = f"doomed-{os.getpid()}-{time.monotonic_ns()}"
    with django_db_blocker.unblock():
        env = subprocess_env()
    env.update(RUN_HEARTBEAT_SECONDS="0.2", CELERY_TASK_DEFAULT_QUEUE=queue)
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    settings.RESEARCH_TASK_QUEUE = queue
    settings.RUN_STALE_AFTER_SECONDS = STALE_SECONDS
    workers = start_workers(
        queue=queue, names=[f"doomed-{os.getpid()}@%h"], env=env, log_dir=tmp_path
    )
    try:
        yield workers[0]
    finally:
        stop_workers(workers)


def _wait_for(predicate, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_mid_run(worker: dict[str, Any], model: Any, pk: int) -> None:
    def running() -> bool:
        run = model.objects.filter(pk=pk).first()
        return bool(run and run.status == "running" and run.heartbeat_at is not None)

    _wait_for(running, "the worker to start the run")
    worker["proc"].send_signal(signal.SIGKILL)
    worker["proc"].wait(timeout=10)
    assert model.objects.get(pk=pk).status == "running"  # killed before it could finish


def _sweep_until_failed(model: Any, pk: int, group: str) -> tuple[float, dict[str, Any]]:
    """Run the sweeper as beat would, listening on the run's group; returns the seconds from
    the last heartbeat to the failure and the message the page received."""
    layer = get_channel_layer()

    async def listen() -> str:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel

    channel = arun(listen())
    assert lifecycle.sweep() == []  # its last heartbeat is too recent yet
    swept = _wait_for(lambda: lifecycle.sweep(), "the sweeper to fail the run", timeout=30)
    assert swept == [(model.kind, pk)]
    run = model.objects.get(pk=pk)
    silent_for = (run.finished_at - run.heartbeat_at).total_seconds()
    message = arun(asyncio.wait_for(layer.receive(channel), 10))
    return silent_for, message


def test_a_backtest_whose_worker_is_killed_mid_run_is_failed_by_the_sweeper(doomed_worker):
    user = make_user()
    client = Client()
    client.force_login(user)
    series = make_series(symbol="BTC/USDT", timeframe="1m", n=300_000, seed=3)
    backtest_create(
        user=user,
        strategy=make_strategy(user),
        series=[series],
        start=int(series.first_ts),
        end=int(series.last_ts),
        settings={},
    )
    backtest = Backtest.objects.get(owner=user)
    _kill_mid_run(doomed_worker, Backtest, backtest.pk)

    silent_for, message = _sweep_until_failed(Backtest, backtest.pk, backtest.group)
    assert STALE_SECONDS <= silent_for <= STALE_SECONDS + 5
    backtest.refresh_from_db()
    assert backtest.status == Backtest.Status.FAILED
    assert "worker running this backtest stopped answering" in backtest.error
    assert (message["type"], message["status"], message["error"]) == (
        "run.status",
        "failed",
        backtest.error,
    )
    assert not hasattr(backtest, "result") or backtest.result is None
    # The page says so too.
    page = client.get(reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})).text
    assert "stopped answering" in page


def test_an_optimization_chord_whose_worker_is_killed_is_failed_by_the_sweeper(doomed_worker):
    user = make_user()
    series = make_series(n=8760, seed=12)
    strategy = make_strategy(user)
    ranges = {"fast": {"low": 5, "high": 50, "step": 1}, "slow": {"low": 20, "high": 200}}
    job = optimization_create(**request_args(user, strategy, series, ranges=ranges))
    assert job.chunk_count >= 20
    _kill_mid_run(doomed_worker, OptimizationJob, job.pk)
    job.refresh_from_db()
    assert job.chunks_done < job.chunk_count

    silent_for, message = _sweep_until_failed(OptimizationJob, job.pk, job.group)
    assert STALE_SECONDS <= silent_for <= STALE_SECONDS + 5
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.FAILED
    assert "worker running this optimization stopped answering" in job.error
    assert (message["status"], message["finished"]) == ("failed", True)
    assert job.finished_at <= timezone.now()
