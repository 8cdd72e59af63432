"""The copy-trading API beyond following: publishing, the leader's profile and its own fills,
status changes, stopping, and the copies and decisions with their filters; bad input is a 400,
someone else's object a 404, a Free user a 403 ``plan_required``; answers match the schema."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from copytrading.models import CopyAdjustment, CopyDecision, Leader, Subscription
from copytrading.services import copy_replicate, leader_fill_record
from tests.backtester.backtest_factories import make_user
from tests.copytrading.conftest import double, make_account
from tests.copytrading.test_dashboards import decide, make_fill, make_order
from tests.copytrading.test_services import leader_fill

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    c = APIClient()
    c.force_authenticate(user)
    return c


def test_publish_a_leader_through_the_api():
    user = make_user()
    account = make_account(user)
    x = double(account)
    x.clear()
    x.fund(USDT="20000", BTC="0.1")
    x.set_price("BTC/USDT", "60000")
    created = api(user).post(
        "/api/v1/copy/leaders/",
        {"account": account.pk, "name": "API leader", "hide_positions": True},
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["name"], D(body["equity"]), body["followers"]) == ("API leader", D(26000), 0)
    leader = Leader.objects.get(pk=body["id"])
    assert (leader.owner, leader.hide_positions) == (user, True)
    assert leader.initial_positions == {"BTC/USDT": "0.1"}

    again = api(user).post(
        "/api/v1/copy/leaders/", {"account": account.pk, "name": "Twice"}, format="json"
    )
    assert again.status_code == 400
    assert "already leads" in str(again.json())
    bad_bodies = [
        {"name": "No account"},
        {"account": account.pk, "name": ""},
        {"account": "x", "name": "n"},
        {"account": account.pk, "name": "n" * 81},
    ]
    for bad in bad_bodies:
        assert api(user).post("/api/v1/copy/leaders/", bad, format="json").status_code == 400
    someone_elses = make_account(make_user())
    answer = api(user).post(
        "/api/v1/copy/leaders/", {"account": someone_elses.pk, "name": "Mine now"}, format="json"
    )
    assert answer.status_code == 404
    assert Leader.objects.count() == 1
    free = api(make_user(pro=False)).post(
        "/api/v1/copy/leaders/", {"account": account.pk, "name": "Free"}, format="json"
    )
    assert free.status_code == 403
    assert free.json()["error"]["code"] == "plan_required"


def test_the_profile_carries_curve_return_drawdown_positions_and_trades(copy_setup):
    s = copy_setup
    make_fill(s.leader, at=timezone.now(), amount="0.5", price="60000")
    Leader.objects.filter(pk=s.leader.pk).update(
        equity=D(90000), equity_at=timezone.now() + timedelta(seconds=5)
    )
    from risk.models import EquitySnapshot

    EquitySnapshot.objects.create(
        owner=s.leader_user, account=s.leader_account, equity=D(100000), at=timezone.now()
    )
    body = api(s.follower).get(f"/api/v1/copy/leaders/{s.leader.pk}/").json()
    assert body["followers"] == 1
    assert [D(p["equity"]) for p in body["equity_curve"]] == [D(100000), D(90000)]
    assert body["total_return"] == pytest.approx(-0.1)
    assert body["max_drawdown"] == pytest.approx(0.1)
    assert body["positions"] == {"BTC/USDT": "0.500000000000000000"}
    assert [(f["side"], D(f["amount"])) for f in body["recent_fills"]] == [("buy", D("0.5"))]

    Leader.objects.filter(pk=s.leader.pk).update(hide_positions=True)
    assert api(s.follower).get(f"/api/v1/copy/leaders/{s.leader.pk}/").json()["positions"] is None
    owner = api(s.leader_user).get(f"/api/v1/copy/leaders/{s.leader.pk}/").json()
    assert owner["positions"] == {"BTC/USDT": "0.500000000000000000"}
    assert api(s.follower).get("/api/v1/copy/leaders/999999/").status_code == 404


def test_the_leaders_own_fills_with_their_copies_are_the_owners_only(copy_setup):
    s = copy_setup
    fill = make_fill(s.leader, at=timezone.now())
    make_order(s.subscription, fill, filled="0.1", avg="100")
    decide(s.subscription, fill, "copied")
    url = f"/api/v1/copy/leaders/{s.leader.pk}/fills/"
    rows = api(s.leader_user).get(url).json()["results"]
    assert [(r["fill_id"], r["copies"], r["copies_filled"], r["not_copied"]) for r in rows] == [
        (fill.fill_id, 1, 1, 0)
    ]
    assert api(s.follower).get(url).status_code == 404  # a follower is not the owner
    free = api(make_user(pro=False)).get(url)
    assert (free.status_code, free.json()["error"]["code"]) == (403, "plan_required")


def test_leader_status_changes_and_their_errors(copy_setup):
    s = copy_setup
    base = f"/api/v1/copy/leaders/{s.leader.pk}"
    assert api(s.leader_user).post(f"{base}/pause/").json()["status"] == "paused"
    assert api(s.leader_user).post(f"{base}/resume/").json()["status"] == "active"
    assert api(s.follower).post(f"{base}/pause/").status_code == 404
    assert api(s.leader_user).post(f"{base}/explode/").status_code == 404
    assert api(s.leader_user).post(f"{base}/retire/").json()["status"] == "retired"
    s.subscription.refresh_from_db()
    assert s.subscription.status == "paused"  # followers told, no new opens
    again = api(s.leader_user).post(f"{base}/resume/")
    assert again.status_code == 400
    assert "retired" in str(again.json())


def test_subscription_lifecycle_and_stop_with_close_positions(copy_setup):
    s = copy_setup
    base = f"/api/v1/copy/subscriptions/{s.subscription.pk}"
    c = api(s.follower)
    assert c.patch(f"{base}/", {"ratio": "0.5"}, format="json").json()["ratio"].startswith("0.5")
    bad = c.patch(f"{base}/", {"ratio": "-1"}, format="json")
    assert bad.status_code == 400
    assert c.patch(f"{base}/", ["not", "an", "object"], format="json").status_code == 400
    assert c.post(f"{base}/pause/").json()["status"] == "paused"
    assert c.post(f"{base}/resume/").json()["status"] == "active"
    assert api(make_user()).post(f"{base}/pause/").status_code == 404
    maybe = c.post(f"{base}/stop/", {"close_positions": "maybe"}, format="json")
    assert maybe.status_code == 400
    assert "close_positions" in maybe.json()["error"]["fields"]
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"
    # The copies hold 0.05 BTC (a filled copy): stopping with close plans their sale.
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    assert copy_replicate(leader_fill_id=fill.pk, subscription_id=s.subscription.pk).state == (
        "filled"
    )
    flagged = c.post(f"{base}/stop/", {"close_positions": True}, format="json")
    assert flagged.status_code == 200
    assert flagged.json()["status"] == "stopped"
    (close,) = CopyAdjustment.objects.filter(subscription=s.subscription)
    assert (close.kind, close.side, close.amount) == ("stop_close", "sell", D("0.05"))
    assert c.patch(f"{base}/", {"ratio": "2"}, format="json").status_code == 400  # stopped


def test_copies_and_decisions_filter_by_state_reason_and_date(copy_setup):
    s = copy_setup
    t = timezone.now()
    a = make_order(s.subscription, make_fill(s.leader, at=t), filled="0.1", avg="100")
    b = make_order(s.subscription, make_fill(s.leader, at=t), state="rejected")
    old = make_order(
        s.subscription, make_fill(s.leader, at=t), state="cancelled",
        planned_at=t - timedelta(days=5),
    )  # fmt: skip
    decide(s.subscription, a.leader_fill, "copied", order=a)
    decide(s.subscription, b.leader_fill, "failed", "order_rejected", order=b)
    gone = decide(s.subscription, old.leader_fill, "skipped", "slippage_exceeded")
    CopyDecision.objects.filter(pk=gone.pk).update(created_at=t - timedelta(days=5))
    c = api(s.follower)
    copies = f"/api/v1/copy/subscriptions/{s.subscription.pk}/copies/"
    decisions = f"/api/v1/copy/subscriptions/{s.subscription.pk}/decisions/"

    def ids(url: str, **query: str) -> list[int]:
        answer = c.get(url, query)
        assert answer.status_code == 200, answer.json()
        return sorted(r["id"] for r in answer.json()["results"])

    assert ids(copies) == sorted([a.pk, b.pk, old.pk])
    assert ids(copies, state="filled") == [a.pk]
    today = t.date().isoformat()
    assert ids(copies, since=today) == sorted([a.pk, b.pk])
    assert ids(copies, until=(t - timedelta(days=1)).date().isoformat()) == [old.pk]
    assert len(ids(decisions)) == 3
    assert len(ids(decisions, outcome="failed", reason="order_rejected")) == 1
    assert len(ids(decisions, reason="slippage_exceeded", since=today)) == 0
    for url, query in [
        (copies, {"state": "exploded"}),
        (copies, {"since": "2024-13-01"}),
        (copies, {"since": today, "until": "2000-01-01"}),
        (decisions, {"outcome": "maybe"}),
        (decisions, {"until": "soon"}),
        (decisions, {"reason": "r" * 61}),
    ]:
        answer = c.get(url, query)
        assert answer.status_code == 400, (url, query)
    assert api(make_user()).get(copies).status_code == 404
    assert api(make_user()).get(decisions).status_code == 404
    assert c.get("/api/v1/copy/subscriptions/999999/copies/").status_code == 404
    free = api(make_user(pro=False)).get(decisions)
    assert (free.status_code, free.json()["error"]["code"]) == (403, "plan_required")


def test_the_new_answers_match_the_published_schema(copy_setup):
    from tests.accounts.test_api_schema import Contract

    s = copy_setup
    make_fill(s.leader, at=timezone.now())
    contract = Contract(Client().get("/api/v1/schema/?format=json").json())
    owner, follower = api(s.leader_user), api(s.follower)
    profile = f"/api/v1/copy/leaders/{s.leader.pk}/"
    contract.check(follower.get(profile), "/api/v1/copy/leaders/{id}/")
    contract.check(owner.get(profile + "fills/"), "/api/v1/copy/leaders/{id}/fills/")
    copies = f"/api/v1/copy/subscriptions/{s.subscription.pk}/copies/"
    contract.check(
        follower.get(copies, {"state": "nope"}),
        "/api/v1/copy/subscriptions/{id}/copies/",
        expect=400,
    )
