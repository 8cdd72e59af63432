"""Stripe webhooks: verified on the raw body, stored once per event id, processed at most once.

What the endpoint answers (Stripe retries anything but 2xx for up to three days):
- 400: the signature, the timestamp (older than STRIPE_WEBHOOK_TOLERANCE) or the JSON does not
  verify. Nothing is stored, since nothing in such a payload can be trusted, not even its id;
  a warning is logged with the reason (never the secret nor the signature).
- 200: stored and processed, stored and ignored (not an event we act on), or a duplicate of an
  event already processed or ignored (not processed again).
- 500: processing failed (Stripe unreachable, say); the row keeps the error and the status
  "failed", and Stripe's retry of the same event id processes it again.
- 503: no signing secret is configured, so nothing can be verified.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.billing.client import BillingNotConfigured, BillingUnavailable, object_id
from accounts.billing.sync import subscription_sync
from accounts.models import WebhookEvent

logger = logging.getLogger("accounts.billing")

SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.pending_update_applied",
        "customer.subscription.pending_update_expired",
        "customer.subscription.trial_will_end",
    }
)
INVOICE_EVENTS = frozenset(
    {
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "invoice.marked_uncollectible",
    }
)
CHECKOUT_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
    }
)


@dataclass(frozen=True)
class WebhookOutcome:
    """What happened to one delivery, and the HTTP status to answer Stripe with."""

    http_status: int
    result: str  # processed | ignored | duplicate | failed | rejected | not_configured
    event_id: str = ""


def webhook_receive(*, payload: bytes, signature: str | None) -> WebhookOutcome:
    """Verify, store and process one delivery (see the module docstring for the answers)."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        logger.error("Stripe webhook refused: STRIPE_WEBHOOK_SECRET is not set")
        return WebhookOutcome(503, "not_configured")
    try:
        # Stripe's library assumes the signed body is a JSON object: anything else ([1,2,3],
        # "text", null) would fail inside it with an AttributeError.
        if not isinstance(json.loads(payload), dict):
            raise TypeError("the body is not a JSON object")
        stripe.Webhook.construct_event(
            payload, signature or "", secret, tolerance=settings.STRIPE_WEBHOOK_TOLERANCE
        )
        event = json.loads(payload)
        event_id, event_type = str(event["id"]), str(event["type"])
        obj = event["data"]["object"]
        if not isinstance(obj, dict):
            raise TypeError("data.object is not an object")
    except stripe.SignatureVerificationError as exc:
        # The library's message says what failed (no signature, mismatch, stale timestamp).
        logger.warning("Stripe webhook refused: %s", exc.user_message or "signature check failed")
        return WebhookOutcome(400, "rejected")
    except (ValueError, KeyError, TypeError):
        logger.warning("Stripe webhook refused: the body is not a Stripe event")
        return WebhookOutcome(400, "rejected")

    row, _ = WebhookEvent.objects.get_or_create(
        stripe_event_id=event_id,
        defaults={
            "type": event_type,
            "livemode": bool(event.get("livemode")),
            "object_id": object_id(obj.get("id")),
            "payload": event,
            "stripe_created_at": _when(event.get("created")),
        },
    )
    return _process(row.pk, event)


def _process(pk: int, event: dict[str, Any]) -> WebhookOutcome:
    with transaction.atomic():
        row = WebhookEvent.objects.select_for_update().get(pk=pk)
        if row.status in (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED):
            logger.info(
                "Stripe event %s (%s) is a duplicate: not processed again",
                row.stripe_event_id,
                row.type,
            )
            return WebhookOutcome(200, "duplicate", row.stripe_event_id)
        row.attempts += 1
        try:
            with transaction.atomic():
                status, note = _dispatch(event)
        except (BillingUnavailable, BillingNotConfigured) as exc:
            row.status, row.error = WebhookEvent.Status.FAILED, exc.message
            logger.warning(
                "Stripe event %s (%s) failed: %s", row.stripe_event_id, row.type, exc.message
            )
        except Exception as exc:
            row.status, row.error = (
                WebhookEvent.Status.FAILED,
                f"{type(exc).__name__}: {exc}"[:2000],
            )
            logger.exception("Stripe event %s (%s) failed", row.stripe_event_id, row.type)
        else:
            row.status, row.error = status, note
            row.processed_at = timezone.now()
        row.save()
    if row.status == WebhookEvent.Status.FAILED:
        return WebhookOutcome(500, "failed", row.stripe_event_id)
    return WebhookOutcome(200, str(row.status), row.stripe_event_id)


def _dispatch(event: dict[str, Any]) -> tuple[str, str]:
    """Act on one event; returns (status, note). Only ids are taken from the body: the
    subscription's state is re-read from Stripe."""
    event_type = event["type"]
    obj = event["data"]["object"]
    user_id: int | None = None
    if event_type in SUBSCRIPTION_EVENTS:
        subscription_id = object_id(obj.get("id"))
    elif event_type in INVOICE_EVENTS:
        subscription_id = _invoice_subscription(obj)
        if not subscription_id:
            return WebhookEvent.Status.IGNORED, "An invoice without a subscription."
    elif event_type in CHECKOUT_EVENTS:
        subscription_id = object_id(obj.get("subscription"))
        if obj.get("mode") != "subscription" or not subscription_id:
            return WebhookEvent.Status.IGNORED, "A Checkout session without a subscription."
        reference = str(obj.get("client_reference_id") or "")
        user_id = int(reference) if reference.isdigit() else None
    else:
        return WebhookEvent.Status.IGNORED, ""
    row = subscription_sync(
        stripe_subscription_id=subscription_id,
        stripe_customer_id=object_id(obj.get("customer")),
        user_id=user_id,
    )
    if row is None:
        return (
            WebhookEvent.Status.IGNORED,
            f"Subscription {subscription_id} belongs to no user here.",
        )
    return WebhookEvent.Status.PROCESSED, ""


def _invoice_subscription(invoice: dict[str, Any]) -> str:
    # Older API versions put it on the invoice, current ones under parent.subscription_details.
    direct = object_id(invoice.get("subscription"))
    if direct:
        return direct
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return object_id(details.get("subscription"))


def _when(epoch: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(epoch), tz=UTC)
    except (TypeError, ValueError, OverflowError):
        return None
