"""From a recorded leader fill to exactly one order per subscription on the follower's exchange.

Steps, each committed before the next:

1. ``copy_plan``: under the subscription's row lock (one plan at a time per follower), read the
   follower's balances fresh from the exchange, run the pure planner and the risk check, and
   store either a ``CopyOrder`` in ``planned`` state with its deterministic client order id, or
   a ``CopyDecision`` saying why nothing is copied. A second call for the same pair returns
   what the first stored and sends nothing.
2. ``copy_order_submit``: claim the row (``planned`` → ``submitted``) under a row lock; only the
   claimer calls ``create_order``. Anyone else, and a retried task, only looks the order up.
3. An ambiguous outcome (timeout, dropped connection) is ``unknown`` and is resolved by
   ``fetch_order_by_client_id``, never by sending again. Only after ``COPY_SUBMIT_GRACE``
   has passed with no such order on the exchange (longer than any request can take to arrive
   and be accepted) is the order known never to have been placed: an entry is then recorded
   as failed, a close (which must happen) is sent again under the same client order id.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ParamSpec

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.gating import user_has_pro
from config.exceptions import ApplicationError
from copytrading import live
from copytrading.models import CopyDecision, CopyOrder, LeaderFill, Subscription
from copytrading.planner import (
    CopySettings,
    FollowerSnapshot,
    LeaderFillView,
    PlannedOrder,
    Skip,
    follower_symbol,
    plan_copy,
)
from copytrading.selectors import copy_positions
from copytrading.services.wiring import (
    AdapterFor,
    OrderCheck,
    default_adapter_for,
    default_order_check,
    read_verdict,
)
from exchanges.trading import (
    Balance,
    OrderRequest,
    OrderState,
    OrderStatusUnknown,
    OrderTooSmall,
    TradingAdapter,
)

logger = logging.getLogger(__name__)
P = ParamSpec("P")
State = CopyOrder.State
Outcome = CopyDecision.Outcome


class CopyOrderPending(ApplicationError):
    """The order is in flight and the exchange does not show it yet: look again later."""

    status = 409
    code = "copy_order_pending"


def submit_grace() -> timedelta:
    return timedelta(seconds=settings.COPYTRADING_SUBMIT_GRACE_SECONDS)


# --- planning -------------------------------------------------------------------------------


def copy_settings(sub: Subscription) -> CopySettings:
    """The planner's view of a subscription. Opens stop (closes go on) when the subscription
    or its leader is paused, or the follower has lost Pro."""
    paused = (
        sub.status != Subscription.Status.ACTIVE
        or not sub.leader.opens_copies
        or not user_has_pro(sub.follower)
    )
    return CopySettings(
        # (type: ignore below) a choices column/value: only the Literal's strings
        sizing_mode=sub.sizing_mode,  # type: ignore[arg-type]
        ratio=sub.ratio,
        notional=sub.notional,
        risk_fraction=sub.risk_fraction,
        max_notional=sub.max_notional,
        max_positions=sub.max_positions,
        allowed_symbols=frozenset(sub.allowed_symbols or ()),
        excluded_symbols=frozenset(sub.excluded_symbols or ()),
        allowed_sides=frozenset(sub.allowed_sides or ("buy", "sell")),
        symbol_map=dict(sub.symbol_map or {}),
        slippage_guard=sub.slippage_guard,
        expiry_ms=sub.expiry_seconds * 1000,
        max_balance_age_ms=settings.COPYTRADING_MAX_BALANCE_AGE_MS,
        paused=paused,
    )


def _pause_reason(sub: Subscription) -> str:
    """Why opens are not copied, in the follower's terms (closes still are)."""
    if not user_has_pro(sub.follower):
        return "Your Pro plan has ended: new positions are not copied (closes still are)."
    if sub.leader.status != sub.leader.Status.ACTIVE:
        return f"The leader is {sub.leader.status}: new positions are not copied."
    if sub.status_message:
        return sub.status_message
    return "You paused this subscription: new positions are not copied (closes still are)."


def fill_view(fill: LeaderFill) -> LeaderFillView:
    return LeaderFillView(
        fill_id=fill.fill_id,
        symbol=fill.symbol,
        # (type: ignore below) a choices column/value: only the Literal's strings
        side=fill.side,  # type: ignore[arg-type]
        amount=fill.amount,
        price=fill.price,
        timestamp_ms=fill.timestamp_ms,
        position_before=fill.position_before,
        leader_equity=fill.leader.equity,
        stop_price=fill.stop_price,
        order_amount=fill.order_amount,
    )


