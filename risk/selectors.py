"""Reads of the risk app: profiles, states, history, denials, equity reference points."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Max, Q, QuerySet

from config.exceptions import NotFound
from exchanges.models import ExchangeAccount
from risk.models import (
    DeniedOrder,
    EquitySnapshot,
    KillSwitchRun,
    RiskProfile,
    StateTransition,
    TradingState,
)

STATE_RANK = {
    TradingState.State.ACTIVE: 0,
    TradingState.State.REDUCING: 1,
    TradingState.State.HALTED: 2,
}


def account_get(user: Any, account_id: int | None) -> ExchangeAccount | None:
    """The user's account ``account_id`` (None for None); another user's → NotFound."""
    if account_id is None:
        return None
    account = ExchangeAccount.objects.filter(pk=account_id, owner=user).first()
    if account is None:
        raise NotFound("No such exchange account.")
    return account


def accounts_for(user: Any) -> QuerySet[ExchangeAccount]:
    return ExchangeAccount.objects.filter(owner=user).order_by("label", "pk")


def profile_stored(user: Any, account: ExchangeAccount | None = None) -> RiskProfile | None:
    """The stored profile of exactly this scope (the user's default when ``account`` is None)."""
    return RiskProfile.objects.filter(owner=user, account=account).first()


def profile_for(user: Any, account: ExchangeAccount | None = None) -> RiskProfile:
    """The limits that apply: the account's override, else the user's default, else the
    product's defaults (an unsaved profile)."""
    if account is not None:
        found = profile_stored(user, account)
        if found is not None:
            return found
    found = profile_stored(user, None)
    return found if found is not None else RiskProfile(owner=user, account=None)


def profile_overrides(user: Any) -> QuerySet[RiskProfile]:
    return RiskProfile.objects.filter(owner=user, account__isnull=False).select_related("account")


def trading_state_get(user: Any, pk: int) -> TradingState:
    """The user's state row ``pk``; another user's → NotFound (a 404)."""
    state = TradingState.objects.filter(pk=pk, owner=user).select_related("account").first()
    if state is None:
        raise NotFound("No such trading state.")
    return state


def trading_states_for(user: Any) -> QuerySet[TradingState]:
    return (
        TradingState.objects.filter(owner=user)
        .select_related("account")
        .order_by("account__label", "pk")
    )


def effective_state(user: Any, account: ExchangeAccount | None) -> TradingState | None:
    """The strictest latched row among the user's own state and the account's (None when
    neither exists: active)."""
    rows = list(
        TradingState.objects.filter(owner=user).filter(
            Q(account=None) | Q(account=account) if account is not None else Q(account=None)
        )
    )
    if not rows:
        return None
    return max(rows, key=lambda r: (STATE_RANK[TradingState.State(r.state)], r.pk))


def transitions_for(user: Any, limit: int = 50) -> QuerySet[StateTransition]:
    return StateTransition.objects.filter(owner=user).select_related("state__account")[:limit]


def denials_for(user: Any, *, limit: int | None = 50) -> QuerySet[DeniedOrder]:
    qs = DeniedOrder.objects.filter(owner=user).select_related("account")
    return qs[:limit] if limit is not None else qs


def kill_switch_runs_for(user: Any, limit: int = 10) -> QuerySet[KillSwitchRun]:
    return KillSwitchRun.objects.filter(owner=user)[:limit]


def kill_switch_run_get(user: Any, pk: int) -> KillSwitchRun:
    run = KillSwitchRun.objects.filter(owner=user, pk=pk).first()
    if run is None:
        raise NotFound("No such kill-switch run.")
    return run


def _snapshots(user: Any, account: ExchangeAccount | None) -> QuerySet[EquitySnapshot]:
    return EquitySnapshot.objects.filter(owner=user, account=account)


def equity_peak(user: Any, account: ExchangeAccount | None) -> Decimal | None:
    """The highest recorded equity of the scope (None without snapshots)."""
    value = _snapshots(user, account).aggregate(peak=Max("equity"))["peak"]
    return Decimal(value) if value is not None else None


def equity_at_start(user: Any, account: ExchangeAccount | None, start: datetime) -> Decimal | None:
    """Equity when a period began: the last snapshot before ``start``, else the first one
    inside the period (None without either)."""
    qs = _snapshots(user, account)
    before = qs.filter(at__lt=start).order_by("-at", "-pk").first()
    if before is not None:
        return before.equity
    inside = qs.filter(at__gte=start).order_by("at", "pk").first()
    return inside.equity if inside is not None else None


def equity_curve(
    user: Any, account: ExchangeAccount | None, *, limit: int = 5000
) -> list[tuple[datetime, Decimal]]:
    """The latest ``limit`` snapshots, oldest first."""
    rows = list(
        _snapshots(user, account).order_by("-at", "-pk").values_list("at", "equity")[:limit]
    )
    rows.reverse()
    return rows
