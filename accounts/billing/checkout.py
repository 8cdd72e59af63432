"""Stripe-hosted pages: Checkout to buy Pro, the Customer Portal to change card or cancel."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import stripe
from django.db import transaction

from accounts.billing.client import (
    BillingNotConfigured,
    billing_configured,
    is_missing,
    plain,
    stripe_client,
    stripe_errors,
)
from accounts.billing.sync import incomplete_subscription, subscription_sync
from accounts.gating import user_has_pro
from accounts.models import Plan, Subscription, User
from accounts.selectors import trial_days_left
from config.exceptions import ApplicationError, Conflict

if TYPE_CHECKING:
    from stripe.params.checkout import SessionCreateParamsSubscriptionData

CHECKOUT_SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,250}$")


def customer_ensure(*, user: User) -> str:
    """The user's Stripe customer id: the stored one while Stripe still has it, else a new
    customer (the user's email, metadata user_id) stored on the user's Subscription row.

    The user's row is locked meanwhile, so a double click cannot make two customers.
    """
    client = stripe_client()
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).first()
        row = Subscription.objects.select_for_update().filter(user=user).first()
        if row is not None and row.stripe_customer_id:
            with stripe_errors("checking the stored customer"):
                try:
                    existing = plain(client.v1.customers.retrieve(row.stripe_customer_id))
                except stripe.InvalidRequestError as exc:
                    if not is_missing(exc):
                        raise
                    existing = {"deleted": True}
            if not existing.get("deleted"):
                return row.stripe_customer_id
        with stripe_errors("creating a customer"):
            customer = client.v1.customers.create(
                params={"email": user.email, "metadata": {"user_id": str(user.pk)}}
            )
        if row is None:
            row = incomplete_subscription(user)  # nothing is bought yet
        row.stripe_customer_id = customer.id
        row.save()
        return row.stripe_customer_id


def checkout_session_create(*, user: User, success_url: str, cancel_url: str) -> str:
    """Start a Stripe Checkout for the Pro plan and return the page to send the user to.

    Subscription mode with the Pro price, the user's (reused or new) customer and
    client_reference_id = the user's id. Raises BillingNotConfigured, Conflict when the user
    already has Pro, BillingUnavailable when Stripe fails. Pro itself starts only when Stripe
    confirms the payment (webhook, or the success page re-reading the session).
    """
    if not billing_configured():
        raise BillingNotConfigured()
    trial_days = trial_days_left(user=user)
    if user_has_pro(user) and not trial_days:
        raise Conflict("You already have Pro. Change or cancel it from the billing page.")
    price = Plan.objects.get(code=Plan.PRO).checkout_price_id
    customer = customer_ensure(user=user)
    subscription_data: SessionCreateParamsSubscriptionData = {"metadata": {"user_id": str(user.pk)}}
    if trial_days:
        # Bought during the sign-up trial: Stripe's own trial period covers the days left, so
        # the first charge comes when the free days are over, not today.
        subscription_data["trial_period_days"] = trial_days
    with stripe_errors("creating a Checkout session"):
        session = stripe_client().v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "line_items": [{"price": price, "quantity": 1}],
                "customer": customer,
                "client_reference_id": str(user.pk),
                "success_url": success_url,
                "cancel_url": cancel_url,
                "metadata": {"user_id": str(user.pk)},
                "subscription_data": subscription_data,
            }
        )
    return str(session.url)


def checkout_session_confirm(*, user: User, session_id: str) -> bool:
    """On return from Checkout: if that session is this user's and complete, re-read its
    subscription from Stripe now rather than wait for the webhook. True when it synced.

    A session of someone else, an unknown or malformed id, or an open session changes nothing.
    Raises BillingUnavailable when Stripe fails.
    """
    if not CHECKOUT_SESSION_ID.match(session_id or "") or not billing_configured():
        return False
    client = stripe_client()
    with stripe_errors("reading a Checkout session"):
        try:
            session = plain(client.v1.checkout.sessions.retrieve(session_id))
        except stripe.InvalidRequestError as exc:
            if is_missing(exc):
                return False
            raise
    if session.get("client_reference_id") != str(user.pk):
        return False
    subscription_id = session.get("subscription")
    if session.get("status") != "complete" or not subscription_id:
        return False
    if isinstance(subscription_id, dict):
        subscription_id = subscription_id.get("id", "")
    row = subscription_sync(
        stripe_subscription_id=str(subscription_id),
        stripe_customer_id=str(session.get("customer") or ""),
        user_id=user.pk,
    )
    return row is not None and row.user_id == user.pk


def portal_session_create(*, user: User, return_url: str) -> str:
    """A Stripe Customer Portal session (change card, see invoices, cancel) for the user's
    customer; returns its URL. Raises ApplicationError when the user has never been a Stripe
    customer, BillingNotConfigured, BillingUnavailable."""
    if not billing_configured():
        raise BillingNotConfigured()
    row = Subscription.objects.filter(user=user).first()
    if row is None or not row.stripe_customer_id:
        raise ApplicationError(
            "There is no Stripe billing account for you yet: it is created when you upgrade."
        )
    with stripe_errors("creating a Customer Portal session"):
        session = stripe_client().v1.billing_portal.sessions.create(
            params={"customer": row.stripe_customer_id, "return_url": return_url}
        )
    return str(session.url)
