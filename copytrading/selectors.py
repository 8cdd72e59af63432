"""Reads for copy trading: what the copies hold, the rows a user may see."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from itertools import pairwise
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
PENDING_STATES = _PENDING  # states whose ordered amount counts as held


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


# --- the pages' figures ------------------------------------------------------------------------
#
# Everything below reads rows and computes plain numbers (no exchange calls): the leader's
# equity curve and its return and drawdown, the follower's latency and slippage distributions,
# the decision counts and the P&L comparison. Tests check them against hand-computed cases.

# Latency bucket edges in milliseconds: a copy lands in the first bucket whose upper edge is
# above it; the last bucket is open-ended.
LATENCY_EDGES_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# The stages of one copy, from the leader's fill on its exchange to the follower's fill, each
# as (label, start field, end field) on CopyOrder; "total" is fill → acknowledged.
LATENCY_STAGES = (
    ("leader fill → detected", "leader_filled_at", "detected_at"),
    ("detected → planned", "detected_at", "planned_at"),
    ("planned → submitted", "planned_at", "submitted_at"),
    ("submitted → acknowledged", "submitted_at", "acknowledged_at"),
    ("acknowledged → filled", "acknowledged_at", "filled_at"),
    ("leader fill → acknowledged (total)", "leader_filled_at", "acknowledged_at"),
)
# Slippage bucket edges in basis points (positive: worse than the leader's price).
SLIPPAGE_EDGES_BPS = (-50, -20, -10, -5, -1, 1, 5, 10, 20, 50)


def bucket_labels(edges: tuple[int, ...], unit: str) -> list[str]:
    """Names of the buckets ``edges`` makes: "< e0", "e0 to e1", …, "≥ eN"."""
    labels = [f"< {edges[0]} {unit}"]
    labels += [f"{lo} to {hi} {unit}" for lo, hi in pairwise(edges)]
    labels.append(f"≥ {edges[-1]} {unit}")
    return labels


def bucket_counts(values: list[float], edges: tuple[int, ...]) -> list[int]:
    """How many ``values`` fall in each bucket: ``[-inf, e0)``, ``[e0, e1)`` … ``[eN, inf)``."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        i = 0
        while i < len(edges) and v >= edges[i]:
            i += 1
        counts[i] += 1
    return counts


def latency_stages(orders: list[CopyOrder]) -> list[dict[str, Any]]:
    """Per stage: the durations in ms of the copies that reached its end, and their bucket
    counts over ``LATENCY_EDGES_MS`` (a negative duration, clocks apart, counts as 0)."""
    out = []
    for label, start, end in LATENCY_STAGES:
        values = []
        for o in orders:
            a, b = getattr(o, start), getattr(o, end)
            if a is not None and b is not None:
                values.append(max(0.0, (b - a).total_seconds() * 1000))
        out.append(
            {
                "stage": label,
                "values_ms": values,
                "counts": bucket_counts(values, LATENCY_EDGES_MS),
                "p50_ms": percentile(values, 0.5),
                "p95_ms": percentile(values, 0.95),
            }
        )
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def slippage_distribution(orders: list[CopyOrder]) -> dict[str, Any]:
    """The copies' slippage in bps (filled ones only) bucketed over ``SLIPPAGE_EDGES_BPS``."""
    values = [float(o.slippage_bps) for o in orders if o.slippage_bps is not None]
    return {
        "values_bps": values,
        "counts": bucket_counts(values, SLIPPAGE_EDGES_BPS),
        "mean_bps": sum(values) / len(values) if values else None,
        "p50_bps": percentile(values, 0.5),
        "p95_bps": percentile(values, 0.95),
    }


