"""The whole path through the real parts: the form posts a backtest, a real Celery worker
process runs it, progress travels through Redis and daphne to a websocket client signed in with
the session cookie, and the result lands in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import numpy as np
import pytest
import websockets
from django.conf import settings
from django.test import Client
from django.urls import reverse

from backtester.models import Backtest, BacktestResult, BacktestTrade
from backtester.results.store import result_curves
from backtester.selectors.backtests import WORKERS_CACHE_KEY, workers_alive
from config.celery import app
from tests.backtester.backtest_factories import make_series, make_user
from tests.conftest import arun
from tests.worker_log import wait_for_log

pytestmark = pytest.mark.django_db(transaction=True)

BARS = 150_000  # three simulation segments: the curve arrives in three real pieces


def _worker_name() -> str:
    # The name tests/conftest.py gives the session's worker.
    return f"test-{os.getpid()}@{socket.gethostname()}"


def _consume(on: bool) -> None:
    """Make the session's worker stop or resume taking tasks from its queue, so the test can
    join the websocket group before the run starts (deterministic, no sleeps)."""
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    method = app.control.add_consumer if on else app.control.cancel_consumer
    replies = method(queue, destination=[_worker_name()], reply=True, timeout=10)
    assert replies, "the worker did not answer the consumer control command"


def _form(series) -> dict[str, object]:
    return {
        "strategy": "preset:sma_cross",
        "timeframe": "1m",
        "series": [str(series.pk)],
        "initial_cash": "10000",
        "taker_fee": "0.1",
        "maker_fee": "0.05",
        "slippage_bps": "1",
        "fill": "next_open",
        "sizing": "fraction",
        "size_value": "100",
        "stop_loss": "2",
        "take_profit": "0",
        "trailing_stop": "0",
        "max_position_fraction": "100",
        "max_drawdown_halt": "0",
        "daily_loss_limit": "0",
        "p__preset_sma_cross__fast": "20",
        "p__preset_sma_cross__slow": "60",
    }


def _cookie(client: Client) -> str:
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def test_form_to_worker_to_websocket_to_postgresql(celery_worker_process, daphne_server):
    user = make_user()
    client = Client()
    client.force_login(user)
    series = make_series(symbol="BTC/USDT", timeframe="1m", n=BARS, seed=11)

    _consume(False)
    try:
        response = client.post(reverse("backtester:backtest_create"), _form(series))
        assert response.status_code == 302, response.text[:2000]
        backtest = Backtest.objects.get(owner=user)
        assert backtest.status == Backtest.Status.QUEUED
        ws_url = daphne_server.replace("http://", "ws://") + f"/ws/runs/backtest/{backtest.pk}/"

        async def scenario() -> list[dict]:
            received: list[dict] = []
            async with websockets.connect(
                ws_url, additional_headers={"Cookie": _cookie(client)}, origin=daphne_server
            ) as ws:
                # The snapshot is sent after the consumer joined the group: from here on
                # nothing the worker sends can be missed.
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                await asyncio.to_thread(_consume, True)
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                    received.append(message)
                    if message["type"] == "run.status" and message["finished"]:
                        return received

        messages = arun(scenario())
    finally:
        _consume(True)

    snapshot, *rest = messages
    assert snapshot["type"] == "run.status"
    assert snapshot["status"] == "queued"

    progress = [m for m in rest if m["type"] == "run.progress"]
    values = [m["progress"] for m in rest]  # progress steps and status changes alike
    assert values == sorted(values)  # never goes back
    assert values[-1] == 1.0
    assert values[0] < 0.2
    stages = [m["stage"] for m in rest]
    for stage in ("loading", "signals", "simulating", "metrics", "saving", "done"):
        assert stage in stages
    statuses = [m["status"] for m in rest if m["type"] == "run.status"]
    assert statuses[0] == "running"
    assert statuses[-1] == "completed"

    # The curve arrives in pieces while simulating, each piece newer than the last ...
    pieces = [m["equity"] for m in progress if m["equity"]["x"]]
    assert len(pieces) == 3
    xs = np.concatenate([np.asarray(p["x"], np.int64) for p in pieces])
    ys = np.concatenate([np.asarray(p["y"], np.float64) for p in pieces])
    assert np.all(np.diff(xs) > 0)
    assert xs[-1] == series.last_ts

    # ... and every point shown is this run's equity at that bar, as stored in PostgreSQL.
    backtest.refresh_from_db()
    assert backtest.status == Backtest.Status.COMPLETED
    assert backtest.candle_count == BARS
    result = BacktestResult.objects.get(backtest=backtest)
    curves = result_curves(result)
    at = np.searchsorted(curves["timestamp"], xs)
    np.testing.assert_array_equal(curves["timestamp"][at], xs)
    np.testing.assert_array_equal(curves["equity"][at], ys)
    assert BacktestTrade.objects.filter(backtest=backtest).count() == result.trade_count > 0
    assert {"queue", "load", "signals", "simulate", "metrics", "save", "total"} <= set(
        backtest.timings
    )
    # It ran in the worker process, not here.
    wait_for_log(celery_worker_process, f"backtest {backtest.pk} completed")

    # The same request again is answered from the cache at once, with no task.
    again = client.post(reverse("backtester:backtest_create"), _form(series))
    cached = Backtest.objects.filter(owner=user).exclude(pk=backtest.pk).get()
    assert again["Location"] == reverse("backtester:backtest_detail", kwargs={"pk": cached.pk})
    assert cached.status == Backtest.Status.COMPLETED
    assert cached.cached_from_id == backtest.pk
    assert cached.result.trade_count == result.trade_count


def test_the_polling_fallback_reports_the_same_progress(celery_worker_process):
    user = make_user()
    client = Client()
    client.force_login(user)
    series = make_series(symbol="ETH/USDT", timeframe="1h", n=3000, seed=5)
    form = {**_form(series), "timeframe": "1h"}
    response = client.post(reverse("backtester:backtest_create"), form)
    backtest = Backtest.objects.get(owner=user)
    assert response.status_code == 302
    url = reverse("run_state", kwargs={"kind": "backtest", "pk": backtest.pk})
    seen = []
    for _ in range(1200):  # poll as the page does when its socket cannot connect
        state = client.get(url).json()
        seen.append(state["progress"])
        if state["finished"]:
            break
        time.sleep(0.05)
    assert state["status"] == "completed", state
    assert state["progress"] == 1.0
    assert seen == sorted(seen)


def test_status_panel_sees_the_live_worker(celery_worker_process):
    from django.core.cache import cache

    cache.delete(WORKERS_CACHE_KEY)
    state = workers_alive()
    assert state["alive"] is True
    assert _worker_name() in state["names"]
