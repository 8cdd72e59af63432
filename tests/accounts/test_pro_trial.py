"""A new account starts with a Pro trial (PRO_TRIAL_DAYS, 7 by default) whose end date it is
shown; it works without Stripe, and buying Pro during it carries the days left as Stripe's
own trial period, so nothing is charged before the free days are over."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.gating import user_has_pro
from accounts.models import Plan, Subscription, User
from accounts.services import trial_start
from tests.conftest import clear_run_cache

pytestmark = pytest.mark.django_db
PASSWORD = "c0rrect-Horse-trial"


def _sign_up(email: str) -> User:
    clear_run_cache()  # allauth's sign-up rate limit
    client = Client()
    response = client.post(
        reverse("account_signup"), {"email": email, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302
    return User.objects.get(email=email)


def _logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _end_trial(user: User) -> None:
    past = timezone.now() - timedelta(minutes=1)
    Subscription.objects.filter(user=user).update(current_period_end=past)


def test_sign_up_starts_a_seven_day_pro_trial_with_its_end_date_shown(settings):
    assert settings.PRO_TRIAL_DAYS == 7
    before = timezone.now()
    user = _sign_up("trial@example.org")
    sub = Subscription.objects.get(user=user)
    assert (sub.plan.code, sub.status, sub.source) == (Plan.PRO, "trialing", "trial")
    ends = sub.current_period_end
    assert before + timedelta(days=7) <= ends <= timezone.now() + timedelta(days=7)
    assert user.pro_trial_ends_at == ends
    assert user_has_pro(user)
    client = _logged_in(user)
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert 'id="trial-banner"' in dashboard
    assert f"{ends:%-d %b %Y}" in dashboard
    billing = client.get(reverse("accounts:billing")).content.decode()
    assert "Trial ends on" in billing
    assert "7 days left" in billing
    # Every Pro section is open during the trial.
    assert client.get(reverse("backtester:strategy_list")).status_code == 200


def test_the_trial_length_comes_from_settings_and_zero_means_none(settings):
    settings.PRO_TRIAL_DAYS = 3
    user = _sign_up("three@example.org")
    sub = Subscription.objects.get(user=user)
    assert (
        timedelta(days=2, hours=23) < sub.current_period_end - timezone.now() <= timedelta(days=3)
    )
    settings.PRO_TRIAL_DAYS = 0
    none = _sign_up("none@example.org")
    assert not Subscription.objects.filter(user=none).exists()
    assert none.pro_trial_ends_at is None
    assert not user_has_pro(none)


def test_the_trial_works_without_stripe_and_ends_on_its_date(settings):
    settings.STRIPE_SECRET_KEY = ""  # billing not configured on this server
    user = _sign_up("nostripe@example.org")
    client = _logged_in(user)
    assert client.get(reverse("backtester:backtest_list")).status_code == 200
    upgrade = client.get(reverse("accounts:upgrade")).content.decode()
    assert 'id="trial-status"' in upgrade
    assert "Billing is not configured" in upgrade
    _end_trial(user)
    user = User.objects.get(pk=user.pk)
    assert not user_has_pro(user)
    page = client.get(reverse("backtester:backtest_list"))
    assert page.status_code == 403
    assert 'id="samples-link"' in page.content.decode()
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert "Your free Pro trial ended on" in dashboard
    assert reverse("backtester:samples") in dashboard


def test_a_trial_is_given_once_per_account():
    user = _sign_up("once@example.org")
    _end_trial(user)
    Subscription.objects.filter(user=user).delete()
    assert trial_start(user=User.objects.get(pk=user.pk)) is None
    assert not Subscription.objects.filter(user=user).exists()


def test_accounts_made_outside_sign_up_get_no_trial():
    user = User.objects.create_user(email="admin-made@example.org", password=PASSWORD)
    assert not Subscription.objects.filter(user=user).exists()


def test_buying_pro_during_the_trial_gives_stripe_the_days_left(localstripe):
    user = _sign_up("buyer@example.org")
    trial_end = Subscription.objects.get(user=user).current_period_end
    client = _logged_in(user)
    upgrade = client.get(reverse("accounts:upgrade")).content.decode()
    assert 'id="start-checkout"' in upgrade
    assert "Keep Pro after the trial" in upgrade
    response = client.post(reverse("accounts:checkout"))
    assert response.status_code == 302, response.content
    session_id = response["Location"].rsplit("/", 1)[1]
    session = localstripe.call("GET", f"/v1/checkout/sessions/{session_id}")
    paid = localstripe.post_form(session["url"] + "/pay")
    assert paid.status_code == 303
    back = urlsplit(paid.headers["Location"])
    assert client.get(f"{back.path}?{back.query}").status_code == 200
    row = Subscription.objects.get(user=user)
    assert (row.source, row.status) == ("stripe", "trialing")
    stripe_sub = localstripe.subscription(row.stripe_subscription_id)
    assert stripe_sub["status"] == "trialing"
    # 7 days left (rounded up): Stripe's trial ends with ours, give or take the rounding.
    assert abs(stripe_sub["trial_end"] - trial_end.timestamp()) < 24 * 3600
    assert user_has_pro(User.objects.get(pk=user.pk))


def test_a_paying_pro_user_is_still_refused_a_second_checkout(localstripe):
    user = User.objects.create_user(email="paying@example.org", password=PASSWORD)
    Subscription.objects.create(
        user=user,
        plan=Plan.objects.get(code=Plan.PRO),
        status=Subscription.Status.ACTIVE,
        source=Subscription.Source.MANUAL,
    )
    response = _logged_in(user).post(reverse("accounts:checkout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:billing")
