"""The bar-loop simulator: one hand-computed case per convention, plus a plain-loop oracle.

Every test except the speed test runs twice: through the compiled numba kernel and through the
kernel's pure-Python functions (``py_func``), so both agree and coverage sees the kernel lines.
Prices are chosen so the expected numbers can be worked out in the comments.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import empyrical
import numpy as np
import pytest
import talib

import backtester.engine.simulate as sim
from backtester.engine.candles import Candles
from backtester.engine.errors import ConfigError
from backtester.engine.signals import Signals
from backtester.engine.simulate import (
    EXIT_REASONS,
    GridStats,
    SimConfig,
    aux_inputs,
    simulate,
    simulate_arrays,
)
from tests.engine.reference_loop import reference_simulate

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NO_FEES: dict[str, Any] = {"taker_fee": 0.0, "maker_fee": 0.0}
NUMBA_ONLY = {"test_a_million_bars_simulate_in_a_few_milliseconds"}

Row = tuple[float, float, float, float]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__name__ not in NUMBA_ONLY:
        metafunc.parametrize("kernel_mode", ["numba", "python"], indirect=True)


@pytest.fixture(autouse=True)
def kernel_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Swap every compiled function of the module for its pure-Python original in 'python'."""
    mode = str(getattr(request, "param", "numba"))
    if mode == "python":
        for name in sim.NJIT_FUNCTIONS:
            monkeypatch.setattr(sim, name, getattr(sim, name).py_func)
    return mode


def bars(
    rows: Sequence[Row], *, step: int = HOUR, timestamps: Sequence[int] | None = None
) -> Candles:
    """Candles from (open, high, low, close) rows, hourly from 2024-01-01 unless told."""
    a = np.asarray(rows, dtype=np.float64)
    ts = (
        np.asarray(timestamps, dtype=np.int64)
        if timestamps is not None
        else T0 + step * np.arange(len(rows), dtype=np.int64)
    )
    return Candles(ts, a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.ones(len(rows)), timeframe="1h")


def flat(*prices: float) -> list[Row]:
    """Bars that open, trade and close at one price each (no range to hit anything)."""
    return [(p, p, p, p) for p in prices]


def signals(
    n: int,
    el: Iterable[int] = (),
    xl: Iterable[int] = (),
    es: Iterable[int] = (),
    xs: Iterable[int] = (),
) -> Signals:
    """Signals true on the listed bars."""
    out = Signals.empty(n)
    for arr, idx in (
        (out.entry_long, el),
        (out.exit_long, xl),
        (out.entry_short, es),
        (out.exit_short, xs),
    ):
        arr[list(idx)] = True
    return out


def reason(name: str) -> int:
    return EXIT_REASONS.index(name)


# --- fills -----------------------------------------------------------------------------------


def test_signal_on_bar_t_fills_at_bar_t_plus_1_open() -> None:
    c = bars(
        [(100, 101, 99, 100), (102, 103, 101, 102), (104, 105, 103, 104), (106, 107, 105, 106)]
    )
    r = simulate(c, signals(4, el=[0], xl=[2]), SimConfig(**NO_FEES))
    (t,) = r.trades
    # Entry at bar 1's open 102 with all 10,000: qty 10000/102; exit at bar 3's open 106.
    assert (t["entry_index"], t["exit_index"]) == (1, 3)
    assert (t["entry_price"], t["exit_price"]) == (102.0, 106.0)
    assert t["qty"] == pytest.approx(10_000 / 102, rel=1e-12)
    assert t["pnl"] == pytest.approx(10_000 / 102 * 4, rel=1e-12)
    assert t["entry_time"] == T0 + HOUR
    assert t["exit_time"] == T0 + 3 * HOUR
    assert t["bars_held"] == 2
    assert t["exit_reason"] == reason("signal")
    # Marked at each close: flat at bar 0, 10000/102*104 at bar 2, cash 10000*106/102 after.
    assert r.equity[0] == 10_000.0
    assert r.equity[2] == pytest.approx(10_000 / 102 * 104, rel=1e-12)
    assert r.equity[3] == pytest.approx(10_000 * 106 / 102, rel=1e-12)
    assert list(r.position[:1]) == [0.0]
    assert r.position[3] == 0.0
    assert r.position[1] == pytest.approx(10_000 / 102, rel=1e-12)
    assert r.open_position is None


def test_fill_close_option_fills_at_the_signal_bar_close() -> None:
    c = bars(
        [(100, 101, 99, 100), (102, 103, 101, 102), (104, 105, 103, 104), (106, 107, 105, 106)]
    )
    r = simulate(c, signals(4, el=[0], xl=[2]), SimConfig(fill="close", **NO_FEES))
    (t,) = r.trades
    # Bought at bar 0's close 100, sold at bar 2's close 104: 100 units, +400.
    assert (t["entry_index"], t["exit_index"]) == (0, 2)
    assert (t["entry_price"], t["exit_price"]) == (100.0, 104.0)
    assert t["pnl"] == pytest.approx(400.0, rel=1e-12)
    assert r.equity[-1] == pytest.approx(10_400.0, rel=1e-12)


def test_signal_on_the_last_bar_is_dropped_with_next_open_fills() -> None:
    c = bars(flat(100, 101, 102))
    r = simulate(c, signals(3, el=[2]), SimConfig(**NO_FEES))
    assert len(r.trades) == 0
    assert r.open_position is None
    assert list(r.equity) == [10_000.0] * 3
    # With close fills the same signal buys at the last close and stays open.
    r2 = simulate(c, signals(3, el=[2]), SimConfig(fill="close", **NO_FEES))
    assert r2.open_position is not None
    assert r2.open_position.entry_index == 2


