"""A subscription's life against localstripe: upgrade, use Pro, cancel in the portal, lose Pro
at the period's end; the beat re-sync that does not wait for webhooks; a queued backtest of a
user who lost Pro; cancelling at once for account deletion.

localstripe has no clock, so "the period ends" is Stripe ending the subscription
(DELETE /v1/subscriptions/<id>, which sends customer.subscription.deleted as Stripe does at
the period's end), or, for the beat task, our row's period end moved into the past.
"""

from __future__ import annotations

import itertools
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.billing import (
    BillingUnavailable,
    subscription_cancel_now,
    subscription_sync,
    subscriptions_resync_ended,
)
from accounts.gating import UPGRADE_MESSAGE, user_has_pro
from accounts.models import Subscription, User, WebhookEvent
from accounts.services import plans_ensure
from backtester.models import Backtest
from backtester.services.backtests import backtest_create
from backtester.tasks.backtests import run_backtest_task
from tests.accounts.localstripe import event_payload, sign, wait_until
from tests.backtester.backtest_factories import make_series, make_strategy, span

_n = itertools.count(1)


def _pro(user: User) -> bool:
    return user_has_pro(User.objects.get(pk=user.pk))


def _row(user: User) -> Subscription:
    return Subscription.objects.get(user=user)


@pytest.fixture
def payer(localstripe, db):
    """A user paying for Pro in localstripe, mirrored on our row (as after checkout)."""
    plans_ensure()
    user = User.objects.create_user(email=f"life{next(_n)}@example.com", password="x-unused-9")
    customer = localstripe.customer_with_card(email=user.email, user_id=user.pk)
    subscription = localstripe.subscribe(customer)
    subscription_sync(stripe_subscription_id=subscription["id"], stripe_customer_id=customer)
    assert _pro(user)
    return SimpleNamespace(user=user, customer=customer, sub=subscription)


@pytest.mark.django_db(transaction=True)
def test_upgrade_use_pro_cancel_in_the_portal_and_lose_pro_at_the_periods_end(
    live_server, localstripe, client
):
    plans_ensure()
    user = User.objects.create_user(email=f"journey{next(_n)}@example.com", password="x-9-pass")
    client.force_login(user)
    pro_page = reverse("backtester:backtest_create")
    assert client.get(pro_page).status_code == 403
    started = int(time.time())
    localstripe.webhooks_to(live_server.url + reverse("accounts:stripe_webhook"))
    try:
        # Upgrade: Checkout, then only the webhooks localstripe signs and sends turn Pro on
        # (the success page is not visited).
        checkout = client.post(reverse("accounts:checkout"))["Location"]
        assert localstripe.post_form(checkout + "/pay").status_code == 303
        wait_until(lambda: _pro(user), what="Pro after the checkout webhooks")
        row = _row(user)
        assert (row.status, row.source, row.cancel_at_period_end) == ("active", "stripe", False)
        assert client.get(pro_page).status_code == 200

        # Cancel in the Customer Portal: Pro stays until the period's end.
        portal = client.post(reverse("accounts:portal"))["Location"]
        assert localstripe.post_form(portal + "/cancel").status_code == 303
        wait_until(lambda: _row(user).cancel_at_period_end, what="the cancellation webhook")
        assert _pro(user)
        billing = client.get(reverse("accounts:billing")).content.decode()
        assert "Cancels on" in billing
        assert row.current_period_end.strftime("%-d %b %Y") in billing

        # The period ends: Stripe ends the subscription and says so.
        localstripe.call("DELETE", f"/v1/subscriptions/{row.stripe_subscription_id}")
        wait_until(lambda: not _pro(user), what="Free after customer.subscription.deleted")
        assert _row(user).status == "canceled"
        refused = client.get(pro_page)
        assert refused.status_code == 403
        assert UPGRADE_MESSAGE in refused.content.decode()

        # Every event localstripe sent meanwhile is stored with its outcome; none failed.
        sent = localstripe.call("GET", f"/v1/events?created[gte]={started}&limit=100")["data"]
        ours = {
            e["id"] for e in sent if e["type"].startswith(("customer.subscription", "checkout"))
        }
        assert len(ours) >= 3  # created, updated (portal), deleted; checkout.session.completed
        wait_until(
            lambda: ours <= set(WebhookEvent.objects.values_list("stripe_event_id", flat=True)),
            what="every subscription event stored",
        )
        assert not WebhookEvent.objects.filter(status=WebhookEvent.Status.FAILED).exists()
        assert WebhookEvent.objects.filter(
            type="checkout.session.completed", status=WebhookEvent.Status.PROCESSED
        ).exists()
    finally:
        localstripe.webhooks_off()


