"""The copies' positions as a whole: close them when a subscription stops, watch their own
stop-loss / take-profit, and open the leader's current positions on joining. Every order goes
through ``copytrading.services.adjustments`` (stored first, risk-checked, sent once)."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any, cast

from django.db import transaction

from copytrading.models import CopyAdjustment, CopyOrder, Leader, LeaderFill, Subscription
from copytrading.planner import (
    CopyHolding,
    Execution,
    LeaderFillView,
    PlannedOrder,
    Skip,
    copy_holding,
    follower_symbol,
    plan_copy,
    protection_hit,
)
from copytrading.selectors import copy_positions, leader_position_before
from copytrading.services.adjustments import adjustment_plan, enqueue_send
from copytrading.services.replication import baseline_note, copy_settings, follower_snapshot
from copytrading.services.wiring import AdapterFor, default_adapter_for
from exchanges.trading import Side

logger = logging.getLogger(__name__)
Kind = CopyAdjustment.Kind


def holding(sub: Subscription, symbol: str) -> CopyHolding:
    """The copies' long holding in ``symbol`` with its average entry, from every filled copy
    and adjustment in the order they were planned."""
    rows: list[tuple[Any, Execution]] = []
    for planned_at, side, filled, avg in CopyOrder.objects.filter(
        subscription=sub, symbol=symbol, filled_amount__gt=0
    ).values_list("planned_at", "side", "filled_amount", "average_price"):
        rows.append((planned_at, Execution(cast(Side, side), filled, avg or Decimal(0))))
    for created_at, side, filled, avg in (
        CopyAdjustment.objects.filter(subscription=sub, symbol=symbol, filled_amount__gt=0)
        .exclude(kind=Kind.REPAIR)
        .values_list("created_at", "side", "filled_amount", "average_price")
    ):
        rows.append((created_at, Execution(cast(Side, side), filled, avg or Decimal(0))))
    rows.sort(key=lambda r: r[0])
    return copy_holding([ex for _, ex in rows])


def stop_close_plan(sub: Subscription) -> list[CopyAdjustment]:
    """Plan the closing sells of everything the copies hold (the subscription is stopping);
    each is sent after commit by a live-queue worker. Returns the rows planned now."""
    planned = []
    for symbol, qty in sorted(copy_positions(sub).items()):
        if qty <= 0:
            continue  # spot copies only hold longs
        row, created = adjustment_plan(
            sub=sub,
            kind=Kind.STOP_CLOSE,
            key=f"stop_close:{symbol}",
            symbol=symbol,
            side="sell",
            amount=qty,
            reference_price=Decimal(0),
            reason="The subscription was stopped with “close the copied positions”.",
        )
        if created:
            planned.append(row)
            enqueue_send(row.pk)
    return planned


def copy_protections_check(
    *, subscription_id: int, adapter_for: AdapterFor | None = None
) -> list[CopyAdjustment]:
    """Close a copy whose own stop-loss or take-profit the price has reached (market sell of
    the whole holding, once per entry). ``stop_mode`` "own": the subscription's percentages
    from the average entry; "copy": the leader's stop for the trade (its take-profit is not
    known to us, so none)."""
    sub = (
        Subscription.objects.select_related("account", "leader", "follower")
        .filter(pk=subscription_id)
        .exclude(status=Subscription.Status.STOPPED)
        .exclude(stop_mode=Subscription.StopMode.NONE)
        .first()
    )
    if sub is None or sub.account is None:
        return []
    held = {s: q for s, q in copy_positions(sub).items() if q > 0}
    if not held:
        return []
    adapter = (adapter_for or default_adapter_for)(sub.account)
    planned = []
    for symbol in sorted(held):
        position = holding(sub, symbol)
        if position.position <= 0:
            continue
        price = adapter.last_price(symbol)
        leader_stop = None
        if sub.stop_mode == Subscription.StopMode.COPY:
            leader_stop = _leader_stop(sub, symbol)
        hit = protection_hit(
            price=price,
            entry=position.entry,
            stop_loss_pct=sub.stop_loss_pct if sub.stop_mode == "own" else None,
            take_profit_pct=sub.take_profit_pct if sub.stop_mode == "own" else None,
            stop_price=leader_stop,
        )
        if hit is None:
            continue
        which, level = hit
        kind = Kind.STOP_LOSS if which == "stop_loss" else Kind.TAKE_PROFIT
        row, created = adjustment_plan(
            sub=sub,
            kind=kind,
            key=f"{which}:{symbol}:{position.entries}",
            symbol=symbol,
            side="sell",
            amount=min(position.position, held[symbol]),
            reference_price=price,
            reason=(
                f"{kind.label} at {level:.8g} reached: price {price} "
                f"(average entry {position.entry:.8g})."
            ),
        )
        if created:
            planned.append(row)
            enqueue_send(row.pk)
    return planned


def _leader_stop(sub: Subscription, symbol: str) -> Decimal | None:
    """The leader's stop for its current trade in the market the copy holds."""
    leader_symbols = [k for k, v in (sub.symbol_map or {}).items() if v == symbol] or [symbol]
    stop = (
        LeaderFill.objects.filter(
            leader=sub.leader, symbol__in=leader_symbols, stop_price__isnull=False
        )
        .order_by("-timestamp_ms", "-pk")
        .values_list("stop_price", flat=True)
        .first()
    )
    return Decimal(stop) if stop is not None else None


