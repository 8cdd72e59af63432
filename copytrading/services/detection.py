"""Seeing the leader's fills: recorded once each (by exchange fill id), from the stream and
from the REST poll alike, and handed to the fan-out after commit."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from celery import current_app
from django.db import transaction
from django.utils import timezone

from config.exceptions import ApplicationError
from copytrading.models import Leader, LeaderFill
from copytrading.selectors import leader_position_before
from copytrading.services.leaders import account_equity
from copytrading.services.wiring import AdapterFor, default_adapter_for
from exchanges.trading import Fill

logger = logging.getLogger(__name__)
EQUITY_REFRESH = timedelta(seconds=60)


def leader_fill_record(
    *, leader: Leader, fill: Fill, source: str = LeaderFill.Source.STREAM
) -> tuple[LeaderFill | None, bool]:
    """Store one leader execution, once: ``(row, created)``. A fill already stored (the stream
    and the poll both report it) returns the stored row; a fill from before the leader was
    published is part of its starting positions and is not stored (None). A new fill moves the
    leader's cursor and is fanned out to the followers after commit."""
    stored = LeaderFill.objects.filter(leader=leader, fill_id=fill.fill_id).first()
    if stored is not None:
        return stored, False
    if fill.timestamp_ms < int(leader.published_at.timestamp() * 1000):
        return None, False
    with transaction.atomic():
        # One writer per leader: the running position is computed from the previous fill.
        locked = Leader.objects.select_for_update().get(pk=leader.pk)
        stored = LeaderFill.objects.filter(leader=leader, fill_id=fill.fill_id).first()
        if stored is not None:
            return stored, False
        before = leader_position_before(locked, fill.symbol)
        signed = fill.amount if fill.side == "buy" else -fill.amount
        opening = before == 0 or (before > 0) == (signed > 0)
        stop = (locked.stops or {}).get(fill.symbol) if opening else None
        row = LeaderFill.objects.create(
            leader=locked,
            fill_id=fill.fill_id,
            exchange_order_id=fill.exchange_order_id or "",
            symbol=fill.symbol,
            side=fill.side,
            amount=fill.amount,
            price=fill.price,
            fee=fill.fee,
            fee_currency=fill.fee_currency or "",
            timestamp_ms=fill.timestamp_ms,
            exchange_time=datetime.fromtimestamp(fill.timestamp_ms / 1000, tz=UTC),
            detected_at=timezone.now(),
            source=source,
            position_before=before,
            position_after=before + signed,
            stop_price=Decimal(stop) if stop else None,
        )
        if fill.timestamp_ms > locked.fill_cursor_ms:
            Leader.objects.filter(pk=locked.pk).update(fill_cursor_ms=fill.timestamp_ms)
        pk = row.pk
        transaction.on_commit(lambda: enqueue_fanout(leader_fill_id=pk))
    return row, True


def enqueue_fanout(*, leader_fill_id: int) -> None:
    """Queue the fan-out of one leader fill on the live queue (by task name: services never
    import task modules)."""
    try:
        current_app.send_task("copytrading.fanout", args=[leader_fill_id])
    except Exception:
        # The beat poll and sweeper pick the fill up again; nothing is lost.
        logger.exception("could not queue the fan-out of leader fill %s", leader_fill_id)


def leader_poll(*, leader_id: int, adapter_for: AdapterFor | None = None) -> int:
    """The safety net under the stream: fetch the leader's fills since the stored cursor and
    record those not seen yet (a restart resumes from the cursor). Returns how many were new.
    Exchange errors are stored on the leader, not raised: the next poll tries again."""
    leader = Leader.objects.select_related("account").filter(pk=leader_id).first()
    # (a leader loses its account only once retired)
    if leader is None or leader.status == Leader.Status.RETIRED or leader.account is None:
        return 0
    adapter = (adapter_for or default_adapter_for)(leader.account)
    new = 0
    now = timezone.now()
    try:
        # Inclusive of the cursor's millisecond: a fill sharing it is fetched again and
        # dropped by its id, never missed.
        fills = adapter.fetch_fills(since_ms=leader.fill_cursor_ms)
        for fill in sorted(fills, key=lambda f: (f.timestamp_ms, f.fill_id)):
            _row, created = leader_fill_record(leader=leader, fill=fill, source="poll")
            new += int(created)
        updates: dict[str, Any] = {"polled_at": now, "poll_error": ""}
        if leader.equity_at is None or now - leader.equity_at > EQUITY_REFRESH:
            updates.update(equity=account_equity(adapter, quote=leader.quote), equity_at=now)
    except ApplicationError as exc:
        updates = {"polled_at": now, "poll_error": exc.message[:500]}
    except Exception as exc:  # transport errors: stored, retried next poll
        logger.warning("poll of leader %s failed: %s", leader_id, exc)
        updates = {"polled_at": now, "poll_error": f"{type(exc).__name__}: {exc}"[:500]}
    Leader.objects.filter(pk=leader_id).update(**updates)
    return new


def leaders_to_poll() -> list[int]:
    return list(Leader.objects.exclude(status=Leader.Status.RETIRED).values_list("pk", flat=True))


def fills_not_fanned_out(*, older_than_seconds: int = 15) -> list[int]:
    """Fills recorded but whose fan-out never ran (broker down at the time)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return list(
        LeaderFill.objects.filter(fanned_out_at__isnull=True, detected_at__lt=cutoff).values_list(
            "pk", flat=True
        )[:200]
    )


def leader_fill_from_event(*, account_id: int, fill: Fill) -> int:
    """The ``fill_observed`` receiver's body: record the fill for every leader the account
    backs. Returns how many new rows were stored."""
    new = 0
    for leader in Leader.objects.filter(account_id=account_id).exclude(
        status=Leader.Status.RETIRED
    ):
        _row, created = leader_fill_record(leader=leader, fill=fill, source="stream")
        new += int(created)
    return new
