"""Orders no single leader fill causes: closing the copies when a subscription stops, a
copy's own stop-loss / take-profit, joining the leader's current positions, and drift repair.
Each is stored before it is sent, risk-checked, and sent exactly once (the exchange double's
order book is the witness)."""

from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from config.exceptions import ApplicationError
from copytrading.models import CopyAdjustment, CopyOrder, LeaderFill, Subscription
from copytrading.planner import Execution, copy_holding, protection_hit
from copytrading.selectors import copy_positions
from copytrading.services import copy_replicate, leader_fill_record, subscription_stop
from copytrading.services.adjustments import adjustment_client_id, adjustment_send
from copytrading.services.positions import copy_protections_check, subscription_join
from copytrading.services.reconcile import subscription_reconcile
from copytrading.services.replication import CopyOrderPending
from copytrading.services.subscriptions import subscription_create, subscription_update
from exchanges.trading import Fill
from tests.backtester.backtest_factories import make_user
from tests.copytrading.conftest import build_copy_setup, double, make_account, wait_until
from tests.copytrading.test_services import leader_fill

pytestmark = pytest.mark.django_db
Kind, AState = CopyAdjustment.Kind, CopyAdjustment.State


def _hold(s, amount="0.5"):
    """The leader buys ``amount`` BTC at 60 000; the follower's proportional copy fills:
    0.5 BTC = 30 % of the leader's 100 000 → 30 % of 10 000 = 3 000 USDT = 0.05 BTC."""
    row, _ = leader_fill_record(leader=s.leader, fill=leader_fill(amount=amount))
    try:
        copy = copy_replicate(leader_fill_id=row.pk, subscription_id=s.subscription.pk)
    except CopyOrderPending:
        # A live worker's fan-out of the same fill claimed the copy first: wait for its answer.
        copy = wait_until(
            lambda: CopyOrder.objects.filter(
                leader_fill=row, subscription=s.subscription, state="filled"
            ).first(),
            timeout=60,
            what="the worker's copy of the fill",
        )
    assert copy.state == "filled", copy.error_text
    assert CopyOrder.objects.filter(leader_fill=row, subscription=s.subscription).count() == 1
    return copy


# --- pure parts: average entry and the protection levels -------------------------------------


def test_copy_holding_uses_average_cost_and_resets_when_flat():
    h = copy_holding(
        [
            Execution("buy", D("1"), D("100")),
            Execution("buy", D("1"), D("200")),  # 2 @ 150
            Execution("sell", D("0.5"), D("300")),  # 1.5 @ 150: a sale keeps the average
        ]
    )
    assert (h.position, h.entry, h.entries) == (D("1.5"), D("150"), 2)
    flat = copy_holding([Execution("buy", D("1"), D("100")), Execution("sell", D("1"), D("90"))])
    assert (flat.position, flat.entry, flat.entries) == (D(0), D(0), 1)
    again = copy_holding(
        [
            Execution("buy", D("1"), D("100")),
            Execution("sell", D("1"), D("90")),
            Execution("buy", D("2"), D("80")),
        ]
    )
    assert (again.position, again.entry, again.entries) == (D(2), D(80), 2)


def test_protection_levels_by_hand():
    # own 5 % stop from 60 000: 57 000 (a touch counts); 10 % target: 66 000
    own = {"entry": D(60000), "stop_loss_pct": D(5), "take_profit_pct": D(10)}
    assert protection_hit(price=D(57001), **own) is None
    assert protection_hit(price=D(57000), **own) == ("stop_loss", D(57000))
    assert protection_hit(price=D(65999), **own) is None
    assert protection_hit(price=D(66000), **own) == ("take_profit", D(66000))
    # the leader's stop wins over a percentage
    assert protection_hit(price=D(58500), entry=D(60000), stop_price=D(58500), stop_loss_pct=D(5))
    assert protection_hit(price=D(100), entry=D(0), stop_loss_pct=D(5)) is None


# --- stop with "close the copied positions" --------------------------------------------------


