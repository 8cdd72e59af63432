"""Leaders, subscriptions, recording leader fills and planning copies, on the real database."""

from __future__ import annotations

import itertools
import time
from decimal import Decimal as D

import pytest

from accounts.models import Plan
from accounts.services import subscription_grant
from config.exceptions import ApplicationError, NotFound, PlanRequired
from copytrading.models import CopyDecision, CopyOrder, Leader, LeaderFill, Subscription
from copytrading.planner import client_order_id
from copytrading.services import (
    copy_plan,
    leader_fill_record,
    leader_pause,
    leader_publish,
    leader_retire,
    subscription_create,
    subscription_pause,
    subscription_resume,
    subscription_stop,
    subscription_update,
)
from exchanges.trading import Fill
from risk import rules
from tests.backtester.backtest_factories import make_user
from tests.copytrading.conftest import build_copy_setup, double, make_account

pytestmark = pytest.mark.django_db
_ids = itertools.count(1)


def now_ms() -> int:
    return int(time.time() * 1000)


def leader_fill(
    *, side="buy", amount="0.5", price="60000", symbol="BTC/USDT", ts=None, fill_id=None
) -> Fill:
    return Fill(
        fill_id=fill_id or f"F{next(_ids)}",
        exchange_order_id=f"O{next(_ids)}",
        client_order_id=None,
        symbol=symbol,
        side=side,
        amount=D(amount),
        price=D(price),
        fee=D(0),
        fee_currency="USDT",
        timestamp_ms=ts if ts is not None else now_ms(),
    )


# --- leaders --------------------------------------------------------------------------------


def test_publishing_reads_the_accounts_equity_and_positions():
    user = make_user()
    account = make_account(user)
    x = double(account)
    x.clear()
    x.fund(USDT="40000", BTC="0.5")
    x.set_price("BTC/USDT", "60000")
    leader = leader_publish(user=user, account_id=account.pk, name="  Trend  ")
    # 40 000 + 0.5 x 60 000 = 70 000
    assert (leader.name, leader.equity, leader.status) == ("Trend", D("70000"), "active")
    assert leader.initial_positions == {"BTC/USDT": "0.5"}


def test_publish_refuses_bad_input_and_saves_nothing():
    user = make_user()
    account = make_account(user)
    other = make_account(make_user())
    with pytest.raises(ApplicationError) as exc:
        leader_publish(user=user, account_id=account.pk, name=" ")
    assert exc.value.field == "name"
    with pytest.raises(NotFound):
        leader_publish(user=user, account_id=other.pk, name="Not mine")
    with pytest.raises(PlanRequired):
        leader_publish(user=make_user(pro=False), account_id=account.pk, name="x")
    assert Leader.objects.count() == 0


def test_an_account_leads_once_until_retired(copy_setup):
    s = copy_setup
    with pytest.raises(ApplicationError, match="already leads"):
        leader_publish(user=s.leader_user, account_id=s.leader_account.pk, name="Again")
    leader_retire(user=s.leader_user, leader_id=s.leader.pk)
    again = leader_publish(user=s.leader_user, account_id=s.leader_account.pk, name="Again")
    assert again.status == "active"


def test_retiring_pauses_live_subscriptions_with_a_message(copy_setup):
    s = copy_setup
    leader_retire(user=s.leader_user, leader_id=s.leader.pk)
    s.subscription.refresh_from_db()
    assert s.subscription.status == "paused"
    assert "retired" in s.subscription.status_message


def test_only_the_owner_changes_a_leader(copy_setup):
    s = copy_setup
    with pytest.raises(NotFound):
        leader_pause(user=s.follower, leader_id=s.leader.pk)
    assert Leader.objects.get(pk=s.leader.pk).status == "active"


# --- subscriptions --------------------------------------------------------------------------


def test_subscription_refuses_own_leader_from_the_same_account(copy_setup):
    s = copy_setup
    with pytest.raises(ApplicationError, match="cannot copy itself") as exc:
        subscription_create(
            user=s.leader_user, leader_id=s.leader.pk, account_id=s.leader_account.pk
        )
    assert exc.value.field == "account"


def test_subscription_refuses_a_retired_leader_and_an_account_that_cannot_trade(copy_setup):
    s = copy_setup
    read_only = make_account(s.follower, can_trade=False)
    with pytest.raises(ApplicationError, match="cannot trade"):
        subscription_create(user=s.follower, leader_id=s.leader.pk, account_id=read_only.pk)
    leader_retire(user=s.leader_user, leader_id=s.leader.pk)
    fresh = make_account(s.follower)
    with pytest.raises(ApplicationError, match="retired") as exc:
        subscription_create(user=s.follower, leader_id=s.leader.pk, account_id=fresh.pk)
    assert exc.value.field == "leader"
    assert Subscription.objects.count() == 1


