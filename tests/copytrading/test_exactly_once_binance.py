"""Exactly one order per (subscription, leader fill) on the loopback fake Binance
(tests/fakes/binance_private.py) through the real ccxt adapter (``exchanges.adapters.
adapter_for``) and the real risk check: a retried task, racing workers on PostgreSQL row
locks, accept-then-timeout (the fake books the order and holds its answer past the client's
timeout), and a real Celery worker killed between sending and recording. Counts are the fake's
own order book, filtered by the follower's API key."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any

import pytest
from celery import current_app
from django.db import connection

from copytrading.models import CopyOrder, Leader, Subscription
from copytrading.services import (
    CopyOrderPending,
    copy_order_submit,
    copy_plan,
    copy_replicate,
    detection,
    leader_fill_record,
    leader_publish,
    subscription_create,
)
from copytrading.tasks import copy_one_task
from exchanges.adapters import adapter_for
from exchanges.models import ExchangeAccount
from exchanges.services import account_link
from risk.services import risk_profile_update
from tests.backtester.backtest_factories import make_user
from tests.copytrading.conftest import wait_until
from tests.copytrading.test_services import leader_fill
from tests.fakes.binance_private import FakeAccount, FakeBinancePrivate

FAST = "tests.copytrading.test_exactly_once_binance.fast_adapter_for"
REAL_RISK = "risk.services.order_request_check"


def fast_adapter_for(account: ExchangeAccount) -> Any:
    """The real adapter with a 1.5 s request timeout and no sleeping between retries, so the
    fake's held answer (``hang_seconds`` 3 s) times out quickly in-process."""
    return adapter_for(account, timeout_ms=1500, sleep=lambda _s: None)


@dataclass
class BinanceSetup:
    fake: FakeBinancePrivate
    leader: Leader
    follower_key: FakeAccount
    follower_account: ExchangeAccount
    subscription: Subscription

    def orders(self) -> list[Any]:
        """The follower's orders as the fake exchange booked them."""
        with self.fake._lock:
            return [o for o in self.fake.orders if o.account is self.follower_key]


def binance_setup(fake: FakeBinancePrivate) -> BinanceSetup:
    """A leader with 100 000 USDT and a follower with 10 000 USDT, both linked by API key to
    the fake; the follower copies proportionally (0.5 BTC → 0.05 BTC)."""
    leader_user, follower = make_user(), make_user()
    leader_key = fake.add_account(balances={"USDT": "100000"})
    follower_key = fake.add_account(balances={"USDT": "10000"})
    leader_account = account_link(
        user=leader_user, exchange="binance", api_key=leader_key.api_key,
        secret=leader_key.secret, label="Leader",
    )  # fmt: skip
    follower_account = account_link(
        user=follower, exchange="binance", api_key=follower_key.api_key,
        secret=follower_key.secret, label="Follower",
    )  # fmt: skip
    risk_profile_update(
        user=follower, values={"max_heat": 0.0, "max_position_fraction": 1.0}
    )  # the copy's size is the subscription's here, not the risk limits'
    leader = leader_publish(user=leader_user, account_id=leader_account.pk, name="Fake BTC")
    sub = subscription_create(
        user=follower, leader_id=leader.pk, account_id=follower_account.pk, settings={}
    )
    return BinanceSetup(fake, leader, follower_key, follower_account, sub)


@pytest.mark.django_db
def test_a_retried_task_places_one_order_on_the_fake(binance):
    s = binance_setup(binance)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    for _ in range(3):  # the broker delivers the same task three times
        copy_one_task.apply(args=[fill.pk, s.subscription.pk])
    order = CopyOrder.objects.get(subscription=s.subscription, leader_fill=fill)
    assert (order.state, order.attempts) == ("filled", 1)
    booked = s.orders()
    assert [(o.client_id, o.side, o.qty, o.status) for o in booked] == [
        (order.client_order_id, "BUY", D("0.05"), "FILLED")
    ]
    assert order.exchange_order_id == str(booked[0].order_id)
    assert order.filled_amount == D("0.05")


@pytest.mark.django_db
def test_accept_then_timeout_on_the_fake_is_looked_up_not_resent(binance):
    s = binance_setup(binance)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert isinstance(order, CopyOrder)
    binance.fault("/api/v3/order", "timeout")  # booked, then the answer is held 3 s
    result = copy_order_submit(copy_order_id=order.pk)
    assert result.state == "filled"
    assert "no answer from the exchange" in result.error_text
    assert [o.client_id for o in s.orders()] == [order.client_order_id]
    placements = [
        r
        for r in binance.order_requests()
        if r.params.get("newClientOrderId") == order.client_order_id
    ]
    assert len(placements) == 1  # looked up by client id, never sent twice


def _race(n: int, work) -> list[object]:
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
        t.join(90)
    return results


def _until_settled(leader_fill_id: int, subscription_id: int) -> str:
    outcomes = []
    for _ in range(100):
        try:
            result = copy_replicate(leader_fill_id=leader_fill_id, subscription_id=subscription_id)
            outcomes.append(type(result).__name__)
            return ",".join(outcomes)
        except CopyOrderPending:
            outcomes.append("pending")
            time.sleep(0.2)
    return ",".join(outcomes)


@pytest.mark.django_db(transaction=True)
def test_workers_racing_on_the_fake_place_one_order(binance):
    s = binance_setup(binance)
    # The first placement is booked and its answer held past the timeout: a wide window in
    # which the other workers find the row claimed and the order not yet recorded.
    binance.fault("/api/v3/order", "timeout")
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    results = _race(4, lambda: _until_settled(fill.pk, s.subscription.pk))
    assert not [r for r in results if isinstance(r, Exception)], results
    order = CopyOrder.objects.get(leader_fill=fill)
    assert (order.state, order.attempts) == ("filled", 1)
    assert [o.client_id for o in s.orders()] == [order.client_order_id]
    assert len(binance.order_requests()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_between_sending_and_recording_leaves_one_order_on_the_fake(
    binance, live_worker, monkeypatch
):
    s = binance_setup(binance)
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert isinstance(order, CopyOrder)
    binance.hang_seconds = 20  # booked; the answer comes after the worker is dead
    binance.fault("/api/v3/order", "timeout")
    # The workers use the real adapter factory (10 s timeout): the kill comes well before.
    real = {
        "COPYTRADING_ADAPTER_FACTORY": "exchanges.adapters.adapter_for",
        "COPYTRADING_ORDER_CHECK": REAL_RISK,
    }
    first = live_worker(**real)
    current_app.send_task("copytrading.submit", args=[order.pk])
    wait_until(lambda: s.orders(), timeout=90, what="the order to reach the fake exchange")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert CopyOrder.objects.get(pk=order.pk).state == "submitted"
    assert len(s.orders()) == 1

    live_worker(**real)
    current_app.send_task("copytrading.submit", args=[order.pk])
    current_app.send_task("copytrading.resolve", args=[order.pk])
    done = wait_until(
        lambda: CopyOrder.objects.filter(pk=order.pk, state="filled").first(),
        timeout=90,
        what="the order to be recorded",
    )
    assert (done.filled_amount, done.attempts) == (D("0.05"), 1)
    assert [o.client_id for o in s.orders()] == [order.client_order_id]
    assert len(binance.order_requests()) == 1
