"""Exactly one order on the exchange per (subscription, leader fill), whatever fails.

Against the exchange test double (tests/copytrading/exchange_double.py), which, like Binance,
only refuses a duplicate client order id while the first order is open: an IOC copy closes at
once, so a blind resend *would* place a second order here, and the counts would show it.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import replace
from decimal import Decimal as D

import pytest
from celery import current_app
from django.db import connection, transaction
from django.db.models import F

from copytrading.models import CopyDecision, CopyOrder, LeaderFill
from copytrading.services import (
    CopyOrderPending,
    copy_order_resolve,
    copy_order_submit,
    copy_plan,
    copy_replicate,
    detection,
    leader_fill_record,
    subscription_create,
)
from copytrading.services.replication import _request as order_request
from copytrading.tasks import copy_one_task
from exchanges.events import publish_fill
from tests.copytrading.conftest import build_copy_setup, wait_until
from tests.copytrading.exchange_double import ExchangeDouble, ExchangeRejected, namespace_for
from tests.copytrading.test_services import leader_fill


def planned(s) -> CopyOrder:
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert isinstance(order, CopyOrder)
    assert order.state == "planned"
    return order


@pytest.mark.django_db
def test_a_retried_task_never_sends_again(copy_setup):
    s = copy_setup
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    for _ in range(3):  # the broker delivers the same task three times
        copy_one_task.apply(args=[fill.pk, s.subscription.pk])
    order = CopyOrder.objects.get(subscription=s.subscription, leader_fill=fill)
    assert (order.state, order.filled_amount, order.attempts) == ("filled", D("0.05"), 1)
    assert s.follower_x.create_calls() == 1
    assert len(s.follower_x.orders()) == 1
    assert order.exchange_order_id == s.follower_x.orders()[0]["exchange_order_id"]


@pytest.mark.django_db
def test_a_retry_of_an_order_left_in_flight_looks_it_up_instead_of_sending(copy_setup):
    s = copy_setup
    order = planned(s)
    # A worker sent it and died before recording: on the exchange, 'submitted' in our rows.
    s.follower_x.create_order(order_request(order))
    CopyOrder.objects.filter(pk=order.pk).update(state="submitted", attempts=1)
    calls = s.follower_x.create_calls()
    result = copy_order_submit(copy_order_id=order.pk)
    assert result.state == "filled"
    assert s.follower_x.create_calls() == calls  # looked up, not sent
    assert len(s.follower_x.orders()) == 1


@pytest.mark.django_db
def test_accept_then_timeout_is_resolved_by_looking_the_order_up(copy_setup):
    s = copy_setup
    s.follower_x.set_knob("timeout_after_accept", 1)
    order = planned(s)
    result = copy_order_submit(copy_order_id=order.pk)
    assert result.state == "filled"
    assert "no answer from the exchange" in result.error_text
    assert s.follower_x.create_calls() == 1
    assert len(s.follower_x.orders()) == 1


@pytest.mark.django_db
def test_a_timeout_that_never_reached_the_exchange_stays_unknown_until_the_grace_passes(
    copy_setup, settings
):
    s = copy_setup
    s.follower_x.set_knob("timeout_before_accept", 1)
    order = planned(s)
    with pytest.raises(CopyOrderPending):
        copy_order_submit(copy_order_id=order.pk)
    assert CopyOrder.objects.get(pk=order.pk).state == "unknown"
    with pytest.raises(CopyOrderPending):  # a retry inside the grace period only looks
        copy_order_submit(copy_order_id=order.pk)
    assert s.follower_x.create_calls() == 1
    settings.COPYTRADING_SUBMIT_GRACE_SECONDS = 0  # the grace period is over
    result = copy_order_resolve(copy_order_id=order.pk)
    # An entry that never reached the exchange is not sent late: recorded as failed.
    assert (result.state, s.follower_x.create_calls(), len(s.follower_x.orders())) == (
        "rejected",
        1,
        0,
    )
    decision = CopyDecision.objects.get(copy_order=result, outcome="failed")
    assert decision.reason == "never_placed"


@pytest.mark.django_db
def test_a_close_that_provably_never_arrived_is_sent_once_more(copy_setup, settings):
    s = copy_setup
    opened = planned(s)
    copy_order_submit(copy_order_id=opened.pk)
    close_fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill(side="sell"))
    close = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=close_fill.pk)
    assert (close.side, close.amount, close.closing) == ("sell", D("0.05"), True)
    s.follower_x.set_knob("timeout_before_accept", 1)
    settings.COPYTRADING_SUBMIT_GRACE_SECONDS = 0
    result = copy_order_submit(copy_order_id=close.pk)
    assert (result.state, result.attempts) == ("filled", 2)
    sells = [o for o in s.follower_x.orders() if o["side"] == "sell"]
    assert len(sells) == 1
    assert sells[0]["client_order_id"] == close.client_order_id


def _race(n: int, work) -> list[object]:
    """Run ``work`` in ``n`` threads released at once; each thread has its own connection."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work()
        except Exception as exc:  # collected and asserted on by the caller
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _until_settled(leader_fill_id: int, subscription_id: int) -> str:
    """What a worker does: replicate, and on 'pending' retry a moment later."""
    outcomes = []
    for _ in range(100):
        try:
            result = copy_replicate(leader_fill_id=leader_fill_id, subscription_id=subscription_id)
            outcomes.append(type(result).__name__)
            return ",".join(outcomes)
        except CopyOrderPending:
            outcomes.append("pending")
            time.sleep(0.1)
    return ",".join(outcomes)


