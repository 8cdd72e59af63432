"""Exchange pages: the list of linked accounts, linking one with an API key, an account's page
(status, permissions, balances, history) with test now, rename, rotate the key and delete.

Views parse forms and call ``exchanges.services``; an ApplicationError becomes a form error or
a message. Every page needs Pro, except deleting, which the owner may always do (so a key can
be removed after Pro ends); another user's account is a 404 everywhere.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
from config.exceptions import ApplicationError
from config.pages import render_form
from exchanges.clients import exchange_label, has_sandbox, required_credentials
from exchanges.forms import KeyFields, LinkForm, RenameForm
from exchanges.models import ExchangeAccount
from exchanges.selectors import account_events, account_get, accounts_for
from exchanges.services import (
    LINKABLE_EXCHANGES,
    account_delete,
    account_link,
    account_rename,
    account_rotate_key,
    account_test,
    account_uses,
)


def _form_error(form: forms.Form, exc: ApplicationError) -> None:
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


def _optional_url(name: str) -> str:
    """The URL of a page another part of the app provides, or "" while it does not exist."""
    try:
        return reverse(name)
    except NoReverseMatch:
        return ""


def exchange_facts() -> list[dict[str, Any]]:
    """Per offered exchange: whether its keys need a passphrase and whether it has a sandbox
    (from ccxt's ``requiredCredentials`` and ``urls['test']``)."""
    return [
        {
            "id": ex,
            "name": name,
            "passphrase": bool(required_credentials(ex).get("password")),
            "sandbox": has_sandbox(ex),
        }
        for ex, name in LINKABLE_EXCHANGES
    ]


def _decorate(account: ExchangeAccount) -> ExchangeAccount:
    account.exchange_name = (  # type: ignore[attr-defined]  # shown by the template only
        "Paper" if account.is_paper else exchange_label(account.exchange)
    )
    perms = account.permissions or {}
    # (type: ignore below) shown by the template only
    account.unverifiable = perms.get("unverifiable", "")  # type: ignore[attr-defined]
    account.balance_rows = sorted(  # type: ignore[attr-defined]  # shown by the template only
        (asset, row.get("free", "0"), row.get("used", "0"))
        for asset, row in (account.balances or {}).items()
    )
    return account


@pro_required
@require_GET
def account_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    accounts = [_decorate(a) for a in accounts_for(request.user)]
    return render(request, "exchanges/list.html", {"accounts": accounts})


@pro_required
@require_http_methods(["GET", "POST"])
def account_add(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = LinkForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            account = account_link(user=request.user, trigger="web", **form.link_kwargs())
        except ApplicationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"“{account.label}” linked: {account.get_status_display()}.")
            return redirect("exchanges:detail", pk=account.pk)
    context = {
        "form": form,
        "facts": exchange_facts(),
        # Other ways to add an account, shown when the parts that serve them are installed.
        "paper_url": _optional_url("exchanges:paper_new"),
        "coinbase_oauth_url": _optional_url("exchanges:coinbase"),
    }
    return render_form(request, "exchanges/add.html", context)


@pro_required
@require_GET
def account_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    account = _decorate(account_get(user=request.user, pk=pk))
    return render(
        request,
        "exchanges/detail.html",
        {"account": account, "events": account_events(account)},
    )


@pro_required
@require_POST
def account_test_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    account = account_get(user=request.user, pk=pk)
    try:
        account = account_test(account=account, user=request.user, trigger="web")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        text = f"Tested: {account.get_status_display()}."
        if account.status_message:
            text += f" {account.status_message}"
        level = messages.SUCCESS if account.status == "ok" else messages.WARNING
        messages.add_message(request, level, text)
    return redirect("exchanges:detail", pk=pk)


@pro_required
@require_http_methods(["GET", "POST"])
def account_rename_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    account = account_get(user=request.user, pk=pk)
    form = RenameForm(request.POST or None, initial={"label": account.label})
    if request.method == "POST" and form.is_valid():
        try:
            account_rename(user=request.user, account=account, label=form.cleaned_data["label"])
        except ApplicationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, "Renamed.")
            return redirect("exchanges:detail", pk=pk)
    return render_form(request, "exchanges/rename.html", {"form": form, "account": account})


@pro_required
@require_http_methods(["GET", "POST"])
def account_rotate_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    account = _decorate(account_get(user=request.user, pk=pk))
    form = KeyFields(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            account_rotate_key(user=request.user, account=account, **form.key_kwargs())
        except ApplicationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, "The new key is stored; the old one is erased.")
            return redirect("exchanges:detail", pk=pk)
    needs = required_credentials(account.exchange).get("password", False)
    return render_form(
        request,
        "exchanges/rotate.html",
        {"form": form, "account": account, "needs_passphrase": needs},
    )


@login_required
@require_http_methods(["GET", "POST"])
def account_delete_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    account = _decorate(account_get(user=request.user, pk=pk))
    if request.method == "POST":
        label = account.label
        try:
            account_delete(user=request.user, account=account, trigger="web")
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return render(
                request,
                "exchanges/delete.html",
                {"account": account, "uses": account_uses(account)},
                status=exc.status,
            )
        messages.success(request, f"“{label}” deleted; its stored keys are erased.")
        return redirect("exchanges:list")
    return render(
        request, "exchanges/delete.html", {"account": account, "uses": account_uses(account)}
    )


urlpatterns = [
    path("", account_list, name="list"),
    path("add/", account_add, name="add"),
    path("<int:pk>/", account_detail, name="detail"),
    path("<int:pk>/test/", account_test_view, name="test"),
    path("<int:pk>/rename/", account_rename_view, name="rename"),
    path("<int:pk>/rotate-key/", account_rotate_view, name="rotate"),
    path("<int:pk>/delete/", account_delete_view, name="delete"),
]
