"""The billing and upgrade pages in each state, and the ways into them. These pages call
nothing at Stripe: they read our mirror of the subscription."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Plan, Subscription, User
from accounts.services import plans_ensure, subscription_grant

pytestmark = pytest.mark.django_db
_n = itertools.count(1)
BILLING = "/accounts/billing/"
UPGRADE = "/accounts/billing/upgrade/"


@pytest.fixture
def stripe_keys(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_pages_only_value"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_pages_only_value"
    settings.STRIPE_PRICE_ID = "price_pages"
    return settings


@pytest.fixture
def user(client, stripe_keys):
    plans_ensure()
    user = User.objects.create_user(email=f"pages{next(_n)}@example.com", password="x-unused-9")
    client.force_login(user)
    return user


def _stripe_row(user: User, status: str, **fields) -> Subscription:
    now = timezone.now()
    values = {
        "plan": Plan.objects.get(code=Plan.PRO),
        "status": status,
        "source": Subscription.Source.STRIPE,
        "current_period_start": now - timedelta(days=5),
        "current_period_end": now + timedelta(days=25),
        "stripe_customer_id": "cus_pages",
        "stripe_subscription_id": "sub_pages",
    }
    values.update(fields)
    return Subscription.objects.create(user=user, **values)


def _page(client, url: str = BILLING) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def test_the_url_names_are_the_ones_the_navigation_and_the_gate_use():
    assert reverse("accounts:billing") == BILLING
    assert reverse("accounts:upgrade") == UPGRADE


@pytest.mark.parametrize("url", [BILLING, UPGRADE, "/accounts/billing/checkout/success/"])
def test_anonymous_visitors_are_sent_to_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_a_free_user_sees_free_no_subscription_and_the_upgrade_button(client, user):
    html = _page(client)
    assert 'id="current-plan">Free<' in html
    assert "No subscription" in html
    assert f'href="{UPGRADE}"' in html
    assert 'id="manage-billing"' not in html


def test_a_renewing_subscription_shows_the_renewal_date_and_manage_billing(client, user):
    row = _stripe_row(user, "active")
    html = _page(client)
    assert 'id="current-plan">Pro<' in html
    assert "Renews on" in html
    assert row.current_period_end.strftime("%-d %b %Y") in html
    assert 'id="manage-billing"' in html
    assert 'id="upgrade-link"' not in html


def test_a_cancelled_subscription_shows_pro_until_the_cancel_date(client, user):
    row = _stripe_row(user, "active", cancel_at_period_end=True)
    html = _page(client)
    assert "Cancels on" in html
    assert row.current_period_end.strftime("%-d %b %Y") in html
    assert "Pro stays on until the end of the period you paid for" in html


def test_a_past_due_subscription_shows_the_grace_deadline(client, user, settings):
    settings.BILLING_GRACE_DAYS = 3
    start = timezone.now() - timedelta(days=1)
    _stripe_row(user, "past_due", current_period_start=start)
    html = _page(client)
    assert "Pro kept until" in html
    assert (start + timedelta(days=3)).strftime("%-d %b %Y") in html
    assert "The last payment failed" in html
    assert 'id="current-plan">Pro<' in html


def test_an_ended_subscription_shows_free_and_the_end(client, user):
    _stripe_row(user, "canceled", current_period_end=timezone.now() - timedelta(days=2))
    html = _page(client)
    assert 'id="current-plan">Free<' in html
    assert "Ended" in html
    assert 'id="upgrade-link"' in html
    assert 'id="manage-billing"' in html  # invoices stay reachable in the portal


def test_an_operators_grant_says_so_without_an_end_date(client, user):
    subscription_grant(user=user)
    html = _page(client)
    assert "Granted by an operator" in html
    assert "No end date" in html
    assert 'id="manage-billing"' not in html


def test_without_stripe_keys_both_pages_say_billing_is_not_configured(client, user, settings):
    settings.STRIPE_SECRET_KEY = ""
    for url in (BILLING, UPGRADE):
        html = _page(client, url)
        assert 'id="billing-not-configured"' in html
        assert "Billing is not configured on this server" in html
    assert 'id="start-checkout"' not in _page(client, UPGRADE)


def test_the_upgrade_page_lists_what_pro_unlocks_from_the_plans_data(client, user, settings):
    Plan.objects.filter(code=Plan.PRO).update(max_concurrent_backtests=7, max_followers=123)
    settings.FEATURES = {**settings.FEATURES, "copy_trading": True}  # shipped: its limit shows
    html = _page(client, UPGRADE)
    assert ">7<" in html
    assert "$39.99/month" in html
    assert "Copy-trading followers" in html
    assert ">123<" in html
    assert 'id="start-checkout"' in html
    assert f'action="{reverse("accounts:checkout")}"' in html


def test_the_upgrade_page_tells_a_pro_user_they_have_it(client, user):
    subscription_grant(user=user)
    html = _page(client, UPGRADE)
    assert 'id="already-pro"' in html
    assert 'id="start-checkout"' not in html


def test_the_pro_feature_gate_links_to_the_upgrade_page(client, user):
    response = client.get(reverse("backtester:backtest_create"))
    assert response.status_code == 403
    assert f'href="{UPGRADE}"' in response.content.decode()


def test_the_navigation_shows_billing(client, user):
    assert f'href="{BILLING}"' in _page(client, reverse("dashboard"))


def test_no_key_or_secret_ever_reaches_a_page(client, user):
    _stripe_row(user, "active")
    for url in (BILLING, UPGRADE):
        html = _page(client, url)
        assert "sk_test_pages_only_value" not in html
        assert "whsec_pages_only_value" not in html
