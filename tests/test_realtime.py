"""Round trips through the real parts: a Celery worker process, Redis, daphne, websockets."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from accounts.models import User
from accounts.notifications import notify_user
from accounts.tasks import worker_selftest
from config.asgi import application
from tests.conftest import arun

pytestmark = pytest.mark.django_db(transaction=True)


def test_channel_layer_is_redis_in_the_test_shape():
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert settings.CELERY_BROKER_URL.startswith("redis://")


def test_task_runs_in_a_real_worker_process_and_returns_its_result(celery_worker_process):
    user = User.objects.create_user(email="w@example.com", password="x-unused-123")
    result = worker_selftest.delay(user.pk, time.time())
    payload = result.get(timeout=60)
    worker_pid = int(payload["worker"].rsplit(":", 1)[1])
    assert worker_pid == celery_worker_process.pid  # not this process: a real worker ran it
    assert payload["round_trip_ms"] >= 0


def _session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def _receive_json(ws, timeout: float = 30.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_worker_answer_reaches_the_users_websocket_through_redis_and_daphne(
    celery_worker_process, daphne_server
):
    user = User.objects.create_user(email="ws@example.com", password="x-unused-123")
    cookie = _session_cookie(user)
    ws_url = daphne_server.replace("http://", "ws://") + "/ws/notifications/"

    async def scenario() -> dict:
        async with websockets.connect(
            ws_url, additional_headers={"Cookie": cookie}, origin=daphne_server
        ) as ws:
            await asyncio.sleep(0.3)  # let the consumer join its group before the task runs
            await asyncio.to_thread(worker_selftest.delay, user.pk, time.time())
            return await _receive_json(ws)

    message = arun(scenario())
    assert message["kind"] == "worker_selftest"
    assert int(message["payload"]["worker"].rsplit(":", 1)[1]) == celery_worker_process.pid


def test_anonymous_websocket_is_refused():
    async def scenario() -> tuple[bool, int | None]:
        comm = WebsocketCommunicator(
            application, "/ws/notifications/", headers=[(b"origin", b"http://localhost")]
        )
        connected, code = await comm.connect()
        await comm.disconnect()
        return connected, code

    connected, code = arun(scenario())
    assert connected is False
    assert code == 4401


def test_a_user_receives_only_their_own_notifications():
    alice = User.objects.create_user(email="alice@example.com", password="x-unused-123")
    bob = User.objects.create_user(email="bob@example.com", password="x-unused-123")

    async def scenario() -> tuple[dict, bool]:
        comm = WebsocketCommunicator(
            application, "/ws/notifications/", headers=[(b"origin", b"http://localhost")]
        )
        comm.scope["user"] = alice
        connected, _ = await comm.connect()
        assert connected
        await asyncio.to_thread(notify_user, bob.pk, kind="t", payload={"for": "bob"})
        await asyncio.to_thread(notify_user, alice.pk, kind="t", payload={"for": "alice"})
        first = await comm.receive_json_from(timeout=10)
        nothing_else = await comm.receive_nothing(timeout=0.5)
        await comm.disconnect()
        return first, nothing_else

    first, nothing_else = arun(scenario())
    assert first == {"kind": "t", "payload": {"for": "alice"}}
    assert nothing_else


def test_group_send_crosses_the_redis_layer():
    layer = get_channel_layer()

    async def scenario() -> dict:
        channel = await layer.new_channel()
        await layer.group_add("probe", channel)
        await layer.group_send("probe", {"type": "x", "n": 1})
        return await asyncio.wait_for(layer.receive(channel), 5)

    assert arun(scenario()) == {"type": "x", "n": 1}