def decision_counts(sub: Subscription) -> dict[str, Any]:
    """Copied vs not: ``copied`` and ``not_copied`` totals, and the not-copied rows per
    (outcome, reason), most frequent first."""
    rows = (
        CopyDecision.objects.filter(subscription=sub)
        .values("outcome", "reason")
        .annotate(n=Count("pk"))
        .order_by("-n", "outcome", "reason")
    )
    copied = 0
    others: list[dict[str, Any]] = []
    for r in rows:
        if r["outcome"] == CopyDecision.Outcome.COPIED:
            copied += r["n"]
        else:
            others.append({"outcome": r["outcome"], "reason": r["reason"], "n": r["n"]})
    return {
        "copied": copied,
        "not_copied": sum(r["n"] for r in others),
        "by_reason": others,
    }


class _Book:
    """A long-only position per market at average cost: buys add at their price, sells reduce
    it and realise (price - average cost) per unit; a sell beyond what is held is left out
    (it closes something opened before the comparison started)."""

    def __init__(self) -> None:
        self.qty: dict[str, Decimal] = defaultdict(Decimal)
        self.cost: dict[str, Decimal] = defaultdict(Decimal)  # average cost per unit
        self.realised = Decimal(0)

    def trade(self, symbol: str, side: str, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        self.realised -= fee
        if side == "buy":
            held = self.qty[symbol]
            self.cost[symbol] = (held * self.cost[symbol] + qty * price) / (held + qty)
            self.qty[symbol] = held + qty
            return
        sold = min(qty, self.qty[symbol])
        self.realised += sold * (price - self.cost[symbol])
        self.qty[symbol] -= sold

    def pnl(self, marks: dict[str, Decimal]) -> Decimal:
        open_pnl = sum(
            (q * (marks.get(s, self.cost[s]) - self.cost[s]) for s, q in self.qty.items() if q),
            Decimal(0),
        )
        return self.realised + open_pnl


def pnl_comparison(sub: Subscription) -> dict[str, list[Any]]:
    """Follower vs leader P&L in quote over time, both from the subscription's start.

    Follower: the subscription's copies (what filled, at their average price). Leader: its
    fills since the subscription started. Each side is a long-only book at average cost
    (``_Book``): realised P&L from sells, plus the open quantity marked at the newest price
    seen for that market (the latest fill price of either side, by time). Fees count when
    paid in the quote currency. Markets are keyed by the leader's name for them, so a mapped
    market (BTC/USDT → BTC/USD) is compared as one. Returns ``times`` (ISO) and the two
    series, one point per event."""
    # (time, leader first on a tie, whose, market, side, quantity, price, fee in quote)
    events: list[tuple[Any, int, str, str, str, Decimal, Decimal, Decimal]] = []
    for f in LeaderFill.objects.filter(
        leader_id=sub.leader_id, exchange_time__gte=sub.created_at
    ).order_by("timestamp_ms", "pk"):
        fee = f.fee if f.fee_currency and f.symbol.endswith("/" + f.fee_currency) else Decimal(0)
        events.append((f.exchange_time, 0, "leader", f.symbol, f.side, f.amount, f.price, fee))
    for o in (
        CopyOrder.objects.filter(subscription=sub, filled_amount__gt=0)
        .select_related("leader_fill")
        .order_by("pk")
    ):
        at = o.filled_at or o.acknowledged_at or o.planned_at
        fee = o.fee if o.fee_currency and o.symbol.endswith("/" + o.fee_currency) else Decimal(0)
        price = o.average_price or o.reference_price
        events.append(
            (at, 1, "follower", o.leader_fill.symbol, o.side, o.filled_amount, price, fee)
        )
    events.sort(key=lambda e: (e[0], e[1]))
    books = {"leader": _Book(), "follower": _Book()}
    marks: dict[str, Decimal] = {}
    times: list[str] = []
    leader: list[float] = []
    follower: list[float] = []
    for at, _tie, who, symbol, side, qty, price, fee in events:
        books[who].trade(symbol, side, qty, price, fee)
        marks[symbol] = price
        times.append(at.isoformat())
        leader.append(float(books["leader"].pnl(marks)))
        follower.append(float(books["follower"].pnl(marks)))
    return {"times": times, "leader": leader, "follower": follower}


def leader_equity_curve(leader: Leader) -> list[tuple[Any, Decimal]]:
    """(time, equity) of the leader's account since publication: the risk app's equity
    snapshots of the account (one is stored at publication), then the leader's own latest
    valuation when it is newer."""
    from risk.models import EquitySnapshot

    points: list[tuple[Any, Decimal]] = []
    if leader.account_id is not None:
        points = list(
            EquitySnapshot.objects.filter(account_id=leader.account_id, at__gte=leader.published_at)
            .order_by("at", "pk")
            .values_list("at", "equity")
        )
    end = leader.retired_at
    if end is not None:
        points = [p for p in points if p[0] <= end]
    if leader.equity_at and (not points or leader.equity_at > points[-1][0]) and end is None:
        points.append((leader.equity_at, leader.equity))
    return points


def curve_stats(points: list[tuple[Any, Decimal]]) -> dict[str, float | None]:
    """Total return (last / first - 1) and max drawdown (largest fall from a running peak,
    as a fraction of that peak) of an equity curve; None where the curve cannot tell."""
    values = [Decimal(v) for _at, v in points]
    if not values or values[0] <= 0:
        return {"total_return": None, "max_drawdown": None}
    peak = values[0]
    worst = Decimal(0)
    for v in values:
        peak = max(peak, v)
        if peak > 0:
            worst = max(worst, (peak - v) / peak)
    return {"total_return": float(values[-1] / values[0] - 1), "max_drawdown": float(worst)}


def leader_open_positions(leader: Leader) -> dict[str, Decimal]:
    """The leader's signed positions: as published, moved by every recorded fill."""
    positions = {s: Decimal(str(q)) for s, q in (leader.initial_positions or {}).items()}
    for symbol, after in (
        LeaderFill.objects.filter(leader=leader)
        .order_by("timestamp_ms", "pk")
        .values_list("symbol", "position_after")
    ):
        positions[symbol] = after
    return {s: q for s, q in positions.items() if q != 0}


def leader_fills_with_copies(leader: Leader, *, limit: int = 50) -> QuerySet[LeaderFill]:
    """The leader's newest fills with how many copies each produced and how many
    subscriptions did not copy it (for the leader's own dashboard)."""
    return (
        LeaderFill.objects.filter(leader=leader)
        .annotate(
            copies=Count("copy_orders", distinct=True),
            copies_filled=Count(
                "copy_orders",
                filter=Q(copy_orders__state__in=("filled", "partially_filled")),
                distinct=True,
            ),
            not_copied=Count("decisions", filter=~Q(decisions__outcome="copied"), distinct=True),
        )
        .order_by("-timestamp_ms", "-pk")[:limit]
    )


def leader_followers(leader: Leader) -> QuerySet[Subscription]:
    """Who follows the leader (for its owner: status, since when, copies), newest first."""
    return (
        Subscription.objects.filter(leader=leader)
        .annotate(copies=Count("copy_orders", distinct=True))
        .order_by("-created_at", "-pk")
    )


def leader_profile(leader: Leader, *, viewer_is_owner: bool, recent: int = 50) -> dict[str, Any]:
    """What a leader's profile shows (the page and the API): equity curve, return and
    drawdown, followers, open positions (None when the leader hides them from others), the
    ``recent`` newest trades."""
    curve = leader_equity_curve(leader)
    show_positions = viewer_is_owner or not leader.hide_positions
    return {
        "curve": curve,
        "stats": curve_stats(curve),
        "followers": subscriptions_to_copy(leader).count(),
        "positions": leader_open_positions(leader) if show_positions else None,
        "fills": list(
            LeaderFill.objects.filter(leader=leader).order_by("-timestamp_ms", "-pk")[:recent]
        ),
    }
