"""Every strategy and backtest URL tried by each persona: the owner, another Pro user (404),
an anonymous visitor (login redirect / 401 / 4401) and a Free user (403 / 4403)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from django.urls import reverse

from accounts.models import Subscription, User
from backtester.models import Backtest
from backtester.services.backtests import backtest_create
from config.asgi import application
from tests.backtester.backtest_factories import make_series, make_strategy, make_user, span
from tests.conftest import arun

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(django_capture_on_commit_callbacks):
    owner = make_user()
    other = make_user()
    free = make_user(pro=False)
    series = make_series(n=500)
    strategy = make_strategy(owner)
    start, end = span(series)
    with django_capture_on_commit_callbacks(execute=False):
        backtest = backtest_create(
            user=owner, strategy=strategy, series=[series], start=start, end=end, settings={}
        )
    return {
        "owner": owner,
        "other": other,
        "free": free,
        "strategy": strategy,
        "backtest": backtest,
    }


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


# (url name, needs an object: "strategy" | "backtest" | None, method, owner's expected status)
PAGES = [
    ("backtester:strategy_list", None, "get", 200),
    ("backtester:strategy_create", None, "get", 200),
    ("backtester:strategy_validate", None, "post", 200),
    ("backtester:strategy_edit", "strategy", "get", 200),
    ("backtester:strategy_delete", "strategy", "get", 200),
    ("backtester:backtest_list", None, "get", 200),
    ("backtester:backtest_create", None, "get", 200),
    ("backtester:backtest_status_panel", None, "get", 200),
    ("backtester:backtest_detail", "backtest", "get", 200),
    ("backtester:backtest_cancel", "backtest", "post", 302),
]
API = [
    ("api_strategy_list", None, "get", 200),
    ("api_strategy_detail", "strategy", "get", 200),
    ("api_backtest_list", None, "get", 200),
    ("api_backtest_detail", "backtest", "get", 200),
    ("api_backtest_result", "backtest", "get", 409),  # queued: no result yet
    ("api_backtest_trades", "backtest", "get", 409),
    ("api_backtest_equity", "backtest", "get", 409),
    ("api_backtest_cancel", "backtest", "post", 200),
]


def _url(world, name, obj):
    if obj is None:
        return reverse(name)
    return reverse(name, kwargs={"pk": world[obj].pk})


def _call(client, method, url, *, api=False):
    if method == "get":
        return client.get(url)
    data = {"expression": "close > 1", "field": "entry_long", "params": "[]"}
    if api:
        return client.post(url, {}, content_type="application/json")
    return client.post(url, data)


@pytest.mark.parametrize(("name", "obj", "method", "expected"), PAGES)
def test_pages_by_persona(world, name, obj, method, expected):
    url = _url(world, name, obj)
    assert _call(_client(world["owner"]), method, url).status_code == expected
    anonymous = _call(_client(), method, url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("account_login"))
    assert _call(_client(world["free"]), method, url).status_code == 403
    if obj is not None:
        assert _call(_client(world["other"]), method, url).status_code == 404


@pytest.mark.parametrize(("name", "obj", "method", "expected"), API)
def test_api_by_persona(world, name, obj, method, expected):
    url = _url(world, name, obj)
    assert _call(_client(world["owner"]), method, url, api=True).status_code == expected
    assert _call(_client(), method, url, api=True).status_code == 401
    assert _call(_client(world["free"]), method, url, api=True).status_code == 403
    if obj is not None:
        assert _call(_client(world["other"]), method, url, api=True).status_code == 404


def test_another_user_never_sees_my_objects_in_lists(world):
    other = _client(world["other"])
    edit_url = reverse("backtester:strategy_edit", kwargs={"pk": world["strategy"].pk})
    assert edit_url not in other.get(reverse("backtester:strategy_list")).text
    assert edit_url in _client(world["owner"]).get(reverse("backtester:strategy_list")).text
    assert other.get(reverse("api_strategy_list")).json()["count"] == 0
    assert other.get(reverse("api_backtest_list")).json()["count"] == 0
    detail_url = reverse("backtester:backtest_detail", kwargs={"pk": world["backtest"].pk})
    assert detail_url not in other.get(reverse("backtester:backtest_list")).text
    assert detail_url in _client(world["owner"]).get(reverse("backtester:backtest_list")).text


def test_a_stranger_cannot_cancel_my_backtest(world):
    url = reverse("backtester:backtest_cancel", kwargs={"pk": world["backtest"].pk})
    assert _client(world["other"]).post(url).status_code == 404
    world["backtest"].refresh_from_db()
    assert world["backtest"].status == Backtest.Status.QUEUED


def _ws(user, backtest_id):
    async def scenario():
        comm = WebsocketCommunicator(
            application,
            f"/ws/runs/backtest/{backtest_id}/",
            headers=[(b"origin", b"http://localhost")],
        )
        if user is not None:
            comm.scope["user"] = user
        connected, code = await comm.connect(timeout=5)
        first = await comm.receive_json_from(timeout=5) if connected else None
        await comm.disconnect()
        # The consumer's queries ran on asgiref's sync thread; close that thread's connection
        # so the test database can be dropped at the end of the session.
        await database_sync_to_async(connections.close_all)()
        return connected, code, first

    return arun(scenario())


@pytest.mark.django_db(transaction=True)
def test_websocket_by_persona():
    owner, other, free = make_user(), make_user(), make_user(pro=False)
    series = make_series(n=500)
    start, end = span(series)
    backtest = backtest_create(
        user=owner,
        strategy=make_strategy(owner),
        series=[series],
        start=start,
        end=end,
        settings={},
    )
    Backtest.objects.filter(pk=backtest.pk).update(status=Backtest.Status.RUNNING, progress=0.4)
    connected, _, first = _ws(owner, backtest.pk)
    assert connected
    assert first["type"] == "run.status"
    assert first["status"] == "running"
    assert first["progress"] == pytest.approx(0.4)
    assert _ws(None, backtest.pk)[:2] == (False, 4401)
    assert _ws(free, backtest.pk)[:2] == (False, 4403)
    assert _ws(other, backtest.pk)[:2] == (False, 4404)
    assert _ws(owner, backtest.pk + 1000)[:2] == (False, 4404)
    # Pro ends: the owner's socket is refused too.
    Subscription.objects.filter(user=owner).update(status=Subscription.Status.CANCELED)
    assert _ws(User.objects.get(pk=owner.pk), backtest.pk)[:2] == (False, 4403)
