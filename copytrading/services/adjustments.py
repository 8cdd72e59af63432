"""Orders for a subscription that no single leader fill caused (``CopyAdjustment``): joining
the leader's current positions, closing the copies when the subscription stops, a copy's own
stop-loss / take-profit, and drift repairs.

The same exactly-once discipline as a copy:

1. ``adjustment_plan`` stores the row with a client order id derived from (subscription,
   key) before anything is sent; the key names the occasion ("stop_close:BTC/USDT"), so asking
   twice for the same occasion returns the stored row and plans nothing new.
2. ``adjustment_send`` rounds the amount to the follower's market now (sells never above the
   free balance), passes the risk check (a denial is stored, nothing sent), claims the row
   (``planned`` → ``submitted``, under a row lock: one sender) and sends it through
   ``exchanges.clients.submit_order``, which resolves a timeout by looking the order up.
3. A row left ``submitted``/``unknown`` (the worker died, or the lookups found nothing yet) is
   only looked up by ``adjustment_resolve`` (the sweep); after the submission grace with no
   such order on the exchange, a close is sent once more under the same id (it must happen)
   and an opening order is recorded as never placed.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.exceptions import ApplicationError
from copytrading import live
from copytrading.models import CopyAdjustment, Subscription
from copytrading.services.wiring import (
    AdapterFor,
    OrderCheck,
    default_adapter_for,
    default_order_check,
    read_verdict,
)
from exchanges.trading import OrderRequest, OrderState, OrderStatusUnknown, TradingAdapter

logger = logging.getLogger(__name__)
Kind = CopyAdjustment.Kind
AState = CopyAdjustment.State
CLOSING_KINDS = frozenset({Kind.STOP_CLOSE, Kind.STOP_LOSS, Kind.TAKE_PROFIT})
IN_FLIGHT = (AState.SUBMITTED, AState.UNKNOWN)


def adjustment_client_id(subscription_id: int, key: str) -> str:
    """Deterministic, alphanumeric, 32 characters ("qa" + 30 hex): fits every exchange."""
    digest = hashlib.sha256(f"adjust:{subscription_id}:{key}".encode()).hexdigest()
    return "qa" + digest[:30]


def adjustment_plan(
    *,
    sub: Subscription,
    kind: str,
    key: str,
    symbol: str,
    side: str,
    amount: Decimal,
    reference_price: Decimal,
    order_type: str = "market",
    limit_price: Decimal | None = None,
    time_in_force: str = "GTC",
    reason: str = "",
    state: str = AState.PLANNED,
) -> tuple[CopyAdjustment, bool]:
    """Store the order for this occasion once: ``(row, created)``. A row already stored for
    ``key`` is returned as it is (nothing new is planned)."""
    values: dict[str, Any] = {
        "kind": kind,
        "client_order_id": adjustment_client_id(sub.pk, key),
        "symbol": symbol,
        "side": side,
        "order_type": order_type,
        "time_in_force": time_in_force,
        "amount": amount,
        "limit_price": limit_price,
        "reference_price": reference_price,
        "reason": reason[:300],
        "state": state,
    }
    try:
        with transaction.atomic():
            return CopyAdjustment.objects.get_or_create(subscription=sub, key=key, defaults=values)
    except IntegrityError:  # a racing planner stored it first
        return CopyAdjustment.objects.get(subscription=sub, key=key[:80]), False


def enqueue_send(adjustment_id: int) -> None:
    """Send the row from a live-queue worker once the current transaction commits."""
    from celery import current_app

    def send() -> None:
        current_app.send_task(
            "copytrading.adjustment_send",
            args=[adjustment_id],
            queue=settings.CELERY_LIVE_QUEUE,
        )

    transaction.on_commit(send)


def _request(row: CopyAdjustment, amount: Decimal) -> OrderRequest:
    return OrderRequest(
        symbol=row.symbol,
        # (type: ignore below) a choices column/value: only the Literal's strings
        side=row.side,  # type: ignore[arg-type]
        # (type: ignore below) a choices column/value: only the Literal's strings
        type=row.order_type,  # type: ignore[arg-type]
        amount=amount,
        client_order_id=row.client_order_id,
        price=row.limit_price,
        # (type: ignore below) a choices column/value: only the Literal's strings
        time_in_force=row.time_in_force,  # type: ignore[arg-type]
    )


def _finish(pk: int, state: str, message: str, **fields: Any) -> CopyAdjustment:
    CopyAdjustment.objects.filter(pk=pk).update(
        state=state, error_text=message[:2000], updated_at=timezone.now(), **fields
    )
    row = CopyAdjustment.objects.select_related("subscription").get(pk=pk)
    live.publish_adjustment(row, created=False)  # an update() sends no post_save
    return row


def _claimed(row: CopyAdjustment) -> None:
    """The row was claimed for sending by an update(): its pages hear it as submitted."""
    row.state = AState.SUBMITTED
    live.publish_adjustment(row, created=False)


def adjustment_send(
    *,
    adjustment_id: int,
    adapter_for: AdapterFor | None = None,
    order_check: OrderCheck | None = None,
) -> CopyAdjustment:
    """Round, check, claim and send a planned adjustment (see the module docstring)."""
    row = CopyAdjustment.objects.select_related(
        "subscription__account", "subscription__follower"
    ).get(pk=adjustment_id)
    if row.state in IN_FLIGHT:
        return adjustment_resolve(adjustment_id=row.pk, adapter_for=adapter_for)
    if row.state != AState.PLANNED:
        return row
    sub = row.subscription
    if sub.account is None:
        return _finish(row.pk, AState.SKIPPED, "the follower's account was deleted")
    adapter = (adapter_for or default_adapter_for)(sub.account)
    market = adapter.market(row.symbol)
    price = adapter.last_price(row.symbol)
    amount = row.amount
    if row.side == "sell":
        held = adapter.balances().get(market.base)
        amount = min(amount, held.free if held is not None else Decimal(0))
    amount = market.round_amount(amount)
    try:
        market.check_size(amount, row.limit_price or price)
    except ApplicationError as exc:
        return _finish(row.pk, AState.SKIPPED, f"below the market's minimum: {exc.message}")
    request = _request(row, amount)
    check = order_check or default_order_check
    try:
        decision = check(
            user=sub.follower,
            account=sub.account,
            request=request,
            market=market,
            price=price,
            adapter_for=lambda _account: adapter,
        )
        verdict = read_verdict(decision=decision, request=request)
    except Exception as exc:  # no risk answer, no order
        logger.warning("risk check of adjustment %s failed: %s", row.pk, exc)
        return _finish(row.pk, AState.DENIED, f"the risk check could not run: {exc}")
    if not verdict.approved:
        return _finish(
            row.pk, AState.DENIED, f"risk check denied ({verdict.code}): {verdict.message}"
        )
    if verdict.amount is not None and verdict.amount < amount:
        amount = market.round_amount(verdict.amount)
        try:
            market.check_size(amount, row.limit_price or price)
        except ApplicationError as exc:
            return _finish(row.pk, AState.DENIED, f"cut below the minimum by the risk check: {exc}")
        request = _request(row, amount)
    with transaction.atomic():
        claimed = (
            CopyAdjustment.objects.filter(pk=row.pk, state=AState.PLANNED).update(
                state=AState.SUBMITTED,
                amount=amount,
                submitted_at=timezone.now(),
                updated_at=timezone.now(),
            )
            == 1
        )
    if not claimed:  # another sender has it
        return CopyAdjustment.objects.get(pk=row.pk)
    _claimed(row)
    return _submit(row.pk, request, adapter, may_exist=False)


def _submit(pk: int, request: OrderRequest, adapter: TradingAdapter, *, may_exist: bool) -> Any:
    from exchanges.clients import submit_order

    try:
        answer = submit_order(adapter, request, may_exist=may_exist, spacing=0.5)
    except OrderStatusUnknown as exc:
        return _finish(pk, AState.UNKNOWN, exc.message)
    except ApplicationError as exc:
        return _finish(pk, AState.REJECTED, exc.message)
    except Exception as exc:  # transport failure: the order may have left
        return _finish(pk, AState.UNKNOWN, f"{type(exc).__name__}: {exc}")
    return _record(pk, answer)


def _record(pk: int, answer: OrderState) -> CopyAdjustment:
    with transaction.atomic():
        row = CopyAdjustment.objects.select_for_update().get(pk=pk)
        if row.state in (AState.FILLED, AState.REJECTED, AState.CANCELLED):
            return row
        if answer.status == "rejected":
            row.state = AState.REJECTED
        elif answer.status == "open":
            row.state = AState.ACKNOWLEDGED
        elif answer.status == "closed":
            row.state = AState.FILLED if answer.filled >= row.amount else AState.PARTIALLY_FILLED
        else:
            row.state = AState.PARTIALLY_FILLED if answer.filled > 0 else AState.CANCELLED
        row.exchange_order_id = answer.exchange_order_id
        row.filled_amount = answer.filled
        row.average_price = answer.average_price
        row.fee = answer.fee
        row.save()
    return row


def adjustment_resolve(
    *, adjustment_id: int, adapter_for: AdapterFor | None = None
) -> CopyAdjustment:
    """Settle a row in flight by looking it up by its client order id (never by resending,
    except a close proven never to have arrived; see the module docstring)."""
    row = CopyAdjustment.objects.select_related("subscription__account").get(pk=adjustment_id)
    if row.state not in IN_FLIGHT and row.state != AState.ACKNOWLEDGED:
        return row
    if row.subscription.account is None:
        return row  # cannot be looked up any more; the account's deletion was refused before
    adapter = (adapter_for or default_adapter_for)(row.subscription.account)
    found = adapter.fetch_order_by_client_id(row.symbol, row.client_order_id)
    if found is not None:
        return _record(row.pk, found)
    if row.state == AState.ACKNOWLEDGED:
        return row
    grace = timedelta(seconds=settings.COPYTRADING_SUBMIT_GRACE_SECONDS)
    if timezone.now() - (row.submitted_at or row.created_at) < grace:
        return row
    if row.kind not in CLOSING_KINDS:
        return _finish(row.pk, AState.REJECTED, "the order never reached the exchange")
    with transaction.atomic():
        claimed = (
            CopyAdjustment.objects.filter(pk=row.pk, state__in=IN_FLIGHT).update(
                state=AState.SUBMITTED, submitted_at=timezone.now(), updated_at=timezone.now()
            )
            == 1
        )
    if not claimed:
        return CopyAdjustment.objects.get(pk=row.pk)
    _claimed(row)
    return _submit(row.pk, _request(row, row.amount), adapter, may_exist=True)


def adjustments_to_sweep(*, older_than_seconds: int = 10) -> list[int]:
    """Rows a dead worker left: planned and never claimed, or sent without an answer."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return list(
        CopyAdjustment.objects.filter(
            state__in=(AState.PLANNED, *IN_FLIGHT), updated_at__lt=cutoff
        ).values_list("pk", flat=True)[:500]
    )
