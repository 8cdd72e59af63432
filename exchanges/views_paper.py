"""The page that creates a paper account (Pro, owner-only: it lists only your own)."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect

from accounts.gating import AuthenticatedHttpRequest, pro_required
from config.exceptions import ApplicationError
from config.pages import render_form
from exchanges.models import ExchangeAccount
from exchanges.services_paper import LABEL_MAX, paper_account_create


class PaperAccountForm(forms.Form):
    label = forms.CharField(
        label="Name",
        max_length=LABEL_MAX,
        initial="Paper USDT",
        help_text="Shown wherever you pick an account, e.g. “Paper USDT”.",
    )
    quote = forms.CharField(
        label="Quote currency",
        max_length=10,
        initial="USDT",
        help_text="The currency the starting balance is in and prices are quoted in.",
    )
    # A CharField so that "0", "-5" and "ten" reach the service and get its one clear message.
    starting_balance = forms.CharField(
        label="Starting balance",
        max_length=30,
        initial="10000",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )


@pro_required
def paper_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    """GET: the form and my paper accounts. POST: create one, then back here."""
    form = PaperAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            account = paper_account_create(
                owner=request.user,
                label=form.cleaned_data["label"],
                quote=form.cleaned_data["quote"],
                starting_balance=form.cleaned_data["starting_balance"],
            )
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            amount = f"{Decimal(account.starting_balance).normalize():,f}"
            messages.success(
                request,
                f"Paper account “{account.label}” is ready with {amount} {account.paper_quote}.",
            )
            return redirect("exchanges:paper_new")
    accounts = [
        {"account": a, "started": f"{a.starting_balance.normalize():f}"}
        for a in ExchangeAccount.objects.filter(
            owner=request.user, kind=ExchangeAccount.Kind.PAPER
        ).order_by("label")
    ]
    return render_form(request, "exchanges/paper_new.html", {"form": form, "accounts": accounts})