def follower_snapshot(
    *, adapter: TradingAdapter, symbol: str, positions: dict[str, Decimal]
) -> FollowerSnapshot:
    """The follower's market, price and balances, read from the exchange now."""
    market = adapter.market(symbol)
    price = adapter.last_price(symbol)
    balances: dict[str, Balance] = adapter.balances()
    taken_at_ms = int(time.time() * 1000)
    zero = Balance(asset="", free=Decimal(0), used=Decimal(0))
    equity = Decimal(0)
    for asset, bal in balances.items():
        if bal.total == 0:
            continue
        if asset == market.quote:
            equity += bal.total
        elif asset == market.base:
            equity += bal.total * price
        else:
            try:
                equity += bal.total * adapter.last_price(f"{asset}/{market.quote}")
            except Exception:  # an unpriced asset counts as nothing
                logger.info(
                    "no %s/%s price; left out of the follower's equity", asset, market.quote
                )
    return FollowerSnapshot(
        market=market,
        price=price,
        equity=equity,
        free_quote=balances.get(market.quote, zero).free,
        free_base=balances.get(market.base, zero).free,
        base_total=balances.get(market.base, zero).total,
        copy_position=positions.get(symbol, Decimal(0)),
        open_positions=len(positions),
        taken_at_ms=taken_at_ms,
    )


def _decide_row(
    sub: Subscription,
    fill: LeaderFill,
    outcome: str,
    reason: str,
    detail: str,
    figures: dict[str, Any] | None = None,
    order: CopyOrder | None = None,
) -> CopyDecision:
    """An audit row, not saved yet (the fan-out inserts many at once)."""
    return CopyDecision(
        subscription=sub,
        leader_fill=fill,
        copy_order=order,
        outcome=outcome,
        reason=reason,
        detail=detail[:5000],
        figures={k: str(v) for k, v in (figures or {}).items()},
    )


def _saved(make: Callable[P, CopyDecision]) -> Callable[P, CopyDecision]:
    """``make``, with the audit row it builds saved at once."""

    @functools.wraps(make)
    def make_and_save(*args: P.args, **kwargs: P.kwargs) -> CopyDecision:
        decision = make(*args, **kwargs)
        decision.save()
        return decision

    return make_and_save


_decide = _saved(_decide_row)


def plan_with_figures(
    sub: Subscription,
    fill: LeaderFill,
    settings_: CopySettings,
    snapshot: FollowerSnapshot,
    now_ms: int,
) -> tuple[PlannedOrder | Skip, dict[str, Any]]:
    """The copy's plan for this follower, and the figures its audit row keeps."""
    plan = plan_copy(
        subscription_id=sub.pk,
        leader_fill_pk=fill.pk,
        fill=fill_view(fill),
        settings=settings_,
        follower=snapshot,
        now_ms=now_ms,
    )
    figures: dict[str, Any] = {
        "leader_price": fill.price,
        "leader_amount": fill.amount,
        "follower_price": snapshot.price,
        "equity": snapshot.equity,
        "free_quote": snapshot.free_quote,
        "copy_position": snapshot.copy_position,
    }
    return plan, figures


