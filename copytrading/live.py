"""Live updates of the copy-trading dashboards over Channels.

Two groups: ``copy-sub-<subscription id>`` (the follower's subscription page) and
``copy-leader-<leader id>`` (the leader's own page). ``copytrading.receivers`` calls
``publish_*`` when a CopyOrder, CopyDecision, CopyAdjustment or LeaderFill row is saved; the
message goes out after the surrounding transaction commits (never for a rolled-back row) and
carries ids and states only: the page fetches the rest through its owner's session.

Rows changed by a queryset ``update()`` (or ``bulk_create``/``bulk_update``) send no signal:
the services that change a copy's or a subscription's state that way call
``publish_copy_order`` / ``publish_order_state`` / ``publish_adjustment`` /
``publish_subscriptions`` themselves.

The sending itself happens on a background thread of the process: a copy being replicated
never waits for the channel layer (a few messages per copy, each a Redis round trip). A
message still queued when the process dies is lost; the page catches up on the next one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from config.realtime import group_send

logger = logging.getLogger(__name__)
MESSAGE_TYPE = "copy.update"
_outbox: queue.SimpleQueue[tuple[list[str], dict[str, Any]]] = queue.SimpleQueue()
_sender: threading.Thread | None = None
_sender_lock = threading.Lock()


async def _send_batch(batch: list[tuple[list[str], dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for groups, message in batch:
        for group in groups:
            await layer.group_send(group, message)


def _send_forever() -> None:
    """Everything queued so far goes out in one event-loop run (a fan-out queues several
    messages per copy; one ``async_to_sync`` call each would be most of its cost), in order."""
    while True:
        batch = [_outbox.get()]
        while len(batch) < 500:
            try:
                batch.append(_outbox.get_nowait())
            except queue.Empty:
                break
        try:
            async_to_sync(_send_batch)(batch)
        except Exception:  # a dead channel layer must not stop the sender: one at a time
            logger.warning("live batch of %s message(s) failed; sending singly", len(batch))
            for groups, message in batch:
                for group in groups:
                    group_send(group, message)  # never raises


def _enqueue(groups: list[str], message: dict[str, Any]) -> None:
    global _sender
    if _sender is None or not _sender.is_alive():
        with _sender_lock:
            if _sender is None or not _sender.is_alive():
                _sender = threading.Thread(
                    target=_send_forever, name="copytrading-live", daemon=True
                )
                _sender.start()
    _outbox.put((groups, message))


def subscription_group(subscription_id: int) -> str:
    return f"copy-sub-{subscription_id}"


def leader_group(leader_id: int) -> str:
    return f"copy-leader-{leader_id}"


_held = threading.local()


@contextmanager
def held() -> Iterator[None]:
    """Messages committed inside the block are kept, then sent when it ends with only the
    last message of each row (a fan-out moves 100 copies through three states in under a
    second; the pages refetch on any message, so the states in between tell them nothing).
    Keeps the channel layer's work (a Redis round trip per group and message, on this
    process's sender thread) out of the time between a leader's fill and the copies' sending.
    Nested blocks share the outermost one's buffer."""
    outer = getattr(_held, "buffer", None)
    if outer is not None:
        yield
        return
    buffer: dict[tuple[Any, ...], tuple[list[str], dict[str, Any]]] = {}
    _held.buffer = buffer
    try:
        yield
    finally:
        _held.buffer = None
        for groups, message in buffer.values():  # insertion order: each row's first place
            _enqueue(groups, message)


def _deliver(groups: list[str], message: dict[str, Any]) -> None:
    buffer = getattr(_held, "buffer", None)
    if buffer is None:
        _enqueue(groups, message)
        return
    key = (message["kind"], message["id"], message.get("change"))
    earlier = buffer.pop(key, None)  # the newer message takes the row's place at the end
    if earlier is not None and earlier[1].get("created"):
        message = {**message, "created": True}  # the page hears the row is new
    buffer[key] = (groups, message)


def _after_commit(groups: list[str], message: dict[str, Any]) -> None:
    full = {"type": MESSAGE_TYPE, **message}
    transaction.on_commit(lambda: _deliver(groups, full))


def publish_copy_order(order: Any, *, created: bool) -> None:
    """A copy was planned or moved state: its follower's page and its leader's page."""
    _after_commit(
        [subscription_group(order.subscription_id), leader_group(order.leader_fill.leader_id)],
        {
            "kind": "order",
            "id": order.pk,
            "created": created,
            "subscription": order.subscription_id,
            "leader_fill": order.leader_fill_id,
            "state": order.state,
        },
    )


def publish_adjustment(adjustment: Any, *, created: bool) -> None:
    """A copy adjustment (join, stop close, stop-loss/take-profit, repair) was planned or moved
    state: its follower's page and its leader's page, as a copy does."""
    sub = adjustment.subscription
    _after_commit(
        [subscription_group(sub.pk), leader_group(sub.leader_id)],
        {
            "kind": "adjustment",
            "id": adjustment.pk,
            "created": created,
            "subscription": sub.pk,
            "state": adjustment.state,
        },
    )


def publish_decision(decision: Any, *, created: bool) -> None:
    _after_commit(
        [subscription_group(decision.subscription_id)],
        {
            "kind": "decision",
            "id": decision.pk,
            "created": created,
            "subscription": decision.subscription_id,
            "outcome": decision.outcome,
            "reason": decision.reason,
        },
    )


def publish_leader_fill(fill: Any, *, created: bool) -> None:
    """A new leader fill: the leader's page (its followers' pages move when copies do)."""
    _after_commit(
        [leader_group(fill.leader_id)],
        {"kind": "fill", "id": fill.pk, "created": created, "leader": fill.leader_id},
    )


def publish_order_state(order_id: int, state: str) -> None:
    """A copy's state changed by a queryset ``update()``: its follower's and leader's pages."""
    from copytrading.models import CopyOrder

    row = (
        CopyOrder.objects.filter(pk=order_id)
        .values("subscription_id", "leader_fill_id", "leader_fill__leader_id")
        .first()
    )
    if row is None:
        return
    _after_commit(
        [subscription_group(row["subscription_id"]), leader_group(row["leader_fill__leader_id"])],
        {
            "kind": "order",
            "id": order_id,
            "created": False,
            "subscription": row["subscription_id"],
            "leader_fill": row["leader_fill_id"],
            "state": state,
        },
    )


def publish_subscriptions(rows: list[tuple[int, int]], *, change: str, status: str = "") -> None:
    """Subscriptions ``[(id, leader id), ...]`` changed by a queryset ``update()`` (paused,
    stopped, drift checked): each follower's page and the leader's page (its follower list)."""
    for sub_id, leader_id in rows:
        _after_commit(
            [subscription_group(sub_id), leader_group(leader_id)],
            {"kind": "subscription", "id": sub_id, "change": change, "status": status},
        )