def test_market_orders_pay_taker_fee_and_limit_orders_pay_maker_fee() -> None:
    c = bars(
        [(100, 100, 100, 100), (100, 101, 98.5, 100), (110, 110, 110, 110), (110, 110, 110, 110)]
    )
    cfg = SimConfig(taker_fee=0.001, maker_fee=0.0005)
    (t,) = simulate(c, signals(4, el=[0], xl=[1]), cfg).trades
    # Market buy at 100: qty = 10000/(100*1.001), fee = qty*100*0.001 = 10000*0.001/1.001.
    qty = 10_000 / (100 * 1.001)
    assert t["qty"] == pytest.approx(qty, rel=1e-12)
    assert t["entry_fee"] == pytest.approx(10.0 / 1.001, rel=1e-12)
    # Market sell at bar 2's open 110 pays taker: qty*110*0.001.
    assert t["exit_fee"] == pytest.approx(qty * 110 * 0.001, rel=1e-12)
    assert t["pnl"] == pytest.approx(qty * 10 - 10 / 1.001 - qty * 0.11, rel=1e-12)
    # A limit buy 1 % under the signal close (99) fills inside bar 1 (low 98.5) as a maker.
    lim = SimConfig(taker_fee=0.001, maker_fee=0.0005, entry_order="limit", entry_offset=0.01)
    (t2,) = simulate(c, signals(4, el=[0], xl=[1]), lim).trades
    qty2 = 10_000 / (99 * 1.0005)
    assert t2["entry_price"] == pytest.approx(99.0, rel=1e-12)
    assert t2["qty"] == pytest.approx(qty2, rel=1e-12)
    assert t2["entry_fee"] == pytest.approx(qty2 * 99 * 0.0005, rel=1e-12)
    assert t2["exit_fee"] == pytest.approx(qty2 * 110 * 0.001, rel=1e-12)  # exit is a market


def test_slippage_is_adverse_on_buys_and_sells() -> None:
    c = bars(flat(100, 100, 110, 110, 90, 90))
    cfg = SimConfig(slippage_bps=10, **NO_FEES)
    # Long: buy at 100*(1.001) = 100.1 on bar 1, sell at 110*(0.999) = 109.89 on bar 3.
    (t,) = simulate(c, signals(6, el=[0], xl=[2]), cfg).trades
    assert t["entry_price"] == pytest.approx(100.1, rel=1e-12)
    assert t["exit_price"] == pytest.approx(109.89, rel=1e-12)
    assert t["pnl"] == pytest.approx(10_000 / 100.1 * (109.89 - 100.1), rel=1e-12)
    # Short: sell at 110*0.999 = 109.89 on bar 3, buy back at 90*1.001 = 90.09 on bar 5.
    (s,) = simulate(c, signals(6, es=[2], xs=[4]), cfg).trades
    assert s["side"] == -1
    assert s["entry_price"] == pytest.approx(109.89, rel=1e-12)
    assert s["exit_price"] == pytest.approx(90.09, rel=1e-12)
    assert s["pnl"] == pytest.approx(10_000 / 109.89 * (109.89 - 90.09), rel=1e-12)


# --- limit and stop entries ------------------------------------------------------------------


def test_limit_entry_fills_at_the_limit_or_at_a_better_open() -> None:
    cfg = SimConfig(entry_order="limit", entry_offset=0.01, **NO_FEES)
    # Signal close 100 -> buy limit 99.
    gap = simulate(bars([(100, 100, 100, 100), (98, 99.5, 97, 99)]), signals(2, el=[0]), cfg)
    assert gap.open_position is not None
    assert gap.open_position.entry_price == 98.0
    touch = simulate(bars([(100, 100, 100, 100), (100, 100, 98.9, 99)]), signals(2, el=[0]), cfg)
    assert touch.open_position is not None
    assert touch.open_position.entry_price == 99.0
    assert touch.open_position.qty == pytest.approx(10_000 / 99, rel=1e-12)
    # Not reached on its one valid bar -> cancelled; with two valid bars it fills on bar 2.
    rows = [(100, 100, 100, 100), (100, 101, 99.5, 100), (100, 100, 98.9, 99)]
    assert simulate(bars(rows), signals(3, el=[0]), cfg).open_position is None
    two = SimConfig(entry_order="limit", entry_offset=0.01, entry_valid_bars=2, **NO_FEES)
    late = simulate(bars(rows), signals(3, el=[0]), two).open_position
    assert late is not None
    assert (late.entry_index, late.entry_price) == (2, 99.0)
    # A short limit sells 1 % above the close (101), or at an open above it.
    short = simulate(bars([(100, 100, 100, 100), (102, 103, 101, 102)]), signals(2, es=[0]), cfg)
    assert short.open_position is not None
    assert (short.open_position.side, short.open_position.entry_price) == (-1, 102.0)


def test_stop_entry_fills_at_the_open_when_the_bar_gaps_through_it() -> None:
    cfg = SimConfig(entry_order="stop", entry_offset=0.01, **NO_FEES)
    # Signal close 100 -> buy stop 101. A bar opening at 103 fills at 103 (worse).
    gap = simulate(bars([(100, 100, 100, 100), (103, 104, 102, 103)]), signals(2, el=[0]), cfg)
    assert gap.open_position is not None
    assert gap.open_position.entry_price == 103.0
    # Opening below and trading through it: filled at the stop, 101.
    run = simulate(bars([(100, 100, 100, 100), (100, 101.5, 99.8, 101)]), signals(2, el=[0]), cfg)
    assert run.open_position is not None
    assert run.open_position.entry_price == 101.0
    # A short stop sells at 99, or at an open below it (97); stops are taker orders.
    fee = SimConfig(entry_order="stop", entry_offset=0.01, taker_fee=0.002, maker_fee=0.0)
    short = simulate(bars([(100, 100, 100, 100), (97, 98, 96, 97)]), signals(2, es=[0]), fee)
    pos = short.open_position
    assert pos is not None
    assert (pos.side, pos.entry_price) == (-1, 97.0)
    assert pos.entry_fee == pytest.approx(10_000 / 1.002 * 0.002, rel=1e-12)
    # Never reached: no position.
    miss = simulate(bars([(100, 100, 100, 100), (100, 100.5, 99, 100)]), signals(2, el=[0]), cfg)
    assert miss.open_position is None


