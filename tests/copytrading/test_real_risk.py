"""Copies through the REAL risk app (``risk.services.order_request_check``): the follower's
trading state, its limits and its book decide, and what is sent is what the risk app allowed.

The follower's exchange is the Redis exchange double here (its order list is what was sent);
the risk check reads the follower's book through the same adapter factory as the copy."""

from __future__ import annotations

from decimal import ROUND_DOWN
from decimal import Decimal as D

import pytest

from copytrading.models import CopyDecision, CopyOrder
from copytrading.services import copy_plan, copy_replicate, leader_fill_record
from exchanges.trading import MarketRules, OrderRequest
from risk.models import DeniedOrder
from risk.services import proposal_for_order, risk_profile_update, trading_state_set
from tests.copytrading.test_services import leader_fill

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _real_risk(settings):
    settings.COPYTRADING_ORDER_CHECK = "risk.services.order_request_check"


def _limits(user, **values):
    # No heat or position-share cap unless a test sets one: the leader's 0.5 BTC of 100 000
    # becomes 0.05 BTC (3 000 USDT) of the follower's 10 000.
    base = {"max_heat": 0.0, "max_position_fraction": 1.0, "max_leverage": 1.0}
    risk_profile_update(user=user, values={**base, **values})


def _open_position(s, amount="0.05"):
    """The follower holds ``amount`` BTC from an earlier, filled copy."""
    opened, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=opened.pk)
    assert isinstance(order, CopyOrder)
    CopyOrder.objects.filter(pk=order.pk).update(state="filled", filled_amount=D(amount))
    s.follower_x.fund(BTC=amount, USDT="7000")
    return order


def test_the_proposal_is_the_order_in_the_rules_terms():
    market = MarketRules("BTC/USDT", "BTC", "USDT", D("0.00001"), D("0.01"), min_notional=D("5"))
    sell = OrderRequest(
        symbol="BTC/USDT", side="sell", type="market", amount=D("0.025"),
        client_order_id="c1", reduce_only=True,
    )  # fmt: skip
    p = proposal_for_order(request=sell, market=market, price=D("60000"), stop=None)
    assert (p.side, p.qty, p.price, p.reduce_only) == (-1, 0.025, 60000.0, True)
    assert (p.lot_step, p.min_notional, p.stop) == (0.00001, 5.0, None)
    buy = OrderRequest(
        symbol="BTC/USDT", side="buy", type="limit", amount=D("0.05"), client_order_id="c2",
        price=D("60060"), time_in_force="IOC",
    )  # fmt: skip
    p = proposal_for_order(request=buy, market=market, price=D("60000"), stop=D("57000"))
    # checked at the limit it may fill at, not the last price
    assert (p.side, p.qty, p.price, p.stop) == (1, 0.05, 60060.0, 57000.0)


def test_an_approved_copy_is_sent_as_planned(copy_setup):
    s = copy_setup
    _limits(s.follower)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_replicate(leader_fill_id=fill.pk, subscription_id=s.subscription.pk)
    assert isinstance(order, CopyOrder)
    assert order.amount == D("0.05")
    assert order.state == "filled"
    sent = s.follower_x.orders()
    assert [(o["side"], D(o["amount"])) for o in sent] == [("buy", D("0.05"))]
    assert not DeniedOrder.objects.filter(owner=s.follower).exists()


def test_a_halted_follower_gets_a_denial_and_nothing_is_sent(copy_setup):
    s = copy_setup
    _limits(s.follower)
    trading_state_set(
        user=s.follower, to_state="halted", code="kill_switch", reason="Kill switch engaged.",
        actor="user",
    )  # fmt: skip
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    decision = copy_replicate(leader_fill_id=fill.pk, subscription_id=s.subscription.pk)
    assert isinstance(decision, CopyDecision)
    assert (decision.outcome, decision.reason) == ("skipped", "risk_denied:trading_halted")
    assert "Kill switch engaged." in decision.detail
    assert s.follower_x.orders() == []
    assert not CopyOrder.objects.filter(subscription=s.subscription).exists()
    denied = DeniedOrder.objects.get(owner=s.follower)
    assert (denied.source, denied.code, denied.side) == ("copy", "trading_halted", "buy")


def test_reducing_lets_a_close_through_but_not_an_open(copy_setup):
    s = copy_setup
    _limits(s.follower)
    _open_position(s)
    trading_state_set(
        user=s.follower, to_state="reducing", code="manual", reason="Reducing only.",
        actor="user",
    )  # fmt: skip
    more, _ = leader_fill_record(leader=s.leader, fill=leader_fill(amount="0.1"))
    refused = copy_replicate(leader_fill_id=more.pk, subscription_id=s.subscription.pk)
    assert isinstance(refused, CopyDecision)
    assert refused.reason == "risk_denied:reducing_only"
    assert s.follower_x.orders() == []
    # The leader sells 0.3 of its 0.6: the follower sells half of its 0.05
    close, _ = leader_fill_record(leader=s.leader, fill=leader_fill(side="sell", amount="0.3"))
    sold = copy_replicate(leader_fill_id=close.pk, subscription_id=s.subscription.pk)
    assert isinstance(sold, CopyOrder)
    assert (sold.side, sold.amount, sold.closing, sold.state) == (
        "sell", D("0.025"), True, "filled",
    )  # fmt: skip
    assert [(o["side"], D(o["amount"])) for o in s.follower_x.orders()] == [("sell", D("0.025"))]


def test_a_heat_limit_reduces_the_copy_to_the_lot(copy_setup):
    s = copy_setup
    # 7 % heat of 10 000 with no stop = 700 USDT at the IOC limit (60 000 plus the slippage
    # guard) ≈ 0.01166 BTC, rounded down to the 0.00001 lot
    _limits(s.follower, max_heat=0.07)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_replicate(leader_fill_id=fill.pk, subscription_id=s.subscription.pk)
    assert isinstance(order, CopyOrder)
    assert order.amount == (D(700) / order.limit_price).quantize(D("0.00001"), ROUND_DOWN)
    assert D("0.0115") < order.amount <= D("0.01166")
    assert "reduced by the risk limits" in order.note
    assert [D(o["amount"]) for o in s.follower_x.orders()] == [order.amount]


def test_a_position_share_limit_reduces_the_copy(copy_setup):
    s = copy_setup
    # 20 % of 10 000 at the IOC limit the copy is checked at
    _limits(s.follower, max_position_fraction=0.2)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    order = copy_plan(subscription_id=s.subscription.pk, leader_fill_id=fill.pk)
    assert isinstance(order, CopyOrder)
    expected = (D(2000) / order.limit_price).quantize(D("0.00001"), ROUND_DOWN)
    assert order.amount == expected
    assert D("0.0330") < order.amount < D("0.0334")


def test_a_copy_cut_under_the_market_minimum_is_skipped(copy_setup):
    s = copy_setup
    # an order value cap of 1 USDT: under the market's minimum order value
    _limits(s.follower, max_order_notional=1.0)
    fill, _ = leader_fill_record(leader=s.leader, fill=leader_fill())
    decision = copy_replicate(leader_fill_id=fill.pk, subscription_id=s.subscription.pk)
    assert isinstance(decision, CopyDecision)
    assert decision.reason.startswith("risk_denied:")
    assert s.follower_x.orders() == []
