"""Checkout and Customer Portal sessions, through the pages, against localstripe.

localstripe has no Checkout or Customer Portal sessions: those two calls land on the named
stand-ins in localstripe_server.py (StandInCheckoutSession, StandInPortalSession); the
customers and subscriptions behind them are real localstripe objects."""

from __future__ import annotations

import itertools
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from accounts.gating import user_has_pro
from accounts.models import Subscription, User
from accounts.services import plans_ensure, subscription_grant
from tests.accounts.localstripe import PRICE_ID

pytestmark = pytest.mark.django_db
_n = itertools.count(1)


@pytest.fixture
def free_user(client, localstripe):
    plans_ensure()
    user = User.objects.create_user(email=f"free{next(_n)}@example.com", password="x-unused-9")
    client.force_login(user)
    return user


def _start_checkout(client, localstripe) -> dict:
    response = client.post(reverse("accounts:checkout"))
    assert response.status_code == 302, response.content
    url = response["Location"]
    assert url.startswith(f"{localstripe.base_url}/_config/standin/checkout/cs_test_")
    return localstripe.call("GET", f"/v1/checkout/sessions/{url.rsplit('/', 1)[1]}")


def _pro(user: User) -> bool:
    return user_has_pro(User.objects.get(pk=user.pk))


def test_a_free_user_starts_checkout_for_the_pro_price_with_their_own_customer(
    client, free_user, localstripe
):
    session = _start_checkout(client, localstripe)
    assert session["mode"] == "subscription"
    assert session["status"] == "open"
    assert session["client_reference_id"] == str(free_user.pk)
    assert session["success_url"] == (
        "http://testserver/accounts/billing/checkout/success/?session_id={CHECKOUT_SESSION_ID}"
    )
    assert session["cancel_url"] == "http://testserver/accounts/billing/checkout/cancel/"
    row = Subscription.objects.get(user=free_user)
    assert session["customer"] == row.stripe_customer_id
    customer = localstripe.call("GET", f"/v1/customers/{row.stripe_customer_id}")
    assert customer["email"] == free_user.email
    assert customer["metadata"] == {"user_id": str(free_user.pk)}
    # Starting checkout buys nothing.
    assert (row.status, row.stripe_subscription_id) == ("incomplete", "")
    assert not _pro(free_user)


def test_a_second_checkout_reuses_the_customer(client, free_user, localstripe):
    first = _start_checkout(client, localstripe)
    second = _start_checkout(client, localstripe)
    assert first["id"] != second["id"]
    assert first["customer"] == second["customer"]
    found = localstripe.call("GET", f"/v1/customers?email={free_user.email}")
    assert len(found["data"]) == 1


def test_paying_on_checkout_returns_to_the_success_page_which_turns_pro_on(
    client, free_user, localstripe
):
    session = _start_checkout(client, localstripe)
    paid = localstripe.post_form(session["url"] + "/pay")
    assert paid.status_code == 303
    back = urlsplit(paid.headers["Location"])
    assert back.path == reverse("accounts:checkout_success")
    assert parse_qs(back.query) == {"session_id": [session["id"]]}

    page = client.get(f"{back.path}?{back.query}")
    assert page.status_code == 200
    assert b'data-state="active"' in page.content
    assert b'http-equiv="refresh"' not in page.content
    row = Subscription.objects.get(user=free_user)
    subscription = localstripe.subscription(row.stripe_subscription_id)
    assert subscription["items"]["data"][0]["plan"]["id"] == PRICE_ID
    assert subscription["customer"] == session["customer"]
    assert (row.status, row.source, row.plan.code) == ("active", "stripe", "pro")
    assert _pro(free_user)


def test_the_success_page_waits_and_refreshes_until_stripe_confirms(client, free_user, localstripe):
    session = _start_checkout(client, localstripe)  # not paid yet
    page = client.get(reverse("accounts:checkout_success"), {"session_id": session["id"]})
    assert page.status_code == 200
    assert b'data-state="pending"' in page.content
    assert b'http-equiv="refresh"' in page.content
    assert b"takes effect as soon as Stripe confirms" in page.content
    assert not _pro(free_user)


def test_someone_elses_paid_session_does_not_make_me_pro(client, free_user, localstripe):
    session = _start_checkout(client, localstripe)
    assert localstripe.post_form(session["url"] + "/pay").status_code == 303
    intruder = User.objects.create_user(email=f"intruder{next(_n)}@example.com", password="x-9")
    client.force_login(intruder)
    page = client.get(reverse("accounts:checkout_success"), {"session_id": session["id"]})
    assert b'data-state="pending"' in page.content
    assert not _pro(intruder)
    assert not Subscription.objects.filter(user=intruder).exists()


def test_a_malformed_session_id_is_ignored(client, free_user, localstripe):
    page = client.get(reverse("accounts:checkout_success"), {"session_id": "../../v1/customers"})
    assert b'data-state="pending"' in page.content


def test_a_pro_user_is_sent_to_the_billing_page_instead_of_checkout(client, free_user, localstripe):
    subscription_grant(user=free_user)
    response = client.post(reverse("accounts:checkout"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("accounts:billing")
    assert b"You already have Pro" in response.content
    assert not Subscription.objects.get(user=free_user).stripe_customer_id


def test_when_stripe_is_unreachable_checkout_says_so_and_changes_nothing(
    client, free_user, settings
):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    response = client.post(reverse("accounts:checkout"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("accounts:upgrade")
    assert b"Stripe could not be reached" in response.content
    assert not Subscription.objects.filter(user=free_user).exists()


def test_without_stripe_keys_checkout_says_billing_is_not_configured(client, free_user, settings):
    settings.STRIPE_SECRET_KEY = ""
    response = client.post(reverse("accounts:checkout"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("accounts:upgrade")
    assert b"Billing is not configured on this server" in response.content
    assert not Subscription.objects.filter(user=free_user).exists()


def test_cancelling_checkout_says_nothing_was_charged(client, free_user):
    response = client.get(reverse("accounts:checkout_cancel"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("accounts:upgrade")
    assert b"nothing was charged" in response.content


def test_manage_billing_opens_a_portal_session_for_my_customer(client, free_user, localstripe):
    session = _start_checkout(client, localstripe)
    assert localstripe.post_form(session["url"] + "/pay").status_code == 303
    client.get(reverse("accounts:checkout_success"), {"session_id": session["id"]})
    row = Subscription.objects.get(user=free_user)
    response = client.post(reverse("accounts:portal"))
    assert response.status_code == 302
    assert response["Location"].startswith(f"{localstripe.base_url}/_config/standin/portal/bps_")
    # Cancelling in that portal acts on my customer's subscription and comes back to billing.
    back = localstripe.post_form(response["Location"] + "/cancel")
    assert back.headers["Location"] == "http://testserver/accounts/billing/"
    assert localstripe.subscription(row.stripe_subscription_id)["cancel_at_period_end"] is True


def test_manage_billing_without_a_stripe_customer_explains_why(client, free_user):
    response = client.post(reverse("accounts:portal"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("accounts:billing")
    assert b"no Stripe billing account for you yet" in response.content


def test_checkout_and_portal_take_post_only(client, free_user):
    assert client.get(reverse("accounts:checkout")).status_code == 405
    assert client.get(reverse("accounts:portal")).status_code == 405