def test_an_exit_rule_withdraws_a_resting_entry_order() -> None:
    cfg = SimConfig(entry_order="limit", entry_offset=0.01, entry_valid_bars=5, **NO_FEES)
    rows = [(100, 100, 100, 100), (100, 100, 100, 100), (100, 100, 98, 99)]
    # The buy limit at 99 would fill on bar 2, but exit_long on bar 1 cancels it.
    assert simulate(bars(rows), signals(3, el=[0], xl=[1]), cfg).open_position is None
    assert simulate(bars(rows), signals(3, el=[0]), cfg).open_position is not None


def test_a_new_entry_signal_while_an_order_rests_is_ignored_not_repriced() -> None:
    cfg = SimConfig(entry_order="limit", entry_offset=0.01, entry_valid_bars=3, **NO_FEES)
    rows = [
        (100, 100, 100, 100),  # signal at close 100: buy limit at 99, valid on bars 1-3
        (100, 110, 100, 110),  # signal again at close 110: a re-priced limit would be 108.9
        (110, 110, 105, 106),  # reaches 108.9 but not 99: nothing fills
        (106, 106, 98, 99),  # reaches 99: the first order fills there
    ]
    pos = simulate(bars(rows), signals(4, el=[0, 1]), cfg).open_position
    assert pos is not None
    assert (pos.entry_index, pos.entry_price) == (3, 99.0)
    # Without the resting order the bar-1 signal would have bought at 108.9 on bar 2.
    fresh = simulate(bars(rows), signals(4, el=[1]), cfg).open_position
    assert fresh is not None
    assert (fresh.entry_index, fresh.entry_price) == (2, pytest.approx(108.9, rel=1e-12))


# --- protective exits ------------------------------------------------------------------------


def test_stop_loss_fills_at_the_open_when_the_bar_gaps_through_it() -> None:
    cfg = SimConfig(stop_loss=0.05, **NO_FEES)
    rows = [(100, 100, 100, 100), (100, 101, 99, 100), (90, 92, 89, 91), (91, 91, 91, 91)]
    (t,) = simulate(bars(rows), signals(4, el=[0]), cfg).trades
    # Stop at 95; bar 2 opens at 90 below it -> filled at 90, not 95.
    assert (t["exit_index"], t["exit_price"]) == (2, 90.0)
    assert t["exit_reason"] == reason("stop_loss")
    # Without the gap the stop fills at its level.
    rows[2] = (98, 99, 94, 96)
    (t2,) = simulate(bars(rows), signals(4, el=[0]), cfg).trades
    assert t2["exit_price"] == pytest.approx(95.0, rel=1e-12)
    # A short's stop (105) gapped over at 110 fills at 110.
    rows[2] = (110, 112, 109, 111)
    (s,) = simulate(bars(rows), signals(4, es=[0]), cfg).trades
    assert (s["side"], s["exit_price"], s["exit_reason"]) == (-1, 110.0, reason("stop_loss"))


def test_stop_loss_pays_taker_fee_and_slippage() -> None:
    cfg = SimConfig(stop_loss=0.05, taker_fee=0.001, maker_fee=0.0, slippage_bps=20)
    rows = [(100, 100, 100, 100), (100, 101, 99, 100), (98, 99, 94, 96)]
    (t,) = simulate(bars(rows), signals(3, el=[0]), cfg).trades
    entry = 100 * 1.002
    stop = entry * 0.95 * 0.998  # the level from the fill price, sold with slippage
    assert t["exit_price"] == pytest.approx(stop, rel=1e-12)
    assert t["exit_fee"] == pytest.approx(t["qty"] * stop * 0.001, rel=1e-12)


def test_stop_comes_before_target_when_both_are_inside_one_bar() -> None:
    cfg = SimConfig(stop_loss=0.05, take_profit=0.05, **NO_FEES)
    rows = [(100, 100, 100, 100), (100, 101, 99, 100), (100, 106, 94, 100)]
    (t,) = simulate(bars(rows), signals(3, el=[0]), cfg).trades
    assert t["exit_reason"] == reason("stop_loss")
    assert t["exit_price"] == pytest.approx(95.0)


def test_an_open_beyond_the_target_takes_it_at_the_open_though_the_bar_then_hits_the_stop() -> None:
    cfg = SimConfig(stop_loss=0.05, take_profit=0.05, **NO_FEES)
    # Long from bar 1's open 100: stop 95, target 105. Bar 2 opens at 108, beyond the target,
    # then falls to 90 through the stop: the open comes first, so the target fills at 108.
    rows = [(100, 100, 100, 100), (100, 101, 99, 100), (108, 109, 90, 92)]
    (t,) = simulate(bars(rows), signals(3, el=[0]), cfg).trades
    assert (t["exit_index"], t["exit_price"]) == (2, 108.0)
    assert t["exit_reason"] == reason("take_profit")
    # A short mirrored: target 95, stop 105; bar 2 opens at 92 and then rallies to 110.
    rows = [(100, 100, 100, 100), (100, 101, 99, 100), (92, 110, 91, 108)]
    (s,) = simulate(bars(rows), signals(3, es=[0]), cfg).trades
    assert (s["side"], s["exit_price"], s["exit_reason"]) == (-1, 92.0, reason("take_profit"))


def test_take_profit_fills_at_the_target_or_a_better_open_as_a_maker() -> None:
    cfg = SimConfig(take_profit=0.05, taker_fee=0.001, maker_fee=0.0005)
    rows = [(100, 100, 100, 100), (100, 101, 99, 100), (100, 106, 99, 104)]
    (t,) = simulate(bars(rows), signals(3, el=[0]), cfg).trades
    assert t["exit_reason"] == reason("take_profit")
    assert t["exit_price"] == pytest.approx(100 * 1.05, rel=1e-12)
    assert t["exit_fee"] == pytest.approx(t["qty"] * 105 * 0.0005, rel=1e-12)
    rows[2] = (108, 109, 107, 108)
    (t2,) = simulate(bars(rows), signals(3, el=[0]), cfg).trades
    assert t2["exit_price"] == 108.0


