"""Mirror Stripe subscriptions on our Subscription rows.

Stripe is the truth: every change re-reads the subscription from Stripe rather than trusting a
webhook body, so duplicate, late and out-of-order events all end in Stripe's current state.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import stripe
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.billing.client import (
    BillingNotConfigured,
    BillingUnavailable,
    is_missing,
    object_id,
    plain,
    stripe_client,
    stripe_errors,
)
from accounts.models import Plan, Subscription, User

logger = logging.getLogger("accounts.billing")

# Rows that grant Pro without Stripe: an operator's grant and the sign-up trial.
_OURS = (Subscription.Source.MANUAL, Subscription.Source.TRIAL)
# Stripe statuses after which a subscription never grants anything again.
ENDED = frozenset({Subscription.Status.CANCELED, Subscription.Status.INCOMPLETE_EXPIRED})


def incomplete_subscription(user: User) -> Subscription:
    """A new (unsaved) Stripe subscription row to Pro: "incomplete" grants nothing until
    Stripe says otherwise."""
    return Subscription(
        user=user,
        plan=Plan.objects.get(code=Plan.PRO),
        status=Subscription.Status.INCOMPLETE,
        source=Subscription.Source.STRIPE,
    )


def subscription_sync(
    *, stripe_subscription_id: str, stripe_customer_id: str = "", user_id: int | None = None
) -> Subscription | None:
    """Re-read one subscription from Stripe and mirror it on its owner's Subscription row.

    The owner is the row holding that subscription id, else the row holding the customer id,
    else the user named by ``user_id`` (Checkout's client_reference_id) or by the Stripe
    customer's metadata. The row is locked before Stripe is read, so concurrent syncs for one
    user apply one after the other and the last read wins. An ended subscription never replaces
    a different live one the row follows, nor an operator's grant that is running. Returns the
    row, or None when the subscription belongs to nobody here. Raises BillingUnavailable.
    """
    client = stripe_client()
    with transaction.atomic():
        row = _locked_row(client, stripe_subscription_id, stripe_customer_id, user_id)
        if row is None:
            return None
        with stripe_errors("re-reading a subscription"):
            data = plain(client.v1.subscriptions.retrieve(stripe_subscription_id))
        if not _should_apply(client, row, data):
            logger.info(
                "Subscription %s (%s) left alone: user %s follows %s",
                data["id"],
                data.get("status"),
                row.user_id,
                row.stripe_subscription_id or "an operator's grant",
            )
            return row
        _mirror(row, data)
        row.save()
    return row


def subscriptions_resync_ended(*, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
    """Re-read every Stripe subscription whose paid period has ended (the beat task).

    Losing Pro at the period's end must not depend on a webhook arriving: this asks Stripe
    directly. One failure is logged and does not stop the others. Without billing configured
    it does nothing.
    """
    counts = {"checked": 0, "synced": 0, "failed": 0}
    if not settings.STRIPE_SECRET_KEY:
        return counts
    now = now or timezone.now()
    due = (
        Subscription.objects.filter(source=Subscription.Source.STRIPE, current_period_end__lte=now)
        .exclude(stripe_subscription_id="")
        .exclude(status__in=ENDED)
        .order_by("current_period_end")
        .values_list("stripe_subscription_id", "stripe_customer_id")[:limit]
    )
    for subscription_id, customer_id in list(due):
        counts["checked"] += 1
        try:
            subscription_sync(
                stripe_subscription_id=subscription_id, stripe_customer_id=customer_id
            )
        except (BillingUnavailable, BillingNotConfigured):
            counts["failed"] += 1
        else:
            counts["synced"] += 1
    if counts["checked"]:
        logger.info("Billing re-sync of ended periods: %s", counts)
    return counts


def subscription_cancel_now(*, user: User) -> Subscription | None:
    """Cancel the user's Stripe subscription(s) at once and mark the local row canceled.

    For account deletion: every subscription of the user's Stripe customer that has not ended
    is cancelled immediately (no further charge), then the row is marked canceled. Safe to call
    when there is no subscription (returns None) or when it has already ended. Raises
    BillingUnavailable (or BillingNotConfigured) when Stripe could not confirm the cancellation:
    the caller must not delete the account then, or the card would go on being charged.
    """
    row = Subscription.objects.filter(user=user).first()
    if row is None:
        return None
    if row.stripe_customer_id or row.stripe_subscription_id:
        client = stripe_client()
        with stripe_errors("cancelling a subscription"):
            for subscription_id in _live_subscription_ids(client, row):
                _cancel_at_stripe(client, subscription_id)
    now = timezone.now()
    with transaction.atomic():
        row = Subscription.objects.select_for_update().get(pk=row.pk)
        row.status = Subscription.Status.CANCELED
        row.cancel_at_period_end = False
        if row.current_period_end is None or row.current_period_end > now:
            row.current_period_end = now
        row.save()
    return row


# --- helpers ---------------------------------------------------------------------------------


def _locked_row(
    client: stripe.StripeClient, subscription_id: str, customer_id: str, user_id: int | None
) -> Subscription | None:
    rows = Subscription.objects.select_for_update().select_related("plan")
    row = rows.filter(stripe_subscription_id=subscription_id).first()
    if row is None and customer_id:
        row = rows.filter(stripe_customer_id=customer_id).first()
    if row is not None:
        return row
    with stripe_errors("finding a subscription's customer"):
        if not customer_id:
            data = plain(client.v1.subscriptions.retrieve(subscription_id))
            customer_id = object_id(data.get("customer"))
        owner_id = _customer_user_id(client, customer_id) or user_id
    user = User.objects.select_for_update().filter(pk=owner_id).first() if owner_id else None
    if user is None:
        return None
    row = rows.filter(user=user).first()
    if row is None:
        row = incomplete_subscription(user)
        row.stripe_customer_id = customer_id
    return row


def _customer_user_id(client: stripe.StripeClient, customer_id: str) -> int | None:
    """The user id we wrote in the customer's metadata when we created it."""
    if not customer_id:
        return None
    try:
        customer = plain(client.v1.customers.retrieve(customer_id))
    except stripe.InvalidRequestError:
        return None
    raw = (customer.get("metadata") or {}).get("user_id", "")
    return int(raw) if str(raw).isdigit() else None


def _should_apply(client: stripe.StripeClient, row: Subscription, data: dict[str, Any]) -> bool:
    ended = data.get("status") in ENDED
    if row.pk and row.source in _OURS and row.grants_access():
        # A paid subscription takes over an operator's grant or a running trial; an ended one
        # does not.
        return not ended
    if row.stripe_subscription_id in ("", data["id"]):
        return True
    if ended:
        return False  # a late event about an older subscription
    if row.status in ENDED:
        return True  # a new subscription after an ended one
    # Two subscriptions that have not ended: ask Stripe about the one the row follows.
    with stripe_errors("re-reading the previous subscription"):
        current = plain(client.v1.subscriptions.retrieve(row.stripe_subscription_id))
    if current.get("status") in ENDED:
        return True
    logger.error(
        "User %s has two live Stripe subscriptions (%s and %s): an operator should refund one",
        row.user_id,
        row.stripe_subscription_id,
        data["id"],
    )
    return (_period(data)[1] or 0) > (_period(current)[1] or 0)


def _mirror(row: Subscription, data: dict[str, Any]) -> None:
    start, end = _period(data)
    cancel_at = data.get("cancel_at")
    if cancel_at and (end is None or cancel_at < end):
        end = cancel_at
    ended_at = data.get("ended_at")
    if data.get("status") in ENDED and ended_at and (end is None or ended_at < end):
        end = ended_at
    row.plan = _plan_for(data)
    row.status = str(data.get("status") or Subscription.Status.INCOMPLETE)
    row.source = Subscription.Source.STRIPE
    row.current_period_start = _when(start)
    row.current_period_end = _when(end)
    row.cancel_at_period_end = bool(data.get("cancel_at_period_end") or cancel_at)
    row.stripe_subscription_id = data["id"]
    row.stripe_customer_id = object_id(data.get("customer")) or row.stripe_customer_id
    row.stripe_synced_at = timezone.now()


def _period(data: dict[str, Any]) -> tuple[int | None, int | None]:
    """(start, end) in epoch seconds: on the first item in current API versions, on the
    subscription itself in older ones (and in localstripe)."""
    items = (data.get("items") or {}).get("data") or [{}]
    item = items[0] or {}
    start = item.get("current_period_start") or data.get("current_period_start")
    end = item.get("current_period_end") or data.get("current_period_end")
    return start, end


def _plan_for(data: dict[str, Any]) -> Plan:
    items = (data.get("items") or {}).get("data") or [{}]
    item = items[0] or {}
    price_id = object_id(item.get("price")) or object_id(item.get("plan"))
    plan = Plan.objects.filter(stripe_price_id=price_id).first() if price_id else None
    if plan is not None:
        return plan
    pro = Plan.objects.get(code=Plan.PRO)
    if price_id != pro.checkout_price_id:
        # Still a paid subscription on our account (Pro is the only plan sold): keep the user
        # on Pro and tell operators.
        logger.warning(
            "Subscription %s uses unknown price %r: treated as Pro", data["id"], price_id
        )
    return pro


def _when(epoch: int | None) -> datetime | None:
    return datetime.fromtimestamp(int(epoch), tz=UTC) if epoch else None


def _live_subscription_ids(client: stripe.StripeClient, row: Subscription) -> list[str]:
    ids = [row.stripe_subscription_id] if row.stripe_subscription_id else []
    if row.stripe_customer_id:
        try:
            listing = client.v1.subscriptions.list(
                params={"customer": row.stripe_customer_id, "status": "all", "limit": 100}
            )
        except stripe.InvalidRequestError as exc:
            if not is_missing(exc):
                raise
        else:
            for sub in listing.data:
                if sub.status not in ENDED and sub.id not in ids:
                    ids.append(sub.id)
    return ids


def _cancel_at_stripe(client: stripe.StripeClient, subscription_id: str) -> None:
    try:
        client.v1.subscriptions.cancel(subscription_id)
    except stripe.InvalidRequestError as exc:
        if is_missing(exc):
            return
        # Cancelling an already-cancelled subscription is refused; that is what we wanted.
        current = plain(client.v1.subscriptions.retrieve(subscription_id))
        if current.get("status") not in ENDED:
            raise