def copy_plan(
    *,
    subscription_id: int,
    leader_fill_id: int,
    adapter_for: AdapterFor | None = None,
    order_check: OrderCheck | None = None,
    now_ms: int | None = None,
) -> CopyOrder | CopyDecision | None:
    """Plan the copy of one leader fill for one subscription (see the module docstring).

    Returns the ``planned`` CopyOrder, or the decision explaining why there is none, or None
    for a stopped subscription. Idempotent: the pair is planned at most once."""
    adapter_for = adapter_for or default_adapter_for
    order_check = order_check or default_order_check
    with transaction.atomic():
        sub = (
            Subscription.objects.select_for_update(of=("self",))
            .select_related("leader", "account", "follower")
            .filter(pk=subscription_id)
            .first()
        )
        fill = LeaderFill.objects.select_related("leader").filter(pk=leader_fill_id).first()
        if sub is None or fill is None or sub.leader_id != fill.leader_id:
            return None
        existing = CopyOrder.objects.filter(subscription=sub, leader_fill=fill).first()
        if existing is not None:
            return existing
        settled = (
            CopyDecision.objects.filter(subscription=sub, leader_fill=fill)
            .exclude(outcome=Outcome.FAILED)
            .first()
        )
        if settled is not None:
            return settled
        # (a subscription loses its account only once stopped)
        if sub.status == Subscription.Status.STOPPED or sub.account is None:
            return None

        settings_ = copy_settings(sub)
        symbol = follower_symbol(settings_, fill.symbol)
        try:
            adapter = adapter_for(sub.account)
            snapshot = follower_snapshot(
                adapter=adapter, symbol=symbol, positions=copy_positions(sub)
            )
            snapshot = replace(snapshot, order_qty_copied=_order_qty_copied(sub, fill))
        except Exception as exc:  # any exchange failure is an audited failure
            logger.warning("copy %s/%s: follower account unreadable: %s", sub.pk, fill.pk, exc)
            return _decide(
                sub, fill, Outcome.FAILED, "exchange_error", f"The account could not be read: {exc}"
            )
        baseline_note(sub, symbol, snapshot)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        plan, figures = plan_with_figures(sub, fill, settings_, snapshot, now)
        if isinstance(plan, Skip):
            outcome = Outcome.EXPIRED if plan.reason == "expired" else Outcome.SKIPPED
            detail = plan.detail
            if plan.reason == "paused":
                detail = _pause_reason(sub)
            return _decide(sub, fill, outcome, plan.reason, detail, figures)
        return _approve_and_store(
            sub=sub,
            fill=fill,
            plan=plan,
            snapshot=snapshot,
            order_check=order_check,
            # The risk check reads the book through the adapter already open for this copy.
            adapter_for=lambda _account: adapter,
            figures=figures,
        )


def _order_qty_copied(sub: Subscription, fill: LeaderFill) -> Decimal:
    """Base quantity this subscription's opening copies took for earlier fills of the same
    leader order (sent or in flight: the ordered amount; settled: what filled)."""
    if not fill.exchange_order_id:
        return Decimal(0)
    total = Decimal(0)
    rows = CopyOrder.objects.filter(
        subscription=sub,
        closing=False,
        leader_fill__leader_id=fill.leader_id,
        leader_fill__exchange_order_id=fill.exchange_order_id,
    ).values_list("state", "amount", "filled_amount")
    for state, amount, filled in rows:
        total += filled if state in CopyOrder.FINAL else amount
    return total


def baseline_note(sub: Subscription, symbol: str, snapshot: FollowerSnapshot) -> None:
    """Before the first copy in a market, note what the account already holds of its base
    asset: the reconciliation expects the copies to account for everything above it."""
    if symbol in (sub.baseline or {}) or snapshot.copy_position != 0:
        return
    if snapshot.base_total is None:
        return
    sub.baseline = {**(sub.baseline or {}), symbol: str(snapshot.base_total)}
    Subscription.objects.filter(pk=sub.pk).update(baseline=sub.baseline)


def plan_request(plan: PlannedOrder) -> OrderRequest:
    """The ``OrderRequest`` a planned copy is checked (and later sent) as."""
    return OrderRequest(
        symbol=plan.symbol,
        side=plan.side,
        type=plan.type,
        amount=plan.amount,
        client_order_id=plan.client_order_id,
        price=plan.price,
        time_in_force=plan.time_in_force,
        reduce_only=plan.reduce_only,
    )


def approve(
    *,
    sub: Subscription,
    fill: LeaderFill,
    plan: PlannedOrder,
    snapshot: FollowerSnapshot,
    order_check: OrderCheck,
    adapter_for: AdapterFor,
    figures: dict[str, Any],
    decision: Any = None,
) -> tuple[Decimal, str] | CopyDecision:
    """The risk check of a planned copy: ``(amount, note)`` to send (the risk limits may cut
    the amount), or the decision (not saved yet) saying why nothing is sent. ``decision``: the
    risk check's answer when it was already asked (a batch checks many copies at once)."""
    request = plan_request(plan)
    if decision is None:
        try:
            # A savepoint: a database error inside the check must not poison the plan's
            # transaction (the failure is recorded below).
            with transaction.atomic():
                decision = order_check(
                    user=sub.follower,
                    account=sub.account,
                    request=request,
                    market=snapshot.market,
                    price=snapshot.price,
                    stop=fill.stop_price,
                    adapter_for=adapter_for,
                )
        except Exception as exc:  # no risk answer, no order
            return _decide_row(
                sub, fill, Outcome.FAILED, "risk_error", f"The risk check failed: {exc}"
            )
    try:
        verdict = read_verdict(decision=decision, request=request)
    except Exception as exc:  # no risk answer, no order
        return _decide_row(sub, fill, Outcome.FAILED, "risk_error", f"The risk check failed: {exc}")
    if not verdict.approved:
        return _decide_row(
            sub, fill, Outcome.SKIPPED, f"risk_denied:{verdict.code}"[:60], verdict.message, figures
        )
    amount = plan.amount
    note = plan.note
    if verdict.amount is not None and verdict.amount < amount:
        amount = snapshot.market.round_amount(verdict.amount)
        try:
            snapshot.market.check_size(amount, plan.price or snapshot.price)
        except OrderTooSmall as exc:
            return _decide_row(
                sub,
                fill,
                Outcome.SKIPPED,
                "below_min_notional",
                f"after the risk limits: {exc.message}",
                figures,
            )
        note = (note + "; " if note else "") + f"reduced by the risk limits ({verdict.code})"
    return amount, note


