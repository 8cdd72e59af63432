"""The one-task fan-out (copytrading/services/fanout.py) on the loopback fake Binance through
async ccxt (exchanges/async_trading.py) and the real risk check: one order per (subscription,
fill) on the fake's own book, whether the task runs once, twice, in two racing workers, meets
an accepted-then-timed-out order, or its worker is killed after sending."""

from __future__ import annotations

import signal
from collections import Counter
from decimal import Decimal as D
from typing import Any

import pytest
from celery import current_app

from copytrading.models import CopyDecision, CopyOrder, LeaderFill
from copytrading.services import (
    copy_fanout,
    detection,
    leader_fill_record,
    leader_publish,
    subscription_create,
)
from copytrading.services.fanout import BookView, last_report
from exchanges.services import account_link
from risk.services import risk_profile_update
from tests.backtester.backtest_factories import make_user
from tests.copytrading.conftest import build_copy_setup, wait_until
from tests.copytrading.test_exactly_once_binance import _race
from tests.copytrading.test_services import leader_fill
from tests.fakes.binance_private import FakeBinancePrivate


@pytest.fixture
def async_binance(binance: FakeBinancePrivate, settings: Any) -> FakeBinancePrivate:
    settings.COPYTRADING_ASYNC_FANOUT = True
    settings.COPYTRADING_ASYNC_TIMEOUT_MS = 1500  # the fake holds a timed-out answer 3 s
    return binance


def leader_and_followers(fake: FakeBinancePrivate, n: int) -> tuple[Any, list[Any], list[Any]]:
    """A leader (100 000 USDT) and ``n`` followers (10 000 USDT each, proportional: a 0.5 BTC
    leader buy is 0.05 BTC each), every account linked by key to the fake."""
    owner = make_user()
    key = fake.add_account(balances={"USDT": "100000"})
    account = account_link(
        user=owner, exchange="binance", api_key=key.api_key, secret=key.secret, label="L"
    )
    leader = leader_publish(user=owner, account_id=account.pk, name="Fan-out leader")
    subs, keys = [], []
    for i in range(n):
        user = make_user()
        fkey = fake.add_account(balances={"USDT": "10000"})
        faccount = account_link(
            user=user, exchange="binance", api_key=fkey.api_key, secret=fkey.secret, label=f"F{i}"
        )
        risk_profile_update(user=user, values={"max_heat": 0.0, "max_position_fraction": 1.0})
        subs.append(
            subscription_create(user=user, leader_id=leader.pk, account_id=faccount.pk, settings={})
        )
        keys.append(fkey)
    return leader, subs, keys


def booked(fake: FakeBinancePrivate, keys: list[Any]) -> Counter[str]:
    wanted = {k.api_key for k in keys}
    with fake._lock:
        return Counter(o.client_id for o in fake.orders if o.account.api_key in wanted)


@pytest.mark.django_db
def test_one_task_copies_a_fill_to_every_follower_once_and_a_second_run_sends_nothing(
    async_binance, monkeypatch
):
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    leader, _subs, keys = leader_and_followers(async_binance, 5)
    fill, _ = leader_fill_record(leader=leader, fill=leader_fill())
    assert copy_fanout(leader_fill_id=fill.pk) == 5
    orders = list(CopyOrder.objects.filter(leader_fill=fill))
    assert (
        sorted((o.state, o.amount, o.filled_amount, o.attempts) for o in orders)
        == [("filled", D("0.05"), D("0.05"), 1)] * 5
    )
    assert all(o.acknowledged_at and o.submitted_at >= o.planned_at for o in orders)
    assert booked(async_binance, keys) == Counter({o.client_order_id: 1 for o in orders})
    assert CopyDecision.objects.filter(leader_fill=fill, outcome="copied").count() == 5
    assert LeaderFill.objects.get(pk=fill.pk).fanned_out_at is not None
    assert last_report.value.sent == 5

    placed = len(async_binance.order_requests())
    assert copy_fanout(leader_fill_id=fill.pk) == 0  # the broker delivers the task again
    assert len(async_binance.order_requests()) == placed
    assert CopyOrder.objects.filter(leader_fill=fill).count() == 5


