"""Seeing the leader's fills: the fill event, the REST poll over a stored cursor, restart-resume
with signal expiry (late opening fills expire, closing fills never do)."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal as D

import pytest
from celery import current_app
from django.utils import timezone

from copytrading.models import CopyDecision, CopyOrder, Leader, LeaderFill
from copytrading.services import (
    copy_orders_sweep,
    copy_plan,
    copy_replicate,
    detection,
    leader_poll,
    leader_retire,
)
from exchanges.events import publish_fill
from tests.copytrading.conftest import build_copy_setup, make_account, wait_until
from tests.copytrading.test_services import leader_fill

pytestmark = pytest.mark.django_db


@pytest.fixture
def fanned(monkeypatch) -> list[int]:
    """The leader fill ids handed to the fan-out (the live queue is not consumed here)."""
    sent: list[int] = []
    monkeypatch.setattr(
        detection, "enqueue_fanout", lambda *, leader_fill_id: sent.append(leader_fill_id)
    )
    return sent


def test_a_fill_event_on_a_leaders_account_is_recorded_and_fanned_out(
    copy_setup, fanned, django_capture_on_commit_callbacks
):
    s = copy_setup
    fill = leader_fill()
    with django_capture_on_commit_callbacks(execute=True):
        publish_fill(account_id=s.leader_account.pk, fill=fill)
    row = LeaderFill.objects.get(leader=s.leader)
    assert (row.fill_id, row.source, row.amount) == (fill.fill_id, "stream", D("0.5"))
    assert fanned == [row.pk]
    # The poll reports the same fill again: not stored twice, not fanned out twice.
    s.leader_x.add_fill(fill)
    with django_capture_on_commit_callbacks(execute=True):
        assert leader_poll(leader_id=s.leader.pk) == 0
    assert LeaderFill.objects.filter(leader=s.leader).count() == 1
    assert fanned == [row.pk]


def test_fills_on_accounts_that_lead_nothing_are_ignored(
    copy_setup, fanned, django_capture_on_commit_callbacks
):
    s = copy_setup
    other = make_account(s.follower)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        publish_fill(account_id=other.pk, fill=leader_fill())
        publish_fill(account_id=s.follower_account.pk, fill=leader_fill())
    assert len(callbacks) == 2  # both events were delivered to the receiver
    assert not LeaderFill.objects.exists()
    assert fanned == []
    # A retired leader's account is not copied either.

    leader_retire(user=s.leader_user, leader_id=s.leader.pk)
    with django_capture_on_commit_callbacks(execute=True):
        publish_fill(account_id=s.leader_account.pk, fill=leader_fill())
    assert not LeaderFill.objects.exists()


def test_the_poll_records_fills_since_the_cursor_and_moves_it(
    copy_setup, fanned, django_capture_on_commit_callbacks
):
    s = copy_setup
    base = int(time.time() * 1000)
    for i, side in enumerate(["buy", "buy", "sell"]):
        s.leader_x.add_fill(leader_fill(side=side, amount="0.1", ts=base + i, fill_id=f"P{i}"))
    with django_capture_on_commit_callbacks(execute=True):
        assert leader_poll(leader_id=s.leader.pk) == 3
    s.leader.refresh_from_db()
    assert s.leader.fill_cursor_ms == base + 2
    assert s.leader.poll_error == ""
    positions = list(
        LeaderFill.objects.filter(leader=s.leader).values_list("position_after", flat=True)
    )
    assert positions == [D("0.1"), D("0.2"), D("0.1")]
    assert len(fanned) == 3
    # Same millisecond as the cursor, new id: fetched (the cursor is inclusive) and kept.
    s.leader_x.add_fill(leader_fill(amount="0.1", ts=base + 2, fill_id="P3"))
    with django_capture_on_commit_callbacks(execute=True):
        assert leader_poll(leader_id=s.leader.pk) == 1
        assert leader_poll(leader_id=s.leader.pk) == 0


def test_an_exchange_error_during_the_poll_is_stored_not_raised(copy_setup):
    s = copy_setup

    class Down:
        def fetch_fills(self, **kw):
            raise ConnectionError("exchange unreachable")

    assert leader_poll(leader_id=s.leader.pk, adapter_for=lambda a: Down()) == 0
    s.leader.refresh_from_db()
    assert "exchange unreachable" in s.leader.poll_error


def test_the_poll_refreshes_the_leaders_equity(copy_setup):
    s = copy_setup
    Leader.objects.filter(pk=s.leader.pk).update(equity_at=timezone.now() - timedelta(minutes=5))
    s.leader_x.fund(USDT="50000", BTC="1")  # 50 000 + 1 x 60 000
    leader_poll(leader_id=s.leader.pk)
    s.leader.refresh_from_db()
    assert s.leader.equity == D("110000")


def test_a_restart_resumes_from_the_cursor_expiring_late_entries_but_copying_closes(
    copy_setup, fanned, django_capture_on_commit_callbacks
):
    s = copy_setup
    now = int(time.time() * 1000)
    Leader.objects.filter(pk=s.leader.pk).update(
        published_at=timezone.now() - timedelta(hours=1), fill_cursor_ms=now - 3_600_000
    )
    s.leader.refresh_from_db()
    # Before the outage: the leader bought 1 ETH and the follower's copy filled 0.1 ETH.
    s.leader_x.add_fill(leader_fill(symbol="ETH/USDT", amount="1", price="3000", ts=now - 300_000))
    with django_capture_on_commit_callbacks(execute=True):
        leader_poll(leader_id=s.leader.pk)
    eth_open = LeaderFill.objects.get(leader=s.leader)
    order = copy_plan(
        subscription_id=s.subscription.pk, leader_fill_id=eth_open.pk, now_ms=now - 299_000
    )
    CopyOrder.objects.filter(pk=order.pk).update(state="filled", filled_amount=order.amount)
    s.follower_x.fund(ETH=str(order.amount))
    # the leader put 1 x 3 000 of 100 000 in ETH (3 %): 3 % x 10 000 / 3 000 = 0.1 ETH
    assert order.amount == D("0.1")

    # While the workers were down (2 minutes): the leader closed ETH and opened BTC; then,
    # just before the restart, opened more BTC.
    s.leader_x.add_fill(
        leader_fill(symbol="ETH/USDT", side="sell", amount="1", price="3000", ts=now - 120_000)
    )
    s.leader_x.add_fill(leader_fill(amount="0.1", ts=now - 119_000))
    s.leader_x.add_fill(leader_fill(amount="0.5", ts=now - 2_000))
    fanned.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert leader_poll(leader_id=s.leader.pk) == 3
    assert len(fanned) == 3
    for fill_id in fanned:  # what the fan-out runs for each follower
        copy_replicate(leader_fill_id=fill_id, subscription_id=s.subscription.pk)

    late_close, late_open, fresh_open = LeaderFill.objects.filter(pk__in=fanned).order_by(
        "timestamp_ms"
    )
    close = CopyOrder.objects.get(leader_fill=late_close)
    assert (close.side, close.amount, close.closing, close.state) == (
        "sell",
        D("0.1"),
        True,
        "filled",
    )
    expired = CopyDecision.objects.get(leader_fill=late_open)
    assert (expired.outcome, expired.reason) == ("expired", "expired")
    assert not CopyOrder.objects.filter(leader_fill=late_open).exists()
    assert CopyOrder.objects.get(leader_fill=fresh_open).state == "filled"


def test_the_sweeper_finds_rows_a_dead_worker_left_behind(copy_setup):
    s = copy_setup
    fill_row, _ = detection.leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill_row.pk)
    assert copy_orders_sweep() == {"submit": [], "resolve": []}
    later = timezone.now() + timedelta(seconds=30)
    assert copy_orders_sweep(now=later) == {"submit": [order.pk], "resolve": []}
    CopyOrder.objects.filter(pk=order.pk).update(state="unknown", submitted_at=timezone.now())
    assert copy_orders_sweep(now=later) == {"submit": [], "resolve": [order.pk]}


@pytest.mark.django_db(transaction=True)
def test_the_beat_poll_copies_a_fill_the_stream_missed_through_the_live_worker(live_worker):
    s = build_copy_setup()
    s.leader_x.add_fill(leader_fill())  # on the exchange; no event reached the product
    live_worker()
    current_app.send_task("copytrading.leaders_poll")  # what beat sends every few seconds
    order = wait_until(
        lambda: CopyOrder.objects.filter(subscription=s.subscription, state="filled").first(),
        timeout=60,
        what="the copy of the polled fill",
    )
    assert order.amount == D("0.05")
    assert LeaderFill.objects.get(leader=s.leader).source == "poll"
    assert len(s.follower_x.orders()) == 1