def test_stopping_with_close_sells_the_copies_exactly_once():
    s = build_copy_setup()
    _hold(s)
    fx = double(s.follower_account)
    assert fx.balances()["BTC"].free == D("0.05")
    sub = subscription_stop(
        user=s.follower, subscription_id=s.subscription.pk, close_positions=True
    )
    assert sub.status == Subscription.Status.STOPPED
    (row,) = CopyAdjustment.objects.filter(subscription=sub)
    assert (row.kind, row.side, row.amount, row.state) == (
        Kind.STOP_CLOSE,
        "sell",
        D("0.05"),
        "planned",
    )
    assert row.client_order_id == adjustment_client_id(sub.pk, "stop_close:BTC/USDT")
    sent = adjustment_send(adjustment_id=row.pk)
    assert (sent.state, sent.filled_amount) == (AState.FILLED, D("0.05"))
    assert fx.balances()["BTC"].free == 0
    assert copy_positions(sub) == {}
    calls = fx.create_calls()
    # Asked again (a retried task, a second stop): nothing new is planned or sent.
    subscription_stop(user=s.follower, subscription_id=sub.pk, close_positions=True)
    assert adjustment_send(adjustment_id=row.pk).state == AState.FILLED
    assert CopyAdjustment.objects.filter(subscription=sub).count() == 1
    assert fx.create_calls() == calls
    assert len([o for o in fx.orders() if o["client_order_id"] == row.client_order_id]) == 1


def test_a_stop_close_that_times_out_after_acceptance_is_found_not_resent():
    s = build_copy_setup()
    _hold(s)
    fx = double(s.follower_account)
    fx.set_knob("timeout_after_accept", 1)
    subscription_stop(user=s.follower, subscription_id=s.subscription.pk, close_positions=True)
    row = CopyAdjustment.objects.get(subscription=s.subscription)
    sent = adjustment_send(adjustment_id=row.pk)
    assert sent.state == AState.FILLED
    assert len([o for o in fx.orders() if o["client_order_id"] == row.client_order_id]) == 1
    assert fx.balances()["BTC"].free == 0


def test_stopping_without_close_leaves_the_copies_in_the_account():
    s = build_copy_setup()
    _hold(s)
    subscription_stop(user=s.follower, subscription_id=s.subscription.pk)
    assert not CopyAdjustment.objects.exists()
    assert double(s.follower_account).balances()["BTC"].free == D("0.05")


# --- the copy's own stop-loss and take-profit ------------------------------------------------


def test_own_stop_loss_closes_the_copy_once_per_entry():
    s = build_copy_setup(sub_settings={"stop_mode": "own", "stop_loss_pct": "5"})
    _hold(s)
    fx = double(s.follower_account)
    fx.set_price("BTC/USDT", "57500")  # -4.17 %: above the 57 000 stop
    assert copy_protections_check(subscription_id=s.subscription.pk) == []
    fx.set_price("BTC/USDT", "56900")
    (row,) = copy_protections_check(subscription_id=s.subscription.pk)
    assert (row.kind, row.side, row.amount) == (Kind.STOP_LOSS, "sell", D("0.05"))
    assert "57000" in row.reason
    assert copy_protections_check(subscription_id=s.subscription.pk) == []  # planned once
    assert adjustment_send(adjustment_id=row.pk).state == AState.FILLED
    assert fx.balances()["BTC"].free == 0
    assert copy_protections_check(subscription_id=s.subscription.pk) == []  # flat now


def test_own_take_profit_and_the_leaders_stop_in_copy_mode():
    s = build_copy_setup(sub_settings={"stop_mode": "own", "take_profit_pct": "10"})
    _hold(s)
    double(s.follower_account).set_price("BTC/USDT", "66000")
    (row,) = copy_protections_check(subscription_id=s.subscription.pk)
    assert row.kind == Kind.TAKE_PROFIT

    c = build_copy_setup(sub_settings={"stop_mode": "copy"})
    _hold(c)
    fx = double(c.follower_account)
    fx.set_price("BTC/USDT", "58000")
    assert copy_protections_check(subscription_id=c.subscription.pk) == []  # no leader stop yet
    LeaderFill.objects.filter(leader=c.leader).update(stop_price=D("58500"))
    (row,) = copy_protections_check(subscription_id=c.subscription.pk)
    assert (row.kind, row.amount) == (Kind.STOP_LOSS, D("0.05"))


def test_stop_settings_are_validated():
    s = build_copy_setup()
    with pytest.raises(ApplicationError) as exc:
        subscription_update(
            user=s.follower, subscription_id=s.subscription.pk, settings={"stop_mode": "own"}
        )
    assert exc.value.field == "stop_loss_pct"
    with pytest.raises(ApplicationError) as exc:
        subscription_update(
            user=s.follower,
            subscription_id=s.subscription.pk,
            settings={"stop_mode": "own", "stop_loss_pct": "120"},
        )
    assert exc.value.field == "stop_loss_pct"
    assert Subscription.objects.get(pk=s.subscription.pk).stop_mode == "none"


