"""Reads of linked exchange accounts: always the owner's own (anything else is a 404)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from exchanges.models import AccountEvent, ExchangeAccount


def accounts_for(user: User) -> QuerySet[ExchangeAccount]:
    """``user``'s accounts by name."""
    return ExchangeAccount.objects.filter(owner=user).order_by("label", "pk")


def account_get(*, user: User, pk: int) -> ExchangeAccount:
    """``user``'s account ``pk``; Http404 for a missing one or someone else's."""
    account = ExchangeAccount.objects.filter(owner=user, pk=pk).first()
    if account is None:
        raise Http404("Exchange account not found.")
    return account


def account_events(account: ExchangeAccount, *, limit: int = 20) -> list[AccountEvent]:
    """The account's latest audit rows, newest first."""
    return list(AccountEvent.objects.filter(account=account).order_by("-created_at", "-pk")[:limit])
