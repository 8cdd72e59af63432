"""Following a leader: create, change, pause, resume, stop. Bad input changes nothing."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from django.db import models, transaction
from django.utils import timezone

from accounts.gating import require_pro
from config.exceptions import ApplicationError, NotFound
from copytrading import live
from copytrading.models import Leader, Subscription
from exchanges.models import ExchangeAccount

SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
MAX_SYMBOLS = 200
UNUSABLE_ACCOUNT = {
    ExchangeAccount.Status.DISABLED,
    ExchangeAccount.Status.EXPIRED,
    ExchangeAccount.Status.NEEDS_RELINK,
}
SETTING_FIELDS = (
    "sizing_mode",
    "ratio",
    "notional",
    "risk_fraction",
    "max_notional",
    "max_positions",
    "allowed_symbols",
    "excluded_symbols",
    "allowed_sides",
    "symbol_map",
    "slippage_guard",
    "expiry_seconds",
    "join_policy",
    "stop_mode",
    "stop_loss_pct",
    "take_profit_pct",
    "drift_tolerance",
    "drift_repair",
)


def _decimal(
    name: str, value: Any, *, low: Decimal, high: Decimal, low_open: bool = True
) -> Decimal:
    if isinstance(value, bool):
        raise ApplicationError(f"{name} must be a number.", field=name)
    try:  # via str: a float's shortest repr, not its binary expansion
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ApplicationError(f"{name} must be a number.", field=name) from None
    if not number.is_finite():
        raise ApplicationError(f"{name} must be a finite number.", field=name)
    too_low = number <= low if low_open else number < low
    if too_low or number > high:
        bound = "more than" if low_open else "at least"
        raise ApplicationError(f"{name} must be {bound} {low} and at most {high}.", field=name)
    return number


def _optional_decimal(name: str, value: Any, **bounds: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return _decimal(name, value, **bounds)


def _integer(name: str, value: Any, *, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ApplicationError(f"{name} must be a whole number.", field=name)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ApplicationError(f"{name} must be a whole number.", field=name) from None
    if not low <= number <= high:
        raise ApplicationError(f"{name} must be between {low} and {high}.", field=name)
    return number


def _symbols(name: str, value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [v for v in re.split(r"[\s,]+", value) if v]
    if not isinstance(value, list | tuple):
        raise ApplicationError(f"{name} must be a list of markets.", field=name)
    out: list[str] = []
    for item in value:
        symbol = str(item).strip().upper()
        if not SYMBOL_RE.match(symbol):
            raise ApplicationError(f"{item!r} is not a market name like BTC/USDT.", field=name)
        if symbol not in out:
            out.append(symbol)
    if len(out) > MAX_SYMBOLS:
        raise ApplicationError(f"At most {MAX_SYMBOLS} markets.", field=name)
    return out


def _choice(name: str, value: Any, choices: Any) -> str:
    if value not in choices.values:
        allowed = ", ".join(choices.values)
        raise ApplicationError(f"{name} must be one of: {allowed}.", field=name)
    return str(value)


def clean_settings(data: dict[str, Any], *, current: Subscription | None = None) -> dict[str, Any]:
    """Validate subscription settings (all of them on create, the given ones on update) and
    return model field values. Raises ApplicationError naming the first bad field."""
    unknown = sorted(set(data) - set(SETTING_FIELDS))
    if unknown:
        raise ApplicationError(f"Unknown setting {unknown[0]!r}.", field=unknown[0])
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name == "sizing_mode":
            out[name] = _choice(name, value, Subscription.Sizing)
        elif name == "ratio":
            out[name] = _decimal(name, value, low=Decimal(0), high=Decimal(100))
        elif name == "notional":
            out[name] = _decimal(name, value, low=Decimal(0), high=Decimal(10) ** 9, low_open=False)
        elif name == "risk_fraction":
            out[name] = _decimal(name, value, low=Decimal(0), high=Decimal("0.1"), low_open=False)
        elif name == "max_notional":
            out[name] = _optional_decimal(name, value, low=Decimal(0), high=Decimal(10) ** 9)
        elif name == "max_positions":
            out[name] = None if value in (None, "") else _integer(name, value, low=1, high=500)
        elif name in ("allowed_symbols", "excluded_symbols"):
            out[name] = _symbols(name, value)
        elif name == "allowed_sides":
            sides = [value] if isinstance(value, str) else list(value or [])
            if not sides or any(s not in ("buy", "sell") for s in sides):
                raise ApplicationError("allowed_sides must be buy, sell or both.", field=name)
            out[name] = sorted(set(sides))
        elif name == "symbol_map":
            if not isinstance(value, dict):
                raise ApplicationError("symbol_map must map markets to markets.", field=name)
            mapping: dict[str, str] = {}
            for src, dst in value.items():
                pair = _symbols(name, [src, dst])
                if len(pair) != 2:
                    raise ApplicationError(f"{src} maps to itself.", field=name)
                mapping[pair[0]] = pair[1]
            out[name] = mapping
        elif name == "slippage_guard":
            out[name] = _optional_decimal(name, value, low=Decimal(0), high=Decimal("0.1"))
        elif name == "expiry_seconds":
            out[name] = _integer(name, value, low=1, high=3600)
        elif name == "join_policy":
            out[name] = _choice(name, value, Subscription.JoinPolicy)
        elif name == "stop_mode":
            out[name] = _choice(name, value, Subscription.StopMode)
        elif name == "stop_loss_pct":  # percent below the average entry
            out[name] = _optional_decimal(name, value, low=Decimal(0), high=Decimal(99))
        elif name == "take_profit_pct":  # percent above the average entry
            out[name] = _optional_decimal(name, value, low=Decimal(0), high=Decimal(1000))
        elif name == "drift_tolerance":
            out[name] = _decimal(name, value, low=Decimal(0), high=Decimal("0.5"), low_open=False)
        elif name == "drift_repair":
            out[name] = _choice(name, value, Subscription.DriftRepair)

    # Whole-record rules, on the values the row will have.
    def final(field: str) -> Any:
        if field in out:
            return out[field]
        if current is not None:
            return getattr(current, field)
        # The settings are concrete columns, never relations.
        model_field = cast("models.Field[Any, Any]", Subscription._meta.get_field(field))
        return model_field.get_default()

    mode = final("sizing_mode")
    if mode == Subscription.Sizing.FIXED_NOTIONAL and not final("notional"):
        raise ApplicationError("Fixed amount per trade needs an amount.", field="notional")
    if mode == Subscription.Sizing.FIXED_RISK and not final("risk_fraction"):
        raise ApplicationError("Fixed risk per trade needs a risk share.", field="risk_fraction")
    if final("stop_mode") == Subscription.StopMode.OWN and not (
        final("stop_loss_pct") or final("take_profit_pct")
    ):
        raise ApplicationError(
            "Your own stop-loss / take-profit needs at least one percentage.",
            field="stop_loss_pct",
        )
    overlap = set(final("allowed_symbols")) & set(final("excluded_symbols"))
    if overlap:
        raise ApplicationError(
            f"{sorted(overlap)[0]} is both allowed and excluded.", field="excluded_symbols"
        )
    return out


def _own_subscription(user: Any, subscription_id: int) -> Subscription:
    sub = Subscription.objects.select_for_update().filter(pk=subscription_id, follower=user).first()
    if sub is None:
        raise NotFound("Subscription not found.")
    return sub


def subscription_create(
    *, user: Any, leader_id: int, account_id: int, settings: dict[str, Any] | None = None
) -> Subscription:
    """Follow ``leader_id`` with one of the user's trading accounts."""
    require_pro(user)
    leader = Leader.objects.filter(pk=leader_id).first()
    if leader is None:
        raise NotFound("Leader not found.", field="leader")
    if leader.status == Leader.Status.RETIRED:
        raise ApplicationError("That leader has retired and cannot be followed.", field="leader")
    account = ExchangeAccount.objects.filter(pk=account_id, owner=user).first()
    if account is None:
        raise NotFound("Exchange account not found.", field="account")
    if account.pk == leader.account_id:
        raise ApplicationError(
            "An account cannot copy itself: choose another account.", field="account"
        )
    if not account.can_trade:
        raise ApplicationError(
            "That account's key cannot trade: link a key with trading permission.",
            field="account",
        )
    if account.status in UNUSABLE_ACCOUNT:
        raise ApplicationError(
            f"That account is {account.get_status_display().lower()}.", field="account"
        )
    values = clean_settings(dict(settings or {}))
    with transaction.atomic():
        if (
            Subscription.objects.select_for_update()
            .filter(leader=leader, account=account)
            .exclude(status=Subscription.Status.STOPPED)
            .exists()
        ):
            raise ApplicationError("That account already follows this leader.", field="account")
        sub = Subscription.objects.create(follower=user, leader=leader, account=account, **values)
        if sub.join_policy == Subscription.JoinPolicy.OPEN_CURRENT:
            _enqueue("copytrading.join", sub.pk)
        return sub


