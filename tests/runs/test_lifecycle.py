"""The one run lifecycle (config/runs), the same tests for every kind of background run:
enqueue after commit (the kind's task, found by name), claim once, progress over the websocket,
completion, failure with a readable message, cancel, and the sweeper that fails a run whose
worker stopped beating. A real worker process killed mid-run is in test_killed_worker.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from kombu import Connection

from config.asgi import application
from config.celery import app
from config.exceptions import ApplicationError, Conflict, NotFound
from config.runs import lifecycle, registry
from config.runs.models import RunStatus
from tests.accounts import test_permission_matrix as matrix
from tests.backtester.backtest_factories import make_user
from tests.conftest import arun

pytestmark = pytest.mark.django_db(transaction=True)

# Every kind and the permission matrix's builder of a queued one (the same world objects).
KINDS = dict(matrix.RUN_KINDS)


def test_every_registered_kind_is_tested_here():
    assert {entry.kind for entry in registry.kinds()} == set(KINDS)


@pytest.fixture
def world():
    return matrix.World()


def _run(world: Any, kind: str) -> Any:
    run = getattr(world, KINDS[kind])
    type(run).objects.filter(pk=run.pk).update(
        status=RunStatus.QUEUED, progress=0.0, stage="", error="", finished_at=None
    )
    run.refresh_from_db()
    return run


def _connect(run: Any, user: Any) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application, run.socket_path, headers=[(b"origin", b"http://localhost")]
    )
    comm.scope["user"] = user
    return comm


async def _close(comm: WebsocketCommunicator) -> None:
    await comm.disconnect()
    await database_sync_to_async(connections.close_all)()


def _queued_messages(queue: str) -> list[Any]:
    """Take every message waiting in ``queue`` on the real broker (no worker consumes it now)."""
    taken = []
    with Connection(settings.CELERY_BROKER_URL) as conn:
        simple = conn.SimpleQueue(queue)
        while True:
            try:
                message = simple.get(block=False)
            except simple.Empty:
                break
            taken.append(message)
            message.ack()
        simple.close()
    return taken


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "optimization"])
def test_enqueue_sends_the_kinds_task_by_name_only_after_commit(world, kind):
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    run = _run(world, kind)
    type(run).objects.filter(pk=run.pk).update(task_id="")
    run.refresh_from_db()
    _queued_messages(queue)  # what building the world sent
    with transaction.atomic():
        lifecycle.enqueue(run)
        assert run.task_id  # saved with the run, so a cancel can revoke it
        assert _queued_messages(queue) == []  # nothing leaves before the commit
    messages = _queued_messages(queue)
    assert [(m.headers["task"], m.headers["id"]) for m in messages] == [
        (registry.get(kind).task, run.task_id)
    ]
    assert messages[0].headers["argsrepr"] == f"[{run.pk}]"


def test_an_optimization_is_sent_as_a_chord_by_name(world):
    from backtester.services.optimization import _send_chord

    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    job = _run(world, "optimization")
    _queued_messages(queue)
    combos = [{"fast": 5, "slow": 30}, {"fast": 10, "slow": 30}, {"fast": 5, "slow": 40}]
    with transaction.atomic():
        lifecycle.enqueue(job, send=lambda a: _send_chord(a, job.pk, combos, [(0, 2), (2, 1)]))
    names = [m.headers["task"] for m in _queued_messages(queue)]
    assert names == ["backtester.optimization_chunk"] * 2


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_run_is_claimed_once_and_streams_progress_then_completion(world, kind):
    run = _run(world, kind)
    model = type(run)

    async def scenario() -> list[dict]:
        comm = _connect(run, world.owner)
        connected, _ = await comm.connect(timeout=10)
        assert connected
        got = [await comm.receive_json_from(timeout=5)]
        claimed = await database_sync_to_async(lifecycle.claim)(model, run.pk)
        assert claimed is not None
        # A second delivery of the task finds nothing to run.
        assert await database_sync_to_async(lifecycle.claim)(model, run.pk) is None
        await database_sync_to_async(lifecycle.progress)(
            model, run.pk, fraction=0.4, stage="loading", extra={"note": "halfway"}
        )
        assert await database_sync_to_async(lifecycle.complete)(model, run.pk)
        for _ in range(3):
            got.append(await comm.receive_json_from(timeout=5))
        await _close(comm)
        return got

    snapshot, running, step, done = arun(scenario())
    assert (snapshot["type"], snapshot["kind"], snapshot["status"]) == (
        "run.status",
        kind,
        "queued",
    )
    assert (running["type"], running["status"]) == ("run.status", "running")
    assert step["type"] == "run.progress"
    assert (step["progress"], step["stage"], step["note"]) == (0.4, "loading", "halfway")
    assert (done["type"], done["status"], done["progress"], done["finished"]) == (
        "run.status",
        "completed",
        1.0,
        True,
    )
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED
    assert run.started_at <= run.heartbeat_at <= run.finished_at


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_failing_run_fails_with_a_message_its_owner_can_read(world, kind):
    run = _run(world, kind)
    model = type(run)

    def refuse(_: Any) -> None:
        raise ApplicationError("The market this run uses was deleted.")

    assert lifecycle.execute(model, run.pk, refuse) is False
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.FAILED, "The market this run uses was deleted.")

    other = _run(world, kind)

    def crash(_: Any) -> None:
        raise ZeroDivisionError("no")

    lifecycle.execute(model, other.pk, crash)
    other.refresh_from_db()
    noun = registry.get(kind).noun
    assert other.status == RunStatus.FAILED
    assert other.error.startswith(f"The {noun} stopped on an internal error (ZeroDivisionError)")


@pytest.mark.parametrize("kind", list(KINDS))
def test_cancel_stops_a_run_at_its_next_step_and_only_its_owner_may(world, kind):
    run = _run(world, kind)
    model = type(run)
    lifecycle.claim(model, run.pk)
    with pytest.raises(NotFound):
        lifecycle.cancel(run, user=world.other)
    cancelled = lifecycle.cancel(run, user=world.owner)
    assert cancelled.status == RunStatus.CANCELLED
    with pytest.raises(lifecycle.Cancelled):
        lifecycle.progress(model, run.pk, fraction=0.9)
    assert not lifecycle.complete(model, run.pk)
    with pytest.raises(Conflict):
        lifecycle.cancel(run, user=world.owner)
    run.refresh_from_db()
    assert (run.status, run.progress) == (RunStatus.CANCELLED, 0.0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_sweeper_fails_a_run_whose_heartbeat_stopped(world, kind):
    run = _run(world, kind)
    model = type(run)
    lifecycle.claim(model, run.pk)
    assert lifecycle.sweep() == []  # it beat just now
    silent = timezone.now() - lifecycle.stale_after() - timedelta(seconds=1)
    model.objects.filter(pk=run.pk).update(heartbeat_at=silent)

    async def scenario() -> dict:
        comm = _connect(run, world.owner)
        assert (await comm.connect(timeout=10))[0]
        await comm.receive_json_from(timeout=5)  # the snapshot: running
        swept = await database_sync_to_async(lifecycle.sweep)()
        assert swept == [(kind, run.pk)]
        message = await comm.receive_json_from(timeout=5)
        await _close(comm)
        return message

    message = arun(scenario())
    assert (message["status"], message["finished"]) == ("failed", True)
    noun = registry.get(kind).noun
    assert message["error"] == (
        f"The worker running this {noun} stopped answering (no sign of life for 3 minutes: it "
        "was restarted, killed or lost). Nothing more was saved; run it again."
    )
    assert lifecycle.sweep() == []  # once


def test_a_heartbeat_thread_keeps_a_long_step_alive(world, settings):
    settings.RUN_HEARTBEAT_SECONDS = 0.05
    settings.RUN_STALE_AFTER_SECONDS = 0.5
    run = _run(world, "backtest")

    def slow(_: Any) -> dict[str, Any]:
        import time

        time.sleep(1.2)  # longer than the stale time, without a progress step
        assert lifecycle.sweep() == []
        return {}

    assert lifecycle.execute(type(run), run.pk, slow)


def test_the_sweeper_runs_on_beat_and_the_stated_time_is_minutes():
    schedule = settings.CELERY_BEAT_SCHEDULE["runs-sweep-stale"]
    assert schedule["task"] == "runs.sweep"
    assert schedule["schedule"] <= 60
    assert lifecycle.stale_after() == timedelta(minutes=3)
    app.loader.import_default_modules()
    assert "runs.sweep" in app.tasks


def test_the_state_url_is_the_sockets_fallback(world):
    from django.test import Client

    run = _run(world, "scan")
    client = Client()
    client.force_login(world.owner)
    state = client.get(f"/runs/scan/{run.pk}/state/").json()
    assert (state["type"], state["kind"], state["id"], state["status"]) == (
        "run.status",
        "scan",
        run.pk,
        "queued",
    )
    assert client.get(f"/runs/nothing/{run.pk}/state/").status_code == 404
    stranger = Client()
    stranger.force_login(make_user())
    assert stranger.get(f"/runs/scan/{run.pk}/state/").status_code == 404