def subscriptions_with_protections() -> list[int]:
    return list(
        Subscription.objects.exclude(status=Subscription.Status.STOPPED)
        .exclude(stop_mode=Subscription.StopMode.NONE)
        .values_list("pk", flat=True)
    )


def leader_open_positions(leader: Leader) -> dict[str, Decimal]:
    """The leader's long positions now, per market (from its starting positions and fills)."""
    symbols = set(leader.initial_positions or {}) | set(
        LeaderFill.objects.filter(leader=leader).values_list("symbol", flat=True).distinct()
    )
    out = {}
    for symbol in sorted(symbols):
        qty = leader_position_before(leader, symbol)
        if qty > 0:
            out[symbol] = qty
    return out


def subscription_join(
    *, subscription_id: int, adapter_for: AdapterFor | None = None, now_ms: int | None = None
) -> list[CopyAdjustment]:
    """Join policy "open the leader's current positions": for each position the leader holds
    now, the planner sizes the follower's share as if the leader had just bought it at the
    current price (same sizing, caps, filters and slippage guard as a copy; an IOC limit at
    the guard). Skips are stored with their reason. Once per market per subscription."""
    adapter_for = adapter_for or default_adapter_for
    with transaction.atomic():
        sub = (
            Subscription.objects.select_for_update(of=("self",))
            .select_related("leader", "leader__account", "account", "follower")
            .filter(pk=subscription_id, status=Subscription.Status.ACTIVE)
            .first()
        )
        if sub is None or sub.account is None or sub.join_policy != "open_current":
            return []
        positions = leader_open_positions(sub.leader)
        if not positions:
            return []
        follower = adapter_for(sub.account)
        leader_x = adapter_for(sub.leader.account) if sub.leader.account else None
        settings_ = copy_settings(sub)
        rows = []
        now = int(time.time() * 1000) if now_ms is None else now_ms
        for leader_symbol, qty in positions.items():
            symbol = follower_symbol(settings_, leader_symbol)
            key = f"join:{symbol}"
            if CopyAdjustment.objects.filter(subscription=sub, key=key).exists():
                continue
            snapshot = follower_snapshot(
                adapter=follower, symbol=symbol, positions=copy_positions(sub)
            )
            baseline_note(sub, symbol, snapshot)
            price = leader_x.last_price(leader_symbol) if leader_x else snapshot.price
            fill = LeaderFillView(
                fill_id=key,
                symbol=leader_symbol,
                side="buy",
                amount=qty,
                price=price,
                timestamp_ms=now,
                position_before=Decimal(0),
                leader_equity=sub.leader.equity,
            )
            plan = plan_copy(
                subscription_id=sub.pk,
                leader_fill_pk=key,
                fill=fill,
                settings=settings_,
                follower=snapshot,
                now_ms=now,
            )
            if isinstance(plan, Skip):
                row, _ = adjustment_plan(
                    sub=sub, kind=Kind.JOIN, key=key, symbol=symbol, side="buy",
                    amount=Decimal(0), reference_price=price,
                    reason=f"{plan.reason}: {plan.detail}", state=CopyAdjustment.State.SKIPPED,
                )  # fmt: skip
                rows.append(row)
                continue
            assert isinstance(plan, PlannedOrder)
            row, created = adjustment_plan(
                sub=sub, kind=Kind.JOIN, key=key, symbol=symbol, side="buy",
                amount=plan.amount, reference_price=price, order_type=plan.type,
                limit_price=plan.price, time_in_force=plan.time_in_force,
                reason=f"Joined: the leader holds {qty} {leader_symbol}. {plan.note}".strip(),
            )  # fmt: skip
            rows.append(row)
            if created:
                enqueue_send(row.pk)
    return rows
