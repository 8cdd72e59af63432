"""The Stripe webhook endpoint with signed payloads: valid, bad signature, stale timestamp,
duplicate, out of order. Subscription state is re-read from localstripe, never taken from the
payload, so the payloads here may say anything about it."""

from __future__ import annotations

import itertools
import logging
import time
from types import SimpleNamespace

import pytest
from django.urls import reverse

from accounts.gating import user_has_pro
from accounts.models import Subscription, User, WebhookEvent
from accounts.services import plans_ensure
from tests.accounts.localstripe import SECRET_KEY, WEBHOOK_SECRET, event_payload, sign

URL = "/accounts/billing/stripe/webhook/"
_n = itertools.count(1)
pytestmark = pytest.mark.django_db


@pytest.fixture
def payer(localstripe):
    """A user whose Stripe customer (made as our checkout makes it) pays for an active Pro
    subscription in localstripe; our database has not heard of it yet."""
    plans_ensure()
    user = User.objects.create_user(email=f"payer{next(_n)}@example.com", password="x-unused-9")
    customer = localstripe.customer_with_card(email=user.email, user_id=user.pk)
    subscription = localstripe.subscribe(customer)
    assert subscription["status"] == "active"
    return SimpleNamespace(user=user, customer=customer, sub=subscription)


def _deliver(client, payload: bytes, signature: str | None):
    extra = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    return client.post(URL, data=payload, content_type="application/json", **extra)


def _event(event_type: str, obj: dict, *, created: int | None = None) -> tuple[str, bytes]:
    event_id = f"evt_test_{next(_n)}_{int(time.time() * 1000)}"
    return event_id, event_payload(event_type, obj, event_id=event_id, created=created)


def _pro(user: User) -> bool:
    return user_has_pro(User.objects.get(pk=user.pk))


def test_the_url_name_is_the_one_stripe_is_given():
    assert reverse("accounts:stripe_webhook") == URL


def test_a_valid_signed_event_is_stored_processed_and_grants_pro(client, payer):
    event_id, payload = _event("customer.subscription.created", payer.sub)
    response = _deliver(client, payload, sign(payload))
    assert response.status_code == 200
    assert response.json() == {"result": "processed"}
    row = WebhookEvent.objects.get(stripe_event_id=event_id)
    assert (row.type, row.status, row.error, row.attempts) == (
        "customer.subscription.created",
        WebhookEvent.Status.PROCESSED,
        "",
        1,
    )
    assert row.object_id == payer.sub["id"]
    assert row.processed_at is not None
    sub = Subscription.objects.get(user=payer.user)
    assert (sub.status, sub.source, sub.plan.code) == ("active", "stripe", "pro")
    assert (sub.stripe_subscription_id, sub.stripe_customer_id) == (payer.sub["id"], payer.customer)
    assert int(sub.current_period_end.timestamp()) == payer.sub["current_period_end"]
    assert _pro(payer.user)


def test_the_payloads_word_on_the_state_is_not_trusted(client, payer):
    forged = {**payer.sub, "status": "canceled", "cancel_at_period_end": True}
    _, payload = _event("customer.subscription.updated", forged)
    assert _deliver(client, payload, sign(payload)).status_code == 200
    sub = Subscription.objects.get(user=payer.user)
    assert sub.status == "active"  # what localstripe says
    assert not sub.cancel_at_period_end
    assert _pro(payer.user)


def test_a_bad_signature_is_refused_with_400_nothing_stored_and_a_warning_without_the_secret(
    client, payer, caplog
):
    _, payload = _event("customer.subscription.created", payer.sub)
    caplog.set_level(logging.WARNING, logger="accounts.billing")
    response = _deliver(client, payload, sign(payload, secret="whsec_someone_else"))
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()
    assert not Subscription.objects.filter(user=payer.user).exists()
    assert "Stripe webhook refused" in caplog.text
    assert "signature" in caplog.text
    assert WEBHOOK_SECRET not in caplog.text
    assert SECRET_KEY not in caplog.text