def order_row(
    sub: Subscription,
    fill: LeaderFill,
    plan: PlannedOrder,
    amount: Decimal,
    note: str,
    planned_at: datetime,
) -> CopyOrder:
    """The ``planned`` row of an approved copy (not saved yet), client order id included."""
    return CopyOrder(
        subscription=sub,
        leader_fill=fill,
        client_order_id=plan.client_order_id,
        symbol=plan.symbol,
        side=plan.side,
        order_type=plan.type,
        time_in_force=plan.time_in_force,
        closing=plan.closing,
        reduce_only=plan.reduce_only,
        amount=amount,
        limit_price=plan.price,
        reference_price=plan.reference_price,
        note=note[:300],
        leader_filled_at=fill.exchange_time,
        detected_at=fill.detected_at,
        planned_at=planned_at,
    )


def _approve_and_store(
    *,
    sub: Subscription,
    fill: LeaderFill,
    plan: PlannedOrder,
    snapshot: FollowerSnapshot,
    order_check: OrderCheck,
    adapter_for: AdapterFor,
    figures: dict[str, Any],
) -> CopyOrder | CopyDecision:
    result = approve(
        sub=sub,
        fill=fill,
        plan=plan,
        snapshot=snapshot,
        order_check=order_check,
        adapter_for=adapter_for,
        figures=figures,
    )
    if isinstance(result, CopyDecision):
        result.save()
        return result
    amount, note = result
    order = order_row(sub, fill, plan, amount, note, timezone.now())
    order.save()
    figures.update(amount=amount, limit_price=plan.price or "")
    _decide(sub, fill, Outcome.COPIED, "", note, figures, order)
    return order


# --- submission -----------------------------------------------------------------------------


def _request(row: CopyOrder) -> OrderRequest:
    return OrderRequest(
        symbol=row.symbol,
        # (type: ignore below) a choices column/value: only the Literal's strings
        side=row.side,  # type: ignore[arg-type]
        # (type: ignore below) a choices column/value: only the Literal's strings
        type=row.order_type,  # type: ignore[arg-type]
        amount=row.amount,
        client_order_id=row.client_order_id,
        price=row.limit_price,
        # (type: ignore below) a choices column/value: only the Literal's strings
        time_in_force=row.time_in_force,  # type: ignore[arg-type]
        reduce_only=row.reduce_only,
    )


def copy_order_submit(*, copy_order_id: int, adapter_for: AdapterFor | None = None) -> CopyOrder:
    """Send a planned copy once. Whoever claims the row (planned → submitted, under a row lock)
    sends it; a second worker or a retried task finds it claimed and only looks it up."""
    adapter_for = adapter_for or default_adapter_for
    account = (
        CopyOrder.objects.select_related("subscription__account")
        .get(pk=copy_order_id)
        .subscription.account
    )
    # A planned copy keeps its account: deleting the account is refused while one exists.
    assert account is not None
    # Built before the claim: an account that cannot be opened leaves the row 'planned'
    # (retried later), never 'submitted' with nothing sent.
    adapter = adapter_for(account)
    with transaction.atomic():
        row = (
            CopyOrder.objects.select_for_update(of=("self",))
            .select_related("subscription__account", "leader_fill")
            .get(pk=copy_order_id)
        )
        if row.state == State.PLANNED and not row.closing and _expired(row):
            # Planned in time but never sent (its worker died): an entry is not sent late.
            row.state = State.CANCELLED
            row.error_text = "expired before it was sent"
            row.save(update_fields=["state", "error_text", "updated_at"])
            _decide(
                row.subscription,
                row.leader_fill,
                Outcome.EXPIRED,
                "expired",
                "the entry was planned but not sent within the signal expiry",
                order=row,
            )
            return row
        claimed = row.state == State.PLANNED
        if claimed:
            row.state = State.SUBMITTED
            row.submitted_at = timezone.now()
            row.attempts += 1
            row.save(update_fields=["state", "submitted_at", "attempts", "updated_at"])
    if not claimed:
        if row.state in CopyOrder.IN_FLIGHT:
            return copy_order_resolve(copy_order_id=row.pk, adapter=adapter)
        return row
    return _send(row, adapter)