def _enqueue(task: str, *args: Any) -> None:
    """Queue a live-queue task by name once the current transaction commits."""
    from celery import current_app
    from django.conf import settings

    transaction.on_commit(
        lambda: current_app.send_task(task, args=list(args), queue=settings.CELERY_LIVE_QUEUE)
    )


def subscription_update(
    *, user: Any, subscription_id: int, settings: dict[str, Any]
) -> Subscription:
    """Change settings of a live subscription; takes effect from the next leader fill."""
    with transaction.atomic():
        sub = _own_subscription(user, subscription_id)
        if sub.status == Subscription.Status.STOPPED:
            raise ApplicationError("A stopped subscription cannot be changed.", field="status")
        values = clean_settings(dict(settings), current=sub)
        for name, value in values.items():
            setattr(sub, name, value)
        sub.save()
    return sub


def subscription_pause(*, user: Any, subscription_id: int) -> Subscription:
    """No new positions are opened; the leader's closes are still copied."""
    with transaction.atomic():
        sub = _own_subscription(user, subscription_id)
        if sub.status == Subscription.Status.STOPPED:
            raise ApplicationError("A stopped subscription cannot be paused.", field="status")
        sub.status = Subscription.Status.PAUSED
        sub.paused_at = timezone.now()
        sub.status_message = "Paused by you: closes are still copied."
        sub.save(update_fields=["status", "paused_at", "status_message", "updated_at"])
    return sub


