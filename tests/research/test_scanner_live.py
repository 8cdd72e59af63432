"""Scans in the background: the beat task through a real Celery worker, progress messages on
the real channel layer, the websocket consumer's gate, and notifications of new signals."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connections
from django.utils import timezone

from accounts.notifications import user_group
from backtester.models import Alert, ScanRun, Watchlist
from backtester.services.scanner import _new_scan, scan_execute
from backtester.tasks.scanner import scans_due_task
from config.runs.consumers import RunConsumer
from tests.conftest import arun
from tests.research.scanner_support import demo_market, demo_watchlist, make_user


def _wait_for(predicate, timeout: float = 90.0, what: str = "the worker") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} did not finish within {timeout} s")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_beat_task_queues_due_scans_that_a_real_worker_runs_and_stores(celery_worker_process):
    demo_market()
    user = make_user()
    due = demo_watchlist(user, name="Hourly", schedule_minutes=60)
    idle = demo_watchlist(user, name="Manual only")
    Watchlist.objects.filter(pk=due.pk).update(next_run_at=timezone.now() - timedelta(minutes=1))

    # What Celery beat sends every minute, delivered to the worker's queue.
    scans_due_task.apply_async(queue=settings.CELERY_TASK_DEFAULT_QUEUE)

    def finished() -> bool:
        run = ScanRun.objects.filter(watchlist=due).first()
        return run is not None and not run.is_active

    _wait_for(finished, what="the scheduled scan")
    run = ScanRun.objects.get(watchlist=due)
    assert run.status == ScanRun.Status.COMPLETED, run.error
    assert run.trigger == ScanRun.Trigger.SCHEDULE
    signals = dict(Alert.objects.filter(scan=run).values_list("symbol", "signal"))
    assert signals == {
        "BUY/USDT": "BUY",
        "SELL/USDT": "SELL",
        "HOLD/USDT": "HOLD",
        "NEW/USDT": "HOLD",
    }
    assert not ScanRun.objects.filter(watchlist=idle).exists()
    due.refresh_from_db()
    assert due.next_run_at > timezone.now()


async def _drain(
    layer, channel: str, until_final: bool = True, timeout: float = 10.0
) -> list[dict]:
    seen: list[dict] = []
    while True:
        message = await asyncio.wait_for(layer.receive(channel), timeout)
        seen.append(message)
        if until_final and message.get("type") == "run.status" and message.get("finished"):
            return seen


@pytest.mark.django_db(transaction=True)
def test_a_scan_reports_its_stages_and_progress_to_its_group_then_the_outcome():
    demo_market()
    user = make_user()
    run = _new_scan(demo_watchlist(user), trigger=ScanRun.Trigger.MANUAL)
    layer = get_channel_layer()

    async def listen() -> str:
        channel = await layer.new_channel()
        await layer.group_add(run.group, channel)
        return channel

    channel = arun(listen())
    scan_execute(scan_id=run.pk)
    messages = arun(_drain(layer, channel))

    assert messages[0]["type"] == "run.status"
    assert messages[0]["status"] == "running"
    stages = [m["stage"] for m in messages]
    for stage in ("loading", "scanning", "saving", "done"):
        assert stage in stages
    assert stages.index("loading") < stages.index("scanning") < stages.index("saving")
    progress = [m["progress"] for m in messages]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    loading = [m for m in messages if m["stage"] == "loading"]
    assert loading[-1]["symbols_done"] == loading[-1]["symbols_total"] == 4
    final = messages[-1]
    assert final["status"] == "completed"
    assert final["counts"] == {"BUY": 1, "SELL": 1, "HOLD": 2}
    assert final["id"] == run.pk


@pytest.mark.django_db(transaction=True)
def test_new_signals_are_sent_to_the_owners_notifications_when_the_watchlist_asks():
    demo_market()
    user = make_user()
    loud = demo_watchlist(user, name="Loud", notify=True)
    quiet = demo_watchlist(user, name="Quiet", notify=False)
    layer = get_channel_layer()

    async def listen() -> str:
        channel = await layer.new_channel()
        await layer.group_add(user_group(user.pk), channel)
        return channel

    channel = arun(listen())
    scan_execute(scan_id=_new_scan(quiet, trigger="manual").pk)
    scan_execute(scan_id=_new_scan(loud, trigger="manual").pk)
    note = arun(asyncio.wait_for(layer.receive(channel), 10))
    assert note["type"] == "notify"
    assert note["kind"] == "scanner.alerts"
    assert note["payload"]["watchlist"] == "Loud"
    assert {(a["symbol"], a["signal"]) for a in note["payload"]["alerts"]} == {
        ("BUY/USDT", "BUY"),
        ("SELL/USDT", "SELL"),
    }
    # A second scan finds the same signals: nothing new, nothing sent.
    scan_execute(scan_id=_new_scan(loud, trigger="manual").pk)

    async def nothing_more() -> bool:
        try:
            await asyncio.wait_for(layer.receive(channel), 1.5)
        except TimeoutError:
            return True
        return False

    assert arun(nothing_more())


def _communicate(user, scan_id: int) -> tuple[bool, int | None, dict | None]:
    async def scenario():
        comm = WebsocketCommunicator(RunConsumer.as_asgi(), f"/ws/runs/scan/{scan_id}/")
        comm.scope["user"] = user
        comm.scope["url_route"] = {"kwargs": {"kind": "scan", "pk": scan_id}}
        connected, code = await comm.connect()
        first = await comm.receive_json_from(timeout=5) if connected else None
        await comm.disconnect()
        await database_sync_to_async(connections.close_all)()
        return connected, code, first

    return arun(scenario())


@pytest.mark.django_db(transaction=True)
def test_the_scan_socket_admits_only_the_scans_owner_on_pro():
    from accounts.models import Subscription, User

    demo_market()
    owner = make_user()
    run = _new_scan(demo_watchlist(owner), trigger="manual")
    connected, _, first = _communicate(owner, run.pk)
    assert connected
    assert first["type"] == "run.status"
    assert first["status"] == "queued"
    assert _communicate(make_user(), run.pk)[:2] == (False, 4404)
    assert _communicate(make_user(pro=False), run.pk)[:2] == (False, 4403)
    assert _communicate(AnonymousUser(), run.pk)[:2] == (False, 4401)
    Subscription.objects.filter(user=owner).delete()
    owner = User.objects.get(pk=owner.pk)  # a fresh read, as the next request would make
    assert _communicate(owner, run.pk)[:2] == (False, 4403)