# --- joining the leader's current positions ----------------------------------------------------


def _leader_holding_btc():
    """A leader published while holding 0.5 BTC (40 000 USDT + 0.5 x 60 000 = 70 000)."""
    from copytrading.services.leaders import leader_publish

    user = make_user()
    account = make_account(user)
    lx = double(account)
    lx.clear()
    lx.fund(USDT="40000", BTC="0.5")
    lx.set_price("BTC/USDT", "60000")
    leader = leader_publish(user=user, account_id=account.pk, name="Holder")
    follower = make_user()
    facct = make_account(follower)
    fx = double(facct)
    fx.clear()
    fx.fund(USDT="10000")
    fx.set_price("BTC/USDT", "60000")
    return leader, follower, facct, fx


def test_joining_opens_the_leaders_current_position_proportionally_once():
    leader, follower, facct, fx = _leader_holding_btc()
    sub = subscription_create(
        user=follower, leader_id=leader.pk, account_id=facct.pk,
        settings={"join_policy": "open_current"},
    )  # fmt: skip
    (row,) = subscription_join(subscription_id=sub.pk)
    # 0.5 x 60 000 / 70 000 = 3/7 of equity: 10 000 x 3/7 / 60 000 = 0.0714285… → 0.07142
    assert (row.kind, row.side, row.amount) == (Kind.JOIN, "buy", D("0.07142"))
    assert (row.order_type, row.time_in_force, row.limit_price) == ("limit", "IOC", D("60300"))
    assert adjustment_send(adjustment_id=row.pk).state == AState.FILLED
    assert fx.balances()["BTC"].free == D("0.07142")
    assert subscription_join(subscription_id=sub.pk) == []  # once
    assert fx.create_calls() == 1
    assert Subscription.objects.get(pk=sub.pk).baseline == {"BTC/USDT": "0"}


def test_joining_past_the_slippage_guard_is_skipped_with_the_reason():
    leader, follower, facct, fx = _leader_holding_btc()
    fx.set_price("BTC/USDT", "61000")  # +1.67 %: past BTC's 0.5 % guard
    sub = subscription_create(
        user=follower, leader_id=leader.pk, account_id=facct.pk,
        settings={"join_policy": "open_current"},
    )  # fmt: skip
    (row,) = subscription_join(subscription_id=sub.pk)
    assert row.state == AState.SKIPPED
    assert row.reason.startswith("slippage_exceeded")
    assert fx.create_calls() == 0


def test_new_only_subscriptions_do_not_join():
    leader, follower, facct, fx = _leader_holding_btc()
    sub = subscription_create(user=follower, leader_id=leader.pk, account_id=facct.pk)
    assert subscription_join(subscription_id=sub.pk) == []
    assert fx.create_calls() == 0


# --- reconciliation ---------------------------------------------------------------------------


def test_reconcile_reports_no_drift_when_the_account_matches_the_copies():
    s = build_copy_setup()
    _hold(s)
    sub = subscription_reconcile(subscription_id=s.subscription.pk)
    assert sub.drift_status == Subscription.DriftStatus.OK
    assert sub.drift["BTC/USDT"]["drift"] == "0"
    assert sub.baseline == {"BTC/USDT": "0"}
    assert sub.foreign_activity == []


def test_drift_beyond_the_tolerance_is_flagged_and_foreign_fills_listed():
    s = build_copy_setup()
    _hold(s)
    subscription_reconcile(subscription_id=s.subscription.pk)
    fx = double(s.follower_account)
    # The user buys 0.01 BTC by hand (not through Quantfold): 0.06 held, copies 0.05.
    fx.fund(BTC="0.06")
    fx.add_fill(
        Fill("manual-1", "M1", None, "BTC/USDT", "buy", D("0.01"), D(60000), D(0), "USDT",
             int(time.time() * 1000) + 1000)
    )  # fmt: skip
    sub = subscription_reconcile(subscription_id=s.subscription.pk)
    assert sub.drift_status == Subscription.DriftStatus.FLAGGED
    assert D(sub.drift["BTC/USDT"]["drift"]) == D("0.01")
    assert sub.drift_value == D("600")
    assert "off by +0.01" in sub.drift_message
    assert [f["id"] for f in sub.foreign_activity] == ["manual-1"]
    assert not CopyAdjustment.objects.exists()  # flagged only: nothing sent