def _expired(row: CopyOrder) -> bool:
    age_ms = time.time() * 1000 - row.leader_fill.timestamp_ms
    return age_ms > row.subscription.expiry_seconds * 1000


def _send(row: CopyOrder, adapter: TradingAdapter) -> CopyOrder:
    """The one place a copy reaches an exchange; the row is already claimed by this caller."""
    try:
        answer = adapter.create_order(_request(row))
    except OrderStatusUnknown as exc:
        _mark_unknown(row.pk, f"no answer from the exchange: {exc.message}")
        return copy_order_resolve(copy_order_id=row.pk, adapter=adapter)
    except ApplicationError as exc:
        # Refused. A refusal can itself mean an order with this id is already there (Binance
        # answers "Duplicate order sent." while it is open): look before calling it rejected.
        try:
            found = adapter.fetch_order_by_client_id(row.symbol, row.client_order_id)
        except Exception as lookup_exc:
            _mark_unknown(row.pk, f"refused ({exc.message}); lookup failed: {lookup_exc}")
            raise
        if found is not None:
            return _record(row.pk, found)
        return _finish_without_order(row.pk, State.REJECTED, exc.message, "order_rejected")
    except Exception as exc:  # a transport failure may have left the process
        _mark_unknown(row.pk, f"{type(exc).__name__}: {exc}")
        return copy_order_resolve(copy_order_id=row.pk, adapter=adapter)
    return _record(row.pk, answer)


def _mark_unknown(pk: int, error: str) -> None:
    changed = CopyOrder.objects.filter(pk=pk, state=State.SUBMITTED).update(
        state=State.UNKNOWN, error_text=error[:2000], updated_at=timezone.now()
    )
    if changed:
        live.publish_order_state(pk, State.UNKNOWN)  # update() sends no post_save


def _finish_without_order(pk: int, state: str, error: str, reason: str) -> CopyOrder:
    with transaction.atomic():
        row = (
            CopyOrder.objects.select_for_update(of=("self",))
            .select_related("subscription", "leader_fill")
            .get(pk=pk)
        )
        if row.state in CopyOrder.IN_FLIGHT:
            row.state = state
            row.error_text = error[:2000]
            row.save(update_fields=["state", "error_text", "updated_at"])
            _decide(row.subscription, row.leader_fill, Outcome.FAILED, reason, error, order=row)
    return row


def _status_to_state(answer: OrderState, amount: Decimal) -> str:
    if answer.status == "rejected":
        return State.REJECTED
    if answer.status == "open":
        return State.ACKNOWLEDGED
    if answer.status == "closed":
        return State.FILLED if answer.filled >= amount else State.PARTIALLY_FILLED
    # canceled / expired: an IOC remainder, or the whole order when nothing matched
    return State.PARTIALLY_FILLED if answer.filled > 0 else State.CANCELLED


def _record_values(row: CopyOrder, answer: OrderState, now: datetime) -> CopyDecision | None:
    """Put what the exchange says on ``row`` (not saved); the failure decision (not saved)
    when it was rejected or nothing matched."""
    row.state = _status_to_state(answer, row.amount)
    row.exchange_order_id = answer.exchange_order_id
    row.filled_amount = answer.filled
    row.average_price = answer.average_price
    row.fee = answer.fee
    row.fee_currency = answer.fee_currency
    row.acknowledged_at = row.acknowledged_at or now
    if answer.filled > 0:
        row.filled_at = row.filled_at or now
        if answer.average_price:
            sign = 1 if row.side == "buy" else -1
            row.slippage_bps = (
                sign * (answer.average_price - row.reference_price) / row.reference_price
            ) * 10_000
    if row.state == State.REJECTED:
        return _decide_row(
            row.subscription,
            row.leader_fill,
            Outcome.FAILED,
            "order_rejected",
            "the exchange rejected the order",
            order=row,
        )
    if row.state == State.CANCELLED:
        return _decide_row(
            row.subscription,
            row.leader_fill,
            Outcome.FAILED,
            "not_filled",
            "nothing matched within the limit price (IOC)",
            order=row,
        )
    return None