def test_subscription_refuses_another_users_account_and_a_duplicate(copy_setup):
    s = copy_setup
    stranger = make_account(make_user())
    with pytest.raises(NotFound):
        subscription_create(user=s.follower, leader_id=s.leader.pk, account_id=stranger.pk)
    with pytest.raises(ApplicationError, match="already follows"):
        subscription_create(
            user=s.follower, leader_id=s.leader.pk, account_id=s.follower_account.pk
        )


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"sizing_mode": "martingale"}, "sizing_mode"),
        ({"ratio": "0"}, "ratio"),
        ({"ratio": "101"}, "ratio"),
        ({"ratio": "abc"}, "ratio"),
        ({"ratio": "NaN"}, "ratio"),
        ({"sizing_mode": "fixed_notional"}, "notional"),
        ({"sizing_mode": "fixed_risk", "risk_fraction": "0.2"}, "risk_fraction"),
        ({"sizing_mode": "fixed_risk"}, "risk_fraction"),
        ({"max_positions": 0}, "max_positions"),
        ({"slippage_guard": "0.5"}, "slippage_guard"),
        ({"expiry_seconds": 0}, "expiry_seconds"),
        ({"allowed_symbols": ["BTC-USDT"]}, "allowed_symbols"),
        ({"allowed_symbols": ["BTC/USDT"], "excluded_symbols": ["BTC/USDT"]}, "excluded_symbols"),
        ({"allowed_sides": ["long"]}, "allowed_sides"),
        ({"symbol_map": {"BTC/USDT": "nonsense"}}, "symbol_map"),
        ({"join_policy": "open_all"}, "join_policy"),
        ({"stop_mode": "trailing"}, "stop_mode"),
        ({"stop_mode": "own"}, "stop_loss_pct"),
        ({"stop_mode": "own", "stop_loss_pct": "100"}, "stop_loss_pct"),
        ({"leverage": 10}, "leverage"),
    ],
)
def test_out_of_range_settings_name_the_field_and_save_nothing(copy_setup, values, field):
    s = copy_setup
    account = make_account(s.follower)
    with pytest.raises(ApplicationError) as exc:
        subscription_create(
            user=s.follower, leader_id=s.leader.pk, account_id=account.pk, settings=values
        )
    assert exc.value.field == field
    assert Subscription.objects.filter(account=account).count() == 0


def test_update_validates_against_the_stored_values(copy_setup):
    s = copy_setup
    sub = subscription_update(
        user=s.follower,
        subscription_id=s.subscription.pk,
        settings={"sizing_mode": "fixed_notional", "notional": "250", "max_positions": "3"},
    )
    assert (sub.sizing_mode, sub.notional, sub.max_positions) == ("fixed_notional", D("250"), 3)
    with pytest.raises(ApplicationError):
        subscription_update(user=s.follower, subscription_id=sub.pk, settings={"notional": "0"})
    assert Subscription.objects.get(pk=sub.pk).notional == D("250")
    with pytest.raises(NotFound):
        subscription_update(user=s.leader_user, subscription_id=sub.pk, settings={"ratio": "2"})


def test_pause_resume_stop(copy_setup):
    s = copy_setup
    assert subscription_pause(user=s.follower, subscription_id=s.subscription.pk).status == (
        "paused"
    )
    assert subscription_resume(user=s.follower, subscription_id=s.subscription.pk).status == (
        "active"
    )
    assert subscription_stop(user=s.follower, subscription_id=s.subscription.pk).status == (
        "stopped"
    )
    with pytest.raises(ApplicationError):
        subscription_resume(user=s.follower, subscription_id=s.subscription.pk)


# --- recording fills and planning -----------------------------------------------------------


def test_a_leader_fill_is_stored_once_and_tracks_the_position(copy_setup):
    s = copy_setup
    buy = leader_fill(amount="0.5")
    row, created = leader_fill_record(leader=s.leader, fill=buy)
    again, created_again = leader_fill_record(leader=s.leader, fill=buy, source="poll")
    assert (created, created_again, again.pk) == (True, False, row.pk)
    sell, _ = leader_fill_record(leader=s.leader, fill=leader_fill(side="sell", amount="0.2"))
    assert (row.position_before, row.position_after) == (D(0), D("0.5"))
    assert (sell.position_before, sell.position_after, sell.closing) == (D("0.5"), D("0.3"), True)
    assert LeaderFill.objects.filter(leader=s.leader).count() == 2
    s.leader.refresh_from_db()
    assert s.leader.fill_cursor_ms == sell.timestamp_ms


def test_a_fill_from_before_publication_is_part_of_the_starting_position(copy_setup):
    s = copy_setup
    published_ms = int(s.leader.published_at.timestamp() * 1000)
    row, created = leader_fill_record(leader=s.leader, fill=leader_fill(ts=published_ms - 1))
    assert (row, created) == (None, False)