def test_stops_are_checked_on_the_entry_bar_for_next_open_fills() -> None:
    # Filled at bar 1's open 100, the same bar reaches 94: the 5 % stop fills at 95 there.
    rows = [(100, 100, 90, 100), (100, 101, 94, 97), (97, 97, 97, 97)]
    cfg = SimConfig(stop_loss=0.05, **NO_FEES)
    (t,) = simulate(bars(rows), signals(3, el=[0]), cfg).trades
    assert (t["entry_index"], t["exit_index"], t["bars_held"]) == (1, 1, 0)
    assert t["exit_price"] == pytest.approx(95.0)
    # Filled at bar 0's close, bar 0's own low (90) is history; bar 1 hits the stop at 95.
    close_cfg = SimConfig(stop_loss=0.05, fill="close", **NO_FEES)
    (t2,) = simulate(bars(rows), signals(3, el=[0]), close_cfg).trades
    assert (t2["entry_index"], t2["exit_index"]) == (0, 1)


def test_entry_bar_stop_fills_at_its_level_not_at_the_earlier_open() -> None:
    # Buy stop at 101 fills inside bar 1 (open 100). A 0.5 % stop sits at 100.495, above that
    # open; the open came before the fill, so the stop fills at its level, not at 100.
    cfg = SimConfig(entry_order="stop", entry_offset=0.01, stop_loss=0.005, **NO_FEES)
    rows = [(100, 100, 100, 100), (100, 101.5, 99.5, 100)]
    (t,) = simulate(bars(rows), signals(2, el=[0]), cfg).trades
    assert t["entry_price"] == 101.0
    assert t["exit_price"] == pytest.approx(101 * 0.995, rel=1e-12)


def test_trailing_stop_percent_trails_the_highest_high_since_entry() -> None:
    cfg = SimConfig(trailing_stop=0.10, **NO_FEES)
    rows = [
        (100, 100, 100, 100),
        (100, 105, 99, 104),  # entry at 100; stop 90; then the high lifts the peak to 105
        (104, 112, 100.5, 110),  # stop 94.5 (the bar's own 112 does not count yet)
        (110, 111, 100, 101),  # stop 112*0.9 = 100.8; low 100 -> out at 100.8
        (101, 101, 101, 101),
    ]
    (t,) = simulate(bars(rows), signals(5, el=[0]), cfg).trades
    assert t["exit_index"] == 3
    assert t["exit_reason"] == reason("trailing_stop")
    assert t["exit_price"] == pytest.approx(100.8, rel=1e-12)
    # A short trails the lowest low: entry 100, low 90 -> stop 99 on the next bar.
    rows_s = [(100, 100, 100, 100), (100, 101, 90, 92), (92, 98.5, 91, 95), (95, 100, 94, 99)]
    (s,) = simulate(bars(rows_s), signals(4, es=[0]), cfg).trades
    assert s["exit_index"] == 3
    assert s["exit_price"] == pytest.approx(99.0, rel=1e-12)


def test_trailing_stop_atr_trails_by_a_multiple_of_the_previous_bars_atr() -> None:
    # Bars 0-6 each span 99..101 around 100: true range 2, so ATR(3) = 2 (checked by TA-Lib).
    rows = [(100, 101, 99, 100)] * 7 + [(100, 100.5, 96.5, 98), (98, 98, 98, 98)]
    c = bars(rows)
    atr = talib.ATR(c.high, c.low, c.close, timeperiod=3)
    assert atr[6] == pytest.approx(2.0, rel=1e-12)
    cfg = SimConfig(trailing_atr_mult=2.0, atr_period=3, **NO_FEES)
    # Entry at bar 5's open (100); peak 101 after bar 5; on bar 7 the stop is 101 - 2*ATR[6]
    # = 97 although bar 7 itself has a larger range; its low 96.5 takes the position out at 97.
    (t,) = simulate(c, signals(len(rows), el=[4]), cfg).trades
    assert (t["entry_index"], t["exit_index"]) == (5, 7)
    assert t["exit_reason"] == reason("trailing_stop")
    assert t["exit_price"] == pytest.approx(97.0, rel=1e-12)
    # The tighter of a fixed stop and the trailing stop binds: a 2 % stop (98) is tighter.
    both = SimConfig(trailing_atr_mult=2.0, atr_period=3, stop_loss=0.02, **NO_FEES)
    (t2,) = simulate(c, signals(len(rows), el=[4]), both).trades
    assert (t2["exit_price"], t2["exit_reason"]) == (pytest.approx(98.0), reason("stop_loss"))


# --- direction and rules ---------------------------------------------------------------------


def test_short_pnl_gains_when_the_price_falls() -> None:
    c = bars(flat(100, 100, 95, 90, 90))
    r = simulate(c, signals(5, es=[0], xs=[2]), SimConfig(**NO_FEES))
    (t,) = r.trades
    # Sold 100 units at 100, bought back at 90: +1000. Marked at 95 on bar 2: 10,500.
    assert (t["side"], t["qty"]) == (-1, pytest.approx(100.0))
    assert t["pnl"] == pytest.approx(1_000.0, rel=1e-12)
    assert t["return"] == pytest.approx(0.1, rel=1e-12)
    assert r.equity[2] == pytest.approx(10_500.0, rel=1e-12)
    assert r.cash[1] == pytest.approx(20_000.0, rel=1e-12)
    assert r.position[1] == pytest.approx(-100.0)
    assert r.equity[-1] == pytest.approx(11_000.0, rel=1e-12)


