"""Writes for accounts: keyword-only, typed, atomic."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.sites.models import Site
from django.db import transaction
from django.utils import timezone

from accounts.models import AuditLog, Plan, Subscription, User
from config.exceptions import ApplicationError, Conflict

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


def site_sync(*, using: str = "default") -> Site:
    """Make the current Site (SITE_ID) carry SITE_NAME and SITE_DOMAIN.

    allauth names the site in every mail from this row ("Hello from Quantfold!"); Django's
    default row says "example.com". Runs after each migrate; idempotent.
    """
    site, _ = Site.objects.using(using).update_or_create(
        pk=settings.SITE_ID, defaults={"name": settings.SITE_NAME, "domain": settings.SITE_DOMAIN}
    )
    Site.objects.clear_cache()
    return site


@transaction.atomic
def plans_ensure() -> dict[str, Plan]:
    """Create the Free and Pro plans if they are missing; never overwrite an operator's edits."""
    return {
        code: Plan.objects.get_or_create(code=code, defaults=defaults)[0]
        for code, defaults in PLAN_DEFAULTS.items()
    }


def audit_record(
    *, actor: User | None, action: str, target: User | None, detail: dict[str, object]
) -> AuditLog:
    """Write one audit row (who, what, whom, when). Callers run it in their own transaction so
    the record and the change it describes commit together."""
    return AuditLog.objects.create(
        actor=actor,
        actor_email=getattr(actor, "email", "") or "",
        action=action,
        target_user=target,
        detail=detail,
    )


def _state(sub: Subscription | None) -> dict[str, object]:
    if sub is None:
        return {"plan": None, "status": None, "source": None}
    return {"plan": sub.plan.code, "status": sub.status, "source": sub.source}


@transaction.atomic
def subscription_grant(
    *, user: User, plan_code: str = Plan.PRO, actor: User | None = None
) -> Subscription:
    """Give a user a plan by hand (operators, the demo seed), with no end date.

    A Stripe subscription that grants access now is left alone (Conflict): the customer is
    paying, and a manual grant on top would outlive their cancellation. A lapsed Stripe
    subscription becomes a manual one (its Stripe subscription id is dropped so a late event
    about it cannot undo the grant; the customer id is kept for a later checkout). With an
    ``actor`` the grant is recorded in the audit log.
    """
    plan = Plan.objects.get(code=plan_code)
    sub, created = Subscription.objects.select_for_update().get_or_create(
        user=user, defaults={"plan": plan, "source": Subscription.Source.MANUAL}
    )
    before = _state(None if created else sub)
    if sub.source == Subscription.Source.STRIPE and sub.grants_access():
        raise Conflict(f"{user.email} already pays for {sub.plan.name} through Stripe.")
    sub.plan = plan
    sub.status = Subscription.Status.ACTIVE
    sub.source = Subscription.Source.MANUAL
    sub.stripe_subscription_id = ""
    sub.current_period_end = None
    sub.save()
    if actor is not None:
        audit_record(
            actor=actor,
            action=AuditLog.Action.PRO_GRANTED,
            target=user,
            detail={"user_id": user.pk, "plan": plan.code, "before": before},
        )
    return sub


@transaction.atomic
def subscription_revoke_manual(*, user: User, actor: User) -> Subscription:
    """End a plan an operator granted by hand, now, and record it in the audit log.

    Only manual grants can be revoked here: a paying Stripe customer is refused
    (ApplicationError) because Stripe would go on charging them; cancel that subscription in
    Stripe (or the customer's portal) and the webhook ends Pro. A user without Pro is refused
    too. Nothing changes on refusal.
    """
    sub = Subscription.objects.select_for_update().select_related("plan").filter(user=user).first()
    if sub is None or not sub.grants_access() or sub.plan.code == Plan.FREE:
        raise ApplicationError(f"{user.email} has no paid plan to revoke.")
    if sub.source == Subscription.Source.STRIPE:
        raise ApplicationError(
            f"{user.email} pays through Stripe: cancel the subscription in Stripe and the "
            "webhook ends Pro. Revoking here would leave them charged."
        )
    before = _state(sub)
    sub.status = Subscription.Status.CANCELED
    sub.current_period_end = timezone.now()
    sub.save(update_fields=["status", "current_period_end", "updated_at"])
    audit_record(
        actor=actor,
        action=AuditLog.Action.PRO_REVOKED,
        target=user,
        detail={"user_id": user.pk, "plan": before["plan"], "before": before},
    )
    return sub


@transaction.atomic
def trial_start(*, user: User, now: datetime | None = None) -> Subscription | None:
    """Give a new account its Pro trial: PRO_TRIAL_DAYS of Pro from ``now``, once per account.

    Returns the trialing Subscription, or None (no trial configured, the account had its trial
    already, or it has a subscription of any kind). Works without Stripe: the trial is ours.
    """
    days = int(settings.PRO_TRIAL_DAYS)
    if days <= 0:
        return None
    locked = User.objects.select_for_update().get(pk=user.pk)
    if locked.pro_trial_ends_at is not None or Subscription.objects.filter(user=user).exists():
        return None
    plans_ensure()
    now = now or timezone.now()
    ends = now + timedelta(days=days)
    sub = Subscription.objects.create(
        user=locked,
        plan=Plan.objects.get(code=Plan.PRO),
        status=Subscription.Status.TRIALING,
        source=Subscription.Source.TRIAL,
        current_period_start=now,
        current_period_end=ends,
    )
    locked.pro_trial_ends_at = ends
    locked.save(update_fields=["pro_trial_ends_at"])
    user.pro_trial_ends_at = ends
    return sub


def account_delete(*, user: User) -> None:
    """Delete ``user`` and everything they own, their subscription cancelled first.

    Billing goes first: ``accounts.billing.subscription_cancel_now`` cancels every live Stripe
    subscription of the user's customer at once (no further charge) and marks the row
    canceled. When Stripe cannot confirm it, its ApplicationError goes up and nothing is
    deleted, so nobody is charged for an account that no longer exists. Then, in one
    transaction, the user row goes with what cascades from it (strategies, backtests with
    their results and trades, uploaded series with their candles, fetch jobs, API keys, email
    addresses, two-factor methods, the subscription). Shared market data stays; the audit log
    keeps an entry naming the user id only. Not atomic as a whole by design: Stripe is not in
    our database, and cancelling first is the safe order.
    """
    from accounts.billing import subscription_cancel_now

    sub = Subscription.objects.filter(user=user).first()
    stripe_ids = [sub.stripe_subscription_id, sub.stripe_customer_id] if sub else []
    subscription_cancel_now(user=user)
    with transaction.atomic():
        locked = User.objects.select_for_update().filter(pk=user.pk).first()
        if locked is None:
            return
        audit_record(
            actor=None,
            action=AuditLog.Action.ACCOUNT_DELETED,
            target=None,
            detail={
                "user_id": locked.pk,
                "stripe_subscription_id": stripe_ids[0] if stripe_ids else "",
                "stripe_customer_id": stripe_ids[1] if stripe_ids else "",
            },
        )
        locked.delete()


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
