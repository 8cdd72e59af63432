"""The optimization chord on real parts: two `celery worker` processes share the chunks (both
show up in the chunk results), progress and the best-so-far travel through Redis and daphne to a
websocket client signed in with the session cookie, the callback completes the job in
PostgreSQL, and cancelling mid-run stops the remaining chunks."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
import websockets
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from django_celery_results.models import TaskResult

from backtester.engine.optimize import rank_rows
from backtester.engine.run import run_backtest
from backtester.marketdata.store import load_candles
from backtester.models import OptimizationChunk, OptimizationJob, OptimizationRow
from backtester.services.backtests import sim_config
from backtester.services.optimization import optimization_create
from backtester.services.strategies import spec_from_dict
from tests.backtester.backtest_factories import make_series, make_strategy, make_user
from tests.conftest import arun, subprocess_env
from tests.research.optimize_support import (
    request_args,
    set_consuming,
    start_workers,
    stop_workers,
)

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = f"research-{os.getpid()}"


@pytest.fixture(scope="module")
def two_workers(django_db_setup, django_db_blocker, tmp_path_factory):
    """Two real worker processes consuming a queue of this module's own (the session's worker
    does not take these tasks, and these workers take nothing else)."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    log_dir = tmp_path_factory.mktemp("research-workers")
    names = [f"opt-a-{os.getpid()}@%h", f"opt-b-{os.getpid()}@%h"]
    workers = start_workers(queue=QUEUE, names=names, env=env, log_dir=log_dir)
    try:
        yield workers
    finally:
        stop_workers(workers)


@pytest.fixture
def research_queue(settings):
    settings.RESEARCH_TASK_QUEUE = QUEUE
    return QUEUE


def _cookie(client: Client) -> str:
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def _wait_for(predicate, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_chunks_fan_out_over_two_workers_and_progress_streams_live(
    two_workers, research_queue, daphne_server
):
    user = make_user()
    client = Client()
    client.force_login(user)
    series = make_series(n=8760, seed=12)
    strategy = make_strategy(user)
    ranges = {"fast": {"low": 5, "high": 50, "step": 1}, "slow": {"low": 20, "high": 200}}

    set_consuming(two_workers, QUEUE, False)
    try:
        job = optimization_create(**request_args(user, strategy, series, ranges=ranges))
        assert job.chunk_count >= 20
        ws_url = daphne_server.replace("http://", "ws://") + f"/ws/runs/optimization/{job.pk}/"

        async def scenario() -> list[dict]:
            received: list[dict] = []
            async with websockets.connect(
                ws_url, additional_headers={"Cookie": _cookie(client)}, origin=daphne_server
            ) as ws:
                # The snapshot comes after the consumer joined the group: nothing the workers
                # send from here on can be missed.
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                await asyncio.to_thread(set_consuming, two_workers, QUEUE, True)
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                    received.append(message)
                    if message["type"] == "run.status" and message["finished"]:
                        return received

        messages = arun(scenario())
    finally:
        set_consuming(two_workers, QUEUE, True)

    snapshot, *rest = messages
    assert snapshot["type"] == "run.status"
    assert snapshot["status"] == "queued"
    assert snapshot["done"] == 0
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.COMPLETED, job.error

    # One progress message per chunk, from both workers; the counters reach the total.
    progress = [m for m in rest if m["type"] == "run.progress"]
    assert len(progress) == job.chunk_count
    assert sorted(m["chunks_done"] for m in progress) == list(range(1, job.chunk_count + 1))
    assert max(m["done"] for m in progress) == job.combinations
    names = {w["name"] for w in two_workers}
    assert {m["worker"] for m in progress} == names
    # The best so far only ever improves, and ends at the job's best.
    assert all(m["best"] is not None for m in progress)
    ordered = sorted(progress, key=lambda m: m["chunks_done"])
    ranks = [(-float(m["best"]["objective"]), m["best"]["index"]) for m in ordered]
    assert ranks == sorted(ranks, reverse=True)
    final = [m for m in rest if m["type"] == "run.status"][-1]
    assert final["status"] == "completed"
    assert final["best"]["index"] == job.best_index
    assert final["best"]["params"] == job.best_params

    # Both processes did chunks: their pids and names are in the chunk records ...
    pids = {w["proc"].pid for w in two_workers}
    chunks = list(OptimizationChunk.objects.filter(job=job))
    assert len(chunks) == job.chunk_count
    assert {c.pid for c in chunks} == pids
    assert {c.worker for c in chunks} == names
    # ... in the chunk tasks' own results, which the chord handed to its callback ...
    results = [
        json.loads(r.result)
        for r in TaskResult.objects.filter(task_name="backtester.optimization_chunk")
        if f"[{job.pk}," in (r.task_args or "") or f"({job.pk}," in (r.task_args or "")
    ]
    assert len(results) == job.chunk_count
    assert {r["pid"] for r in results} == pids
    assert {r["worker"] for r in results} == names
    assert job.timings["workers"] == sorted(names)
    assert job.timings["chunks_over"] is True
    # ... and the logs of both workers.
    for w in two_workers:
        assert f"optimization {job.pk} chunk" in w["log"].read_text()

    # Every combination is stored once; the best is the top of the ranking.
    rows = list(OptimizationRow.objects.filter(job=job))
    assert sorted(r.index for r in rows) == list(range(job.combinations))
    ranked = rank_rows([{"index": r.index, "objective": r.objective or float("nan")} for r in rows])
    assert ranked[0]["index"] == job.best_index
    # A spot-check against single backtests of the same parameters.
    candles = load_candles(series, start_ts=job.start_ts, end_ts=job.end_ts + 1)
    spec = spec_from_dict(job.spec)
    for row in sorted(rows, key=lambda r: r.index)[:: max(1, len(rows) // 5)]:
        single = run_backtest(candles, spec, row.params, sim_config(job.settings))
        assert row.final_equity == pytest.approx(single.sim.equity[-1], rel=1e-12)
        assert row.sharpe == pytest.approx(single.metrics["sharpe"], rel=1e-12)
        assert row.trades == single.sim.trades.shape[0]

    # The results page of the finished job renders the table and the charts.
    page = client.get(reverse("backtester:optimization_detail", kwargs={"pk": job.pk}))
    assert page.status_code == 200
    assert 'id="results-table"' in page.text
    assert "chart-heatmap-data" in page.text


def test_cancelling_mid_run_stops_the_remaining_chunks(two_workers, research_queue):
    user = make_user()
    client = Client()
    client.force_login(user)
    series = make_series(n=50_000, seed=3)
    strategy = make_strategy(user)
    ranges = {"fast": {"low": 5, "high": 50, "step": 1}, "slow": {"low": 20, "high": 200}}
    job = optimization_create(**request_args(user, strategy, series, ranges=ranges))
    total = job.combinations

    _wait_for(
        lambda: OptimizationJob.objects.filter(pk=job.pk, chunks_done__gte=1).exists(),
        "the first chunk",
    )
    response = client.post(reverse("backtester:optimization_cancel", kwargs={"pk": job.pk}))
    assert response.status_code == 302
    # The chord's callback runs once every chunk task has returned, skipped or not.
    _wait_for(
        lambda: OptimizationJob.objects.get(pk=job.pk).timings.get("chunks_over"),
        "the chunks to be over",
    )
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.CANCELLED
    assert 0 < job.done < total
    assert job.timings["chunks_skipped"] > 0
    assert OptimizationRow.objects.filter(job=job).count() == job.done
    assert OptimizationChunk.objects.filter(job=job).count() == job.chunks_done < job.chunk_count