def test_exit_rules_fire_before_entry_rules_and_there_is_no_pyramiding() -> None:
    c = bars(flat(100, 100, 100, 100, 100, 100, 100))
    cfg = SimConfig(**NO_FEES)
    # A second entry signal while long adds nothing.
    r = simulate(c, signals(7, el=[0, 2]), cfg)
    assert len(r.trades) == 0
    assert r.open_position is not None
    assert r.open_position.entry_index == 1
    assert r.open_position.qty == pytest.approx(100.0)
    # Exit and entry on one bar: the exit acts, the entry does not re-open the same side.
    r2 = simulate(c, signals(7, el=[0, 2], xl=[2]), cfg)
    assert len(r2.trades) == 1
    assert r2.open_position is None
    # After a stop-out inside bar 2, that bar's entry signal opens a new position.
    rows = [(100, 100, 100, 100), (100, 100, 100, 100), (100, 100, 94, 99), (99, 99, 99, 99)]
    r3 = simulate(bars(rows), signals(4, el=[0, 2]), SimConfig(stop_loss=0.05, **NO_FEES))
    assert len(r3.trades) == 1
    assert r3.open_position is not None
    assert r3.open_position.entry_index == 3


def test_opposite_entry_signal_reverses_the_position() -> None:
    c = bars(flat(100, 100, 110, 120, 100))
    r = simulate(c, signals(5, el=[0], es=[2]), SimConfig(**NO_FEES))
    (t,) = r.trades
    # Long 100 units at 100, closed at bar 3's open 120 and reversed short at the same price.
    assert t["exit_index"] == 3
    assert t["exit_reason"] == reason("opposite_signal")
    pos = r.open_position
    assert pos is not None
    assert (pos.side, pos.entry_index, pos.entry_price) == (-1, 3, 120.0)
    assert pos.qty == pytest.approx(12_000 / 120)
    # Without reversal an opposite entry is ignored while a position is open.
    r2 = simulate(c, signals(5, el=[0], es=[2]), SimConfig(reverse_on_opposite=False, **NO_FEES))
    assert len(r2.trades) == 0
    assert r2.open_position is not None
    assert r2.open_position.side == 1


def test_allow_short_false_ignores_the_short_rules() -> None:
    c = bars(flat(100, 100, 90, 90))
    r = simulate(c, signals(4, es=[0], xs=[2]), SimConfig(allow_short=False, **NO_FEES))
    assert len(r.trades) == 0
    assert r.open_position is None
    # ...including as a reversal trigger for a long.
    r2 = simulate(c, signals(4, el=[0], es=[1]), SimConfig(allow_short=False, **NO_FEES))
    assert len(r2.trades) == 0
    assert r2.open_position is not None


def test_both_entry_rules_true_on_one_bar_open_nothing() -> None:
    c = bars(flat(100, 100, 100))
    assert simulate(c, signals(3, el=[0], es=[0]), SimConfig(**NO_FEES)).open_position is None


# --- sizing ----------------------------------------------------------------------------------


def test_fraction_sizing_fits_the_fee_inside_the_cash() -> None:
    c = bars(flat(100, 100, 100))
    r = simulate(c, signals(3, el=[0]), SimConfig(size_value=0.5, taker_fee=0.001))
    pos = r.open_position
    # qty = 10000*0.5/(100*1.001); cost + fee = 5000 exactly.
    assert pos is not None
    assert pos.qty == pytest.approx(5_000 / 100.1, rel=1e-12)
    assert r.cash[-1] == pytest.approx(5_000.0, rel=1e-12)
    full = simulate(c, signals(3, el=[0]), SimConfig(taker_fee=0.001))
    assert full.cash[-1] == pytest.approx(0.0, abs=1e-9)


def test_notional_sizing_buys_a_fixed_quote_amount() -> None:
    c = bars(flat(100, 80, 80))
    cfg = SimConfig(sizing="notional", size_value=2_500, taker_fee=0.001)
    pos = simulate(c, signals(3, el=[0]), cfg).open_position
    # 2,500 at bar 1's open 80 -> 31.25 units, fee 2.5 on top.
    assert pos is not None
    assert pos.qty == pytest.approx(31.25, rel=1e-12)
    assert pos.entry_fee == pytest.approx(2.5, rel=1e-12)


def test_risk_sizing_risks_a_fraction_of_equity_between_entry_and_stop() -> None:
    c = bars(flat(100, 100, 100))
    cfg = SimConfig(sizing="risk", size_value=0.01, stop_loss=0.02, **NO_FEES)
    pos = simulate(c, signals(3, el=[0]), cfg).open_position
    # qty = equity*risk/(entry-stop distance) = 10000*0.01/(100*0.02) = 50.
    assert pos is not None
    assert pos.qty == pytest.approx(50.0, rel=1e-12)
    # 5 % risk with a 2 % stop would need 250 units (25,000): capped at all the equity.
    big = SimConfig(sizing="risk", size_value=0.05, stop_loss=0.02, **NO_FEES)
    pos2 = simulate(c, signals(3, el=[0]), big).open_position
    assert pos2 is not None
    assert pos2.qty == pytest.approx(100.0, rel=1e-12)


def test_vol_target_sizing_scales_the_position_by_target_over_realised_volatility() -> None:
    closes = [100.0, 101.0] * 6
    c = Candles(
        T0 + DAY * np.arange(12, dtype=np.int64),
        np.array(closes),
        np.array(closes),
        np.array(closes),
        np.array(closes),
        np.ones(12),
        timeframe="1d",
    )
    cfg = SimConfig(sizing="vol_target", size_value=0.1, vol_lookback=4, **NO_FEES)
    r = simulate(c, signals(12, el=[6]), cfg)
    # Volatility at the signal bar 6: sample std of the last four log returns, x sqrt(365).
    rets = [math.log(closes[i] / closes[i - 1]) for i in range(3, 7)]
    vol = statistics.stdev(rets) * math.sqrt(365)
    pos = r.open_position
    assert pos is not None
    assert pos.entry_index == 7
    assert pos.qty == pytest.approx(10_000 * (0.1 / vol) / closes[7], rel=1e-9)
    # A signal during the warm-up (no volatility yet) opens nothing.
    assert simulate(c, signals(12, el=[2]), cfg).open_position is None


