"""The copy-trading pages through Django's test client: subscribing, bad input, ownership,
the follower's view of copies and decisions, the audit export."""

from __future__ import annotations

import csv
import io
from decimal import Decimal as D

import pytest
from django.test import Client
from django.urls import reverse

from copytrading.models import Leader, Subscription
from copytrading.services import copy_replicate, leader_fill_record
from tests.backtester.backtest_factories import make_user
from tests.copytrading.conftest import make_account
from tests.copytrading.test_services import leader_fill

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_the_directory_lists_published_leaders_but_not_retired_ones(copy_setup):
    s = copy_setup
    retired = Leader.objects.create(
        owner=s.leader_user,
        account=make_account(s.leader_user),
        name="Gone fishing",
        status="retired",
        published_at=s.leader.published_at,
    )
    page = client_for(s.follower).get(reverse("copytrading:home")).content.decode()
    assert "Steady BTC" in page
    assert "Gone fishing" not in page
    assert "cannot be copied yet" in page  # spot only, said on the page
    assert (
        client_for(s.follower)
        .get(reverse("copytrading:leader_detail", args=[retired.pk]))
        .status_code
        == 404
    )


def test_subscribing_through_the_form(copy_setup):
    s = copy_setup
    account = make_account(s.follower, label="second")
    response = client_for(s.follower).post(
        reverse("copytrading:subscribe", args=[s.leader.pk]),
        {
            "account": account.pk,
            "sizing_mode": "fixed_notional",
            "notional": "250",
            "sides": "buy",
            "slippage_pct": "0.8",
            "symbol_map": "BTC/USDT=BTC/USD",
            "expiry_seconds": "30",
        },
    )
    sub = Subscription.objects.get(account=account)
    assert response.status_code == 302
    assert response["Location"] == reverse("copytrading:subscription_detail", args=[sub.pk])
    assert (sub.sizing_mode, sub.notional, sub.allowed_sides) == ("fixed_notional", D(250), ["buy"])
    assert (sub.slippage_guard, sub.expiry_seconds) == (D("0.008"), 30)
    assert sub.symbol_map == {"BTC/USDT": "BTC/USD"}


def test_bad_settings_get_a_400_with_the_message_and_save_nothing(copy_setup):
    s = copy_setup
    account = make_account(s.follower, label="third")
    response = client_for(s.follower).post(
        reverse("copytrading:subscribe", args=[s.leader.pk]),
        {
            "account": account.pk,
            "sizing_mode": "fixed_risk",
            "risk_pct": "25",
            "expiry_seconds": "60",
            "sides": "both",
        },
    )
    assert response.status_code == 400
    assert "risk_fraction must be at least 0 and at most 0.1" in response.content.decode()
    assert not Subscription.objects.filter(account=account).exists()
    garbage = client_for(s.follower).post(
        reverse("copytrading:subscribe", args=[s.leader.pk]),
        {
            "account": account.pk,
            "sizing_mode": "proportional",
            "ratio": "1e999999",
            "expiry_seconds": "x",
            "sides": "both",
        },
    )
    assert garbage.status_code == 400
    assert not Subscription.objects.filter(account=account).exists()


def test_an_account_that_cannot_trade_is_not_offered(copy_setup):
    s = copy_setup
    read_only = make_account(s.follower, label="read only", can_trade=False)
    page = client_for(s.follower).get(reverse("copytrading:subscribe", args=[s.leader.pk]))
    assert "read only" not in page.content.decode()
    posted = client_for(s.follower).post(
        reverse("copytrading:subscribe", args=[s.leader.pk]),
        {
            "account": read_only.pk,
            "sizing_mode": "proportional",
            "expiry_seconds": "60",
            "sides": "both",
        },
    )
    assert posted.status_code == 400


def test_another_users_subscription_is_a_404_everywhere(copy_setup):
    s = copy_setup
    stranger = client_for(make_user())
    pk = s.subscription.pk
    assert stranger.get(reverse("copytrading:subscription_detail", args=[pk])).status_code == 404
    assert stranger.get(reverse("copytrading:decisions_export", args=[pk])).status_code == 404
    assert (
        stranger.post(reverse("copytrading:subscription_action", args=[pk, "stop"])).status_code
        == 404
    )
    assert Subscription.objects.get(pk=pk).status == "active"
    # and a leader's controls belong to its owner
    assert (
        client_for(s.follower)
        .post(reverse("copytrading:leader_action", args=[s.leader.pk, "retire"]))
        .status_code
        == 404
    )
    assert Leader.objects.get(pk=s.leader.pk).status == "active"


def test_the_follower_sees_copies_skips_and_exports_the_audit_trail(copy_setup):
    s = copy_setup
    copied, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    copy_replicate(leader_fill_id=copied.pk, subscription_id=s.subscription.pk)
    s.follower_x.set_price("BTC/USDT", "70000")
    skipped, _ = leader_fill_record(leader=s.leader, fill=leader_fill(amount="0.1"))
    copy_replicate(leader_fill_id=skipped.pk, subscription_id=s.subscription.pk)

    c = client_for(s.follower)
    page = c.get(reverse("copytrading:subscription_detail", args=[s.subscription.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "Filled" in html
    assert "slippage_exceeded" in html
    only_skips = c.get(
        reverse("copytrading:subscription_detail", args=[s.subscription.pk]), {"outcome": "skipped"}
    ).content.decode()
    assert "slippage_exceeded" in only_skips
    assert "Copied</td>" not in only_skips

    export = c.get(reverse("copytrading:decisions_export", args=[s.subscription.pk]))
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert [(r["outcome"], r["reason"]) for r in rows] == [
        ("skipped", "slippage_exceeded"),
        ("copied", ""),
    ]


def test_pausing_from_the_page(copy_setup):
    s = copy_setup
    url = reverse("copytrading:subscription_action", args=[s.subscription.pk, "pause"])
    assert client_for(s.follower).post(url).status_code == 302
    assert Subscription.objects.get(pk=s.subscription.pk).status == "paused"


def test_hidden_positions_are_hidden_from_others_but_not_the_owner(copy_setup):
    s = copy_setup
    leader_fill_record(leader=s.leader, fill=leader_fill(amount="0.5"))
    url = reverse("copytrading:leader_detail", args=[s.leader.pk])
    assert "BTC/USDT: 0.5" in client_for(s.follower).get(url).content.decode()
    Leader.objects.filter(pk=s.leader.pk).update(hide_positions=True)
    assert "keeps open positions private" in client_for(s.follower).get(url).content.decode()
    assert "BTC/USDT: 0.5" in client_for(s.leader_user).get(url).content.decode()


def test_free_users_get_the_upgrade_page(copy_setup):
    free = client_for(make_user(pro=False))
    assert free.get(reverse("copytrading:home")).status_code == 403
    assert (
        free.get(reverse("copytrading:leader_detail", args=[copy_setup.leader.pk])).status_code
        == 403
    )