def test_a_body_changed_after_signing_is_refused(client, payer):
    _, payload = _event("customer.subscription.created", payer.sub)
    signature = sign(payload)
    tampered = payload.replace(b'"livemode": false', b'"livemode": true ')
    assert tampered != payload
    assert _deliver(client, tampered, signature).status_code == 400
    assert not WebhookEvent.objects.exists()


def test_a_stale_timestamp_is_refused_even_with_a_good_signature(client, payer, caplog):
    created = int(time.time()) - 301
    _, payload = _event("customer.subscription.created", payer.sub, created=created)
    caplog.set_level(logging.WARNING, logger="accounts.billing")
    response = _deliver(client, payload, sign(payload, timestamp=created))
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()
    assert "tolerance" in caplog.text
    # Inside the 300 s tolerance the same event is accepted.
    recent = int(time.time()) - 250
    assert _deliver(client, payload, sign(payload, timestamp=recent)).status_code == 200


def test_a_delivery_without_a_signature_header_is_refused(client, payer):
    _, payload = _event("customer.subscription.created", payer.sub)
    assert _deliver(client, payload, None).status_code == 400
    assert not WebhookEvent.objects.exists()


def test_a_signed_body_that_is_not_an_event_is_refused(client):
    payload = b'{"hello": "world"}'
    assert _deliver(client, payload, sign(payload)).status_code == 400
    assert not WebhookEvent.objects.exists()


def test_a_duplicate_event_id_answers_200_and_is_not_processed_again(client, payer, localstripe):
    event_id, payload = _event("customer.subscription.created", payer.sub)
    assert _deliver(client, payload, sign(payload)).json() == {"result": "processed"}
    # Stripe's state moves on, but nothing about it reaches us except the same event again.
    localstripe.call("DELETE", f"/v1/subscriptions/{payer.sub['id']}")
    again = _deliver(client, payload, sign(payload))
    assert again.status_code == 200
    assert again.json() == {"result": "duplicate"}
    row = WebhookEvent.objects.get(stripe_event_id=event_id)
    assert row.attempts == 1
    assert WebhookEvent.objects.filter(stripe_event_id=event_id).count() == 1
    # Had it been processed again, the re-read would have found the subscription canceled.
    assert Subscription.objects.get(user=payer.user).status == "active"


def test_deleted_before_updated_still_ends_canceled(client, payer, localstripe):
    # Stripe's story: the subscription was updated (still active), then deleted.
    updated_at = int(time.time()) - 60
    localstripe.call("DELETE", f"/v1/subscriptions/{payer.sub['id']}")
    deleted = localstripe.subscription(payer.sub["id"])
    assert deleted["status"] == "canceled"
    # The deliveries arrive the other way round.
    _, late_deleted = _event("customer.subscription.deleted", deleted)
    _, early_updated = _event("customer.subscription.updated", payer.sub, created=updated_at)
    assert _deliver(client, late_deleted, sign(late_deleted)).json() == {"result": "processed"}
    assert _deliver(client, early_updated, sign(early_updated)).json() == {"result": "processed"}
    sub = Subscription.objects.get(user=payer.user)
    assert sub.status == "canceled"
    assert not _pro(payer.user)


def test_updated_after_created_in_the_wrong_order_ends_in_stripes_state(client, payer, localstripe):
    localstripe.call("POST", f"/v1/subscriptions/{payer.sub['id']}", {"cancel_at_period_end": True})
    updated = localstripe.subscription(payer.sub["id"])
    _, second = _event("customer.subscription.updated", updated)
    _, first = _event("customer.subscription.created", payer.sub, created=int(time.time()) - 30)
    for payload in (second, first):
        assert _deliver(client, payload, sign(payload)).status_code == 200
    sub = Subscription.objects.get(user=payer.user)
    assert (sub.status, sub.cancel_at_period_end) == ("active", True)
    assert _pro(payer.user)  # until the period's end


