"""Gating in background work: a task queued for a user who has lost Pro since is refused before
it does anything, marked failed with the reason, and the user is told why.

``TASK_GATING`` records how every Celery task of the product is gated; a new task without an
entry fails ``test_every_task_has_a_gating_entry``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from channels.layers import get_channel_layer
from django.test import Client
from django.urls import reverse

from accounts.gating import UPGRADE_MESSAGE
from accounts.models import Subscription, User
from backtester.models import Backtest, FetchJob, MarketSeries
from backtester.services.marketdata import fetch_job_create, fetch_job_execute
from backtester.tasks.backtests import run_backtest_task
from backtester.tasks.marketdata import fetch_job_run
from config.celery import app
from config.runs import lifecycle
from tests.backtester.backtest_factories import make_series, make_strategy, make_user, span
from tests.conftest import arun
from tests.fakes.binance import FakeBinance

JAN_1 = 1_704_067_200_000
PLAN_LOST_MESSAGE = lifecycle.PLAN_LOST_MESSAGE.format(noun="download", upgrade=UPGRADE_MESSAGE)

PRO_AT_RUN_TIME = "re-checks the owner's Pro when it starts; refused and marked failed if gone"
# Every task of the product and how it is gated.
TASK_GATING: dict[str, str] = {
    "backtester.run_backtest": PRO_AT_RUN_TIME,
    "backtester.fetch_candles": PRO_AT_RUN_TIME,
    "backtester.parse_upload": PRO_AT_RUN_TIME,
    "backtester.optimization_chunk": PRO_AT_RUN_TIME,
    "backtester.optimization_finalize": PRO_AT_RUN_TIME,
    "backtester.walkforward": PRO_AT_RUN_TIME,
    "backtester.run_montecarlo": PRO_AT_RUN_TIME,
    "backtester.run_stress": PRO_AT_RUN_TIME,
    "backtester.scan_run": PRO_AT_RUN_TIME,
    "backtester.scans_due": "beat, no user: starts only scans whose owner has Pro",
    "accounts.worker_selftest": "no Pro feature: a no-op any signed-in user may send",
    "accounts.billing.resync_ended_periods": "beat, no user: re-reads subscriptions from Stripe",
    "exchanges.paper_match_all": "beat, no user: matches only paper accounts whose owner has Pro",
    "exchanges.check_account": "re-checks the owner's Pro when it starts; skipped, exchange "
    "not contacted, if gone (tests/exchanges/test_account_services.py)",
    "exchanges.check_all_accounts": "beat, no user: tests only accounts whose owner has Pro",
    "risk.kill_switch_retry": "not gated: halting and cancelling must finish even if Pro ended",
    # Copy trading: a follower who lost Pro gets no new positions, but the leader's closes are
    # still copied (leaving them open would be the costlier failure).
    "copytrading.fanout": "live, no user: plans every follower's copy as copy_one does (no "
    "Pro: closes only) and sends them at once",
    "copytrading.copy_one": "re-checks the follower's Pro when it plans: without it, closes only",
    "copytrading.submit": "sends a copy already planned and risk-checked; never a new decision",
    "copytrading.resolve": "looks up a copy already sent; places nothing new",
    "copytrading.sweep": "beat, no user: hands back copies a dead worker left behind",
    "copytrading.adjustment_send": "sends a join / close / stop / repair already planned; "
    "joins and repair buys are planned only for Pro followers, closes always go",
    "copytrading.join": "plans through the copy planner, which skips opens without Pro",
    "copytrading.protections": "beat, no user: one stop-loss / take-profit check per subscription",
    "copytrading.protection_check": "closes only (a copy's own stop or target): closes always go",
    "copytrading.reconcile_all": "beat, no user: one reconciliation per live subscription",
    "copytrading.reconcile": "reports drift; a repair buy is planned only for Pro followers",
    "copytrading.leaders_poll": "beat, no user: one poll task per published leader",
    "copytrading.leader_poll": "records a leader's fills; copies are gated per follower",
    "runs.sweep": "beat, no user: fails runs whose worker stopped beating",
    "backtester.live_bot_step": "re-checks the owner's Pro at each step: without it, no new "
    "entries (exits still run), and the bot's status says why (tests/bots/test_restart.py)",
    "backtester.live_bots_due": "beat, no user: queues a step for each running bot",
    "backtester.live_series_feed": "stores public candles of a shared series, then queues the "
    "steps of its running bots (each step re-checks its owner's Pro)",
    "backtester.grid_bot_step": "re-checks the owner's Pro at each step: without it, no new "
    "grid buys (resting sells still run), and the bot's status says why",
    "backtester.grid_bots_due": "beat, no user: queues a step for each grid bot with work",
    "backtester.search_grids": PRO_AT_RUN_TIME,
    "risk.equity_snapshots": "beat, no user: values only the accounts of owners with Pro "
    "(tests/risk/test_equity_snapshots.py)",
    "copytrading.demo_leader_step": "beat, demo only (COPYTRADING_DEMO_LEADER): the demo "
    "leader's paper trades; its followers' copies are gated per follower",
}
PRODUCT_PREFIXES = ("accounts.", "backtester.", "exchanges.", "copytrading.", "risk.", "runs.")


def test_every_task_has_a_gating_entry():
    app.loader.import_default_modules()
    tasks = {name for name in app.tasks if name.startswith(PRODUCT_PREFIXES)}
    assert "backtester.fetch_candles" in tasks  # the registry is loaded
    assert tasks == set(TASK_GATING), f"add to TASK_GATING: {tasks ^ set(TASK_GATING)}"


@pytest.fixture
def fake_exchange(monkeypatch) -> Iterator[FakeBinance]:
    server = FakeBinance()
    server.serve()
    # The symbol list is cached per exchange URL: a server on a fresh port starts clean.
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": server.base_url}))
    try:
        yield server
    finally:
        server.release.set()
        server.stop()


def _lose_pro(user: User) -> None:
    Subscription.objects.filter(user=user).update(status=Subscription.Status.CANCELED)


@pytest.mark.django_db
def test_a_download_queued_before_pro_ended_is_refused_without_touching_the_exchange(
    fake_exchange, django_capture_on_commit_callbacks
):
    user = make_user()
    with django_capture_on_commit_callbacks(execute=False):
        job = fetch_job_create(
            owner=user, exchange="binance", symbol="BTC/USDT", timeframe="1h", since_ts=JAN_1
        )
    _lose_pro(user)  # e.g. the subscription ended while the job waited in the queue
    requests_before = len(fake_exchange.requests)
    layer = get_channel_layer()

    async def listen() -> str:
        channel = await layer.new_channel()
        await layer.group_add(job.group, channel)
        return channel

    channel = arun(listen())
    with django_capture_on_commit_callbacks(execute=True):  # as the worker's commit would
        fetch_job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == FetchJob.Status.FAILED
    assert job.error == PLAN_LOST_MESSAGE
    assert job.error.startswith("Pro plan required: the download did not run.")
    assert UPGRADE_MESSAGE in job.error
    assert job.started_at is None
    assert job.finished_at is not None
    assert len(fake_exchange.requests) == requests_before  # nothing was asked of the exchange
    assert MarketSeries.objects.get(pk=job.series_id).count == 0
    # The page's websocket hears the end and the reason.
    message = arun(asyncio.wait_for(layer.receive(channel), 5))
    assert (message["type"], message["finished"]) == ("run.status", True)
    assert message["status"] == "failed"
    assert message["error"] == PLAN_LOST_MESSAGE
    # A second delivery of the task changes nothing.
    fetch_job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.error == PLAN_LOST_MESSAGE
    # Back on Pro, the job's page and the API say why it did not run.
    Subscription.objects.filter(user=user).update(status=Subscription.Status.ACTIVE)
    client = Client()
    client.force_login(user)
    page = client.get(reverse("backtester:data_fetch_job", kwargs={"pk": job.pk}))
    assert PLAN_LOST_MESSAGE in page.content.decode()
    api = client.get(reverse("api_md_fetch_detail", kwargs={"pk": job.pk})).json()
    assert (api["status"], api["error"]) == ("failed", PLAN_LOST_MESSAGE)


@pytest.mark.django_db
def test_a_job_of_a_deleted_account_is_a_no_op():
    assert fetch_job_execute(job_id=987654321) is None


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_the_worker_refuses_queued_work_of_a_user_who_lost_pro(celery_worker_process):
    owner = make_user()
    series = make_series(n=300)
    strategy = make_strategy(owner)
    start, end = span(series)
    _lose_pro(owner)
    # Rows as the submit services left them while the owner still had Pro.
    backtest = Backtest.objects.create(
        owner=owner,
        strategy=strategy,
        series_order=[series.pk],
        timeframe="1h",
        start_ts=start,
        end_ts=end,
        spec={"name": strategy.name},
    )
    backtest.series.set([series])
    job = FetchJob.objects.create(owner=owner, series=series, since_ts=start)
    run_backtest_task.delay(backtest.pk)
    fetch_job_run.delay(job.pk)
    _wait_for(
        lambda: Backtest.objects.get(pk=backtest.pk).status != Backtest.Status.QUEUED,
        "the worker to take the backtest",
    )
    _wait_for(
        lambda: FetchJob.objects.get(pk=job.pk).status != FetchJob.Status.QUEUED,
        "the worker to take the download",
    )
    backtest.refresh_from_db()
    job.refresh_from_db()
    assert backtest.status == Backtest.Status.FAILED
    assert backtest.error.startswith("Pro plan required: the backtest did not run.")
    assert backtest.started_at is None
    assert job.status == FetchJob.Status.FAILED
    assert job.error == PLAN_LOST_MESSAGE
    assert job.started_at is None
