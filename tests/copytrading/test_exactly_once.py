"""Exactly one order on the exchange per (subscription, leader fill): the cases the loopback
fake Binance cannot stage.

The main exactly-once cases (a retried task, racing workers, accept-then-timeout, a live worker
killed between sending and recording) run on the fake Binance through the real ccxt adapter in
test_exactly_once_binance.py, and on paper followers in test_leader_sources.py. What stays on
the exchange test double (tests/copytrading/exchange_double.py) needs a fault the fake has no
knob for: a request lost *before* the exchange saw it (``timeout_before_accept``: the grace
period, then a close sent once more under the same client order id), an order already resting
under the copy's client order id (the "Duplicate order sent." refusal that must be looked up),
a refusal injected on one adapter, and an account that cannot be opened. Like Binance, the
double refuses a duplicate client order id only while the first order is open, so a blind
resend of an IOC copy *would* place a second order, and the counts would show it.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest
from django.db.models import F

from copytrading.models import CopyDecision, CopyOrder, LeaderFill
from copytrading.services import (
    CopyOrderPending,
    copy_order_resolve,
    copy_order_submit,
    copy_plan,
    leader_fill_record,
)
from copytrading.services.replication import _request as order_request
from tests.copytrading.exchange_double import ExchangeDouble, ExchangeRejected, namespace_for
from tests.copytrading.test_services import leader_fill


def planned(s) -> CopyOrder:
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    assert fill is not None
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert isinstance(order, CopyOrder)
    assert order.state == "planned"
    return order


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
