"""Stripe billing: the only package that imports stripe.

client.py (the client, errors), checkout.py (Checkout and Customer Portal sessions), sync.py
(re-read subscriptions from Stripe and mirror them; cancel now), webhooks.py (verify, store,
process once), tasks.py (the beat re-sync).
"""

from __future__ import annotations

from accounts.billing.checkout import (
    checkout_session_confirm,
    checkout_session_create,
    customer_ensure,
    portal_session_create,
)
from accounts.billing.client import BillingNotConfigured, BillingUnavailable, billing_configured
from accounts.billing.sync import (
    subscription_cancel_now,
    subscription_sync,
    subscriptions_resync_ended,
)
from accounts.billing.webhooks import WebhookOutcome, webhook_receive

__all__ = [
    "BillingNotConfigured",
    "BillingUnavailable",
    "WebhookOutcome",
    "billing_configured",
    "checkout_session_confirm",
    "checkout_session_create",
    "customer_ensure",
    "portal_session_create",
    "subscription_cancel_now",
    "subscription_sync",
    "subscriptions_resync_ended",
    "webhook_receive",
]
