"""Writes for accounts: keyword-only, typed, atomic."""

from __future__ import annotations

import secrets

from allauth.account.models import EmailAddress
from django.db import transaction

from accounts.models import Plan, Subscription, User

PLAN_DEFAULTS: dict[str, dict[str, object]] = {
    Plan.FREE: {
        "name": "Free",
        "price_cents": 0,
        "max_concurrent_backtests": 0,
        "max_candles_per_backtest": 0,
        "max_optimization_combinations": 0,
        "max_exchange_accounts": 0,
        "max_followers": 0,
    },
    Plan.PRO: {
        "name": "Pro",
        "price_cents": 3999,
        "max_concurrent_backtests": 4,
        "max_candles_per_backtest": 5_000_000,
        "max_optimization_combinations": 10_000,
        "max_exchange_accounts": 10,
        "max_followers": 100,
    },
}


@transaction.atomic
def plans_ensure() -> dict[str, Plan]:
    """Create the Free and Pro plans if they are missing; never overwrite an operator's edits."""
    return {
        code: Plan.objects.get_or_create(code=code, defaults=defaults)[0]
        for code, defaults in PLAN_DEFAULTS.items()
    }


@transaction.atomic
def subscription_grant(*, user: User, plan_code: str = Plan.PRO) -> Subscription:
    """Give a user a plan by hand (operators, the demo seed). Stripe-managed ones are kept."""
    plan = Plan.objects.get(code=plan_code)
    sub, _ = Subscription.objects.select_for_update().get_or_create(
        user=user, defaults={"plan": plan, "source": Subscription.Source.MANUAL}
    )
    sub.plan = plan
    sub.status = Subscription.Status.ACTIVE
    sub.current_period_end = None
    sub.save()
    return sub


@transaction.atomic
def demo_user_ensure(*, email: str, password: str | None = None) -> tuple[User, str | None]:
    """Create (or refresh) the demo Pro user with a verified email.

    Returns the user and the new password, or None when the user existed and no password was
    given (an existing password is never reset silently).
    """
    plans_ensure()
    user = User.objects.filter(email=email).first()
    new_password: str | None = None
    if user is None:
        new_password = password or secrets.token_urlsafe(12)
        user = User.objects.create_user(email=email, password=new_password)
    elif password:
        user.set_password(password)
        user.save(update_fields=["password"])
        new_password = password
    EmailAddress.objects.update_or_create(
        user=user, email=email, defaults={"verified": True, "primary": True}
    )
    subscription_grant(user=user, plan_code=Plan.PRO)
    return user, new_password