def test_planning_stores_the_client_order_id_before_anything_is_sent(copy_setup):
    s = copy_setup
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert isinstance(order, CopyOrder)
    # leader: 0.5 x 60 000 / 100 000 = 30 % → follower 3 000 / 60 000 = 0.05 BTC, limit 60 300
    assert (order.state, order.side, order.amount, order.limit_price) == (
        "planned",
        "buy",
        D("0.05"),
        D("60300"),
    )
    assert order.client_order_id == client_order_id(s.subscription.pk, fill.pk)
    assert s.follower_x.create_calls() == 0
    assert order.leader_filled_at == fill.exchange_time
    assert order.detected_at == fill.detected_at
    # planning again changes nothing
    assert copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk).pk == order.pk
    decision = CopyDecision.objects.get(subscription=s.subscription, leader_fill=fill)
    assert (decision.outcome, decision.copy_order_id) == ("copied", order.pk)


def test_skips_are_recorded_with_their_reason_and_figures(copy_setup):
    s = copy_setup
    s.follower_x.set_price("BTC/USDT", "61000")  # 1.67 % above the leader: past the 0.5 % guard
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    decision = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert isinstance(decision, CopyDecision)
    assert (decision.outcome, decision.reason) == ("skipped", "slippage_exceeded")
    assert decision.figures["follower_price"] == "61000"
    assert not CopyOrder.objects.exists()


def test_a_paused_follower_still_copies_the_leaders_close(copy_setup):
    s = copy_setup
    opened, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=opened.pk)
    CopyOrder.objects.filter(pk=order.pk).update(state="filled", filled_amount=order.amount)
    s.follower_x.fund(BTC="0.05")
    subscription_pause(user=s.follower, subscription_id=s.subscription.pk)
    another_open, _ = leader_fill_record(leader=s.leader, fill=leader_fill(amount="0.1"))
    skipped = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=another_open.pk)
    assert skipped.reason == "paused"
    # The leader sells 0.3 of 0.6 (half): the follower sells half of its 0.05
    close, _ = leader_fill_record(leader=s.leader, fill=leader_fill(side="sell", amount="0.3"))
    sell = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=close.pk)
    assert (sell.side, sell.amount, sell.closing, sell.order_type) == (
        "sell",
        D("0.025"),
        True,
        "market",
    )


def test_losing_pro_stops_opens_but_not_closes(copy_setup):
    s = copy_setup
    subscription_grant(user=s.follower, plan_code=Plan.FREE)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    decision = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert decision.reason == "paused"
    assert "Pro plan has ended" in decision.detail


def test_a_risk_denial_is_stored_with_its_code(copy_setup, settings):
    s = copy_setup

    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    decision = copy_plan(
        subscription_id=s.subscription.pk,
        leader_fill_id=fill.pk,
        order_check=lambda **kw: rules.Decision(
            rules.DENIED, 0.0, "daily_loss", ("The daily loss limit is reached.",)
        ),
    )
    assert (decision.outcome, decision.reason) == ("skipped", "risk_denied:daily_loss")


def test_a_risk_reduction_is_applied_and_rounded(copy_setup):
    s = copy_setup

    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(
        subscription_id=s.subscription.pk,
        leader_fill_id=fill.pk,
        order_check=lambda **kw: rules.Decision(
            rules.REDUCED, 0.0333333, "", ("capped at 20 % of equity",)
        ),
    )
    assert order.amount == D("0.03333")
    assert "risk" in order.note


def test_symbol_mapping_sends_on_the_followers_market(db):
    s = build_copy_setup(sub_settings={"symbol_map": {"BTC/USDT": "BTC/USD"}})
    s.follower_x.fund(USD="10000", USDT="0")
    s.follower_x.set_price("BTC/USD", "60000")
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert (order.symbol, order.amount) == ("BTC/USD", D("0.05"))


def test_an_unreadable_follower_account_is_an_audited_failure_and_may_be_planned_again(
    copy_setup,
):
    s = copy_setup
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())

    def broken(account):
        raise ConnectionError("connection reset")

    failed = copy_plan(
        subscription_id=s.subscription.pk, leader_fill_id=fill.pk, adapter_for=broken
    )
    assert (failed.outcome, failed.reason) == ("failed", "exchange_error")
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert isinstance(order, CopyOrder)


def test_partial_fills_of_one_order_copy_a_fixed_amount_trade_once_in_total():
    """The stream reports two fills of the leader's order 'O-77' (its amount unknown): the
    follower's fixed 1 200 USDT trade is copied by the first fill (0.02 BTC at 60 000) and
    the second copies nothing more."""
    s = build_copy_setup(sub_settings={"sizing_mode": "fixed_notional", "notional": "1200"})

    def part(amount: str, fill_id: str) -> LeaderFill:
        f = leader_fill(amount=amount, fill_id=fill_id)
        row, _ = leader_fill_record(
            leader=s.leader,
            fill=Fill(**{**f.__dict__, "exchange_order_id": "O-77"}),
        )
        assert row is not None
        return row

    first = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=part("0.2", "P1").pk)
    assert isinstance(first, CopyOrder)
    assert first.amount == D("0.02")
    second = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=part("0.3", "P2").pk)
    assert isinstance(second, CopyDecision)
    assert second.reason == "order_already_copied"
    assert CopyOrder.objects.filter(subscription=s.subscription).count() == 1