def subscriptions_pause_for_halt(*, user_id: int, account_id: int | None, reason: str) -> int:
    """The follower's trading was halted (kill switch or a breaker; ``account_id`` None: all of
    the user's trading): their active subscriptions (on that account, or all) stop opening
    positions. The leader's closes are still copied. Returns how many were paused."""
    subs = Subscription.objects.filter(follower_id=user_id, status=Subscription.Status.ACTIVE)
    if account_id is not None:
        subs = subs.filter(account_id=account_id)
    why = f" ({reason})" if reason else ""
    rows = list(subs.values_list("pk", "leader_id"))
    count = Subscription.objects.filter(
        pk__in=[pk for pk, _l in rows], status=Subscription.Status.ACTIVE
    ).update(
        status=Subscription.Status.PAUSED,
        paused_at=timezone.now(),
        status_message=(
            f"Paused because your trading was halted{why}: new positions are not copied, "
            "closes still are. Resume it once trading is active again."
        )[:300],
        updated_at=timezone.now(),
    )
    live.publish_subscriptions(rows, change="paused", status="paused")
    return count


def subscription_resume(*, user: Any, subscription_id: int) -> Subscription:
    require_pro(user)
    with transaction.atomic():
        sub = _own_subscription(user, subscription_id)
        if sub.status == Subscription.Status.STOPPED:
            raise ApplicationError("A stopped subscription cannot be resumed.", field="status")
        if sub.leader.status == Leader.Status.RETIRED:
            raise ApplicationError("The leader has retired.", field="status")
        sub.status = Subscription.Status.ACTIVE
        sub.paused_at = None
        sub.status_message = ""
        sub.save(update_fields=["status", "paused_at", "status_message", "updated_at"])
    return sub


def subscription_stop(
    *, user: Any, subscription_id: int, close_positions: bool = False
) -> Subscription:
    """Stop copying altogether. The positions the copies hold stay in the account, unless
    ``close_positions``: then each is sold at market (stored first, risk-checked, sent once by
    a live-queue worker; see ``copytrading.services.adjustments``)."""
    from copytrading.services.positions import stop_close_plan

    with transaction.atomic():
        sub = _own_subscription(user, subscription_id)
        if sub.status != Subscription.Status.STOPPED:
            sub.status = Subscription.Status.STOPPED
            sub.stopped_at = timezone.now()
            sub.status_message = "Stopped: nothing more is copied."
            if close_positions:
                sub.status_message = "Stopped: nothing more is copied; the copies are being closed."
            sub.save(update_fields=["status", "stopped_at", "status_message", "updated_at"])
        if close_positions:
            stop_close_plan(sub)
    return sub
