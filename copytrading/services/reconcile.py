"""Reconciliation: does the follower's account hold what the copies should have produced?

For each market a subscription has copied, the account should hold its ``baseline`` (what it
held of the base asset just before the first copy there) plus the copies' net filled
quantity. ``drift = (held - baseline) - copies`` is stored on the subscription per market with
its value at the last price; the subscription is "flagged" when, in some market, the drift is
beyond ``drift_tolerance`` of the copies' holding and worth at least the market's minimum
order (dust cannot be traded away). With ``drift_repair`` = "repair" an order for the
difference is planned instead (an adjustment: stored first, risk-checked, sent once; a
missing quantity is bought with an IOC limit under the slippage guard). Markets with a copy
still in flight are left for the next check. Orders and fills on the account that the
product did not send are left alone and listed in ``foreign_activity``.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.db.models import CharField, Q, Value
from django.utils import timezone

from accounts.gating import user_has_pro
from copytrading import live
from copytrading.models import CopyAdjustment, CopyOrder, Subscription
from copytrading.planner import CLIENT_ID_PREFIX, default_slippage_guard
from copytrading.services.adjustments import adjustment_plan, enqueue_send
from copytrading.services.wiring import AdapterFor, default_adapter_for

logger = logging.getLogger(__name__)
OUR_PREFIXES = (CLIENT_ID_PREFIX, "qa")
FOREIGN_LIMIT = 20


def settled_copy_positions(sub: Subscription) -> tuple[dict[str, Decimal], set[str]]:
    """Net filled quantity per market from every copy and adjustment, and the markets where
    one is still in flight (planned, sent, unknown or resting)."""
    held: dict[str, Decimal] = {}
    busy: set[str] = set()
    in_flight = ("planned", "submitted", "unknown", "acknowledged")
    fields = ("symbol", "side", "state", "filled_amount", "kind")
    rows = [
        *CopyOrder.objects.filter(subscription=sub)
        .annotate(kind=Value("copy", output_field=CharField()))
        .values_list(*fields),
        *CopyAdjustment.objects.filter(subscription=sub).values_list(*fields),
    ]
    for symbol, side, state, filled, kind in rows:
        if state in in_flight:
            busy.add(symbol)
        if kind == CopyAdjustment.Kind.REPAIR:
            continue  # a repair moves the account toward the copies, not the copies
        held[symbol] = held.get(symbol, Decimal(0)) + (filled if side == "buy" else -filled)
    return held, busy


def _text(value: Decimal) -> str:
    """A quantity as plain digits without trailing zeros ("0.01", "0")."""
    return format(value.normalize(), "f") if value else "0"


def _ours(client_order_id: str | None) -> bool:
    return bool(client_order_id) and str(client_order_id).startswith(OUR_PREFIXES)


def subscription_reconcile(
    *, subscription_id: int, adapter_for: AdapterFor | None = None
) -> Subscription | None:
    """Check one subscription now (see the module docstring); returns it, updated."""
    sub = (
        Subscription.objects.select_related("account", "follower")
        .filter(pk=subscription_id)
        .exclude(status=Subscription.Status.STOPPED)
        .first()
    )
    if sub is None or sub.account is None:
        return None
    expected, busy = settled_copy_positions(sub)
    markets = sorted(set(expected) | set(sub.baseline or {}))
    since_ms = int(sub.drift_checked_at.timestamp() * 1000) if sub.drift_checked_at else 0
    checked = timezone.now()
    try:
        adapter = (adapter_for or default_adapter_for)(sub.account)
        balances = adapter.balances() if markets else {}
        report: dict[str, Any] = {}
        worst: list[str] = []
        repairs = 0
        total_value = Decimal(0)
        baseline = dict(sub.baseline or {})
        for symbol in markets:
            if symbol in busy:
                report[symbol] = {"status": "in_flight"}
                continue
            market = adapter.market(symbol)
            price = adapter.last_price(symbol)
            bal = balances.get(market.base)
            held = bal.total if bal is not None else Decimal(0)
            copies = expected.get(symbol, Decimal(0))
            if symbol not in baseline:
                # Copied before baselines were kept: take it now, assuming no drift yet.
                baseline[symbol] = _text(held - copies)
            drift = held - Decimal(baseline[symbol]) - copies
            value = abs(drift) * price
            total_value += value
            allowed = abs(copies) * sub.drift_tolerance
            # Dust below the market's minimum order cannot be traded away: never flagged.
            beyond = drift != 0 and abs(drift) > allowed and value >= market.min_notional
            entry: dict[str, Any] = {
                "baseline": baseline[symbol],
                "held": _text(held),
                "copies": _text(copies),
                "drift": _text(drift),
                "value": str(value.quantize(Decimal("0.01"))),
                "price": str(price),
                "status": "ok",
            }
            if beyond:
                worst.append(
                    f"{symbol} off by {drift:+f} {market.base} ({value:.2f} {market.quote})"
                )
                entry["status"] = "flagged"
                if sub.drift_repair == Subscription.DriftRepair.REPAIR:
                    entry["status"] = "repairing"
                    repairs += _plan_repair(sub, symbol, drift, price, market.base, checked)
            report[symbol] = entry
        foreign = _foreign_activity(adapter, markets, since_ms)
    except Exception as exc:  # the exchange could not be read: say so, try next time
        logger.warning("reconciling subscription %s failed: %s", sub.pk, exc)
        Subscription.objects.filter(pk=sub.pk).update(
            drift_status=Subscription.DriftStatus.ERROR,
            drift_message=f"The account could not be read: {exc}"[:500],
            drift_checked_at=checked,
        )
        live.publish_subscriptions([(sub.pk, sub.leader_id)], change="drift", status="error")
        sub.refresh_from_db()
        return sub
    if worst:
        status = Subscription.DriftStatus.REPAIRING if repairs else Subscription.DriftStatus.FLAGGED
        message = "Drift beyond the tolerance: " + "; ".join(worst)
        if repairs:
            message += f". {repairs} repair order(s) planned."
    else:
        status = Subscription.DriftStatus.OK
        message = "The account holds what the copies produced."
    if foreign:
        message += f" {len(foreign)} order(s)/fill(s) not sent by Quantfold were left alone."
    Subscription.objects.filter(pk=sub.pk).update(
        baseline=baseline,
        drift=report,
        drift_value=total_value,
        drift_status=status,
        drift_message=message[:500],
        drift_checked_at=checked,
        foreign_activity=foreign,
    )
    live.publish_subscriptions([(sub.pk, sub.leader_id)], change="drift", status=status)
    sub.refresh_from_db()
    return sub


def _plan_repair(
    sub: Subscription, symbol: str, drift: Decimal, price: Decimal, base: str, at: Any
) -> int:
    """One repair order per market per check: sell an excess at market, buy a shortfall with
    an IOC limit capped at the slippage guard above the last price."""
    if drift > 0:
        side, order_type, limit, tif = "sell", "market", None, "GTC"
    elif not user_has_pro(sub.follower):
        return 0  # buying is opening: only flagged without Pro
    else:
        guard = (
            sub.slippage_guard if sub.slippage_guard is not None else default_slippage_guard(base)
        )
        side, order_type, limit, tif = "buy", "limit", price * (1 + guard), "IOC"
    row, created = adjustment_plan(
        sub=sub,
        kind=CopyAdjustment.Kind.REPAIR,
        key=f"repair:{symbol}:{int(at.timestamp())}",
        symbol=symbol,
        side=side,
        amount=abs(drift),
        reference_price=price,
        order_type=order_type,
        limit_price=limit,
        time_in_force=tif,
        reason=f"Drift repair: the account holds {drift:+f} {base} against the copies.",
    )
    if created:
        enqueue_send(row.pk)
    return int(created)


def _foreign_activity(adapter: Any, markets: list[str], since_ms: int) -> list[dict[str, Any]]:
    """Open orders and fills since the last check in the copied markets whose client order
    id is not one of ours: listed, never touched."""
    out: list[dict[str, Any]] = []
    for symbol in markets:
        for order in adapter.open_orders(symbol):
            if not _ours(order.client_order_id):
                out.append(
                    {"kind": "open_order", "symbol": symbol, "side": order.side,
                     "amount": str(order.amount), "id": order.exchange_order_id}
                )  # fmt: skip
        if since_ms:
            for fill in adapter.fetch_fills(since_ms=since_ms, symbol=symbol):
                if not _ours(fill.client_order_id):
                    out.append(
                        {"kind": "fill", "symbol": symbol, "side": fill.side,
                         "amount": str(fill.amount), "id": fill.fill_id}
                    )  # fmt: skip
    return out[:FOREIGN_LIMIT]


def subscriptions_to_reconcile() -> list[int]:
    return list(
        Subscription.objects.exclude(status=Subscription.Status.STOPPED)
        .filter(~Q(account=None))
        .values_list("pk", flat=True)
    )