def _record(pk: int, answer: OrderState) -> CopyOrder:
    """Store what the exchange says about the order. Settled rows are never moved back."""
    with transaction.atomic():
        row = (
            CopyOrder.objects.select_for_update(of=("self",))
            .select_related("subscription", "leader_fill")
            .get(pk=pk)
        )
        if row.state in CopyOrder.FINAL:
            return row
        decision = _record_values(row, answer, timezone.now())
        row.save()
        if decision is not None:
            decision.save()
    return row


def copy_order_resolve(
    *,
    copy_order_id: int,
    adapter_for: AdapterFor | None = None,
    adapter: TradingAdapter | None = None,
) -> CopyOrder:
    """Settle a copy whose outcome is not known by looking it up by client order id.

    Found: recorded. Not found within the grace period: ``CopyOrderPending`` (ask again later).
    Not found after it: never placed (see the module docstring)."""
    row = CopyOrder.objects.select_related("subscription__account").get(pk=copy_order_id)
    if row.state not in CopyOrder.IN_FLIGHT:
        return row
    if adapter is None:
        # An in-flight copy keeps its account: deleting the account is refused while one exists.
        assert row.subscription.account is not None
        adapter = (adapter_for or default_adapter_for)(row.subscription.account)
    found = adapter.fetch_order_by_client_id(row.symbol, row.client_order_id)
    if found is not None:
        return _record(row.pk, found)
    sent_at = row.submitted_at or row.planned_at
    if timezone.now() - sent_at < submit_grace():
        raise CopyOrderPending(
            f"copy {row.client_order_id} is not on the exchange yet; looking again shortly"
        )
    if not row.closing:
        return _finish_without_order(
            row.pk,
            State.REJECTED,
            "the order never reached the exchange (not found by its client order id "
            f"{settings.COPYTRADING_SUBMIT_GRACE_SECONDS} s after sending)",
            "never_placed",
        )
    # A close must happen: claim a second attempt (one resolver wins) and send it again under
    # the same client order id, now that the first provably never arrived.
    with transaction.atomic():
        claimed = (
            CopyOrder.objects.filter(
                pk=row.pk, state__in=CopyOrder.IN_FLIGHT, attempts=row.attempts
            ).update(
                state=State.SUBMITTED,
                submitted_at=timezone.now(),
                attempts=F("attempts") + 1,
                error_text="first attempt never reached the exchange; sent again",
                updated_at=timezone.now(),
            )
            == 1
        )
    if not claimed:
        return CopyOrder.objects.get(pk=row.pk)
    row.refresh_from_db()
    live.publish_order_state(row.pk, State.SUBMITTED)  # update() sends no post_save
    return _send(row, adapter)


def copy_replicate(
    *,
    leader_fill_id: int,
    subscription_id: int,
    adapter_for: AdapterFor | None = None,
    order_check: OrderCheck | None = None,
) -> CopyOrder | CopyDecision | None:
    """Plan and send the copy of one fill for one subscription (the fan-out's unit of work)."""
    result = copy_plan(
        subscription_id=subscription_id,
        leader_fill_id=leader_fill_id,
        adapter_for=adapter_for,
        order_check=order_check,
    )
    if isinstance(result, CopyOrder):
        return copy_order_submit(copy_order_id=result.pk, adapter_for=adapter_for)
    return result


def copy_orders_sweep(*, now: datetime | None = None) -> dict[str, list[int]]:
    """Rows a dead worker left behind: planned but never claimed, or sent without an answer.
    Returns their ids for the caller to hand to workers (submit / resolve)."""
    now = now or timezone.now()
    planned = list(
        CopyOrder.objects.filter(
            state=State.PLANNED, planned_at__lt=now - timedelta(seconds=10)
        ).values_list("pk", flat=True)[:500]
    )
    in_flight = list(
        CopyOrder.objects.filter(
            state__in=CopyOrder.IN_FLIGHT, submitted_at__lt=now - timedelta(seconds=5)
        ).values_list("pk", flat=True)[:500]
    )
    return {"submit": planned, "resolve": in_flight}
