"""The copy-trading API: following, bad input, ownership, copies and the audit trail."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from copytrading.models import Subscription
from copytrading.services import copy_replicate, leader_fill_record
from tests.backtester.backtest_factories import make_user
from tests.copytrading.conftest import make_account
from tests.copytrading.test_services import leader_fill

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    c = APIClient()
    c.force_authenticate(user)
    return c


def test_follow_a_leader_and_read_it_back(copy_setup):
    s = copy_setup
    account = make_account(s.follower, label="api")
    created = api(s.follower).post(
        "/api/v1/copy/subscriptions/",
        {
            "leader": s.leader.pk,
            "account": account.pk,
            "settings": {"sizing_mode": "fixed_ratio", "ratio": "0.25", "allowed_sides": ["buy"]},
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["sizing_mode"], body["ratio"], body["allowed_sides"]) == (
        "fixed_ratio",
        "0.250000000000000000",
        ["buy"],
    )
    listed = api(s.follower).get("/api/v1/copy/subscriptions/").json()
    assert {r["id"] for r in listed["results"]} == {s.subscription.pk, body["id"]}


def test_bad_settings_are_a_400_naming_the_field_and_nothing_is_saved(copy_setup):
    s = copy_setup
    account = make_account(s.follower, label="api2")
    response = api(s.follower).post(
        "/api/v1/copy/subscriptions/",
        {"leader": s.leader.pk, "account": account.pk, "settings": {"slippage_guard": "0.9"}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "slippage_guard": ["slippage_guard must be more than 0 and at most 0.1."]
    }
    assert not Subscription.objects.filter(account=account).exists()
    patched = api(s.follower).patch(
        f"/api/v1/copy/subscriptions/{s.subscription.pk}/", ["not", "an", "object"], format="json"
    )
    assert patched.status_code == 400


def test_own_leader_from_the_same_account_is_refused(copy_setup):
    s = copy_setup
    response = api(s.leader_user).post(
        "/api/v1/copy/subscriptions/",
        {"leader": s.leader.pk, "account": s.leader_account.pk},
        format="json",
    )
    assert response.status_code == 400
    assert "account" in response.json()["error"]["fields"]


def test_another_users_subscription_is_a_404(copy_setup):
    s = copy_setup
    stranger = api(make_user())
    base = f"/api/v1/copy/subscriptions/{s.subscription.pk}/"
    for method, url in [
        ("get", base),
        ("patch", base),
        ("get", base + "copies/"),
        ("get", base + "decisions/"),
        ("post", base + "stop/"),
    ]:
        response = getattr(stranger, method)(url, {}, format="json")
        assert response.status_code == 404, (method, url)
        assert response.json()["error"]["code"] == "not_found"
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"


def test_copies_and_decisions_with_filters(copy_setup):
    s = copy_setup
    f1, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    copy_replicate(leader_fill_id=f1.pk, subscription_id=s.subscription.pk)
    s.follower_x.set_price("BTC/USDT", "70000")
    f2, _ = leader_fill_record(leader=s.leader, fill=leader_fill(amount="0.1"))
    copy_replicate(leader_fill_id=f2.pk, subscription_id=s.subscription.pk)
    c = api(s.follower)
    base = f"/api/v1/copy/subscriptions/{s.subscription.pk}/"
    copies = c.get(base + "copies/").json()["results"]
    assert [(o["state"], o["amount"], o["leader_fill"]) for o in copies] == [
        ("filled", "0.050000000000000000", f1.fill_id)
    ]
    assert copies[0]["slippage_bps"] == "0.0000"  # filled at the leader's 60 000
    skipped = c.get(base + "decisions/", {"outcome": "skipped"}).json()["results"]
    assert [(d["reason"], d["leader_fill"]) for d in skipped] == [("slippage_exceeded", f2.fill_id)]
    assert c.get(base + "decisions/", {"outcome": "bogus"}).status_code == 400
