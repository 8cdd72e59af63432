"""The leader declares its stops (API and the dashboard's form); the next opening fill carries
the stop, which fixed-risk followers size from."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.test import Client
from rest_framework.test import APIClient

from copytrading.models import Leader
from copytrading.services import leader_fill_record
from tests.backtester.backtest_factories import make_user
from tests.copytrading.test_services import leader_fill

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    c = APIClient()
    c.force_authenticate(user)
    return c


def stops_url(leader: Leader) -> str:
    return f"/api/v1/copy/leaders/{leader.pk}/stops/"


def test_the_owner_declares_a_stop_and_the_next_opening_fill_carries_it(copy_setup):
    s = copy_setup
    owner = api(s.leader_user)
    response = owner.post(
        stops_url(s.leader), {"symbol": "btc/usdt", "stop_price": "58500.50"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json() == {"leader": s.leader.pk, "stops": {"BTC/USDT": "58500.5"}}
    assert owner.get(stops_url(s.leader)).json()["stops"] == {"BTC/USDT": "58500.5"}
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    assert fill.stop_price == D("58500.5")

    cleared = owner.post(stops_url(s.leader), {"symbol": "BTC/USDT", "stop_price": None}, "json")
    assert cleared.status_code == 200
    assert cleared.json()["stops"] == {}
    assert Leader.objects.get(pk=s.leader.pk).stops == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"symbol": "BTCUSDT", "stop_price": "1"}, "symbol"),
        ({"symbol": "BTC/USDT", "stop_price": "cheap"}, "stop_price"),
        ({"symbol": "BTC/USDT", "stop_price": "-5"}, "stop_price"),
        ({"symbol": "BTC/USDT", "stop_price": "NaN"}, "stop_price"),
        ({"stop_price": "1"}, "symbol"),
    ],
)
def test_bad_stop_input_is_a_400_naming_the_field_and_changes_nothing(copy_setup, body, field):
    s = copy_setup
    response = api(s.leader_user).post(stops_url(s.leader), body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"]
    assert Leader.objects.get(pk=s.leader.pk).stops == {}


def test_another_users_leader_stops_are_a_404_and_stay_unchanged(copy_setup):
    s = copy_setup
    for user in (s.follower, make_user()):
        stranger = api(user)
        assert stranger.get(stops_url(s.leader)).status_code == 404
        response = stranger.post(
            stops_url(s.leader), {"symbol": "BTC/USDT", "stop_price": "1"}, format="json"
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert Leader.objects.get(pk=s.leader.pk).stops == {}


def test_a_retired_leader_takes_no_stop(copy_setup):
    s = copy_setup
    Leader.objects.filter(pk=s.leader.pk).update(status="retired")
    response = api(s.leader_user).post(
        stops_url(s.leader), {"symbol": "BTC/USDT", "stop_price": "1"}, format="json"
    )
    assert response.status_code == 400
    assert "retired" in response.json()["error"]["message"]


def test_the_dashboard_form_sets_and_clears_a_stop(copy_setup):
    s = copy_setup
    page = Client()
    page.force_login(s.leader_user)
    url = f"/copy/leaders/{s.leader.pk}/stop/"
    shown = page.get(f"/copy/leaders/{s.leader.pk}/").content.decode()
    assert 'id="stop-set-form"' in shown
    response = page.post(url, {"symbol": "ETH/USDT", "stop_price": "2900"}, follow=True)
    text = response.content.decode()
    assert "stop in ETH/USDT set at 2900" in text
    assert "ETH/USDT: 2900" in text
    assert Leader.objects.get(pk=s.leader.pk).stops == {"ETH/USDT": "2900"}
    bad = page.post(url, {"symbol": "ETH/USDT", "stop_price": "-1"}, follow=True)
    assert "The stop must be a price above 0." in bad.content.decode()
    page.post(url, {"symbol": "ETH/USDT", "stop_price": ""})
    assert Leader.objects.get(pk=s.leader.pk).stops == {}
    # Not the owner: the form's target is a 404, and the page shows no form.
    other = Client()
    other.force_login(s.follower)
    assert other.post(url, {"symbol": "ETH/USDT", "stop_price": "1"}).status_code == 404
    assert 'id="stop-set-form"' not in other.get(f"/copy/leaders/{s.leader.pk}/").content.decode()