@pytest.mark.django_db
def test_the_second_fill_sizes_from_the_kept_balance_moved_by_the_first_copy(
    async_binance, monkeypatch
):
    """Fixed notional 6 000 USDT on a 10 000 USDT account: the first copy spends 6 000; the
    second fill, seconds later, is sized from the kept balance with that spend applied (the
    account is not read again) and trimmed to the money that is really left."""
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    leader, subs, _keys = leader_and_followers(async_binance, 1)
    from copytrading.services import subscription_update

    subscription_update(
        user=subs[0].follower,
        subscription_id=subs[0].pk,
        settings={"sizing_mode": "fixed_notional", "notional": "6000"},
    )
    first, _ = leader_fill_record(leader=leader, fill=leader_fill())
    copy_fanout(leader_fill_id=first.pk)
    assert CopyOrder.objects.get(leader_fill=first).state == "filled"
    second, _ = leader_fill_record(leader=leader, fill=leader_fill())
    requests = len(async_binance.requests)
    copy_fanout(leader_fill_id=second.pk)
    account_reads = [r for r in async_binance.requests[requests:] if r.path == "/api/v3/account"]
    assert last_report.value.balances_kept == 1
    assert account_reads == []
    decision = CopyDecision.objects.get(leader_fill=second)
    assert D(decision.figures["free_quote"]) <= D("4000")  # 10 000 - 6 000 spent (0.1 BTC)
    order = CopyOrder.objects.get(leader_fill=second)
    # Trimmed to what is left (were the kept balance stale, the fake would refuse the funds).
    assert order.state == "filled"
    assert D("0.06") < order.amount < D("0.0667")


@pytest.mark.django_db
def test_an_order_accepted_then_timed_out_is_looked_up_by_client_id_not_resent(
    async_binance, monkeypatch
):
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    leader, _subs, keys = leader_and_followers(async_binance, 3)
    async_binance.fault("/api/v3/order", "timeout")  # the first placement: booked, no answer
    fill, _ = leader_fill_record(leader=leader, fill=leader_fill())
    copy_fanout(leader_fill_id=fill.pk)
    orders = list(CopyOrder.objects.filter(leader_fill=fill))
    assert [o.state for o in orders] == ["filled"] * 3
    assert booked(async_binance, keys) == Counter({o.client_order_id: 1 for o in orders})
    assert len(async_binance.order_requests()) == 3