def test_the_beat_resync_ends_pro_at_the_periods_end_when_the_webhook_never_came(
    payer, localstripe
):
    # Cancelled at the period's end; Stripe then ends it, but that webhook is lost.
    localstripe.call("POST", f"/v1/subscriptions/{payer.sub['id']}", {"cancel_at_period_end": True})
    subscription_sync(stripe_subscription_id=payer.sub["id"])
    localstripe.call("DELETE", f"/v1/subscriptions/{payer.sub['id']}")
    assert _row(payer.user).status == "active"
    # The clock reaches the period's end (localstripe has none: move ours).
    ended = timezone.now() - timedelta(minutes=1)
    Subscription.objects.filter(user=payer.user).update(current_period_end=ended)
    assert not _pro(payer.user)  # the rule alone already says so
    counts = subscriptions_resync_ended()
    assert counts == {"checked": 1, "synced": 1, "failed": 0}
    assert _row(payer.user).status == "canceled"
    assert subscriptions_resync_ended()["checked"] == 0  # an ended subscription is left alone


def test_the_beat_resync_keeps_a_renewed_subscription_pro(payer):
    # Our copy of the period is stale (the renewal webhook was lost); Stripe says it runs on.
    stale = timezone.now() - timedelta(hours=2)
    Subscription.objects.filter(user=payer.user).update(current_period_end=stale)
    assert not _pro(payer.user)
    assert subscriptions_resync_ended()["synced"] == 1
    row = _row(payer.user)
    assert row.current_period_end > timezone.now()
    assert _pro(payer.user)


def test_the_beat_resync_counts_a_stripe_outage_and_changes_nothing(payer, settings):
    stale = timezone.now() - timedelta(hours=2)
    Subscription.objects.filter(user=payer.user).update(current_period_end=stale)
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    assert subscriptions_resync_ended() == {"checked": 1, "synced": 0, "failed": 1}
    assert _row(payer.user).current_period_end == stale


def test_the_resync_task_is_registered_and_scheduled_by_beat():
    from config.celery import app

    app.loader.import_default_modules()
    entry = app.conf.beat_schedule["billing-resync-ended-periods"]
    assert entry["task"] in app.tasks
    assert entry["task"] == "accounts.billing.resync_ended_periods"
    assert 0 < entry["schedule"] <= 3600


def test_a_queued_backtest_of_a_user_who_lost_pro_is_refused_and_marked(payer, localstripe, client):
    series = make_series(n=400)
    start, end = span(series)
    backtest = backtest_create(
        user=payer.user,
        strategy=make_strategy(payer.user),
        series=[series],
        start=start,
        end=end,
        settings={"initial_cash": 10_000},
    )
    assert backtest.status == Backtest.Status.QUEUED
    # Before the worker gets to it, Stripe ends the subscription and tells us.
    localstripe.call("DELETE", f"/v1/subscriptions/{payer.sub['id']}")
    payload = event_payload(
        "customer.subscription.deleted", payer.sub, event_id=f"evt_lost_{next(_n)}_{time.time()}"
    )
    response = client.post(
        reverse("accounts:stripe_webhook"),
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(payload),
    )
    assert response.status_code == 200
    assert not _pro(payer.user)
    run_backtest_task(backtest.pk)
    backtest.refresh_from_db()
    assert backtest.status == Backtest.Status.FAILED
    assert backtest.error.startswith("Pro plan required")
    assert backtest.started_at is None


def test_cancel_now_cancels_at_stripe_and_marks_the_row_canceled(payer, localstripe):
    row = subscription_cancel_now(user=payer.user)
    assert row is not None
    assert row.status == "canceled"
    assert row.current_period_end <= timezone.now()
    assert localstripe.subscription(payer.sub["id"])["status"] == "canceled"
    assert not _pro(payer.user)
    # Twice is fine (account deletion may be retried).
    assert subscription_cancel_now(user=payer.user).status == "canceled"


def test_cancel_now_also_cancels_a_second_live_subscription_of_the_customer(payer, localstripe):
    second = localstripe.subscribe(payer.customer)
    subscription_cancel_now(user=payer.user)
    assert localstripe.subscription(second["id"])["status"] == "canceled"
    assert localstripe.subscription(payer.sub["id"])["status"] == "canceled"


def test_cancel_now_is_safe_without_any_subscription(localstripe, db):
    plans_ensure()
    user = User.objects.create_user(email=f"nosub{next(_n)}@example.com", password="x-9-pass")
    assert subscription_cancel_now(user=user) is None


def test_cancel_now_refuses_when_stripe_cannot_confirm_and_changes_nothing(payer, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    with pytest.raises(BillingUnavailable):
        subscription_cancel_now(user=payer.user)
    assert _row(payer.user).status == "active"
    assert _pro(payer.user)
