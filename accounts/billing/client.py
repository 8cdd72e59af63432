"""The Stripe client and the errors billing raises. With accounts/billing/ it is the only code
that imports stripe; nothing here ever logs or returns a key or a signing secret."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stripe
from django.conf import settings

from config.exceptions import ApplicationError

logger = logging.getLogger("accounts.billing")

NOT_CONFIGURED_MESSAGE = (
    "Billing is not configured on this server (no Stripe keys), so plans cannot be bought "
    "here. An operator can grant Pro from the admin."
)
UNAVAILABLE_MESSAGE = (
    "Stripe could not be reached just now, so nothing was changed. Please try again in a minute."
)


class BillingNotConfigured(ApplicationError):
    """Stripe keys or the Pro price id are missing (allowed outside production)."""

    status = 503
    code = "billing_not_configured"

    def __init__(self, message: str = NOT_CONFIGURED_MESSAGE) -> None:
        super().__init__(message)


class BillingUnavailable(ApplicationError):
    """A Stripe call failed; the caller changed nothing."""

    status = 502
    code = "billing_unavailable"

    def __init__(self, message: str = UNAVAILABLE_MESSAGE) -> None:
        super().__init__(message)


def billing_configured() -> bool:
    """True when the secret key, the webhook signing secret and the Pro price id are set."""
    from accounts.models import Plan

    if not (settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET):
        return False
    pro = Plan.objects.filter(code=Plan.PRO).first()
    return bool(pro is not None and pro.checkout_price_id)


def stripe_client() -> stripe.StripeClient:
    """A client for the configured account (and STRIPE_API_BASE, e.g. localstripe in tests).

    Raises BillingNotConfigured without a secret key.
    """
    if not settings.STRIPE_SECRET_KEY:
        raise BillingNotConfigured()
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)


@functools.lru_cache(maxsize=4)
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        # Short timeouts: these calls sit in a page request or a webhook delivery.
        http_client=stripe.RequestsClient(timeout=(5, 20)),
        max_network_retries=1,
    )


@contextmanager
def stripe_errors(action: str) -> Iterator[None]:
    """Turn any Stripe failure into BillingUnavailable, logging what failed (never a key)."""
    try:
        yield
    except stripe.StripeError as exc:
        logger.warning("Stripe call failed while %s: %s %s", action, type(exc).__name__, exc)
        raise BillingUnavailable() from exc


def plain(obj: Any) -> dict[str, Any]:
    """A Stripe object (or a webhook's JSON) as plain nested dicts and lists."""
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    return dict(obj or {})


def object_id(value: Any) -> str:
    """The id of a Stripe reference, whether it came as an id or an expanded object."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def is_missing(exc: stripe.StripeError) -> bool:
    """True for Stripe's "no such object" answer."""
    return isinstance(exc, stripe.InvalidRequestError) and (
        exc.code == "resource_missing" or exc.http_status == 404
    )