@pytest.mark.django_db(transaction=True)
def test_workers_racing_on_the_same_fill_place_one_order():
    s = build_copy_setup()
    s.follower_x.set_knob("delay_ms", 400)  # the exchange is slow to answer: a wide window
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    results = _race(4, lambda: _until_settled(fill.pk, s.subscription.pk))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert CopyOrder.objects.filter(leader_fill=fill).count() == 1
    order = CopyOrder.objects.get(leader_fill=fill)
    assert (order.state, order.attempts) == ("filled", 1)
    assert s.follower_x.create_calls() == 1
    assert len(s.follower_x.orders()) == 1
    # The losers waited for the winner's order to show up rather than sending their own.
    assert any("pending" in str(r) for r in results), results


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_between_sending_and_recording_leaves_one_order(live_worker, monkeypatch):
    s = build_copy_setup()
    # Only the submit task below runs: the fan-out of this fill would send a second worker
    # to the same row (which then finds the order and records it: correct, but not this case).
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    s.follower_x.set_knob("hang_after_accept", 1)

    first = live_worker()
    current_app.send_task("copytrading.submit", args=[order.pk])
    wait_until(s.follower_x.accepted_flag, timeout=60, what="the order to reach the exchange")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # Sent, never recorded: the row says 'submitted', the exchange holds the order.
    assert CopyOrder.objects.get(pk=order.pk).state == "submitted", first.log_path.read_text()[
        -4000:
    ]
    assert len(s.follower_x.orders()) == 1

    s.follower_x.set_knob("hang_after_accept", "")
    live_worker()
    # The broker redelivers the unacknowledged task, and the sweeper queues a lookup.
    current_app.send_task("copytrading.submit", args=[order.pk])
    current_app.send_task("copytrading.resolve", args=[order.pk])
    done = wait_until(
        lambda: CopyOrder.objects.filter(pk=order.pk, state="filled").first(),
        timeout=60,
        what="the order to be recorded",
    )
    assert done.filled_amount == D("0.05")
    assert done.attempts == 1
    assert s.follower_x.create_calls() == 1
    assert len(s.follower_x.orders()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_leader_fill_reaches_every_follower_through_the_live_workers(live_worker):
    s = build_copy_setup()
    others = [build_copy_setup() for _ in range(2)]
    # The two extra followers follow the first leader (not their own).
    subs = [s.subscription] + [
        subscription_create(
            user=o.follower, leader_id=s.leader.pk, account_id=o.follower_account.pk
        )
        for o in others
    ]
    live_worker()
    with transaction.atomic():
        publish_fill(account_id=s.leader_account.pk, fill=leader_fill())
    fill = wait_until(lambda: LeaderFill.objects.filter(leader=s.leader).first(), what="the fill")
    wait_until(
        lambda: CopyOrder.objects.filter(leader_fill=fill, state="filled").count() == 3,
        timeout=60,
        what="three filled copies",
    )
    for sub, x in zip(subs, [s.follower_x] + [o.follower_x for o in others], strict=True):
        assert CopyOrder.objects.get(subscription=sub, leader_fill=fill).amount == D("0.05")
        assert len(x.orders()) == 1
    assert LeaderFill.objects.get(pk=fill.pk).fanned_out_at is not None


@pytest.mark.django_db
def test_an_entry_planned_but_never_sent_is_not_sent_after_its_expiry(copy_setup):
    s = copy_setup
    order = planned(s)
    # The worker died after planning; the sweeper hands the row back two minutes later.
    LeaderFill.objects.filter(pk=order.leader_fill_id).update(
        timestamp_ms=F("timestamp_ms") - 120_000
    )
    result = copy_order_submit(copy_order_id=order.pk)
    assert (result.state, s.follower_x.create_calls()) == ("cancelled", 0)
    assert CopyDecision.objects.filter(copy_order=result, outcome="expired").exists()


@pytest.mark.django_db
def test_an_account_that_cannot_be_opened_leaves_the_copy_planned_not_submitted(copy_setup):
    s = copy_setup
    order = planned(s)

    def locked_out(account):
        raise ConnectionError("credentials could not be decrypted")

    with pytest.raises(ConnectionError):
        copy_order_submit(copy_order_id=order.pk, adapter_for=locked_out)
    assert CopyOrder.objects.get(pk=order.pk).state == "planned"  # retried later, not lost
    assert copy_order_submit(copy_order_id=order.pk).state == "filled"
    assert s.follower_x.create_calls() == 1


@pytest.mark.django_db
def test_a_duplicate_refusal_is_looked_up_not_recorded_as_rejected(copy_setup):
    s = copy_setup
    order = planned(s)
    # An order with this client id already rests on the book (sent by an earlier attempt).
    resting = s.follower_x.create_order(
        replace(order_request(order), price=D("50000"), time_in_force="GTC")
    )
    assert resting.status == "open"
    result = copy_order_submit(copy_order_id=order.pk)  # the exchange answers "Duplicate"
    assert (result.state, result.exchange_order_id) == ("acknowledged", resting.exchange_order_id)
    assert len(s.follower_x.orders()) == 1


@pytest.mark.django_db
def test_a_plain_refusal_is_recorded_as_rejected_with_the_reason(copy_setup):
    s = copy_setup
    order = planned(s)

    class Refusing(ExchangeDouble):
        def create_order(self, request):
            raise ExchangeRejected("Account has insufficient balance for requested action.")

    result = copy_order_submit(
        copy_order_id=order.pk, adapter_for=lambda a: Refusing(namespace_for(a.pk))
    )
    assert (result.state, result.error_text) == (
        "rejected",
        "Account has insufficient balance for requested action.",
    )
    assert CopyDecision.objects.filter(copy_order=result, reason="order_rejected").exists()
    assert s.follower_x.orders() == []
