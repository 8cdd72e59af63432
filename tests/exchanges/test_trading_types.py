"""The value types of the trading interface: rounding to the market's rules, minimums."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exchanges.trading import MarketRules, OrderTooSmall

BTC = MarketRules(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=Decimal("0.00001"),
    price_tick=Decimal("0.01"),
    min_amount=Decimal("0.00001"),
    min_notional=Decimal("5"),
)


def test_amount_rounds_down_to_the_lot_step_never_up():
    assert BTC.round_amount(Decimal("0.123456789")) == Decimal("0.12345")
    assert BTC.round_amount(Decimal("0.000009")) == Decimal(0)


def test_amount_rounds_to_a_step_that_is_not_a_power_of_ten():
    odd = MarketRules("X/USDT", "X", "USDT", Decimal("0.005"), Decimal("0.5"))
    assert odd.round_amount(Decimal("1.0149")) == Decimal("1.01")
    assert odd.round_price(Decimal("100.2"), "buy") == Decimal("100")
    assert odd.round_price(Decimal("100.2"), "sell") == Decimal("100.5")


def test_buy_limit_rounds_down_and_sell_limit_rounds_up_to_the_tick():
    assert BTC.round_price(Decimal("60000.129"), "buy") == Decimal("60000.12")
    assert BTC.round_price(Decimal("60000.121"), "sell") == Decimal("60000.13")


def test_order_below_min_notional_is_refused_with_the_figures():
    with pytest.raises(OrderTooSmall, match="minimum order value"):
        BTC.check_size(Decimal("0.00008"), Decimal("60000"))  # 4.8 USDT < 5
    BTC.check_size(Decimal("0.0001"), Decimal("60000"))  # 6 USDT passes


def test_zero_amount_is_refused():
    with pytest.raises(OrderTooSmall):
        BTC.check_size(Decimal(0), Decimal("60000"))