def test_lot_step_rounds_down_and_min_notional_skips_small_orders() -> None:
    c = bars(flat(30, 30, 30))
    r = simulate(c, signals(3, el=[0]), SimConfig(lot_step=0.1, **NO_FEES))
    # 10000/30 = 333.33.. -> 333.3 units; the rest stays in cash.
    assert r.open_position is not None
    assert r.open_position.qty == pytest.approx(333.3, rel=1e-12)
    assert r.cash[-1] == pytest.approx(10_000 - 333.3 * 30, rel=1e-9)
    # Exactly representable edge: 0.3 units of 0.1 are not lost to 2.9999999999999996 lots.
    edge = simulate(
        bars(flat(100, 100, 100)),
        signals(3, el=[0]),
        SimConfig(sizing="notional", size_value=30, lot_step=0.1, **NO_FEES),
    )
    assert edge.open_position is not None
    assert edge.open_position.qty == pytest.approx(0.3)
    small = SimConfig(sizing="notional", size_value=50, min_notional=100, **NO_FEES)
    r2 = simulate(c, signals(3, el=[0]), small)
    assert r2.open_position is None
    assert r2.fees_paid == 0.0


def test_max_position_fraction_caps_the_notional() -> None:
    c = bars(flat(100, 100, 100))
    cfg = SimConfig(max_position_fraction=0.25, taker_fee=0.001)
    pos = simulate(c, signals(3, el=[0]), cfg).open_position
    # 25 % of 10,000, fee included: 2500/(100*1.001).
    assert pos is not None
    assert pos.qty == pytest.approx(2_500 / 100.1, rel=1e-12)


# --- circuit breakers ------------------------------------------------------------------------


def test_drawdown_circuit_breaker_halts_new_entries_but_lets_positions_exit() -> None:
    c = bars(flat(100, 100, 85, 85, 85, 85, 85, 85))
    cfg = SimConfig(max_drawdown_halt=0.10, **NO_FEES)
    r = simulate(c, signals(8, el=[0, 5], xl=[3]), cfg)
    # 100 units from 100 to 85: equity 8,500 at bar 2 is 15 % below the 10,000 peak -> halt.
    assert r.halted_at == 2
    (t,) = r.trades  # the open long still exits on its signal
    assert t["exit_index"] == 4
    assert r.open_position is None  # the entry signal on bar 5 is refused
    assert simulate(c, signals(8, el=[0, 5], xl=[3]), SimConfig(**NO_FEES)).halted_at == -1
    # The peak is the running one: 12,000 at bar 2, then 10,500 at bar 3 is 12.5 % below it
    # although still above the starting cash.
    up = bars(flat(100, 100, 120, 105, 105, 105))
    r2 = simulate(up, signals(6, el=[0, 4], xl=[3]), cfg)
    assert r2.halted_at == 3
    assert len(r2.trades) == 1
    assert r2.open_position is None


def test_daily_loss_limit_blocks_entries_until_the_next_utc_day() -> None:
    # Bars 0-4 at 00:00..04:00 of 2024-01-01, bars 5-7 on 2024-01-02.
    ts = [T0 + h * HOUR for h in range(5)] + [T0 + DAY + h * HOUR for h in range(3)]
    c = bars(flat(100, 100, 94, 94, 94, 94, 94, 94), timestamps=ts)
    cfg = SimConfig(daily_loss_limit=0.05, **NO_FEES)
    r = simulate(c, signals(8, el=[0, 3, 4, 5], xl=[2]), cfg)
    # Bar 2 closes at 9,400: 6 % below the day's 10,000 -> no new entries on day one, so the
    # signals on bars 3 and 4 are refused; bar 5 is the next UTC day and opens at bar 6.
    (t,) = r.trades
    assert (t["entry_index"], t["exit_index"]) == (1, 3)
    assert r.open_position is not None
    assert r.open_position.entry_index == 6
    # Without the limit the bar-3 signal would have bought at bar 4.
    free = simulate(c, signals(8, el=[0, 3, 4, 5], xl=[2]), SimConfig(**NO_FEES))
    assert free.open_position is not None
    assert free.open_position.entry_index == 4


# --- the end of the data ---------------------------------------------------------------------


def test_open_position_at_the_end_is_marked_to_market_without_an_exit_fee() -> None:
    c = bars(flat(100, 100, 110, 120))
    r = simulate(c, signals(4, el=[0]), SimConfig(taker_fee=0.001, maker_fee=0.0))
    qty = 10_000 / 100.1
    pos = r.open_position
    assert len(r.trades) == 0
    assert pos is not None
    assert (pos.side, pos.entry_index, pos.entry_time) == (1, 1, T0 + HOUR)
    assert pos.qty == pytest.approx(qty, rel=1e-12)
    assert pos.mark_price == 120.0
    assert pos.unrealized_pnl == pytest.approx(qty * 20 - qty * 0.1, rel=1e-12)
    assert r.equity[-1] == pytest.approx(qty * 120, rel=1e-12)  # no exit fee taken
    assert r.fees_paid == pytest.approx(qty * 0.1, rel=1e-12)
    assert r.equity[-1] == pytest.approx(10_000 + pos.unrealized_pnl, rel=1e-12)


def test_totals_count_fees_and_traded_notional() -> None:
    c = bars(flat(100, 100, 110, 110))
    r = simulate(c, signals(4, el=[0], xl=[1]), SimConfig(taker_fee=0.001))
    (t,) = r.trades
    assert r.fees_paid == pytest.approx(t["entry_fee"] + t["exit_fee"], rel=1e-12)
    assert r.turnover == pytest.approx(t["qty"] * (100 + 110), rel=1e-12)
    assert r.equity[-1] == pytest.approx(10_000 + t["pnl"], rel=1e-12)


# --- the plain-loop oracle -------------------------------------------------------------------


