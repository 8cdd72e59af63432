"""Risk pages: the profile (limits) with per-account overrides, the dashboard, the kill switch
and the state reset. Views parse input and call services; Pro only, owner only."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts.gating import pro_required
from config.exceptions import ApplicationError
from config.pages import render_form
from risk import charts, selectors, services
from risk.forms import RiskProfileForm


def _profile_page(request: HttpRequest, account_id: int | None) -> HttpResponse:
    account = selectors.account_get(request.user, account_id)
    profile = (
        selectors.profile_stored(request.user, account) if account is not None else None
    ) or selectors.profile_for(request.user, None)
    form = RiskProfileForm(request.POST or None, profile=profile)
    if request.method == "POST" and form.is_valid():
        try:
            services.risk_profile_update(
                user=request.user, account=account, values=form.limit_values()
            )
        except services.LimitsInvalid as exc:
            for name, message in (exc.extra or {exc.field: exc.message}).items():
                form.add_error(name if name in form.fields else None, message)
        else:
            messages.success(request, "Risk limits saved.")
            if account is None:
                return redirect("risk:profile")
            return redirect("risk:profile_account", pk=account.pk)
    overrides = {p.account_id for p in selectors.profile_overrides(request.user)}
    return render_form(
        request,
        "risk/profile.html",
        {
            "form": form,
            "account": account,
            "accounts": [
                {"account": a, "override": a.pk in overrides}
                for a in selectors.accounts_for(request.user)
            ],
        },
    )


@pro_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    """The user's default limits."""
    return _profile_page(request, None)


@pro_required
@require_http_methods(["GET", "POST"])
def profile_account(request: HttpRequest, pk: int) -> HttpResponse:
    """One account's override of the limits (another user's account: 404)."""
    try:
        return _profile_page(request, pk)
    except ApplicationError as exc:
        if exc.status == 404:
            return render(request, "404.html", status=404)
        raise


@pro_required
def dashboard(request: HttpRequest) -> HttpResponse:
    services.trading_state_expire_latches(user=request.user)  # e.g. yesterday's daily loss
    data = selectors.dashboard_data(request.user)
    context: dict[str, Any] = {
        **data,
        "equity_figure": charts.equity_drawdown_figure(data["curve"]) if data["curve"] else None,
        "exposure_figure": charts.exposure_figure(data["exposure"]) if data["exposure"] else None,
        "correlation_figure": (
            charts.correlation_figure(data["symbols"], data["correlation"])
            if len(data["symbols"]) >= 2
            else None
        ),
        "ws_path": "/ws/risk/",
    }
    if data["today_pnl"] is not None and data["daily_limit_money"]:
        used = max(0.0, -data["today_pnl"]) / data["daily_limit_money"]
        context["daily_used_pct"] = used * 100.0
    return render(request, "risk/dashboard.html", context)


@pro_required
@require_http_methods(["GET", "POST"])
def kill_switch(request: HttpRequest) -> HttpResponse:
    """GET: the confirmation page. POST: halt everything (and close positions if ticked)."""
    if request.method == "POST":
        if request.POST.get("confirm") != "HALT":
            messages.error(request, "Type HALT in the box to confirm the kill switch.")
            return render(request, "risk/kill_switch.html", {"error": True}, status=400)
        run = services.kill_switch_engage(
            user=request.user, close_positions=request.POST.get("close_positions") == "on"
        )
        failed = run.failed_account_ids
        if failed:
            messages.warning(
                request,
                f"Trading halted. {len(failed)} account(s) could not be reached; retrying.",
            )
        else:
            messages.success(request, "Trading halted everywhere.")
        return redirect("risk:dashboard")
    return render(request, "risk/kill_switch.html", {})


@pro_required
@require_POST
def state_reset(request: HttpRequest, pk: int) -> HttpResponse:
    """Reset a latched state to ACTIVE (another user's state: 404)."""
    try:
        state = selectors.trading_state_get(request.user, pk)
    except ApplicationError:
        return render(request, "404.html", status=404)
    services.trading_state_reset(user=request.user, state=state)
    messages.success(request, "Trading state reset to active.")
    return redirect(reverse("risk:dashboard"))


@pro_required
@require_POST
def position_close(request: HttpRequest, pk: int) -> HttpResponse:
    """Close one position of the user's account ``pk`` at market (POST ``symbol``). It passes
    the pre-trade check; a denial is stored and shown. Another user's account: 404."""
    try:
        account = selectors.account_get(request.user, pk)
    except ApplicationError:
        return render(request, "404.html", status=404)
    assert account is not None
    symbol = (request.POST.get("symbol") or "").strip().upper()[:40]
    if not symbol or "/" not in symbol:
        messages.error(request, "Say which position to close (a symbol such as BTC/USDT).")
        return redirect("risk:dashboard")
    try:
        row = services.position_close(user=request.user, account=account, symbol=symbol)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("risk:dashboard")
    if row.status == row.Status.SENT:
        messages.success(request, f"Close order for {symbol} on {account.label} sent.")
    elif row.status == row.Status.DENIED:
        messages.error(request, f"Close of {symbol} denied ({row.code}): {row.message}")
    else:
        messages.warning(request, f"Close of {symbol}: {row.get_status_display()}. {row.message}")
    return redirect("risk:dashboard")
