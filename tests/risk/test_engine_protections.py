"""The protections, the weekly/monthly breakers, the order-value cap and the leverage cap of
risk/rules.py inside the backtest kernel, against hand-computed candle series of a few bars:
the bars where entries are refused and where they resume, the exact sizes under the caps, and
a run configured through ``engine_settings(limits)`` with the figures computed by hand.

Every test runs through the compiled kernel and through its pure-Python functions.
Conventions in bars (as the cooldown): a lock of L bars set by an exit on bar s refuses the
entries that would fill on bars s .. s + L; bar s + L + 1 opens again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytest

import backtester.engine.simulate as sim
from backtester.engine.candles import Candles
from backtester.engine.errors import ConfigError
from backtester.engine.signals import Signals
from backtester.engine.simulate import SimConfig, simulate, simulate_portfolio
from risk import rules
from risk.rules import (
    ClosedTrade,
    Limits,
    OpenPosition,
    Proposal,
    RiskState,
    check_order,
    engine_settings,
)

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
NO_FEES: dict[str, Any] = {"taker_fee": 0.0, "maker_fee": 0.0, "fill": "close"}


@pytest.fixture(autouse=True, params=["numba", "python"])
def kernel_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        for name in sim.NJIT_FUNCTIONS:
            monkeypatch.setattr(sim, name, getattr(sim, name).py_func)
    return str(request.param)


def candles(rows: Sequence[tuple[float, float, float, float]], ts: Sequence[int]) -> Candles:
    a = np.asarray(rows, dtype=np.float64)
    return Candles(
        np.asarray(ts, dtype=np.int64), a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.ones(len(rows))
    )


def hourly(rows: Sequence[tuple[float, float, float, float]]) -> Candles:
    return candles(rows, [T0 + i * HOUR for i in range(len(rows))])


def flat(p: float) -> tuple[float, float, float, float]:
    return (p, p, p, p)


def signals(n: int, el: Iterable[int] = (), xl: Iterable[int] = ()) -> Signals:
    out = Signals.empty(n)
    out.entry_long[list(el)] = True
    out.exit_long[list(xl)] = True
    return out


def opened_at(r: object) -> int:
    """The entry bar of the position still open at the end (-1: none)."""
    pos = getattr(r, "open_position", None)
    return -1 if pos is None else int(pos.entry_index)


def entries(trades: np.ndarray, symbol: int = 0) -> list[int]:
    return [int(t["entry_index"]) for t in trades if int(t["symbol"]) == symbol]


# Two stop-outs in a row: entry at 100 on bar 0, the 5 % stop (95) hit inside bar 1, a new
# entry at bar 1's close (100), its stop hit inside bar 2; then flat. Entry signal every bar.
STOPPED = [flat(100), (100, 100, 94, 100), (100, 100, 94, 100), *[flat(100)] * 4]


# --- stop-loss guard ---------------------------------------------------------------------------


def test_stoploss_guard_locks_the_symbol_after_n_stops_within_the_lookback():
    cfg = SimConfig(
        stop_loss=0.05,
        stoploss_guard_count=2,
        stoploss_guard_lookback_bars=3,
        stoploss_guard_lock_bars=2,
        **NO_FEES,
    )
    r = simulate(hourly(STOPPED), signals(7, el=range(7)), cfg)
    # Stops on bars 1 and 2 (1 bar apart <= 3): locked through bar 2 + 2 = 4; bar 5 opens.
    assert entries(r.trades) == [0, 1]
    assert [t["exit_index"] for t in r.trades] == [1, 2]
    assert [t["exit_reason"] for t in r.trades] == [sim.EXIT_STOP_LOSS] * 2
    assert opened_at(r) == 5
    assert list(r.position[2:5]) == [0.0, 0.0, 0.0]

    # One stop is not enough: the guard of 3 stops never locks and bar 2 re-enters.
    r3 = simulate(hourly(STOPPED), signals(7, el=range(7)), SimConfig(**{
        **_fields(cfg), "stoploss_guard_count": 3,
    }))  # fmt: skip
    assert entries(r3.trades) == [0, 1]
    assert opened_at(r3) == 2
    # Stops 1 bar apart fall outside a lookback of 0 bars: no lock either.
    r0 = simulate(hourly(STOPPED), signals(7, el=range(7)), SimConfig(**{
        **_fields(cfg), "stoploss_guard_lookback_bars": 0,
    }))  # fmt: skip
    assert entries(r0.trades) == [0, 1]
    assert opened_at(r0) == 2


def test_stoploss_guard_over_every_symbol_locks_them_all():
    # A stops inside bar 1, B inside bar 2: two stops, 1 bar apart, lock 2 bars from bar 2.
    a = hourly([flat(100), (100, 100, 94, 100), *[flat(100)] * 4])
    b = hourly([flat(50), flat(50), (50, 50, 47, 50), *[flat(50)] * 3])
    sigs = [signals(6, el=[0, 3, 5]), signals(6, el=[0, 4, 5])]
    base = {
        "stop_loss": 0.05,
        "stoploss_guard_count": 2,
        "stoploss_guard_lookback_bars": 3,
        "stoploss_guard_lock_bars": 2,
        **NO_FEES,
    }
    together = simulate_portfolio([a, b], sigs, SimConfig(stoploss_guard_all=True, **base))
    # Locked through bar 4 for both: A's bar-3 and B's bar-4 signals are refused, both open
    # again on bar 5.
    assert [(p.symbol, p.entry_index) for p in together.open_positions] == [(0, 5), (1, 5)]
    # Per symbol, each has one stop only: A re-enters on bar 3, B on bar 4.
    apart = simulate_portfolio([a, b], sigs, SimConfig(stoploss_guard_all=False, **base))
    assert [(p.symbol, p.entry_index) for p in apart.open_positions] == [(0, 3), (1, 4)]


def test_a_trailing_stop_in_profit_is_no_stop_loss_for_the_guard():
    # Entry at 100 (bar 0); the 5 % trail follows bar 1's high 120 to 114, hit inside bar 2
    # (+14 %). Entry at 125 (bar 3); the trail follows 140 to 133, hit inside bar 5 (+6.4 %).
    rows = [flat(100), (100, 120, 100, 115), (115, 115, 113, 115), (115, 130, 115, 125)]
    rows += [(125, 140, 125, 135), (135, 135, 132, 135), flat(135), flat(135)]
    cfg = SimConfig(
        trailing_stop=0.05,
        stoploss_guard_count=2,
        stoploss_guard_lookback_bars=5,
        stoploss_guard_lock_bars=3,
        **NO_FEES,
    )
    r = simulate(hourly(rows), signals(8, el=[0, 3, 6]), cfg)
    assert [int(t["exit_index"]) for t in r.trades] == [2, 5]
    assert [float(t["exit_price"]) for t in r.trades] == pytest.approx([114.0, 133.0])
    assert [int(t["exit_reason"]) for t in r.trades] == [sim.EXIT_TRAILING_STOP] * 2
    # Two trailing exits 3 bars apart, both in profit: no lock, bar 6 opens.
    assert opened_at(r) == 6


# --- low-profit lock ---------------------------------------------------------------------------

# +2 % (100 -> 102, bars 0-1), then -3 % (100 -> 97, bars 2-3); entry signals after that on 4-6.
PROFITS = hourly([flat(100), flat(102), flat(100), flat(97), flat(97), flat(97), flat(97)])
PROFIT_SIGNALS = signals(7, el=[0, 2, 4, 5, 6], xl=[1, 3])


def _low_profit(lookback: int, min_profit: float) -> SimConfig:
    return SimConfig(
        low_profit_lookback_bars=lookback,
        low_profit_min=min_profit,
        low_profit_lock_bars=2,
        **NO_FEES,
    )


def test_low_profit_lock_sums_the_returns_in_the_lookback_at_each_exit():
    # At the exit on bar 3: exits on bars 1 and 3 lie within 4 bars, +0.02 - 0.03 = -0.01 < 0:
    # locked through bar 3 + 2 = 5; the bar-4 and bar-5 signals are refused, bar 6 opens.
    r = simulate(PROFITS, PROFIT_SIGNALS, _low_profit(4, 0.0))
    assert [t["return"] for t in r.trades] == pytest.approx([0.02, -0.03], abs=1e-15)
    assert entries(r.trades) == [0, 2]
    assert opened_at(r) == 6
    # A minimum of -2 %: -0.01 is enough, nothing locks and bar 4 opens.
    free = simulate(PROFITS, PROFIT_SIGNALS, _low_profit(4, -0.02))
    assert opened_at(free) == 4
    # A lookback of 1 bar holds only the -3 % trade: below -2 %, locked again.
    short = simulate(PROFITS, PROFIT_SIGNALS, _low_profit(1, -0.02))
    assert opened_at(short) == 6


def test_the_live_protections_give_the_same_lock_ends_in_time():
    # The same two trades as ClosedTrades on the hourly clock: the live functions end the
    # locks at the timestamp of the last locked bar (exit + lock), where the kernel resumes
    # one bar later (see the module docstring).
    trades = (
        ClosedTrade("X", T0 + 1 * HOUR, 0.02),
        ClosedTrade("X", T0 + 3 * HOUR, -0.03),
    )
    kw = {"min_profit": 0.0, "lock_ms": 2 * HOUR}
    until = rules.low_profit_until(trades, "X", T0 + 4 * HOUR, lookback_ms=4 * HOUR, **kw)
    assert until == T0 + 5 * HOUR
    kw["min_profit"] = -0.02
    assert rules.low_profit_until(trades, "X", T0 + 4 * HOUR, lookback_ms=4 * HOUR, **kw) is None
    short = rules.low_profit_until(trades, "X", T0 + 4 * HOUR, lookback_ms=1 * HOUR, **kw)
    assert short == T0 + 5 * HOUR
    stops = (
        ClosedTrade("X", T0 + 1 * HOUR, -0.05, stop_loss=True),
        ClosedTrade("X", T0 + 2 * HOUR, -0.05, stop_loss=True),
    )
    guard = {"count": 2, "lookback_ms": 3 * HOUR, "lock_ms": 2 * HOUR, "all_symbols": False}
    assert rules.stoploss_guard_until(stops, "X", T0 + 3 * HOUR, **guard) == T0 + 4 * HOUR


# --- weekly and monthly breakers ---------------------------------------------------------------

# Daily bars from Monday 2024-01-29 to Tuesday 2024-02-06: Jan 29 - Feb 4 is one UTC week,
# Feb 1 starts a month, Feb 5 a week.
MON = T0 + 28 * DAY
DAYS = [MON + d * DAY for d in range(9)]
FALL = candles([flat(100), flat(85), *[flat(85)] * 7], DAYS)
# Entry on Jan 29; the exit rule closes on Jan 30; entry signals every day from Jan 31.
FALL_SIGNALS = signals(9, el=[0, *range(2, 9)], xl=[1])


def test_the_weekly_breaker_latches_until_monday():
    r = simulate(FALL, FALL_SIGNALS, SimConfig(weekly_loss_limit=0.1, **NO_FEES))
    # Jan 30's close: 100 units at 85 = 8,500, 15 % below the week's opening 10,000 >= 10 %:
    # no entry until the next UTC week, Monday Feb 5 (bar 7).
    assert entries(r.trades) == [0]
    assert r.equity[1] == pytest.approx(8_500.0)
    assert opened_at(r) == 7
    assert r.halted_at == -1  # only the drawdown breaker halts for good
    # A 20 % limit is not reached: the Jan 31 signal opens.
    loose = simulate(FALL, FALL_SIGNALS, SimConfig(weekly_loss_limit=0.2, **NO_FEES))
    assert opened_at(loose) == 2


def test_the_monthly_breaker_latches_until_the_first_of_the_month():
    r = simulate(FALL, FALL_SIGNALS, SimConfig(monthly_loss_limit=0.1, **NO_FEES))
    # The same loss against January's opening equity: locked until Feb 1 (bar 3).
    assert opened_at(r) == 3


def test_a_new_week_opens_at_the_previous_close():
    # Week 1 loses 15 % (latched). Monday Feb 5 (bar 7) opens the week at 8,500 and buys 100
    # units at 85; Feb 6 at 78 is 8.2 % down (under 10 %), Feb 7 at 76 is 10.6 % down: the
    # breaker trips again, the exit rule closes, and the Feb 8 signal (bar 10) is refused.
    rows = [flat(100), flat(85), *[flat(85)] * 5, flat(85), flat(78), flat(76), flat(76)]
    ts = [MON + d * DAY for d in range(len(rows))]
    sigs = signals(len(rows), el=[0, 7, 10], xl=[1, 9])
    r = simulate(candles(rows, ts), sigs, SimConfig(weekly_loss_limit=0.1, **NO_FEES))
    q = 8_500.0 / 85.0
    assert r.equity[[8, 9]] == pytest.approx([8_500.0 - q * 7, 8_500.0 - q * 9])
    assert entries(r.trades) == [0, 7]
    assert r.open_position is None
    # With an 11 % limit the week-2 loss (10.6 %) stays under it and bar 10 opens.
    loose = simulate(candles(rows, ts), sigs, SimConfig(weekly_loss_limit=0.11, **NO_FEES))
    assert entries(loose.trades) == [0, 7]
    assert opened_at(loose) == 10


def test_utc_periods_follow_the_calendar():
    out = np.empty((4, 3), dtype=np.int64)
    ts = np.array([MON - 1, MON, MON + 3 * DAY, MON + 7 * DAY], dtype=np.int64)
    rules.utc_period_table(ts, out)
    assert list(out[:, 1]) == [out[0, 1], out[0, 1] + 1, out[0, 1] + 1, out[0, 1] + 2]
    assert list(out[:, 2]) == [2024 * 12 + 0] * 2 + [2024 * 12 + 1] * 2  # Feb 1 is MON + 3
    assert rules.week_start_ms(MON + 3 * DAY + 5) == MON


# --- order value and leverage ------------------------------------------------------------------


def test_max_order_value_caps_each_entry():
    rows = [flat(100), flat(120), flat(80), flat(80)]
    sigs = signals(4, el=[0, 2], xl=[1])
    r = simulate(hourly(rows), sigs, SimConfig(max_order_notional=2_500.0, **NO_FEES))
    # 2,500 / 100 = 25 units (all-in would buy 100); 2,500 / 80 = 31.25 units.
    assert [t["qty"] for t in r.trades] == pytest.approx([25.0], rel=1e-15)
    assert r.open_position is not None
    assert r.open_position.qty == pytest.approx(31.25, rel=1e-15)
    # Then the lot step rounds down: 24.9 and 31.2 with lots of 0.3.
    lots = simulate(
        hourly(rows), sigs, SimConfig(max_order_notional=2_500.0, lot_step=0.3, **NO_FEES)
    )
    assert lots.trades["qty"][0] == pytest.approx(24.9, rel=1e-12)
    assert lots.open_position is not None
    assert lots.open_position.qty == pytest.approx(31.2, rel=1e-12)
    # The live check caps at the same figure.
    lim = _bare_limits(max_order_notional=2_500.0)
    d = check_order(RiskState(now_ms=T0, equity=10_000.0, limits=lim), _buy("X", 100.0))
    assert (d.status, d.qty) == ("reduced", pytest.approx(25.0, rel=1e-15))


def test_max_leverage_caps_the_gross_exposure_of_a_portfolio():
    a, b, c = (hourly([flat(p)] * 3) for p in (100.0, 50.0, 20.0))
    sigs = [signals(3, el=[0]), signals(3, el=[0]), signals(3, el=[1])]
    r = simulate_portfolio(
        [a, b, c], sigs, SimConfig(max_leverage=0.5, **NO_FEES), weights=[0.4, 0.4, 0.2]
    )
    # A: 4,000 / 100 = 40 units (0.4x). B asks 4,000 / 50 = 80 units; room 5,000 - 4,000 =
    # 1,000 -> 20 units. C on bar 1: gross 5,000 = 0.5x already: refused.
    assert list(r.position[0]) == pytest.approx([40.0, 20.0, 0.0], rel=1e-15)
    assert list(r.position[2]) == pytest.approx([40.0, 20.0, 0.0], rel=1e-15)
    # check_order: the same room, then nothing.
    lim = _bare_limits(max_leverage=0.5)
    held = (OpenPosition("A", 40.0, 100.0),)
    st = RiskState(now_ms=T0, equity=10_000.0, limits=lim, positions=held)
    d = check_order(st, Proposal("B", 1, 50.0, qty=80.0, fee_rate=0.0))
    assert (d.status, d.qty, d.reasons) == (
        "reduced",
        pytest.approx(20.0),
        ("Gross exposure capped at 0.5x equity.",),
    )
    full = RiskState(
        now_ms=T0,
        equity=10_000.0,
        limits=lim,
        positions=(*held, OpenPosition("B", 20.0, 50.0)),
    )
    assert check_order(full, Proposal("C", 1, 20.0, qty=1.0, fee_rate=0.0)).code == "max_leverage"


# --- one profile, through engine_settings ------------------------------------------------------


def test_a_backtest_through_engine_settings_locks_and_caps_as_computed_by_hand():
    profile = _bare_limits(
        sizing="fraction",
        risk_per_trade=0.5,
        max_leverage=0.25,
        max_order_notional=3_000.0,
        weekly_loss_limit=0.3,
        monthly_loss_limit=0.4,
        stoploss_guard_count=2,
        stoploss_guard_lookback_minutes=150,  # 2.5 h -> 3 bars
        stoploss_guard_lock_minutes=90,  # 1.5 h -> 2 bars
        low_profit_lookback_minutes=61,  # -> 2 bars
        low_profit_min=-0.5,
        low_profit_lock_minutes=60,  # -> 1 bar
    )
    mapped = engine_settings(profile, bar_ms=HOUR)
    assert {k: mapped[k] for k in _NEW} == {
        "weekly_loss_limit": 0.3,
        "monthly_loss_limit": 0.4,
        "max_order_notional": 3_000.0,
        "max_leverage": 0.25,
        "stoploss_guard_count": 2,
        "stoploss_guard_lookback_bars": 3,
        "stoploss_guard_lock_bars": 2,
        "stoploss_guard_all": False,
        "low_profit_lookback_bars": 2,
        "low_profit_min": -0.5,
        "low_profit_lock_bars": 1,
    }
    cfg = SimConfig(stop_loss=0.05, **NO_FEES, **mapped)
    r = simulate(hourly(STOPPED), signals(7, el=range(7)), cfg)
    # Bar 0: half the equity is 5,000 (50 units); the order value cap allows 30 units, the
    # leverage cap 0.25 * 10,000 / 100 = 25 units: 25.
    q0 = 25.0
    eq1 = 10_000.0 - q0 * 5  # stopped at 95: 9,875
    q1 = 0.25 * eq1 / 100  # 24.6875 units
    eq2 = eq1 - q1 * 5  # 9,751.5625
    q5 = 0.25 * eq2 / 100
    # Stops on bars 1 and 2 within 3 bars: locked through bar 4; bar 5 opens.
    assert entries(r.trades) == [0, 1]
    assert [t["qty"] for t in r.trades] == pytest.approx([q0, q1], rel=1e-15)
    assert r.equity[[1, 2]] == pytest.approx([eq1, eq2], rel=1e-15)
    assert r.open_position is not None
    assert (r.open_position.entry_index, r.open_position.qty) == (5, pytest.approx(q5, rel=1e-15))

    # check_order with the same profile: the same first size, and the guard's lock.
    st = RiskState(now_ms=T0, equity=10_000.0, limits=profile)
    d = check_order(st, _buy("X", 100.0))
    assert (d.status, d.qty) == ("reduced", pytest.approx(q0, rel=1e-15))
    stops = (
        ClosedTrade("X", T0 + HOUR, -0.05, stop_loss=True),
        ClosedTrade("X", T0 + 2 * HOUR, -0.05, stop_loss=True),
    )
    locked = RiskState(now_ms=T0 + 3 * HOUR, equity=eq2, limits=profile, trades=stops)
    assert check_order(locked, _buy("X", 100.0)).code == "stoploss_guard"
    # The live lock ends 90 minutes after the second stop; the kernel, counting whole bars
    # from the stop's bar, re-opens on bar 5 (T0 + 5 h), never before the live lock ends.
    later = RiskState(now_ms=T0 + 5 * HOUR, equity=eq2, limits=profile, trades=stops)
    assert check_order(later, _buy("X", 100.0)).qty == pytest.approx(q5, rel=1e-15)


def test_the_new_settings_off_leave_a_run_unchanged():
    rng = np.random.default_rng(11)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.01, 400))
    spread = np.abs(rng.normal(0, 0.004, 400)) * close
    rows = [(c, c + s, c - s, c) for c, s in zip(close, spread, strict=True)]
    sigs = signals(
        400, el=np.flatnonzero(rng.random(400) < 0.1), xl=np.flatnonzero(rng.random(400) < 0.1)
    )
    base = {"stop_loss": 0.01, "taker_fee": 0.001}
    off = simulate(hourly(rows), sigs, SimConfig(**base))
    # Limits far from binding go through the gates and give the very same run.
    loose = SimConfig(
        max_leverage=100.0,
        max_order_notional=1e12,
        weekly_loss_limit=0.99,
        monthly_loss_limit=0.99,
        stoploss_guard_count=1000,
        stoploss_guard_lookback_bars=1,
        stoploss_guard_lock_bars=1,
        low_profit_lookback_bars=3,
        low_profit_min=-1.0,
        low_profit_lock_bars=5,
        **base,
    )
    on = simulate(hourly(rows), sigs, loose)
    assert len(off.trades) > 10
    assert np.array_equal(off.equity, on.equity)
    assert np.array_equal(off.trades, on.trades)


def test_bad_values_are_refused_naming_the_setting():
    for kw, name in [
        ({"weekly_loss_limit": 1.0}, "weekly_loss_limit"),
        ({"monthly_loss_limit": -0.1}, "monthly_loss_limit"),
        ({"max_order_notional": -1.0}, "max_order_notional"),
        ({"max_order_notional": 5.0, "min_notional": 10.0}, "max_order_notional"),
        ({"max_leverage": 101.0}, "max_leverage"),
        ({"stoploss_guard_count": 1001}, "stoploss_guard_count"),
        ({"stoploss_guard_lock_bars": -1}, "stoploss_guard_lock_bars"),
        ({"stoploss_guard_all": 1}, "stoploss_guard_all"),
        ({"low_profit_min": -1.5}, "low_profit_min"),
        ({"low_profit_lookback_bars": 2.5}, "low_profit_lookback_bars"),
    ]:
        with pytest.raises(ConfigError, match=f"^{name} "):
            SimConfig(**kw)


_NEW = (
    "weekly_loss_limit",
    "monthly_loss_limit",
    "max_order_notional",
    "max_leverage",
    "stoploss_guard_count",
    "stoploss_guard_lookback_bars",
    "stoploss_guard_lock_bars",
    "stoploss_guard_all",
    "low_profit_lookback_bars",
    "low_profit_min",
    "low_profit_lock_bars",
)


def _fields(cfg: SimConfig) -> dict[str, object]:
    return {name: getattr(cfg, name) for name in cfg.__slots__}


def _bare_limits(**kw: Any) -> Limits:
    # Every limit off but the ones given: all-in fraction sizing, as the kernel's defaults.
    base: dict[str, object] = {
        "sizing": "fraction",
        "risk_per_trade": 1.0,
        "max_position_fraction": 1.0,
        "max_heat": 0.0,
        "max_open_positions": 0,
        "max_leverage": 0.0,
        "max_orders_per_minute": 0,
        "drawdown_limit": 0.0,
        "daily_loss_limit": 0.0,
    }
    return Limits(**{**base, **kw})


def _buy(symbol: str, price: float) -> Proposal:
    return Proposal(symbol, 1, price, fee_rate=0.0)