def random_market(seed: int, n: int) -> tuple[Candles, Signals]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.004, n))  # gaps
    high = np.maximum(open_, close) * (1 + rng.exponential(0.006, n))
    low = np.minimum(open_, close) * (1 - rng.exponential(0.006, n))
    ts = T0 + HOUR * np.arange(n, dtype=np.int64)
    c = Candles(ts, open_, high, low, close, np.ones(n), timeframe="1h")
    s = Signals(*(rng.random(n) < p for p in (0.05, 0.05, 0.04, 0.04)))
    return c, s


ORACLE_CASES = [
    {"fill": "next_open", "taker_fee": 0.001, "slippage_bps": 5.0},
    {"fill": "close", "taker_fee": 0.002, "slippage_bps": 0.0},
    {"fill": "next_open", "taker_fee": 0.001, "stop_loss": 0.02, "take_profit": 0.03},
    {"fill": "close", "taker_fee": 0.0005, "slippage_bps": 3.0, "stop_loss": 0.015},
    {"fill": "next_open", "taker_fee": 0.001, "take_profit": 0.01, "size_value": 0.5},
    {"fill": "next_open", "taker_fee": 0.0, "stop_loss": 0.01, "allow_short": False},
]


@pytest.mark.parametrize(
    "case", ORACLE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("seed", [1, 2])
def test_kernel_matches_the_plain_python_reference_loop(
    case: dict[str, Any], seed: int, kernel_mode: str
) -> None:
    n = 3_000 if kernel_mode == "numba" else 800
    c, s = random_market(seed, n)
    cfg = SimConfig(maker_fee=0.0004, **case)
    got = simulate(c, s, cfg)
    ref = reference_simulate(
        c.open, c.high, c.low, c.close,
        s.entry_long, s.exit_long, s.entry_short, s.exit_short,
        fee=cfg.taker_fee, maker_fee=cfg.maker_fee, slippage_bps=cfg.slippage_bps,
        fraction=cfg.size_value, fill_close=cfg.fill == "close", stop_loss=cfg.stop_loss,
        take_profit=cfg.take_profit, allow_short=cfg.allow_short,
    )  # fmt: skip
    assert len(ref.trades) > 20
    assert got.equity[-1] == pytest.approx(ref.equity[-1], rel=1e-9)
    np.testing.assert_allclose(got.equity, ref.equity, rtol=1e-9)
    assert len(got.trades) == len(ref.trades)
    for mine, theirs in zip(got.trades, ref.trades, strict=True):
        assert mine["side"] == theirs.side
        assert (mine["entry_index"], mine["exit_index"]) == (theirs.entry_index, theirs.exit_index)
        assert EXIT_REASONS[mine["exit_reason"]] == theirs.reason
        for field in ("qty", "entry_price", "exit_price", "entry_fee", "exit_fee", "pnl"):
            assert mine[field] == pytest.approx(getattr(theirs, field), rel=1e-9, abs=1e-9)
    if ref.open_side:
        assert got.open_position is not None
        assert got.open_position.side == ref.open_side
        assert got.open_position.qty == pytest.approx(ref.open_qty, rel=1e-9)
    else:
        assert got.open_position is None


def test_simulate_arrays_reports_what_empyrical_computes_from_the_equity() -> None:
    c, s = random_market(7, 2_000)
    cfg = SimConfig(stop_loss=0.02, slippage_bps=2)
    fast = simulate_arrays(
        c.open, c.high, c.low, c.close, c.timestamp,
        s.entry_long, s.exit_long, s.entry_short, s.exit_short, cfg,
    )  # fmt: skip
    ref = reference_simulate(
        c.open, c.high, c.low, c.close,
        s.entry_long, s.exit_long, s.entry_short, s.exit_short,
        fee=cfg.taker_fee, slippage_bps=cfg.slippage_bps, stop_loss=cfg.stop_loss,
        maker_fee=cfg.maker_fee,
    )  # fmt: skip
    curve = np.r_[cfg.initial_cash, ref.equity]
    rets = curve[1:] / curve[:-1] - 1
    assert isinstance(fast, GridStats)
    assert fast.final_equity == pytest.approx(ref.equity[-1], rel=1e-9)
    assert fast.total_return == pytest.approx(ref.equity[-1] / 10_000 - 1, rel=1e-9)
    assert fast.n_trades == len(ref.trades)
    assert fast.n_returns == 2_000
    assert fast.max_drawdown == pytest.approx(-empyrical.max_drawdown(rets), rel=1e-9)
    assert fast.mean_return == pytest.approx(rets.mean(), rel=1e-7)
    assert fast.std_return == pytest.approx(rets.std(ddof=1), rel=1e-7)
    sharpe = empyrical.sharpe_ratio(rets, annualization=8760)
    assert fast.sharpe(8760) == pytest.approx(sharpe, rel=1e-7)
    fees = sum(t.entry_fee + t.exit_fee for t in ref.trades) + ref.open_fee
    turnover = sum(t.qty * (t.entry_price + t.exit_price) for t in ref.trades)
    assert fast.fees_paid == pytest.approx(fees, rel=1e-9)
    assert fast.turnover >= turnover * (1 - 1e-12)  # plus the open position's entry
    assert fast.halted_at == -1


def test_simulate_arrays_computes_missing_atr_and_volatility_itself() -> None:
    c, s = random_market(3, 600)
    for cfg in (
        SimConfig(trailing_atr_mult=2.0, atr_period=5),
        SimConfig(sizing="vol_target", size_value=0.3, vol_lookback=10),
    ):
        atr, vol = aux_inputs(c.high, c.low, c.close, cfg, periods_per_year=8760)
        args = (
            c.open, c.high, c.low, c.close, c.timestamp,
            s.entry_long, s.exit_long, s.entry_short, s.exit_short, cfg,
        )  # fmt: skip
        given = simulate_arrays(*args, atr=atr, vol=vol, periods_per_year=8760)
        computed = simulate_arrays(*args, periods_per_year=8760)
        assert computed == given
        assert given.final_equity == pytest.approx(simulate(c, s, cfg).equity[-1], rel=1e-12)


def test_grid_stats_sharpe_is_zero_when_undefined() -> None:
    p, no = np.full(5, 100.0), np.zeros(5, dtype=bool)
    ts = T0 + HOUR * np.arange(5, dtype=np.int64)
    flat_stats = simulate_arrays(p, p.copy(), p.copy(), p.copy(), ts, no, no, no, no, SimConfig())
    assert flat_stats.std_return == 0.0
    assert flat_stats.sharpe(365) == 0.0
    assert flat_stats.final_equity == 10_000.0
    assert flat_stats.max_drawdown == 0.0


def test_empty_candles_give_an_empty_result() -> None:
    e = np.empty(0)
    c = Candles(np.empty(0, dtype=np.int64), e, e, e, e, e)
    r = simulate(c, Signals.empty(0))
    assert r.equity.shape == (0,)
    assert len(r.trades) == 0
    assert r.open_position is None


def test_volatility_input_is_the_annualised_sample_std_of_log_returns() -> None:
    close = np.array([100.0, 102.0, 99.0, 101.0, 104.0, 103.0])
    vol = sim.annualised_volatility(close, 3, 365.0)
    assert np.isnan(vol[:3]).all()
    rets = [math.log(close[i] / close[i - 1]) for i in range(2, 5)]
    assert vol[4] == pytest.approx(statistics.stdev(rets) * math.sqrt(365), rel=1e-12)
    assert np.isnan(sim.annualised_volatility(close[:3], 3, 365.0)).all()


def test_periods_per_year_come_from_the_timeframe_or_the_bar_spacing() -> None:
    assert sim.candle_periods_per_year(bars(flat(1, 1, 1))) == 8760.0
    o = np.ones(3)
    spaced = Candles(T0 + 4 * HOUR * np.arange(3, dtype=np.int64), o, o, o, o, o)
    assert sim.candle_periods_per_year(spaced) == 2190.0
    o = np.ones(1)
    one = Candles(np.array([T0]), o, o, o, o, o)
    assert sim.candle_periods_per_year(one) == 365.0


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_cash": 0}, "initial_cash"),
        ({"initial_cash": float("nan")}, "initial_cash"),
        ({"initial_cash": "10"}, "initial_cash"),
        ({"fill": "open"}, "fill"),
        ({"taker_fee": -0.001}, "taker_fee"),
        ({"maker_fee": 0.5}, "maker_fee"),
        ({"slippage_bps": -1}, "slippage_bps"),
        ({"entry_order": "iceberg"}, "entry_order"),
        ({"entry_offset": 1.0}, "entry_offset"),
        ({"entry_valid_bars": 0}, "entry_valid_bars"),
        ({"entry_valid_bars": 1.5}, "entry_valid_bars"),
        ({"entry_valid_bars": True}, "entry_valid_bars"),
        ({"stop_loss": 1.0}, "stop_loss"),
        ({"take_profit": -0.1}, "take_profit"),
        ({"trailing_stop": 1.2}, "trailing_stop"),
        ({"trailing_atr_mult": -1}, "trailing_atr_mult"),
        ({"atr_period": 0}, "atr_period"),
        ({"sizing": "kelly"}, "sizing"),
        ({"size_value": 0}, "size_value"),
        ({"size_value": 1.5}, "size_value"),
        ({"sizing": "risk", "size_value": 0.01}, "stop_loss"),
        ({"vol_lookback": 1}, "vol_lookback"),
        ({"lot_step": -0.1}, "lot_step"),
        ({"min_notional": -5}, "min_notional"),
        ({"max_position_fraction": 0}, "max_position_fraction"),
        ({"max_position_fraction": 2}, "max_position_fraction"),
        ({"allow_short": 1}, "allow_short"),
        ({"max_drawdown_halt": 1}, "max_drawdown_halt"),
        ({"daily_loss_limit": -0.1}, "daily_loss_limit"),
        ({"reverse_on_opposite": "yes"}, "reverse_on_opposite"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_setting(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        SimConfig(**kwargs)


def test_default_settings_are_all_in_with_taker_and_maker_fees() -> None:
    cfg = SimConfig()
    assert (cfg.initial_cash, cfg.fill, cfg.sizing, cfg.size_value) == (
        10_000.0,
        "next_open",
        "fraction",
        1.0,
    )
    assert (cfg.taker_fee, cfg.maker_fee, cfg.slippage_bps) == (0.001, 0.0005, 0.0)
    assert SimConfig(sizing="notional", size_value=50_000).size_value == 50_000


def test_signals_of_the_wrong_length_are_refused() -> None:
    c = bars(flat(100, 100, 100))
    with pytest.raises(ConfigError, match="4 bars"):
        simulate(c, Signals.empty(4))
    bad = Signals(np.zeros(3, bool), np.zeros(3, bool), np.zeros(3, bool), np.zeros(4, bool))
    with pytest.raises(ConfigError, match="exit_short"):
        simulate(c, bad)


# --- speed -----------------------------------------------------------------------------------


def test_grid_fast_path_agrees_with_full_simulation_on_a_million_bars() -> None:
    # Speed is measured by `make bench`, not here; this checks the two paths agree at scale.
    rng = np.random.default_rng(5)
    n = 1_000_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    ts = T0 + 60_000 * np.arange(n, dtype=np.int64)
    fast = talib.SMA(close, 20)
    slow = talib.SMA(close, 100)
    above = fast > slow
    prev = np.r_[False, above[:-1]]
    el, xl = above & ~prev, ~above & prev
    none = np.zeros(n, dtype=bool)
    cfg = SimConfig()
    st = simulate_arrays(open_, high, low, close, ts, el, xl, none, none, cfg)
    assert st.n_trades > 1_000
    c = Candles(ts, open_, high, low, close, np.ones(n), timeframe="1m")
    full = simulate(c, Signals(el, xl, none, none), cfg)
    assert full.equity[-1] == pytest.approx(st.final_equity, rel=1e-12)
    assert len(full.trades) == st.n_trades
