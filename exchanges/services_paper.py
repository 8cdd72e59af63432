"""Writes for paper accounts: create, reset, and the matching step for resting orders.

(Kept apart from ``exchanges/services.py``, which holds the API-key and account services.)
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from config.exceptions import ApplicationError
from exchanges.models import ExchangeAccount
from exchanges.paper import PaperExchange, PriceSource, snapshot_balances
from exchanges.paper_models import PaperBalance, PaperFill, PaperOrder
from exchanges.trading import Fill

MAX_STARTING_BALANCE = Decimal("1000000000")  # a billion units of the quote currency
LABEL_MAX = 80
_QUOTE = re.compile(r"^[A-Z0-9]{2,10}$")


def _starting_balance(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value).strip().replace(",", "")) if value is not None else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise ApplicationError(
            "Enter the starting balance as a number, like 10000", field="starting_balance"
        )
    if amount <= 0:
        raise ApplicationError("The starting balance must be more than 0", field="starting_balance")
    if amount > MAX_STARTING_BALANCE:
        raise ApplicationError(
            f"The starting balance can be at most {MAX_STARTING_BALANCE:,}",
            field="starting_balance",
        )
    if amount != amount.quantize(Decimal("0.00000001")):
        raise ApplicationError(
            "The starting balance has at most 8 decimals", field="starting_balance"
        )
    return amount


@transaction.atomic
def paper_account_create(
    *, owner: Any, label: str, quote: str, starting_balance: Decimal | str
) -> ExchangeAccount:
    """A new paper account holding ``starting_balance`` of ``quote``. A user may have several;
    labels are unique per user. Field errors (label, quote, starting_balance) change nothing."""
    label = (label or "").strip()
    if not label:
        raise ApplicationError("Give the account a name", field="label")
    if len(label) > LABEL_MAX:
        raise ApplicationError(f"The name can be at most {LABEL_MAX} characters", field="label")
    quote = (quote or "").strip().upper()
    if not _QUOTE.match(quote):
        raise ApplicationError(
            "The quote currency is 2-10 letters or digits, like USDT", field="quote"
        )
    amount = _starting_balance(starting_balance)
    if ExchangeAccount.objects.filter(owner=owner, label=label).exists():
        raise ApplicationError(f"You already have an account named “{label}”", field="label")
    try:
        with transaction.atomic():
            account = ExchangeAccount.objects.create(
                owner=owner,
                kind=ExchangeAccount.Kind.PAPER,
                exchange="paper",
                label=label,
                status=ExchangeAccount.Status.OK,
                can_trade=True,
                can_withdraw=False,
                permissions={"paper": "simulated trading, no keys"},
                paper_quote=quote,
                paper_starting_balance=amount,
                checked_at=timezone.now(),
            )
    except IntegrityError as exc:  # the same label created concurrently
        raise ApplicationError(
            f"You already have an account named “{label}”", field="label"
        ) from exc
    PaperBalance.objects.create(account=account, asset=quote, free=amount)
    snapshot_balances(account)
    return account


@transaction.atomic
def paper_account_reset(*, account: ExchangeAccount) -> ExchangeAccount:
    """Back to the starting balance: every order (resting ones included), fill and holding of
    the paper account is removed. Not for real accounts."""
    if not account.is_paper:
        raise ApplicationError(f"{account.label} is not a paper account")
    locked = ExchangeAccount.objects.select_for_update().get(pk=account.pk)
    PaperFill.objects.filter(account=locked).delete()
    PaperOrder.objects.filter(account=locked).delete()
    PaperBalance.objects.filter(account=locked).delete()
    PaperBalance.objects.create(
        account=locked, asset=locked.paper_quote, free=locked.starting_balance
    )
    snapshot_balances(locked)
    return locked


def paper_match(account: ExchangeAccount, *, price_source: PriceSource | None = None) -> list[Fill]:
    """Fill the account's resting limit orders that the price crossed (candle lows/highs since
    each order was placed, and the last price). Each fill is its own transaction and emits a
    fill event; safe to run from several workers at once (a filled order is skipped)."""
    if not account.is_paper:
        return []
    return PaperExchange(account, price_source=price_source).match()


def paper_match_all(*, price_source: PriceSource | None = None) -> int:
    """``paper_match`` for every paper account with resting orders whose owner has Pro now
    (a lapsed owner's orders wait, untouched, until Pro returns); the number of fills."""
    from accounts.gating import user_has_pro
    from exchanges.paper import open_paper_accounts

    total = 0
    accounts = ExchangeAccount.objects.filter(pk__in=list(open_paper_accounts()))
    for account in accounts.select_related("owner"):
        if user_has_pro(account.owner):
            total += len(paper_match(account, price_source=price_source))
    return total


DEMO_PAPER_LABEL = "Paper USDT"
DEMO_PAPER_BALANCE = Decimal("10000")


def paper_demo_ensure(*, owner: Any) -> tuple[ExchangeAccount, bool]:
    """The demo user's paper account ("Paper USDT", 10,000 USDT); (account, created). Leaves an
    existing one as it is (its trades included), so seeding twice changes nothing."""
    existing = ExchangeAccount.objects.filter(owner=owner, label=DEMO_PAPER_LABEL).first()
    if existing is not None:
        return existing, False
    account = paper_account_create(
        owner=owner, label=DEMO_PAPER_LABEL, quote="USDT", starting_balance=DEMO_PAPER_BALANCE
    )
    return account, True