@pytest.mark.django_db(transaction=True)
def test_two_workers_fanning_out_the_same_fill_place_one_order_per_follower(
    async_binance, monkeypatch
):
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    leader, _subs, keys = leader_and_followers(async_binance, 4)
    fill, _ = leader_fill_record(leader=leader, fill=leader_fill())
    results = _race(3, lambda: copy_fanout(leader_fill_id=fill.pk))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(results) == 4
    orders = list(CopyOrder.objects.filter(leader_fill=fill))
    assert [o.state for o in orders] == ["filled"] * 4
    assert booked(async_binance, keys) == Counter({o.client_order_id: 1 for o in orders})
    assert len(async_binance.order_requests()) == 4


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_fan_out_leaves_one_order_per_follower(
    async_binance, live_worker, monkeypatch
):
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    leader, _subs, keys = leader_and_followers(async_binance, 3)
    fill, _ = leader_fill_record(leader=leader, fill=leader_fill())
    async_binance.hang_seconds = 30  # booked; every answer comes after the worker is dead
    async_binance.fault("/api/v3/order", "timeout", "timeout", "timeout")
    real = {
        "COPYTRADING_ADAPTER_FACTORY": "exchanges.adapters.adapter_for",
        "COPYTRADING_ORDER_CHECK": "risk.services.order_request_check",
    }
    first = live_worker(**real)
    current_app.send_task("copytrading.fanout", args=[fill.pk])
    wait_until(
        lambda: sum(booked(async_binance, keys).values()) == 3,
        timeout=90,
        what="the three orders to reach the fake exchange",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert (
        sorted(CopyOrder.objects.filter(leader_fill=fill).values_list("state", flat=True))
        == ["submitted"] * 3
    )

    live_worker(**real)
    current_app.send_task("copytrading.fanout", args=[fill.pk])  # redelivered: sends nothing
    for pk in CopyOrder.objects.filter(leader_fill=fill).values_list("pk", flat=True):
        current_app.send_task("copytrading.resolve", args=[pk])  # what the sweeper hands out
    wait_until(
        lambda: CopyOrder.objects.filter(leader_fill=fill, state="filled").count() == 3,
        timeout=90,
        what="the three orders to be recorded",
    )
    orders = list(CopyOrder.objects.filter(leader_fill=fill))
    assert [o.attempts for o in orders] == [1, 1, 1]
    assert booked(async_binance, keys) == Counter({o.client_order_id: 1 for o in orders})
    assert len(async_binance.order_requests()) == 3


@pytest.mark.django_db
def test_followers_on_sync_adapters_go_through_the_same_fan_out(monkeypatch):
    """The exchange double (a sync adapter) gets the same plan, claim and record steps."""
    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    s = build_copy_setup()
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    assert copy_fanout(leader_fill_id=fill.pk) == 1
    order = CopyOrder.objects.get(leader_fill=fill)
    assert (order.state, order.amount, order.attempts) == ("filled", D("0.05"), 1)
    assert len(s.follower_x.orders()) == 1
    assert copy_fanout(leader_fill_id=fill.pk) == 0
    assert len(s.follower_x.orders()) == 1


def test_a_book_view_values_spot_holdings_like_the_ccxt_adapter():
    from exchanges.trading import Balance

    book = BookView(
        market_symbols=frozenset({"BTC/USDT", "ETH/USD"}),
        balance_rows={
            "USDT": Balance("USDT", D(100), D(0)),
            "BTC": Balance("BTC", D("0.5"), D("0.1")),
            "ETH": Balance("ETH", D(2), D(0)),
            "XYZ": Balance("XYZ", D(1), D(0)),
        },
        prices={"BTC/USDT": D(60000)},
    )
    assert [(p.symbol, p.amount) for p in book.positions()] == [
        ("BTC/USDT", D("0.6")),
        ("ETH/USD", D(2)),
    ]
    assert book.last_price("BTC/USDT") == D(60000)
    with pytest.raises(Exception, match="no price for ETH/USD"):
        book.last_price("ETH/USD")
    broken = BookView(error=RuntimeError("down"))
    with pytest.raises(RuntimeError):
        broken.balances()


@pytest.mark.django_db
def test_the_risk_checks_of_a_fanout_run_in_one_batch_and_its_verdicts_stand(
    async_binance, monkeypatch
):
    """Followers in different risk states: one batch of risk checks decides every planned copy
    (one denial stored, one order counted per copy)."""
    from risk.models import DeniedOrder, TradingState

    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    leader, subs, keys = leader_and_followers(async_binance, 4)
    halted, reducing, capped = (s.follower for s in subs[:3])
    TradingState.objects.create(owner=halted, state="halted", code="kill_switch", reason="test")
    TradingState.objects.create(owner=reducing, state="reducing", code="test", reason="test")
    risk_profile_update(user=capped, values={"max_order_notional": 1000.0})  # 0.05 BTC = 3,000
    fill, _ = leader_fill_record(leader=leader, fill=leader_fill())
    assert copy_fanout(leader_fill_id=fill.pk) == 2
    report = last_report.value
    assert (report.risk_batched, report.planned, report.sent) == (4, 2, 2)
    reasons = {
        d.subscription_id: (d.outcome, d.reason)
        for d in CopyDecision.objects.filter(leader_fill=fill)
    }
    assert reasons == {
        subs[0].pk: ("skipped", "risk_denied:trading_halted"),
        subs[1].pk: ("skipped", "risk_denied:reducing_only"),
        subs[2].pk: ("copied", ""),
        subs[3].pk: ("copied", ""),
    }
    assert sorted(DeniedOrder.objects.values_list("owner_id", "code")) == sorted(
        [(halted.pk, "trading_halted"), (reducing.pk, "reducing_only")]
    )
    orders = {o.subscription_id: o.amount for o in CopyOrder.objects.filter(leader_fill=fill)}
    assert orders[subs[3].pk] == D("0.05")
    assert orders[subs[2].pk] < D("0.05")  # cut to the 1,000 order-value cap
    assert sum(booked(async_binance, keys).values()) == 2


@pytest.mark.django_db
def test_copies_stored_by_a_try_that_died_before_claiming_are_sent_once_by_the_next(
    async_binance, monkeypatch
):
    """The first try stores the planned rows and dies before its claim; the redelivered task
    plans nothing new, claims the stored rows (read back, not in its own memory) and sends each
    once."""
    from copytrading.services import fanout

    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    leader, _subs, keys = leader_and_followers(async_binance, 3)
    fill, _ = leader_fill_record(leader=leader, fill=leader_fill())
    real_claim = fanout._claim

    def die(fill_: Any, planned: dict[int, Any], *rest: Any) -> Any:
        if planned:  # the rows this try just stored: it dies before claiming them
            raise RuntimeError("worker lost before the claim")
        return real_claim(fill_, planned, *rest)

    monkeypatch.setattr(fanout, "_claim", die)
    with pytest.raises(RuntimeError):
        copy_fanout(leader_fill_id=fill.pk)
    assert (
        list(CopyOrder.objects.filter(leader_fill=fill).values_list("state", flat=True))
        == ["planned"] * 3
    )
    assert async_binance.order_requests() == []

    seen: list[tuple[int, int]] = []

    def claim(fill_: Any, planned: dict[int, Any], *rest: Any) -> Any:
        rows = real_claim(fill_, planned, *rest)
        seen.append((len(planned), len(rows)))
        return rows

    monkeypatch.setattr(fanout, "_claim", claim)
    assert copy_fanout(leader_fill_id=fill.pk) == 3
    assert seen == [(0, 3)]  # nothing planned again: the three stored rows were read back
    orders = list(CopyOrder.objects.filter(leader_fill=fill))
    assert [(o.state, o.attempts) for o in orders] == [("filled", 1)] * 3
    assert booked(async_binance, keys) == Counter({o.client_order_id: 1 for o in orders})
    # Acknowledged when the answer arrived: after the send began, before the row was stored.
    assert all(o.submitted_at <= o.acknowledged_at <= o.updated_at for o in orders)


@pytest.mark.django_db
def test_a_balance_past_half_its_allowed_age_is_read_again_not_skipped_as_stale(
    async_binance, monkeypatch, settings
):
    """Kept balances are reused only while younger than half the allowed age, and a book that
    has aged past that by planning time is read again, so a slow worker never turns a copy
    into a ``stale_balance`` skip."""
    import time

    from copytrading.services import fanout

    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    settings.COPYTRADING_MAX_BALANCE_AGE_MS = 1000
    leader, subs, _keys = leader_and_followers(async_binance, 2)
    first, _ = leader_fill_record(leader=leader, fill=leader_fill())
    copy_fanout(leader_fill_id=first.pk)
    time.sleep(0.6)  # past half of 1 s: not reused
    second, _ = leader_fill_record(leader=leader, fill=leader_fill())
    requests = len(async_binance.requests)
    copy_fanout(leader_fill_id=second.pk)
    reads = [r for r in async_binance.requests[requests:] if r.path == "/api/v3/account"]
    assert (last_report.value.balances_kept, len(reads)) == (0, 2)
    assert CopyOrder.objects.filter(leader_fill=second, state="filled").count() == 2

    # A book that aged between the read and the plan is read again in place.
    report = fanout.FanoutReport()
    symbols = {s.pk: "BTC/USDT" for s in subs}
    for_accounts = [fanout.Subscription.objects.select_related("account").get(pk=s.pk)
                    for s in subs]  # fmt: skip
    books = fanout._read_books(for_accounts, symbols, report, fresh=True)
    old = int(time.time() * 1000) - 900
    books[subs[0].account_id].taken_ms = old
    fanout._refresh_stale(books, for_accounts, symbols, report)
    assert report.balances_reread == 1
    assert books[subs[0].account_id].taken_ms > old + 800
    assert books[subs[0].account_id].balance_rows["USDT"].free > 0


@pytest.mark.django_db
def test_a_fan_out_in_parts_sends_each_part_and_copies_every_follower_once(
    async_binance, monkeypatch, settings
):
    """Seven followers in parts of three: three plan-and-claim rounds, each claiming only its
    own part's copies, all recorded together; one order per follower on the fake."""
    from copytrading.services import fanout

    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    settings.COPYTRADING_FANOUT_PART = 3
    leader, subs, keys = leader_and_followers(async_binance, 7)
    fill, _ = leader_fill_record(leader=leader, fill=leader_fill())
    real_claim = fanout._claim
    rounds: list[tuple[int, int]] = []

    def claim(fill_: Any, planned: dict[int, Any], *rest: Any) -> Any:
        rows = real_claim(fill_, planned, *rest)
        if planned:
            assert {r.pk for r in rows} == set(planned)  # its own part, nothing more
            rounds.append((len(planned), len(rows)))
        return rows

    monkeypatch.setattr(fanout, "_claim", claim)
    assert copy_fanout(leader_fill_id=fill.pk) == 7
    assert rounds == [(3, 3), (3, 3), (1, 1)]
    report = last_report.value
    assert (report.planned, report.sent) == (7, 7)
    orders = list(CopyOrder.objects.filter(leader_fill=fill))
    assert sorted(o.subscription_id for o in orders) == sorted(s.pk for s in subs)
    assert [o.state for o in orders] == ["filled"] * 7
    assert booked(async_binance, keys) == Counter({o.client_order_id: 1 for o in orders})


@pytest.mark.django_db
def test_a_leaders_subscriptions_are_reused_only_while_every_row_they_come_from_is_unchanged(
    async_binance, monkeypatch
):
    """The fan-out keeps the subscription objects it built for a leader; the next fill reuses
    copies of them only while the rows read that time are the same. A change made by a queryset
    ``update()`` (which does not move ``updated_at``) and a re-sealed key are both seen."""
    from copytrading.models import Subscription
    from exchanges.models import AccountSecret

    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    leader, subs, _keys = leader_and_followers(async_binance, 2)

    def fan_out() -> tuple[Any, Any]:
        fill, _ = leader_fill_record(leader=leader, fill=leader_fill(amount="0.1"))
        assert fill is not None
        copy_fanout(leader_fill_id=fill.pk)
        return fill, last_report.value

    _fill, first = fan_out()
    assert not first.subscriptions_kept
    # The first copy in BTC/USDT noted each subscription's baseline: the rows changed.
    assert not fan_out()[1].subscriptions_kept
    fill, third = fan_out()
    assert third.subscriptions_kept
    assert third.sent == 2
    # Proportional: about 10,000 of 100,000 equity, so about 0.01 BTC of a 0.1 BTC fill each.
    assert all(
        D("0.009") < o.amount <= D("0.01") for o in CopyOrder.objects.filter(leader_fill=fill)
    )

    Subscription.objects.filter(pk=subs[0].pk).update(sizing_mode="fixed_ratio", ratio=D("0.5"))
    fill, changed = fan_out()
    assert not changed.subscriptions_kept
    amounts = {o.subscription_id: o.amount for o in CopyOrder.objects.filter(leader_fill=fill)}
    assert amounts[subs[0].pk] == D("0.05")  # the new settings: half the leader's 0.1 BTC
    assert D("0.009") < amounts[subs[1].pk] <= D("0.01")

    _fill, fourth = fan_out()
    assert fourth.subscriptions_kept
    secret = AccountSecret.objects.filter(account_id=subs[1].account_id).first()
    AccountSecret.objects.filter(pk=secret.pk).update(ciphertext=secret.ciphertext)
    assert fan_out()[1].subscriptions_kept  # the same sealed value: still the same rows
    AccountSecret.objects.filter(pk=secret.pk).update(key_fingerprint="rotated")
    assert not fan_out()[1].subscriptions_kept


@pytest.mark.django_db
def test_account_instances_built_by_a_fanout_are_frozen_out_of_the_collector_once(
    async_binance, monkeypatch
):
    """A fan-out that built account instances ends with one collection and a freeze (what is
    left is live: the instances and their markets); the next one, building none, does
    neither, and a new follower's instance makes the next fan-out settle again."""
    import gc

    from exchanges.async_trading import hub

    monkeypatch.setattr(detection, "enqueue_fanout", lambda **kw: None)
    leader, _subs, _keys = leader_and_followers(async_binance, 2)
    hub().settle_memory()  # what earlier tests built: settled before this one counts

    def fan_out() -> Any:
        fill, _ = leader_fill_record(leader=leader, fill=leader_fill(amount="0.01"))
        assert fill is not None
        copy_fanout(leader_fill_id=fill.pk)
        return last_report.value

    built = hub().built
    first = fan_out()
    assert hub().built == built + 2  # one instance per follower account
    assert first.memory_settled
    assert gc.get_freeze_count() > 0
    assert not fan_out().memory_settled
    user = make_user()
    key = async_binance.add_account(balances={"USDT": "10000"})
    account = account_link(
        user=user, exchange="binance", api_key=key.api_key, secret=key.secret, label="F3"
    )
    risk_profile_update(user=user, values={"max_heat": 0.0, "max_position_fraction": 1.0})
    subscription_create(user=user, leader_id=leader.pk, account_id=account.pk, settings={})
    third = fan_out()
    assert third.sent == 3
    assert third.memory_settled
