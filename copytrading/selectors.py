"""Reads for copy trading: what the copies hold, the rows a user may see."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from copytrading.models import CopyDecision, CopyOrder, Leader, LeaderFill, Subscription

# An order not settled yet counts at its full planned size: planning the next copy must not
# assume it away (two quick partial closes would otherwise both sell the whole copy).
_PENDING = ("planned", "submitted", "unknown", "acknowledged")


def copy_positions(subscription: Subscription) -> dict[str, Decimal]:
    """Signed holdings the subscription's copies produced (or will, once in-flight orders
    settle), per follower market. Markets that net to zero are left out."""
    held: dict[str, Decimal] = defaultdict(Decimal)
    rows = CopyOrder.objects.filter(subscription=subscription).values_list(
        "symbol", "side", "state", "amount", "filled_amount"
    )
    for symbol, side, state, amount, filled in rows:
        qty = amount if state in _PENDING else filled
        held[symbol] += qty if side == "buy" else -qty
    return {s: q for s, q in held.items() if q != 0}


def leader_position_before(leader: Leader, symbol: str) -> Decimal:
    """The leader's signed position in ``symbol`` after the newest recorded fill (or as it was
    when published)."""
    last = (
        LeaderFill.objects.filter(leader=leader, symbol=symbol)
        .order_by("-timestamp_ms", "-pk")
        .values_list("position_after", flat=True)
        .first()
    )
    if last is not None:
        return Decimal(last)
    return Decimal(str(leader.initial_positions.get(symbol, "0")))


def subscriptions_to_copy(leader: Leader) -> QuerySet[Subscription]:
    """Subscriptions a leader fill goes to: active and paused ones (paused still close)."""
    return Subscription.objects.filter(leader=leader).exclude(status=Subscription.Status.STOPPED)


def subscriptions_for_user(user: Any) -> QuerySet[Subscription]:
    return Subscription.objects.filter(follower=user).select_related("leader", "account")


def copy_orders_for_user(user: Any) -> QuerySet[CopyOrder]:
    return CopyOrder.objects.filter(subscription__follower=user).select_related(
        "subscription", "leader_fill"
    )


def decisions_for_user(user: Any) -> QuerySet[CopyDecision]:
    return CopyDecision.objects.filter(subscription__follower=user).select_related(
        "leader_fill", "copy_order"
    )
