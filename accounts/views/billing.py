"""Billing pages: the plan and its state, the upgrade page, Checkout and the Customer Portal
round trips, and the Stripe webhook endpoint. Views validate; accounts.billing executes."""

from __future__ import annotations

import contextlib

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.billing import (
    BillingUnavailable,
    billing_configured,
    checkout_session_confirm,
    checkout_session_create,
    portal_session_create,
    webhook_receive,
)
from accounts.billing.client import NOT_CONFIGURED_MESSAGE
from accounts.gating import AuthenticatedHttpRequest, user_has_pro
from accounts.models import Plan, Subscription, User
from accounts.selectors import trial_days_left
from config.exceptions import ApplicationError, Conflict
from config.features import feature_states

# What each plan limit means, in the order the upgrade page lists them, and the announced
# feature it belongs to (config/features.py): until that ships, the row says "Coming".
LIMITS = [
    ("max_concurrent_backtests", "Backtests running at once", None),
    ("max_candles_per_backtest", "Candles per backtest", None),
    ("max_optimization_combinations", "Parameter combinations per optimization", None),
    ("max_exchange_accounts", "Linked exchange accounts", "exchange_accounts"),
    ("max_followers", "Copy-trading followers", "copy_trading"),
]
PRO_FEATURES = [
    "Write strategies in the rule language or start from a preset",
    "Backtest on exchange candles, your own uploads or demo data, with live progress",
    "Optimize, walk-forward, Monte Carlo and stress tests",
    "Fetch market data from exchanges and export results",
    "The REST API with personal API keys",
]


@login_required
@require_GET
def billing(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The user's plan, the subscription's state and dates, and what they can do next."""
    subscription = Subscription.objects.filter(user=request.user).select_related("plan").first()
    configured = billing_configured()
    return render(
        request,
        "accounts/billing/billing.html",
        {
            "plan": request.user.plan,
            "has_pro": user_has_pro(request.user),
            "subscription": subscription,
            "configured": configured,
            "not_configured_message": NOT_CONFIGURED_MESSAGE,
            "can_manage": bool(configured and subscription and subscription.stripe_customer_id),
            "trial_days_left": trial_days_left(user=request.user),
        },
    )


@login_required
@require_GET
def upgrade(request: AuthenticatedHttpRequest) -> HttpResponse:
    """What Pro unlocks, side by side with Free, and the button that starts Checkout."""
    plans = {p.code: p for p in Plan.objects.filter(code__in=[Plan.FREE, Plan.PRO])}
    free, pro = plans.get(Plan.FREE), plans.get(Plan.PRO)
    states = feature_states()
    rows = [
        {
            "label": label,
            "free": getattr(free, field, 0) if free else 0,
            "pro": getattr(pro, field, 0) if pro else 0,
            "feature": feature or "",
            "state": states[feature] if feature else "included",
        }
        for field, label, feature in LIMITS
    ]
    return render(
        request,
        "accounts/billing/upgrade.html",
        {
            "pro": pro,
            "rows": rows,
            "features": PRO_FEATURES,
            "has_pro": user_has_pro(request.user),
            "trial_days_left": trial_days_left(user=request.user),
            "trial_ends_at": request.user.pro_trial_ends_at,
            "configured": billing_configured(),
            "not_configured_message": NOT_CONFIGURED_MESSAGE,
        },
    )


@login_required
@require_POST
def checkout_start(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Create a Checkout session and send the browser to Stripe's payment page."""
    success = request.build_absolute_uri(reverse("accounts:checkout_success"))
    cancel = request.build_absolute_uri(reverse("accounts:checkout_cancel"))
    try:
        url = checkout_session_create(
            user=request.user,
            # Stripe fills in {CHECKOUT_SESSION_ID} on the way back.
            success_url=f"{success}?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=cancel,
        )
    except Conflict as exc:
        messages.info(request, exc.message)
        return redirect("accounts:billing")
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("accounts:upgrade")
    return redirect(url)


@login_required
@require_GET
def checkout_success(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Back from Checkout. Pro starts when Stripe confirms the payment: this page asks Stripe
    about the session and, until Pro is on, refreshes itself every few seconds."""
    session_id = request.GET.get("session_id", "")
    if not user_has_pro(request.user) or trial_days_left(user=request.user):
        # When Stripe cannot be asked now, the webhook carries it; the page keeps refreshing.
        with contextlib.suppress(BillingUnavailable):
            checkout_session_confirm(user=request.user, session_id=session_id)
    user = User.objects.get(pk=request.user.pk)  # not the request's copy, cached before the sync
    # Bought during the sign-up trial: done once Stripe's subscription replaced the trial.
    active = user_has_pro(user) and not trial_days_left(user=user)
    return render(
        request,
        "accounts/billing/checkout_success.html",
        {"active": active, "plan": user.plan, "refresh_seconds": 4},
    )


@login_required
@require_GET
def checkout_cancel(request: HttpRequest) -> HttpResponse:
    messages.info(request, "Checkout was cancelled: nothing was charged.")
    return redirect("accounts:upgrade")


@login_required
@require_POST
def portal(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Send the user to Stripe's Customer Portal (change card, invoices, cancel)."""
    try:
        url = portal_session_create(
            user=request.user, return_url=request.build_absolute_uri(reverse("accounts:billing"))
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("accounts:billing")
    return redirect(url)


@csrf_exempt  # Stripe cannot send a CSRF token; the signature on the raw body stands in.
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe's webhook deliveries: verified on the raw body, stored, processed once."""
    outcome = webhook_receive(
        payload=request.body, signature=request.headers.get("Stripe-Signature")
    )
    return JsonResponse({"result": outcome.result}, status=outcome.http_status)
