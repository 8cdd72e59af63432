"""Coinbase OAuth pages: link (redirect to Coinbase), the callback, check now, unlink.

Pro only; every account id is looked up among the signed-in user's own (another's is a 404).
Errors come back as messages on the Coinbase page; no token is ever put in a response.
"""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
from config.exceptions import ApplicationError
from exchanges.models import ExchangeAccount
from exchanges.oauth import (
    oauth_account_check,
    oauth_account_link,
    oauth_account_unlink,
    oauth_authorize_url,
    oauth_missing_settings,
)


class CoinbaseLinkForm(forms.Form):
    label = forms.CharField(label="Name", max_length=70, required=False, initial="Coinbase")


def _back_to_coinbase(request: HttpRequest, action: Callable[[], str]) -> HttpResponse:
    """Run ``action`` and go back to the Coinbase page with its message, or its refusal."""
    try:
        done = action()
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, done)
    return redirect("exchanges:coinbase")


def _own_oauth_account(request: AuthenticatedHttpRequest, pk: int) -> ExchangeAccount:
    account = ExchangeAccount.objects.filter(
        pk=pk, owner=request.user, kind=ExchangeAccount.Kind.OAUTH
    ).first()
    if account is None:
        raise Http404("No such account.")
    return account


def _redirect_uri(request: HttpRequest) -> str:
    return settings.COINBASE_OAUTH_REDIRECT_URI or request.build_absolute_uri(
        reverse("exchanges:coinbase_callback")
    )


@never_cache
@pro_required
@require_GET
def coinbase(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The Coinbase page: the link button (or why there is none) and my linked accounts."""
    accounts = ExchangeAccount.objects.filter(
        owner=request.user, kind=ExchangeAccount.Kind.OAUTH
    ).order_by("label")
    return render(
        request,
        "exchanges/coinbase.html",
        {
            "missing": oauth_missing_settings(),
            "form": CoinbaseLinkForm(),
            "accounts": accounts,
            "scopes": settings.COINBASE_OAUTH_SCOPES.split(","),
        },
    )


@pro_required
@require_POST
def coinbase_start(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Off to Coinbase's consent page (state and PKCE verifier kept in this session)."""
    form = CoinbaseLinkForm(request.POST)
    label = form.cleaned_data["label"] if form.is_valid() else ""
    relink = request.POST.get("account")
    relink_id = _own_oauth_account(request, int(relink)).pk if relink and relink.isdigit() else None
    try:
        url = oauth_authorize_url(
            session=request.session,
            redirect_uri=_redirect_uri(request),
            label=label,
            relink_account_id=relink_id,
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("exchanges:coinbase")
    return redirect(url)


@never_cache
@pro_required
@require_GET
def coinbase_callback(request: HttpRequest) -> HttpResponse:
    """Where Coinbase sends the browser back with ``code`` and ``state`` (or ``error``)."""

    def link() -> str:
        account = oauth_account_link(
            owner=request.user,
            session=request.session,
            state=request.GET.get("state", "")[:200],
            code=request.GET.get("code", "")[:500],
            error=request.GET.get("error", "")[:100],
        )
        return f"Coinbase account “{account.label}” is linked."

    return _back_to_coinbase(request, link)


@pro_required
@require_POST
def coinbase_check(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Read the balances now (refreshing the access token when it is due)."""
    account = _own_oauth_account(request, pk)

    def check() -> str:
        oauth_account_check(account=account)
        return f"“{account.label}” answered: balances updated."

    return _back_to_coinbase(request, check)


@pro_required
@require_POST
def coinbase_unlink(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Revoke the tokens at Coinbase and remove the account."""
    account = _own_oauth_account(request, pk)
    label = account.label
    try:
        revoked = oauth_account_unlink(account=account)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("exchanges:coinbase")
    if revoked:
        messages.success(request, f"“{label}” is unlinked and its access revoked at Coinbase.")
    else:
        messages.warning(
            request,
            f"“{label}” is unlinked here, but Coinbase could not confirm the revocation; you can "
            "also remove the app from your Coinbase account settings.",
        )
    return redirect("exchanges:coinbase")
