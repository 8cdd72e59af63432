"""Pages of the accounts app: the landing page, the dashboard and the profile."""

from __future__ import annotations

import time
from typing import Any

from allauth.mfa.models import Authenticator
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.gating import AuthenticatedHttpRequest
from accounts.models import Plan, Subscription
from accounts.tasks import worker_selftest


def home(request: HttpRequest) -> HttpResponse:
    """Public landing page; signed-in users go straight to their dashboard."""
    if request.user.is_authenticated:
        return redirect("dashboard")
    pro = Plan.objects.filter(code=Plan.PRO).first()
    return render(request, "home.html", {"pro_plan": pro})


def _my_page(request: AuthenticatedHttpRequest, template: str, **context: Any) -> HttpResponse:
    """A signed-in user's own page: ``context`` after the plan whose limits apply."""
    return render(request, template, {"plan": request.user.plan, **context})


@login_required
def dashboard(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    # The sign-up trial, running or over (its end date is shown either way).
    trial = Subscription.objects.filter(user=user, source=Subscription.Source.TRIAL)
    return _my_page(request, "accounts/dashboard.html", trial=trial.select_related("plan").first())


@login_required
def profile(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    mfa = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
    subscription = getattr(user, "subscription", None)
    return _my_page(request, "accounts/profile.html", subscription=subscription, mfa_enabled=mfa)


@login_required
@require_POST
def selftest(request: HttpRequest) -> HttpResponse:
    """Queue a no-op job whose answer arrives over the websocket: proves the worker is alive."""
    user_id, sent_at = request.user.pk, time.time()
    transaction.on_commit(lambda: worker_selftest.delay(user_id, sent_at))
    messages.info(request, "Test job queued: the answer appears below when a worker picks it up.")
    return redirect("accounts:profile")
