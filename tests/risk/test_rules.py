"""risk.rules against hand-computed cases: each figure is worked out in the comment beside it."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from risk import rules
from risk.rules import (
    ClosedTrade,
    Limits,
    OpenPosition,
    Proposal,
    RiskState,
    check_order,
)

MIN = 60_000
T = int(datetime(2024, 3, 6, 15, 30, tzinfo=UTC).timestamp() * 1000)  # a Wednesday
OFF = {
    "max_position_fraction": 1.0,
    "max_heat": 0.0,
    "max_open_positions": 0,
    "max_leverage": 0.0,
    "max_orders_per_minute": 0,
    "drawdown_limit": 0.0,
    "daily_loss_limit": 0.0,
}


def limits(**kw: Any) -> Limits:
    return Limits(**{**OFF, **kw})


def state(equity: float = 10_000.0, **kw: Any) -> RiskState:
    kw.setdefault("limits", limits())
    return RiskState(now_ms=T, equity=equity, **kw)


# --- sizing ------------------------------------------------------------------------------------


def test_fraction_of_equity_fits_the_fee_inside_the_money():
    # 10,000 * 0.5 / (100 * 1.001) = 49.95004995...
    assert rules.size_fraction(10_000.0, 0.5, 100.0, 0.001) == pytest.approx(5000 / 100.1)


def test_fixed_notional_buys_that_value():
    assert rules.size_notional(1_000.0, 250.0) == 4.0


def test_fixed_risk_loses_the_risk_fraction_at_the_stop():
    # 2 % of 10,000 = 200 at risk; stop 5 % below 100 = 5 per unit -> 40 units.
    qty = rules.size_fixed_risk(10_000.0, 0.02, 100.0, 0.05)
    assert qty == pytest.approx(40.0)
    assert qty * 100.0 * 0.05 == pytest.approx(200.0)


def test_fixed_risk_without_a_stop_sizes_nothing():
    assert rules.size_fixed_risk(10_000.0, 0.02, 100.0, 0.0) == 0.0


def test_volatility_target_scales_by_target_over_realised_vol():
    # target 20 %, vol 80 % -> a quarter of equity: 2,500 / 50 = 50 units (no fee).
    assert rules.size_vol_target(10_000.0, 0.2, 0.8, 50.0, 0.0) == pytest.approx(50.0)
    assert rules.size_vol_target(10_000.0, 0.2, 0.0, 50.0, 0.0) == 0.0


def test_kelly_fraction_is_halved_and_capped():
    # p = 0.6, b = 2: f* = 0.6 - 0.4/2 = 0.4; half Kelly 0.2; cap 0.1 binds.
    assert rules.kelly_fraction(0.6, 2.0, 1.0, 1.0) == pytest.approx(0.4)
    assert rules.kelly_fraction(0.6, 2.0, 0.5, 1.0) == pytest.approx(0.2)
    assert rules.kelly_fraction(0.6, 2.0, 0.5, 0.1) == pytest.approx(0.1)


def test_kelly_with_a_negative_edge_bets_nothing():
    # p = 0.3, b = 1: f* = 0.3 - 0.7 = -0.4 -> 0.
    assert rules.kelly_fraction(0.3, 1.0, 1.0, 1.0) == 0.0


def test_rounding_goes_down_to_the_lot_step_and_keeps_exact_multiples():
    assert rules.round_to_lot(0.123456, 0.001) == pytest.approx(0.123)
    assert rules.round_to_lot(0.3, 0.1) == pytest.approx(0.3)  # not 0.2 from 2.9999...
    assert rules.round_to_lot(1.23, 0.0) == 1.23


def test_sized_qty_skips_an_order_under_min_notional_after_rounding():
    # 1 % of 1,000 = 10 at price 3 -> 3.333 units -> lot 1 -> 3 units = 9 < min 10.
    args = (1.0, 3.0, 0.0, 1_000.0, math.inf, 1.0, 0.0, rules.SIZE_FRACTION, 0.01, 0.0, 1.0)
    assert rules.sized_qty(*args, 1.0, 0.0, 1.0, math.inf) == 3.0
    assert rules.sized_qty(*args, 1.0, 10.0, 1.0, math.inf) == 0.0


def test_sized_qty_caps_at_the_heat_room():
    # risk sizing: 10 % of 10,000 at a 5 % stop on price 100 -> 1,000 / 5 = 200 units;
    # heat room 300 money / 5 per unit = 60 units.
    q = rules.sized_qty(
        1.0, 100.0, 0.0, 10_000.0, math.inf, 1.0, 0.0, rules.SIZE_RISK, 0.1, 0.05, 100.0, 0.0,
        0.0, 1.0, 300.0,
    )  # fmt: skip
    assert q == pytest.approx(60.0)


# --- limits ------------------------------------------------------------------------------------


def test_portfolio_heat_is_loss_to_stops_over_equity():
    # 10 @ 100 stop 95 -> 50; 2 @ 50 short stop 55 -> 10; 1 @ 30 no stop -> 30. 90 / 1000.
    heat = rules.portfolio_heat(
        np.array([10.0, -2.0, 1.0]),
        np.array([100.0, 50.0, 30.0]),
        np.array([95.0, 55.0, np.nan]),
        1_000.0,
    )
    assert heat == pytest.approx(0.09)


def test_gross_leverage_counts_shorts_as_exposure():
    # |10*100| + |-5*100| = 1,500 over 1,000.
    assert rules.gross_leverage(np.array([10.0, -5.0]), np.array([100.0, 100.0]), 1_000.0) == 1.5


def test_orders_per_minute_counts_the_last_sixty_seconds_only():
    times = (T - 61_000, T - 60_000, T - 59_000, T - 1, T)
    assert rules.orders_in_last_minute(times, T) == 3


def test_position_fraction_of_equity():
    assert rules.position_fraction(-4.0, 50.0, 1_000.0) == 0.2


# --- breakers ----------------------------------------------------------------------------------


def test_drawdown_breaker_trips_at_the_limit_not_before():
    # peak 10,000, limit 20 %: 8,000 trips, 8,000.01 does not.
    assert rules.drawdown_tripped(8_000.0, 10_000.0, 0.2)
    assert not rules.drawdown_tripped(8_000.01, 10_000.0, 0.2)
    assert not rules.drawdown_tripped(1.0, 10_000.0, 0.0)  # off


def test_period_loss_breaker_compares_with_the_period_opening():
    assert rules.period_loss_tripped(9_500.0, 10_000.0, 0.05)
    assert not rules.period_loss_tripped(9_501.0, 10_000.0, 0.05)


def test_period_starts_are_utc_day_monday_and_first_of_month():
    ms = rules.day_start_ms(T)
    assert datetime.fromtimestamp(ms / 1000, tz=UTC) == datetime(2024, 3, 6, tzinfo=UTC)
    week = datetime.fromtimestamp(rules.week_start_ms(T) / 1000, tz=UTC)
    assert week == datetime(2024, 3, 4, tzinfo=UTC)  # Monday
    month = datetime.fromtimestamp(rules.month_start_ms(T) / 1000, tz=UTC)
    assert month == datetime(2024, 3, 1, tzinfo=UTC)


def test_each_breaker_latches_until_its_reset_condition():
    def at(ms: int | None) -> datetime | None:
        return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)

    assert at(rules.breaker_resets_at("daily_loss", T)) == datetime(2024, 3, 7, tzinfo=UTC)
    assert at(rules.breaker_resets_at("weekly_loss", T)) == datetime(2024, 3, 11, tzinfo=UTC)
    assert at(rules.breaker_resets_at("monthly_loss", T)) == datetime(2024, 4, 1, tzinfo=UTC)
    dec = int(datetime(2024, 12, 31, 23, 0, tzinfo=UTC).timestamp() * 1000)
    assert at(rules.breaker_resets_at("monthly_loss", dec)) == datetime(2025, 1, 1, tzinfo=UTC)
    assert rules.breaker_resets_at("drawdown", T) is None  # only the user resets it


def test_evaluate_breakers_reports_figures_and_reset_times():
    s = state(
        9_400.0,
        limits=limits(drawdown_limit=0.2, daily_loss_limit=0.05),
        peak_equity=12_000.0,
        day_start_equity=10_000.0,
    )
    trips = rules.evaluate_breakers(s)
    # drawdown 1 - 9400/12000 = 21.67 % >= 20 %; daily 1 - 9400/10000 = 6 % >= 5 %.
    assert [t.code for t in trips] == ["drawdown", "daily_loss"]
    assert trips[0].figures["peak"] == 12_000.0
    assert trips[0].resets_at_ms is None
    assert trips[1].resets_at_ms == rules.day_start_ms(T) + rules.MS_PER_DAY


# --- protections -------------------------------------------------------------------------------


def test_cooldown_blocks_the_symbol_after_its_last_exit():
    trades = (ClosedTrade("BTC/USDT", T - 10 * MIN, 0.01), ClosedTrade("ETH/USDT", T, 0.0))
    assert rules.cooldown_until(trades, "BTC/USDT", 30 * MIN) == T + 20 * MIN
    assert rules.cooldown_until(trades, "SOL/USDT", 30 * MIN) is None
    assert rules.cooldown_until(trades, "BTC/USDT", 0) is None


def test_stoploss_guard_locks_after_n_stops_within_the_lookback():
    stops = (
        ClosedTrade("BTC/USDT", T - 50 * MIN, -0.02, stop_loss=True),
        ClosedTrade("ETH/USDT", T - 20 * MIN, -0.02, stop_loss=True),
        ClosedTrade("BTC/USDT", T - 10 * MIN, -0.02, stop_loss=True),
        ClosedTrade("BTC/USDT", T - 5 * MIN, 0.03),  # a winner does not count
    )
    kw = {"count": 2, "lookback_ms": 60 * MIN, "lock_ms": 30 * MIN}
    # BTC alone: stops at -50 and -10 min, 40 min apart <= 60 -> locked until -10 + 30 = +20.
    assert rules.stoploss_guard_until(stops, "BTC/USDT", T, all_symbols=False, **kw) == T + 20 * MIN
    # ETH alone has one stop: free; with all_symbols, the latest pair (-20, -10) locks all.
    assert rules.stoploss_guard_until(stops, "ETH/USDT", T, all_symbols=False, **kw) is None
    assert rules.stoploss_guard_until(stops, "SOL/USDT", T, all_symbols=True, **kw) == T + 20 * MIN
    # A lookback of 5 minutes holds no pair.
    kw["lookback_ms"] = 5 * MIN
    assert rules.stoploss_guard_until(stops, "BTC/USDT", T, all_symbols=True, **kw) is None


def test_low_profit_lock_sums_the_recent_trades_of_the_symbol():
    trades = (
        ClosedTrade("BTC/USDT", T - 100 * MIN, 0.05),  # outside the 60 min lookback
        ClosedTrade("BTC/USDT", T - 40 * MIN, 0.004),
        ClosedTrade("BTC/USDT", T - 10 * MIN, -0.002),
    )
    # 0.004 - 0.002 = 0.002 < 0.01 -> locked 60 min from the last exit.
    until = rules.low_profit_until(
        trades, "BTC/USDT", T, lookback_ms=60 * MIN, min_profit=0.01, lock_ms=60 * MIN
    )
    assert until == T + 50 * MIN
    assert (
        rules.low_profit_until(
            trades, "BTC/USDT", T, lookback_ms=60 * MIN, min_profit=0.001, lock_ms=60 * MIN
        )
        is None
    )


# --- correlation -------------------------------------------------------------------------------


def test_correlation_matches_numpy_corrcoef():
    rng = np.random.default_rng(3)
    a = rng.normal(size=50)
    others = np.stack([a * 2 + 1, -a, rng.normal(size=50)])
    got = rules.correlations(a, others, 30)
    expected = [np.corrcoef(a[-30:], row[-30:])[0, 1] for row in others]
    assert got == pytest.approx(expected)
    assert got[0] == pytest.approx(1.0)
    assert got[1] == pytest.approx(-1.0)


def test_flat_series_has_no_correlation():
    assert np.isnan(rules.correlations(np.ones(10), np.arange(10.0)[None, :], 10)[0])


def test_correlation_shrink_falls_linearly_to_zero_at_one():
    assert rules.correlation_scale(0.7, 0.8) == 1.0
    assert rules.correlation_scale(0.9, 0.8) == pytest.approx(0.5)  # (1-0.9)/(1-0.8)
    assert rules.correlation_scale(1.0, 0.8) == 0.0


def test_window_correlation_of_the_kernel_equals_the_vectorized_one():
    rng = np.random.default_rng(5)
    close = np.cumprod(1 + rng.normal(0, 0.01, size=(40, 2)), axis=0) * 100
    ret = close[1:] / close[:-1] - 1
    got = rules.window_correlation(close, 30, 0, 1, 10)
    assert got == pytest.approx(np.corrcoef(ret[20:30, 0], ret[20:30, 1])[0, 1])


# --- validation -------------------------------------------------------------------------------


def test_validation_names_the_field_of_a_negative_fraction_and_a_max_below_a_min():
    errors = rules.validate_limits(
        {"risk_per_trade": -0.01, "min_order_notional": 100, "max_order_notional": 50}
    )
    assert set(errors) == {"risk_per_trade", "max_order_notional"}
    assert "below the minimum" in errors["max_order_notional"]


def test_weekly_limit_below_daily_is_refused():
    errors = rules.validate_limits({"daily_loss_limit": 0.05, "weekly_loss_limit": 0.03})
    assert "weekly_loss_limit" in errors


def test_default_limits_are_the_products():
    lim = Limits()
    assert (lim.risk_per_trade, lim.drawdown_limit, lim.daily_loss_limit, lim.max_heat) == (
        0.02,
        0.20,
        0.05,
        0.06,
    )


def test_invalid_limits_refuse_to_build():
    with pytest.raises(ValueError, match="max_heat"):
        Limits(max_heat=1.5)


# --- check_order -------------------------------------------------------------------------------


def buy(price: float | None = 100.0, **kw: Any) -> Proposal:
    return Proposal("BTC/USDT", 1, price, **kw)


def test_an_order_within_every_limit_is_approved_as_asked():
    d = check_order(state(), buy(qty=10.0))
    assert (d.status, d.qty, d.code) == ("approved", 10.0, "")


def test_fixed_risk_sizing_from_the_stop_price():
    # 2 % of 10,000 = 200; stop 95 -> 5 per unit -> 40 units.
    d = check_order(state(limits=limits(sizing="risk", risk_per_trade=0.02)), buy(stop=95.0))
    assert d.status == "approved"
    assert d.qty == pytest.approx(40.0)


def test_no_price_denies_instead_of_approving_blindly():
    assert check_order(state(), buy(None, qty=1.0)).code == "no_price"
    unpriced = (OpenPosition("ETH/USDT", 1.0, None),)
    assert check_order(state(positions=unpriced), buy(qty=1.0)).code == "no_price"


def test_halted_denies_new_exposure_but_passes_a_close():
    halted = state(mode="halted", positions=(OpenPosition("BTC/USDT", 3.0, 100.0),))
    assert check_order(halted, buy(qty=1.0)).code == "trading_halted"
    close = check_order(halted, Proposal("BTC/USDT", -1, 100.0, qty=5.0, reduce_only=True))
    assert (close.status, close.qty) == ("approved", 3.0)  # clipped to the position


def test_reducing_state_passes_only_reducing_orders():
    s = state(mode="reducing", positions=(OpenPosition("BTC/USDT", -2.0, 100.0),))
    assert check_order(s, Proposal("ETH/USDT", 1, 10.0, qty=1.0)).code == "reducing_only"
    assert check_order(s, buy(qty=1.0)).status == "approved"  # buying back a short


def test_daily_loss_denies_and_reports_the_trip():
    s = state(9_400.0, limits=limits(daily_loss_limit=0.05), day_start_equity=10_000.0)
    d = check_order(s, buy(qty=1.0))
    assert d.code == "daily_loss"
    assert d.trips[0].figures == {"equity": 9_400.0, "start": 10_000.0, "limit": 0.05}


def test_drawdown_denies_with_its_code():
    s = state(7_900.0, limits=limits(drawdown_limit=0.2), peak_equity=10_000.0)
    assert check_order(s, buy(qty=1.0)).code == "drawdown"


def test_rate_limit_denies_the_order_over_the_per_minute_cap():
    s = state(limits=limits(max_orders_per_minute=2), order_times_ms=(T - 1_000, T - 2_000))
    assert check_order(s, buy(qty=1.0)).code == "rate_limited"


def test_cooldown_and_guards_deny_with_their_codes():
    trades = (ClosedTrade("BTC/USDT", T - MIN, -0.03, stop_loss=True),)
    s = state(limits=limits(cooldown_minutes=5), trades=trades)
    assert check_order(s, buy(qty=1.0)).code == "cooldown"
    s = state(
        limits=limits(
            stoploss_guard_count=1,
            stoploss_guard_lookback_minutes=60,
            stoploss_guard_lock_minutes=30,
            stoploss_guard_all=True,
        ),
        trades=trades,
    )
    assert check_order(s, Proposal("ETH/USDT", 1, 10.0, qty=1.0)).code == "stoploss_guard"


def test_max_open_positions_denies_a_new_symbol_not_an_existing_one():
    s = state(
        limits=limits(max_open_positions=1), positions=(OpenPosition("BTC/USDT", 1.0, 100.0),)
    )
    assert check_order(s, Proposal("ETH/USDT", 1, 10.0, qty=1.0)).code == "max_positions"
    assert check_order(s, buy(qty=1.0)).status == "approved"


def test_heat_limit_shrinks_then_denies():
    # Open: 10 BTC @ 100 stop 95 -> heat 50 on 10,000 = 0.5 %. Limit 1 % -> room 50 money.
    # New ETH @ 10 stop 9 -> 1 per unit -> 50 units of the 100 asked.
    pos = (OpenPosition("BTC/USDT", 10.0, 100.0, stop=95.0),)
    s = state(limits=limits(max_heat=0.01, risk_per_trade=0.005), positions=pos)
    d = check_order(s, Proposal("ETH/USDT", 1, 10.0, qty=100.0, stop=9.0))
    assert (d.status, d.qty) == ("reduced", pytest.approx(50.0))
    assert d.figures["heat"] == pytest.approx(0.005)
    full = state(limits=limits(max_heat=0.005, risk_per_trade=0.005), positions=pos)
    assert check_order(full, Proposal("ETH/USDT", 1, 10.0, qty=1.0, stop=9.0)).code == (
        "heat_limit"
    )


def test_max_notional_and_position_share_shrink_the_order():
    # max order value 500 at price 100 -> 5 units.
    d = check_order(state(limits=limits(max_order_notional=500.0)), buy(qty=8.0))
    assert (d.status, d.qty) == ("reduced", 5.0)
    # 25 % of 10,000 = 2,500 -> 25 units, minus the 20 held -> 5 more.
    s = state(
        limits=limits(max_position_fraction=0.25),
        positions=(OpenPosition("BTC/USDT", 20.0, 100.0),),
    )
    assert check_order(s, buy(qty=8.0)).qty == pytest.approx(5.0)


def test_leverage_cap_counts_every_open_position():
    # 1x on 10,000 with 9,000 already out -> 1,000 / 100 = 10 units.
    s = state(limits=limits(max_leverage=1.0), positions=(OpenPosition("ETH/USDT", 900.0, 10.0),))
    d = check_order(s, buy(qty=30.0))
    assert (d.status, d.qty) == ("reduced", pytest.approx(10.0))


def test_min_notional_after_lot_rounding_denies():
    d = check_order(state(), buy(price=3.0, qty=3.4, lot_step=1.0, min_notional=10.0))
    assert d.code == "min_notional"  # 3 units * 3 = 9 < 10


def test_correlated_candidate_is_refused_or_shrunk():
    rng = np.random.default_rng(11)
    base = rng.normal(0, 0.01, 60)
    returns = {"BTC/USDT": base, "ETH/USDT": base * 1.5 + rng.normal(0, 0.001, 60)}
    c = float(np.corrcoef(returns["BTC/USDT"][-30:], returns["ETH/USDT"][-30:])[0, 1])
    pos = (OpenPosition("BTC/USDT", 1.0, 100.0),)
    kw = {"correlation_threshold": 0.8, "correlation_lookback": 30}
    s = state(limits=limits(**kw), positions=pos, returns=returns)
    d = check_order(s, Proposal("ETH/USDT", 1, 10.0, qty=10.0))
    assert d.code == "correlated"
    assert d.figures["correlation"] == pytest.approx(c)
    # Shorting ETH against a long BTC hedges: not refused.
    assert check_order(s, Proposal("ETH/USDT", -1, 10.0, qty=10.0)).status == "approved"
    s = state(limits=limits(**kw, correlation_mode="shrink"), positions=pos, returns=returns)
    d = check_order(s, Proposal("ETH/USDT", 1, 10.0, qty=10.0))
    assert d.status == "reduced"
    assert d.qty == pytest.approx(10.0 * (1 - c) / (1 - 0.8))
