"""Reads for copy trading: what the copies hold, the rows a user may see."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.http import Http404

from copytrading.models import (
    CopyAdjustment,
    CopyDecision,
    CopyOrder,
    Leader,
    LeaderFill,
    Subscription,
)

# An order not settled yet counts at its full planned size: planning the next copy must not
# assume it away (two quick partial closes would otherwise both sell the whole copy).
_PENDING = ("planned", "submitted", "unknown", "acknowledged")


def copy_positions(subscription: Subscription) -> dict[str, Decimal]:
    """Signed holdings the subscription's copies produced (or will, once in-flight orders
    settle), per follower market. Markets that net to zero are left out."""
    held: dict[str, Decimal] = defaultdict(Decimal)
    fields = ("symbol", "side", "state", "amount", "filled_amount")
    rows = [
        *CopyOrder.objects.filter(subscription=subscription).values_list(*fields),
        # Joins, stop closes and stop-loss / take-profit move the copies' holding too; a drift
        # repair does not (it brings the account back in line with the copies).
        *CopyAdjustment.objects.filter(subscription=subscription)
        .exclude(kind=CopyAdjustment.Kind.REPAIR)
        .values_list(*fields),
    ]
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


def subscription_get(*, user: Any, pk: int) -> Subscription:
    """``user``'s subscription ``pk``; Http404 for a missing one or someone else's."""
    sub = subscriptions_for_user(user).filter(pk=pk).first()
    if sub is None:
        raise Http404("Subscription not found.")
    return sub


def leader_get_visible(*, user: Any, pk: int) -> Leader:
    """A leader as a Pro user may see it: any published one, a retired one only by its owner."""
    leader = Leader.objects.select_related("account").filter(pk=pk).first()
    if leader is None or (leader.status == Leader.Status.RETIRED and leader.owner_id != user.pk):
        raise Http404("Leader not found.")
    return leader


def leaders_directory() -> QuerySet[Leader]:
    """Published leaders (not retired) with their live follower counts, newest first."""
    return (
        Leader.objects.exclude(status=Leader.Status.RETIRED)
        .annotate(
            followers=Count(
                "subscriptions", filter=~Q(subscriptions__status=Subscription.Status.STOPPED)
            )
        )
        .order_by("-published_at", "pk")
    )
