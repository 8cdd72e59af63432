"""The one access rule (Subscription.grants_access) and where the Pro price id comes from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounts.gating import user_has_pro
from accounts.models import Plan, Subscription, User
from accounts.services import plans_ensure

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
S = Subscription.Status


def _sub(status: str, *, end_in: timedelta | None, start_ago: timedelta | None = None, **kw):
    """An unsaved Stripe subscription row, enough for the rule (which reads no database)."""
    return Subscription(
        status=status,
        source=kw.pop("source", Subscription.Source.STRIPE),
        current_period_start=NOW - start_ago if start_ago is not None else None,
        current_period_end=NOW + end_in if end_in is not None else None,
        **kw,
    )


@pytest.mark.parametrize("status", [S.ACTIVE, S.TRIALING])
def test_active_and_trialing_grant_pro_while_the_period_runs(status):
    assert _sub(status, end_in=timedelta(days=20)).grants_access(now=NOW)


@pytest.mark.parametrize(
    "status", [S.CANCELED, S.UNPAID, S.INCOMPLETE, S.INCOMPLETE_EXPIRED, S.PAUSED]
)
def test_canceled_unpaid_incomplete_and_paused_never_grant_pro(status):
    assert not _sub(status, end_in=timedelta(days=20), start_ago=timedelta(days=1)).grants_access(
        now=NOW
    )


def test_cancel_at_period_end_keeps_pro_until_the_period_end_exactly():
    sub = _sub(S.ACTIVE, end_in=timedelta(hours=2), cancel_at_period_end=True)
    assert sub.grants_access(now=NOW)
    assert sub.grants_access(now=NOW + timedelta(hours=2) - timedelta(seconds=1))
    assert not sub.grants_access(now=NOW + timedelta(hours=2))


def test_a_renewing_subscription_keeps_pro_for_an_hour_after_its_period_while_stripe_confirms():
    sub = _sub(S.ACTIVE, end_in=timedelta(0))
    assert sub.grants_access(now=NOW + timedelta(minutes=59))
    assert not sub.grants_access(now=NOW + timedelta(minutes=61))


def test_an_operators_grant_without_an_end_date_grants_pro():
    assert _sub(S.ACTIVE, end_in=None, source=Subscription.Source.MANUAL).grants_access(now=NOW)


def test_an_operators_grant_with_an_end_date_ends_exactly_then():
    sub = _sub(S.ACTIVE, end_in=timedelta(0), source=Subscription.Source.MANUAL)
    assert not sub.grants_access(now=NOW + timedelta(seconds=1))


def test_past_due_keeps_pro_for_the_grace_days_after_the_failed_renewal(settings):
    settings.BILLING_GRACE_DAYS = 3
    # Stripe moved the period on when it tried to renew: the failed renewal is the new start.
    sub = _sub(S.PAST_DUE, start_ago=timedelta(0), end_in=timedelta(days=30))
    assert sub.grants_access(now=NOW + timedelta(days=3) - timedelta(seconds=1))
    assert not sub.grants_access(now=NOW + timedelta(days=3))


def test_the_grace_period_follows_the_setting(settings):
    sub = _sub(S.PAST_DUE, start_ago=timedelta(days=2), end_in=timedelta(days=28))
    settings.BILLING_GRACE_DAYS = 3
    assert sub.grants_access(now=NOW)
    settings.BILLING_GRACE_DAYS = 1
    assert not sub.grants_access(now=NOW)


@pytest.mark.django_db
def test_pro_price_id_follows_the_setting_while_the_plan_row_leaves_it_blank(settings):
    plans_ensure()
    pro = Plan.objects.get(code=Plan.PRO)
    settings.STRIPE_PRICE_ID = "price_from_settings"
    assert pro.stripe_price_id == ""
    assert pro.checkout_price_id == "price_from_settings"
    pro.stripe_price_id = "price_set_by_an_operator"
    assert pro.checkout_price_id == "price_set_by_an_operator"
    assert Plan.objects.get(code=Plan.FREE).checkout_price_id == ""


@pytest.mark.django_db
def test_gating_asks_the_subscription_rule():
    plans_ensure()
    user = User.objects.create_user(email="rule@example.com", password="x-unused-pass-9")
    assert not user_has_pro(user)
    sub = Subscription.objects.create(
        user=user,
        plan=Plan.objects.get(code=Plan.PRO),
        status=S.PAST_DUE,
        source=Subscription.Source.STRIPE,
        current_period_start=datetime.now(UTC) - timedelta(days=1),
        current_period_end=datetime.now(UTC) + timedelta(days=29),
    )
    assert user_has_pro(User.objects.get(pk=user.pk))
    sub.current_period_start = datetime.now(UTC) - timedelta(days=4)
    sub.save()
    assert not user_has_pro(User.objects.get(pk=user.pk))
