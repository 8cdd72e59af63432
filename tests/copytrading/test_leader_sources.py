"""Leader fills from the real sources, copied on real follower exchanges.

* a leader on a paper account: its PaperExchange fill publishes ``exchanges.events.
  fill_observed``, copy trading records it and the live workers copy it to paper followers;
* paper followers get exactly one order per (subscription, leader fill) when the task is
  retried or workers race (the paper exchange is in-process: it cannot accept an order and
  then time out, so that case is covered on the fake Binance in test_exactly_once_binance.py);
* a leader on the loopback fake Binance, its fill found by the REST poll (``fetch_fills``
  since the cursor) and by the websocket stream (``exchanges.adapters.fill_stream_for``).

Paper prices and market rules come from the fake Binance's public ticker and exchangeInfo
(``PAPER_MARKET_EXCHANGE`` = binance, pointed at the fake by ``EXCHANGE_URL_OVERRIDES``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal as D

import pytest
from django.db import transaction

from copytrading.models import CopyOrder, LeaderFill
from copytrading.services import (
    copy_replicate,
    detection,
    leader_fill_record,
    leader_publish,
    subscription_create,
)
from copytrading.tasks import copy_one_task
from exchanges.adapters import adapter_for, fill_stream_for
from exchanges.paper import clear_rules_cache
from exchanges.paper_models import PaperOrder
from exchanges.services import account_link
from exchanges.services_paper import paper_account_create
from exchanges.trading import OrderRequest
from risk.services import risk_profile_update
from tests.backtester.backtest_factories import make_user
from tests.copytrading.conftest import wait_until
from tests.copytrading.test_exactly_once_binance import REAL_RISK, _race, _until_settled
from tests.copytrading.test_services import leader_fill

REAL = {
    "COPYTRADING_ADAPTER_FACTORY": "exchanges.adapters.adapter_for",
    "COPYTRADING_ORDER_CHECK": REAL_RISK,
    "PAPER_MARKET_EXCHANGE": "binance",
}


@pytest.fixture
def real_parts(binance, settings):
    """The real adapter factory (paper accounts → PaperExchange) and the real risk check."""
    settings.COPYTRADING_ADAPTER_FACTORY = REAL["COPYTRADING_ADAPTER_FACTORY"]
    settings.COPYTRADING_ORDER_CHECK = REAL_RISK
    settings.PAPER_MARKET_EXCHANGE = "binance"  # paper prices and rules: the fake's ticker
    clear_rules_cache()
    yield binance
    clear_rules_cache()


def _relaxed(user):
    risk_profile_update(user=user, values={"max_heat": 0.0, "max_position_fraction": 1.0})


def paper_pair(n_followers: int = 1):
    leader_user = make_user()
    leader_account = paper_account_create(
        owner=leader_user, label="Leader paper", quote="USDT", starting_balance="100000"
    )
    leader = leader_publish(user=leader_user, account_id=leader_account.pk, name="Paper BTC")
    follows = []
    for _ in range(n_followers):
        follower = make_user()
        _relaxed(follower)
        account = paper_account_create(
            owner=follower, label="Paper USDT", quote="USDT", starting_balance="10000"
        )
        sub = subscription_create(
            user=follower, leader_id=leader.pk, account_id=account.pk, settings={}
        )
        follows.append((account, sub))
    return leader_account, leader, follows


def buy(account, amount: str, cid: str) -> None:
    with transaction.atomic():
        adapter_for(account).create_order(
            OrderRequest(
                symbol="BTC/USDT",
                side="buy",
                type="market",
                amount=D(amount),
                client_order_id=cid,
            )
        )


@pytest.mark.django_db(transaction=True)
def test_a_paper_leaders_fill_is_copied_to_paper_followers_by_the_live_workers(
    real_parts, live_worker
):
    leader_account, leader, follows = paper_pair(n_followers=2)
    live_worker(**REAL)
    buy(leader_account, "0.5", "leader-buy-1")  # fill_observed after the commit
    fill = wait_until(lambda: LeaderFill.objects.filter(leader=leader).first(), what="the fill")
    assert (fill.side, fill.amount, fill.source) == ("buy", D("0.5"), "stream")
    wait_until(
        lambda: CopyOrder.objects.filter(leader_fill=fill, state="filled").count() == 2,
        timeout=90,
        what="both copies filled",
    )
    for account, sub in follows:
        copy = CopyOrder.objects.get(subscription=sub, leader_fill=fill)
        booked = PaperOrder.objects.filter(account=account)
        assert [(o.client_order_id, o.side) for o in booked] == [(copy.client_order_id, "buy")]
        # equity 10 000 against the leader's ~100 000 (its fee and slippage move it a little):
        # a tenth of the leader's 0.5 BTC, within 0.1 %
        assert copy.filled_amount == copy.amount
        assert abs(copy.amount - D("0.05")) <= D("0.00005")


@pytest.mark.django_db
def test_a_retried_task_places_one_paper_order(real_parts, django_capture_on_commit_callbacks):
    _la, leader, [(account, sub)] = paper_pair()
    fill, _ = leader_fill_record(leader=leader, fill=leader_fill())
    for _ in range(3):
        copy_one_task.apply(args=[fill.pk, sub.pk])
    order = CopyOrder.objects.get(subscription=sub, leader_fill=fill)
    assert (order.state, order.attempts, order.filled_amount) == ("filled", 1, D("0.05"))
    assert list(PaperOrder.objects.filter(account=account).values_list("client_order_id")) == [
        (order.client_order_id,)
    ]


@pytest.mark.django_db(transaction=True)
def test_workers_racing_on_a_paper_follower_place_one_order(real_parts, monkeypatch):
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    _la, leader, [(account, sub)] = paper_pair()
    fill, _ = leader_fill_record(leader=leader, fill=leader_fill())

    # Losers find the row claimed and wait for the winner's order (pending), never send.
    results = _race(4, lambda: _until_settled(fill.pk, sub.pk))
    assert not [r for r in results if isinstance(r, Exception)], results
    order = CopyOrder.objects.get(leader_fill=fill)
    assert (order.state, order.attempts) == ("filled", 1)
    assert PaperOrder.objects.filter(account=account).count() == 1


@pytest.mark.django_db
def test_a_binance_leaders_fill_is_found_by_the_rest_poll_and_copied(
    real_parts, django_capture_on_commit_callbacks
):
    fake = real_parts
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
    _relaxed(follower)
    leader = leader_publish(user=leader_user, account_id=leader_account.pk, name="Binance BTC")
    sub = subscription_create(
        user=follower, leader_id=leader.pk, account_id=follower_account.pk, settings={}
    )
    # The leader trades on the exchange itself (not through Quantfold), after it was
    # published: the fake's clock is set to now, past the leader's fill cursor.
    time.sleep(0.01)
    fake.now_ms = int(time.time() * 1000)
    adapter_for(leader_account).create_order(
        OrderRequest(
            symbol="BTC/USDT",
            side="buy",
            type="market",
            amount=D("0.5"),
            client_order_id="leader-own-1",
        )
    )
    with django_capture_on_commit_callbacks() as queued:
        assert detection.leader_poll(leader_id=leader.pk) == 1
    assert queued  # the fan-out is queued after the commit
    assert detection.leader_poll(leader_id=leader.pk) == 0  # the cursor: not recorded twice
    fill = LeaderFill.objects.get(leader=leader)
    assert (fill.side, fill.amount, fill.source, fill.price) == ("buy", D("0.5"), "poll", D(60000))
    copy = copy_replicate(leader_fill_id=fill.pk, subscription_id=sub.pk)
    assert isinstance(copy, CopyOrder)
    assert (copy.state, copy.filled_amount) == ("filled", D("0.05"))
    booked = [o for o in fake.orders if o.account is follower_key]
    assert [(o.client_id, o.qty) for o in booked] == [(copy.client_order_id, D("0.05"))]


class _Running:
    """``exchanges.adapters.fill_stream_for``'s stream on its own event loop thread."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            self.ready.set()
            await self.stream.run(self.stop_event)

        self.loop.run_until_complete(main())

    def stop(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(15)


@pytest.mark.django_db(transaction=True)
def test_a_binance_leaders_fill_from_the_websocket_stream_is_copied(real_parts, monkeypatch):
    fake = real_parts
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)  # copied below
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
    _relaxed(follower)
    leader = leader_publish(user=leader_user, account_id=leader_account.pk, name="Streamed BTC")
    sub = subscription_create(
        user=follower, leader_id=leader.pk, account_id=follower_account.pk, settings={}
    )
    running = _Running(fill_stream_for(leader_account, symbols=["BTC/USDT"]))
    try:
        deadline = time.monotonic() + 15
        while not fake._ws_clients and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake._ws_clients, "the stream never subscribed"
        fake.now_ms = int(time.time() * 1000)
        adapter_for(leader_account).create_order(
            OrderRequest(
                symbol="BTC/USDT",
                side="buy",
                type="market",
                amount=D("0.5"),
                client_order_id="leader-ws-1",
            )
        )
        fill = wait_until(
            lambda: LeaderFill.objects.filter(leader=leader).first(), what="the streamed fill"
        )
    finally:
        running.stop()
    assert running.stream.mode == "websocket"
    assert (fill.side, fill.amount, fill.source) == ("buy", D("0.5"), "stream")
    copy = copy_replicate(leader_fill_id=fill.pk, subscription_id=sub.pk)
    assert isinstance(copy, CopyOrder)
    assert (copy.state, copy.filled_amount) == ("filled", D("0.05"))
    booked = [o for o in fake.orders if o.account is follower_key]
    assert [(o.client_id, o.qty) for o in booked] == [(copy.client_order_id, D("0.05"))]