def test_drift_within_the_tolerance_is_not_flagged():
    s = build_copy_setup()
    _hold(s)
    double(s.follower_account).fund(BTC="0.0505")  # +1 % of the copies (tolerance 2 %)
    sub = subscription_reconcile(subscription_id=s.subscription.pk)
    assert sub.drift_status == Subscription.DriftStatus.OK


def test_repair_mode_sells_the_excess_once_and_the_next_check_is_clean():
    s = build_copy_setup(sub_settings={"drift_repair": "repair"})
    _hold(s)
    fx = double(s.follower_account)
    fx.fund(BTC="0.06")
    sub = subscription_reconcile(subscription_id=s.subscription.pk)
    assert sub.drift_status == Subscription.DriftStatus.REPAIRING
    (row,) = CopyAdjustment.objects.filter(subscription=sub, kind=Kind.REPAIR)
    assert (row.side, row.amount, row.order_type) == ("sell", D("0.01"), "market")
    assert adjustment_send(adjustment_id=row.pk).state == AState.FILLED
    assert fx.balances()["BTC"].free == D("0.05")
    # The repair sold what the copies did not account for: the copies' own holding is
    # unchanged (0.05), and the account now matches it.
    sub = subscription_reconcile(subscription_id=s.subscription.pk)
    assert sub.drift_status == Subscription.DriftStatus.OK, sub.drift


# --- through real live workers ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_stop_with_close_and_the_beat_stop_loss_run_through_the_live_worker(live_worker):
    """The web/API stop queues the closes on commit; beat's protection pass queues a copy's
    stop-loss; a real worker sends each exactly once."""
    from celery import current_app

    from tests.copytrading.conftest import wait_until

    live_worker()
    s = build_copy_setup()
    _hold(s)
    subscription_stop(user=s.follower, subscription_id=s.subscription.pk, close_positions=True)
    row = wait_until(
        lambda: CopyAdjustment.objects.filter(subscription=s.subscription, state="filled").first(),
        timeout=60,
        what="the stop close sent by the worker",
    )
    assert row.kind == Kind.STOP_CLOSE
    fx = double(s.follower_account)
    assert fx.balances()["BTC"].free == 0
    assert len([o for o in fx.orders() if o["client_order_id"] == row.client_order_id]) == 1

    t = build_copy_setup(sub_settings={"stop_mode": "own", "stop_loss_pct": "2"})
    _hold(t)
    double(t.follower_account).set_price("BTC/USDT", "58000")  # -3.3 %
    current_app.send_task("copytrading.protections")  # what beat sends every 10 s
    stop = wait_until(
        lambda: CopyAdjustment.objects.filter(subscription=t.subscription, state="filled").first(),
        timeout=60,
        what="the stop-loss sent by the worker",
    )
    assert (stop.kind, stop.amount) == (Kind.STOP_LOSS, D("0.05"))
    assert double(t.follower_account).balances()["BTC"].free == 0


# --- the leader's declared stop: fixed-risk sizing and "copy the leader's stop" -----------------


def test_a_declared_leader_stop_sizes_fixed_risk_copies_and_bad_stops_are_refused():
    from copytrading.services.leaders import leader_stop_set

    s = build_copy_setup(sub_settings={"sizing_mode": "fixed_risk", "risk_fraction": "0.01"})
    for symbol, price, field in (("BTCUSDT", "58000", "symbol"), ("BTC/USDT", "-1", "stop_price"),
                                 ("BTC/USDT", "abc", "stop_price")):  # fmt: skip
        with pytest.raises(ApplicationError) as exc:
            leader_stop_set(user=s.leader_user, leader_id=s.leader.pk, symbol=symbol,
                            stop_price=price)  # fmt: skip
        assert exc.value.field == field
    other = make_user()
    with pytest.raises(ApplicationError):
        leader_stop_set(user=other, leader_id=s.leader.pk, symbol="BTC/USDT", stop_price="1")
    leader = leader_stop_set(
        user=s.leader_user, leader_id=s.leader.pk, symbol="btc/usdt", stop_price="58000.0"
    )
    assert leader.stops == {"BTC/USDT": "58000"}
    # 1 % of 10 000 = 100 USDT at risk over a 2 000 stop distance = 0.05 BTC
    copy = _hold(s)
    assert copy.amount == D("0.05")
    assert LeaderFill.objects.get(leader=s.leader).stop_price == D("58000")
    leader = leader_stop_set(user=s.leader_user, leader_id=s.leader.pk, symbol="BTC/USDT",
                             stop_price="")  # fmt: skip
    assert leader.stops == {}
