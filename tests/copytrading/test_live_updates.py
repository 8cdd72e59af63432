"""Rows changed without ``save()`` (queryset ``update()``, ``bulk_create``, ``bulk_update``)
still reach the dashboards over the real channel layer: a halt pausing subscriptions, a
leader retiring, a reconciliation, a copy turning ``unknown``, and the one-task fan-out."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.utils import timezone

from copytrading.models import CopyAdjustment, CopyOrder, Subscription
from copytrading.services import (
    copy_fanout,
    detection,
    leader_fill_record,
    leader_retire,
    subscriptions_pause_for_halt,
)
from copytrading.services.adjustments import _finish, adjustment_plan, adjustment_send
from copytrading.services.reconcile import subscription_reconcile
from copytrading.services.replication import _mark_unknown
from tests.conftest import arun
from tests.copytrading.conftest import build_copy_setup
from tests.copytrading.test_dashboards import make_fill, make_order
from tests.copytrading.test_live import socket
from tests.copytrading.test_services import leader_fill

pytestmark = pytest.mark.django_db(transaction=True)


async def _heard(comm: WebsocketCommunicator, want: int, timeout: float = 10) -> list[dict]:
    return [await comm.receive_json_from(timeout=timeout) for _ in range(want)]


def _listen(s: Any, action: Any, *, follower_msgs: int, leader_msgs: int) -> tuple[list, list]:
    """Open the follower's and the leader's sockets, run ``action``, collect the messages."""

    async def scenario() -> tuple[list, list]:
        mine = socket(f"/ws/copy/subscriptions/{s.subscription.pk}/", s.follower)
        lead = socket(f"/ws/copy/leaders/{s.leader.pk}/", s.leader_user)
        assert (await mine.connect(timeout=10))[0]
        assert (await lead.connect(timeout=10))[0]
        await database_sync_to_async(action)()
        got = await _heard(mine, follower_msgs), await _heard(lead, leader_msgs)
        await mine.disconnect()
        await lead.disconnect()
        await database_sync_to_async(connections.close_all)()
        return got

    return arun(scenario())


def test_a_halt_pausing_subscriptions_reaches_both_dashboards():
    s = build_copy_setup()
    action = lambda: subscriptions_pause_for_halt(  # noqa: E731
        user_id=s.follower.pk, account_id=None, reason="kill switch"
    )
    (mine,), (lead,) = _listen(s, action, follower_msgs=1, leader_msgs=1)
    assert Subscription.objects.get(pk=s.subscription.pk).status == "paused"
    for msg in (mine, lead):
        assert (msg["kind"], msg["id"], msg["status"]) == (
            "subscription",
            s.subscription.pk,
            "paused",
        )


def test_a_retiring_leader_tells_its_followers_they_are_paused():
    s = build_copy_setup()
    (mine,), _lead = _listen(
        s,
        lambda: leader_retire(user=s.leader_user, leader_id=s.leader.pk),
        follower_msgs=1,
        leader_msgs=1,
    )
    assert (mine["kind"], mine["change"], mine["status"]) == ("subscription", "paused", "paused")


def test_a_reconciliation_reaches_the_follower():
    s = build_copy_setup()
    (mine,), _lead = _listen(
        s,
        lambda: subscription_reconcile(subscription_id=s.subscription.pk),
        follower_msgs=1,
        leader_msgs=1,
    )
    assert (mine["kind"], mine["change"]) == ("subscription", "drift")
    assert mine["id"] == s.subscription.pk
    assert mine["status"] == Subscription.objects.get(pk=s.subscription.pk).drift_status


def test_a_copy_turning_unknown_reaches_both_dashboards():
    s = build_copy_setup()
    fill = make_fill(s.leader, at=timezone.now())
    order = make_order(s.subscription, fill, state="submitted", filled="0")
    (mine,), (lead,) = _listen(
        s, lambda: _mark_unknown(order.pk, "no answer"), follower_msgs=1, leader_msgs=1
    )
    assert CopyOrder.objects.get(pk=order.pk).state == "unknown"
    for msg in (mine, lead):
        assert (msg["kind"], msg["id"], msg["state"], msg["created"]) == (
            "order",
            order.pk,
            "unknown",
            False,
        )


def test_the_fan_outs_bulk_rows_reach_the_dashboards_once_the_copies_are_sent(monkeypatch):
    """The fan-out's rows change by bulk writes (planned by bulk_create, submitted by update,
    answered by the batched update) that send no signal: the pages hear of each row once the
    sends are done, with its latest state, marked new, and nothing between (their messages
    would compete with the sending for the CPU)."""
    s = build_copy_setup()
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    mine, lead = _listen(
        s, lambda: copy_fanout(leader_fill_id=fill.pk), follower_msgs=2, leader_msgs=1
    )
    row = CopyOrder.objects.get(leader_fill=fill)
    assert row.state == "filled"
    heard = sorted((m["kind"], m["id"], m.get("state") or m.get("outcome"), m["created"])
                   for m in mine)  # fmt: skip
    decision = row.decisions.get()
    assert heard == [("decision", decision.pk, "copied", True), ("order", row.pk, "filled", True)]
    assert [(m["kind"], m["id"], m.get("state"), m["created"]) for m in lead] == [
        ("order", row.pk, "filled", True)
    ]


def _plan_repair(s: Any) -> CopyAdjustment:
    row, created = adjustment_plan(
        sub=s.subscription,
        kind=CopyAdjustment.Kind.REPAIR,
        key="repair:BTC/USDT:1",
        symbol="BTC/USDT",
        side="buy",
        amount=Decimal("0.01"),
        reference_price=Decimal(60000),
    )
    assert created
    return row


def _adjustment_news(msgs: list[dict]) -> list[tuple]:
    return [(m["kind"], m["id"], m["subscription"], m["state"], m["created"]) for m in msgs]


def test_an_adjustment_planned_claimed_and_answered_reaches_both_dashboards():
    """Planned (save), claimed for sending (update), answered (the answer's save): the
    follower's and the leader's pages hear each step, ids and state only."""
    s = build_copy_setup()
    rows: list[CopyAdjustment] = []

    def action() -> None:
        rows.append(_plan_repair(s))
        adjustment_send(adjustment_id=rows[0].pk)

    mine, lead = _listen(s, action, follower_msgs=3, leader_msgs=3)
    (row,) = rows
    final = CopyAdjustment.objects.get(pk=row.pk).state
    assert final == "filled", CopyAdjustment.objects.get(pk=row.pk).error_text
    sub = s.subscription.pk
    want = [
        ("adjustment", row.pk, sub, "planned", True),
        ("adjustment", row.pk, sub, "submitted", False),
        ("adjustment", row.pk, sub, "filled", False),
    ]
    assert _adjustment_news(mine) == want
    assert _adjustment_news(lead) == want
    assert set(mine[0]) == {"kind", "id", "created", "subscription", "state"}


def test_an_adjustment_finished_by_update_reaches_both_dashboards():
    s = build_copy_setup()
    rows: list[CopyAdjustment] = []

    def action() -> None:
        rows.append(_plan_repair(s))
        _finish(rows[0].pk, CopyAdjustment.State.SKIPPED, "below the market's minimum")

    mine, lead = _listen(s, action, follower_msgs=2, leader_msgs=2)
    (row,) = rows
    assert CopyAdjustment.objects.get(pk=row.pk).state == "skipped"
    sub = s.subscription.pk
    want = [
        ("adjustment", row.pk, sub, "planned", True),
        ("adjustment", row.pk, sub, "skipped", False),
    ]
    assert _adjustment_news(mine) == want
    assert _adjustment_news(lead) == want