def test_a_failure_is_stored_answered_500_and_stripes_retry_processes_it(
    client, payer, settings, caplog
):
    event_id, payload = _event("customer.subscription.created", payer.sub)
    reachable = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # Stripe unreachable for this delivery
    caplog.set_level(logging.WARNING, logger="accounts.billing")
    first = _deliver(client, payload, sign(payload))
    assert first.status_code == 500
    row = WebhookEvent.objects.get(stripe_event_id=event_id)
    assert row.status == WebhookEvent.Status.FAILED
    assert "Stripe could not be reached" in row.error
    assert not _pro(payer.user)
    assert SECRET_KEY not in caplog.text + row.error

    settings.STRIPE_API_BASE = reachable
    retry = _deliver(client, payload, sign(payload))
    assert retry.status_code == 200
    row.refresh_from_db()
    assert (row.status, row.error, row.attempts) == (WebhookEvent.Status.PROCESSED, "", 2)
    assert _pro(payer.user)


def test_an_event_we_do_not_act_on_is_stored_as_ignored(client):
    event_id, payload = _event("charge.refunded", {"id": "ch_123", "object": "charge"})
    response = _deliver(client, payload, sign(payload))
    assert response.json() == {"result": "ignored"}
    row = WebhookEvent.objects.get(stripe_event_id=event_id)
    assert (row.type, row.status, row.object_id) == ("charge.refunded", "ignored", "ch_123")


def test_a_subscription_of_a_stranger_is_ignored_with_a_note(client, localstripe):
    customer = localstripe.customer_with_card(email="stranger@example.com", user_id=10**9)
    stranger = localstripe.subscribe(customer)
    event_id, payload = _event("customer.subscription.created", stranger)
    assert _deliver(client, payload, sign(payload)).json() == {"result": "ignored"}
    row = WebhookEvent.objects.get(stripe_event_id=event_id)
    assert "belongs to no user here" in row.error
    assert not Subscription.objects.filter(stripe_subscription_id=stranger["id"]).exists()


def test_invoice_events_re_read_their_subscription(client, payer):
    invoice = {
        "id": "in_test_1",
        "object": "invoice",
        "customer": payer.customer,
        # The current API's shape: the subscription sits under parent.subscription_details.
        "parent": {"subscription_details": {"subscription": payer.sub["id"]}},
        "status": "paid",
    }
    _, payload = _event("invoice.paid", invoice)
    assert _deliver(client, payload, sign(payload)).json() == {"result": "processed"}
    assert Subscription.objects.get(user=payer.user).stripe_subscription_id == payer.sub["id"]


def test_without_a_signing_secret_nothing_can_be_verified_so_503(client, payer, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    _, payload = _event("customer.subscription.created", payer.sub)
    assert _deliver(client, payload, sign(payload)).status_code == 503
    assert not WebhookEvent.objects.exists()


def test_the_endpoint_takes_post_only(client):
    assert client.get(URL).status_code == 405


def test_a_late_event_about_an_ended_subscription_does_not_undo_a_newer_one(
    client, payer, localstripe
):
    localstripe.call("DELETE", f"/v1/subscriptions/{payer.sub['id']}")
    old = localstripe.subscription(payer.sub["id"])
    new = localstripe.subscribe(payer.customer)  # the user subscribed again
    _, created = _event("customer.subscription.created", new)
    _, late = _event("customer.subscription.deleted", old, created=int(time.time()) - 120)
    for payload in (created, late):
        assert _deliver(client, payload, sign(payload)).json() == {"result": "processed"}
    sub = Subscription.objects.get(user=payer.user)
    assert (sub.stripe_subscription_id, sub.status) == (new["id"], "active")
    assert _pro(payer.user)


def test_an_operators_grant_is_not_undone_by_an_ended_subscription(client, payer, localstripe):
    from accounts.services import subscription_grant

    localstripe.call("DELETE", f"/v1/subscriptions/{payer.sub['id']}")
    Subscription.objects.filter(user=payer.user).update(status="canceled")
    subscription_grant(user=payer.user)
    _, payload = _event("customer.subscription.deleted", localstripe.subscription(payer.sub["id"]))
    assert _deliver(client, payload, sign(payload)).status_code == 200
    sub = Subscription.objects.get(user=payer.user)
    assert (sub.source, sub.status) == ("manual", "active")
    assert _pro(payer.user)
