"""What stops a follower's copies from opening positions while the leader's closes still go
through: the risk app's halt (``risk.signals.trading_halted``, from the kill switch or a
breaker) and the follower losing Pro."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.urls import reverse

from accounts.models import Plan
from accounts.services import subscription_grant
from copytrading.models import CopyDecision, CopyOrder, Subscription
from copytrading.services import copy_plan, leader_fill_record, subscription_create
from risk.services import trading_state_set
from tests.copytrading.conftest import build_copy_setup, make_account
from tests.copytrading.test_services import leader_fill

pytestmark = pytest.mark.django_db


def _hold_a_copy(s) -> None:
    """The follower holds 0.05 BTC from a filled copy of the leader's 0.5 BTC buy."""
    opened, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    assert opened is not None
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=opened.pk)
    assert isinstance(order, CopyOrder)
    CopyOrder.objects.filter(pk=order.pk).update(state="filled", filled_amount=order.amount)
    s.follower_x.fund(BTC="0.05")


def _halt(user, account=None) -> None:
    trading_state_set(
        user=user, account=account, to_state="halted", code="kill_switch",
        reason="Kill switch engaged.", actor="user",
    )  # fmt: skip


def test_a_halt_pauses_the_followers_subscriptions_and_closes_still_copy(
    copy_setup, django_capture_on_commit_callbacks, client
):
    s = copy_setup
    _hold_a_copy(s)
    with django_capture_on_commit_callbacks(execute=True):  # the signal goes after the commit
        _halt(s.follower)
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert sub.status == "paused"
    assert "trading was halted (Kill switch engaged.)" in sub.status_message
    more, _ = leader_fill_record(leader=s.leader, fill=leader_fill(amount="0.1"))
    skipped = copy_plan(subscription_id=sub.pk, leader_fill_id=more.pk)
    assert isinstance(skipped, CopyDecision)
    assert (skipped.reason, skipped.detail) == ("paused", sub.status_message)
    close, _ = leader_fill_record(leader=s.leader, fill=leader_fill(side="sell", amount="0.3"))
    sell = copy_plan(subscription_id=sub.pk, leader_fill_id=close.pk)
    assert isinstance(sell, CopyOrder)
    assert (sell.side, sell.amount, sell.closing) == ("sell", D("0.025"), True)
    # The follower's page says why.
    client.force_login(s.follower)
    page = client.get(reverse("copytrading:following")).content.decode()
    assert "Paused because your trading was halted" in page


def test_a_halt_of_one_account_pauses_only_the_copies_into_it(
    copy_setup, django_capture_on_commit_callbacks
):
    s = copy_setup
    other_account = make_account(s.follower)
    other_leader = build_copy_setup().leader
    other = subscription_create(
        user=s.follower, leader_id=other_leader.pk, account_id=other_account.pk, settings={}
    )
    with django_capture_on_commit_callbacks(execute=True):
        _halt(s.follower, account=s.follower_account)
    assert Subscription.objects.get(pk=s.subscription.pk).status == "paused"
    assert Subscription.objects.get(pk=other.pk).status == "active"


def test_another_users_halt_pauses_nothing_of_this_follower(
    copy_setup, django_capture_on_commit_callbacks
):
    s = copy_setup
    with django_capture_on_commit_callbacks(execute=True):
        _halt(s.leader_user)
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"


def test_losing_pro_stops_opens_and_still_copies_closes(copy_setup):
    s = copy_setup
    _hold_a_copy(s)
    subscription_grant(user=s.follower, plan_code=Plan.FREE)
    more, _ = leader_fill_record(leader=s.leader, fill=leader_fill(amount="0.1"))
    skipped = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=more.pk)
    assert isinstance(skipped, CopyDecision)
    assert skipped.reason == "paused"
    assert "Pro plan has ended" in skipped.detail
    close, _ = leader_fill_record(leader=s.leader, fill=leader_fill(side="sell", amount="0.3"))
    sell = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=close.pk)
    assert isinstance(sell, CopyOrder)
    assert (sell.side, sell.amount, sell.closing) == ("sell", D("0.025"), True)
