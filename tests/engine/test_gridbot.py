"""The grid-bot simulation: hand-computed cases (every fill worked out in the docstrings), the
validation of levels against tick and minimum notional, an independent plain-Python loop
agreeing on random series, and the settings-dict entry point an optimizer would call.

Tests marked with the ``kernel_mode`` fixture run twice: through the compiled kernel and
through its plain-Python functions (``py_func``), so both agree and coverage sees the lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

import backtester.engine.gridbot as gb
from backtester.engine.candles import Candles
from backtester.engine.errors import ConfigError
from backtester.engine.gridbot import (
    CELL_STATES,
    FILL_KINDS,
    GRID_ONLY_METRICS,
    GridSettings,
    grid_levels,
    grid_metrics,
    max_levels_for_investment,
    max_levels_for_tick,
    simulate_grid,
)
from backtester.engine.metrics import METRICS
from tests.engine.grid_reference import reference_grid

HOUR = 3_600_000
Row = tuple[float, float, float, float]


@pytest.fixture(params=["numba", "python"])
def kernel_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    mode = str(request.param)
    if mode == "python":
        for name in gb.NJIT_FUNCTIONS:
            monkeypatch.setattr(gb, name, getattr(gb, name).py_func)
    return mode


def bars(rows: Sequence[Row]) -> Candles:
    a = np.asarray(rows, dtype=np.float64)
    n = len(rows)
    return Candles(
        np.arange(n, dtype=np.int64) * HOUR, a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.ones(n),
        timeframe="1h",
    )  # fmt: skip


def fills_of(result: gb.GridBotResult) -> list[tuple[int, int, int, str, float]]:
    """(bar, cell, side, kind, price) of every fill, in order."""
    return [
        (
            int(f["bar"]),
            int(f["cell"]),
            int(f["side"]),
            FILL_KINDS[int(f["kind"])],
            float(f["price"]),
        )
        for f in result.fills
    ]


FIVE_LINES: dict[str, Any] = {"lower": 90.0, "upper": 110.0, "levels": 5, "investment": 1000.0}
NO_FEES: dict[str, Any] = {"maker_fee": 0.0, "taker_fee": 0.0}


# --- hand-computed cases ----------------------------------------------------------------------


def test_a_grid_buys_on_the_way_down_and_sells_one_line_up(kernel_mode: str) -> None:
    """Lines 90, 95, 100, 105, 110 (arithmetic), 1,000 over 4 cells = 250 each, no fees.
    Quantities: 250/90, 250/95, 250/100 = 2.5, 250/105.

    Start at bar 0's open 100: cells 2 (buy line 100) and 3 (105) are at or above the open, so
    they buy at 100 (2.5 and 250/105 units: 250 + 238.095 spent); cells 0 and 1 rest buys at 90
    and 95. Cash 511.905.
    Bar 0 (100, 100, 100, 100): no move.
    Bar 1 (100, 101, 94, 99): the high is nearer the open (1 < 6): path 100 -> 101 -> 94 -> 99.
      101 -> 94 passes 95: cell 1 buys 250/95 units at 95 (cash 261.905). 94 -> 99 reaches no
      resting sell (cell 0's sell at 95 has nothing to sell).
    Bar 2 (99, 106, 98, 105): the low is nearer (1 < 7): 99 -> 98 -> 106 -> 105. 98 -> 106 passes
      100 (cell 1's sell) and 105 (cell 2's sell): cell 1 sells at 100, +250/95*5 = 13.158;
      cell 2 sells at 105, +2.5*5 = 12.5. Cell 3 still holds (its sell is at 110).
    Equity at bar 2's close: cash 261.905 + 263.158 + 262.5 = 787.563, plus cell 3's 250/105
    units at 105 = 250: 1,037.563. Grid profit 25.658; unrealised: cell 3 bought at 100, marked
    at 105: 250/105*5 = 11.905. 25.658 + 11.905 = 37.563 = 1,037.563 - 1,000.
    """
    r = simulate_grid(
        bars([(100, 100, 100, 100), (100, 101, 94, 99), (99, 106, 98, 105)]),
        GridSettings(**FIVE_LINES, **NO_FEES),
    )
    assert list(r.lines) == [90.0, 95.0, 100.0, 105.0, 110.0]
    assert r.qty == pytest.approx([250 / 90, 250 / 95, 2.5, 250 / 105], rel=1e-15)
    assert fills_of(r) == [
        (0, 2, 1, "start", 100.0),
        (0, 3, 1, "start", 100.0),
        (1, 1, 1, "grid", 95.0),
        (2, 1, -1, "grid", 100.0),
        (2, 2, -1, "grid", 105.0),
    ]
    assert r.equity == pytest.approx([1000.0, 250 / 95 * 99 + 2.5 * 99 + 250 / 105 * 99
                                      + 1000 - 250 - 250 * 100 / 105 - 250, 1000 + 37.5626566416],
                                     rel=1e-10)  # fmt: skip
    assert r.grid_profit == pytest.approx(250 / 95 * 5 + 12.5, rel=1e-13)
    assert r.unrealized_pnl == pytest.approx(250 / 105 * 5, rel=1e-13)
    assert r.cell_pnl == pytest.approx([0.0, 250 / 95 * 5, 12.5, 0.0], rel=1e-13)
    assert r.cell_unrealized == pytest.approx([0.0, 0.0, 0.0, 250 / 105 * 5], rel=1e-13)
    assert list(r.cell_round_trips) == [0, 1, 1, 0]
    assert [CELL_STATES[s] for s in r.cell_state] == [
        "buy_resting", "buy_resting", "buy_resting", "sell_resting",
    ]  # fmt: skip
    assert r.grid_profit + r.exit_pnl + r.unrealized_pnl == pytest.approx(
        r.final_equity - 1000.0, rel=1e-12
    )
    assert (r.stopped_at, r.stop_reason) == (-1, "")


def test_maker_fees_are_paid_on_both_fills_of_a_round_trip(kernel_mode: str) -> None:
    """One cell (lines 100 and 110), 1,000 invested, maker fee 0.1 %.
    q = 1000 / (100 * 1.001) = 9.99001 units, so the buy costs 999.001 + 0.999 fee = 1,000.
    Start at 105: the buy line 100 is below, so the buy rests.
    Bar 0 (105, 106, 99, 101): high first (1 < 6): 106 -> 99 passes 100: buy at 100, cash 0.
      Marked at 101: 9.99001 * 101 = 1,008.991.
    Bar 1 (101, 111, 100.5, 108): low first (0.5 < 10): 100.5 -> 111 passes 110: sell at 110,
      gross 1,098.901, fee 1.098901, P&L 1,097.802 - 1,000 = 97.802. Equity 1,097.802.
    """
    q = 1000 / (100 * 1.001)
    r = simulate_grid(
        bars([(105, 106, 99, 101), (101, 111, 100.5, 108)]),
        GridSettings(lower=100, upper=110, levels=2, investment=1000, maker_fee=0.001),
    )
    buy, sell = r.fills
    assert (buy["price"], buy["fee"]) == (100.0, pytest.approx(q * 100 * 0.001, rel=1e-14))
    assert (sell["price"], sell["fee"]) == (110.0, pytest.approx(q * 110 * 0.001, rel=1e-14))
    assert sell["pnl"] == pytest.approx(q * 110 * 0.999 - 1000.0, rel=1e-12)
    assert r.fees_paid == pytest.approx(q * 210 * 0.001, rel=1e-12)
    assert r.equity == pytest.approx([q * 101, q * 110 * 0.999], rel=1e-12)
    assert r.cash == pytest.approx(q * 110 * 0.999, rel=1e-12)


def test_orders_the_gap_between_bars_jumps_over_fill_at_the_open(kernel_mode: str) -> None:
    """Lines 90..110 as before, no fees; start at 100: cells 2 and 3 hold, 0 and 1 rest buys.
    Bar 1 opens at 108 after bar 0's close of 100: the gap jumps over cell 2's sell at 105, which
    fills at the open, 108 (+2.5 * 8 = 20), not at 105. Cell 2 then rests its buy at 100.
    Bar 2 opens at 92 after 108: the gap jumps over the buys at 100 (cell 2) and 95 (cell 1):
    both fill at the open, 92, the higher line first.
    """
    r = simulate_grid(
        bars([(100, 100, 100, 100), (108, 108, 108, 108), (92, 92, 92, 92)]),
        GridSettings(**FIVE_LINES, **NO_FEES),
    )
    assert fills_of(r)[2:] == [
        (1, 2, -1, "grid", 108.0),
        (2, 2, 1, "grid", 92.0),
        (2, 1, 1, "grid", 92.0),
    ]
    assert r.cell_pnl[2] == pytest.approx(20.0, rel=1e-14)


def test_the_intrabar_path_visits_the_nearer_extreme_first(kernel_mode: str) -> None:
    """One cell, lines 100/110, start at 105 (buy rests at 100), no fees.
    Bar (105, 111, 99, 105), high nearer (6 vs 6 is a tie -> the high first): 105 -> 111 (no
    holding to sell) -> 99 (buy at 100) -> 105: one buy, still holding.
    Bar (105, 111, 99.5, 105) with the low nearer (5.5 < 6): 105 -> 99.5 (buy at 100) -> 111
    (sell at 110) -> 105: a whole round trip inside the bar, +10 * q.
    """
    cell = GridSettings(lower=100, upper=110, levels=2, investment=1000, **NO_FEES)
    tie = simulate_grid(bars([(105, 111, 99, 105)]), cell)
    assert fills_of(tie) == [(0, 0, 1, "grid", 100.0)]
    low_first = simulate_grid(bars([(105, 111, 99.5, 105)]), cell)
    assert fills_of(low_first) == [(0, 0, 1, "grid", 100.0), (0, 0, -1, "grid", 110.0)]
    assert low_first.grid_profit == pytest.approx(10 * 10.0, rel=1e-14)  # q = 1000/100


def test_stop_loss_below_the_range_sells_everything_and_ends_the_bot(kernel_mode: str) -> None:
    """Lines 90..110, stop at 85, no maker fee, taker fee 0.2 %. Start at 100: cells 2, 3 hold.
    Bar 1 (99, 99, 80, 82): open = high, so the high is nearer (0 < 19): 99 -> 99 -> 80 -> 82.
    99 -> 80 passes the buys at 95 (cell 1) and 90 (cell 0), then the stop at 85: all four
    cells sell at 85 paying 0.2 %. P&L per cell: q * 85 * 0.998 - q * buy price.
    After that the bot is done: bar 2's rally buys nothing and equity stays at the cash.
    """
    settings = GridSettings(**FIVE_LINES, maker_fee=0.0, taker_fee=0.002, stop_loss=85.0)
    r = simulate_grid(bars([(100, 100, 100, 100), (99, 99, 80, 82), (82, 120, 82, 120)]), settings)
    q = [250 / 90, 250 / 95, 2.5, 250 / 105]
    assert fills_of(r)[2:] == [
        (1, 1, 1, "grid", 95.0),
        (1, 0, 1, "grid", 90.0),
        (1, 0, -1, "stop_loss", 85.0),
        (1, 1, -1, "stop_loss", 85.0),
        (1, 2, -1, "stop_loss", 85.0),
        (1, 3, -1, "stop_loss", 85.0),
    ]
    bought = [90.0, 95.0, 100.0, 100.0]
    expected = [q[c] * 85 * 0.998 - q[c] * bought[c] for c in range(4)]
    assert r.cell_pnl == pytest.approx(expected, rel=1e-12)
    assert r.exit_pnl == pytest.approx(sum(expected), rel=1e-12)
    assert (r.grid_profit, r.unrealized_pnl) == (0.0, 0.0)
    assert (r.stopped_at, r.stop_reason) == (1, "stop_loss")
    assert r.equity[1] == r.equity[2] == pytest.approx(1000 + sum(expected), rel=1e-12)
    assert [CELL_STATES[s] for s in r.cell_state] == ["done"] * 4


def test_take_profit_above_the_range_fills_at_the_open_when_gapped_over(kernel_mode: str) -> None:
    """Lines 90..110, take-profit at 115, no fees. Start at 100: cells 2, 3 hold.
    Bar 1 opens at 120 after a close of 100: the gap passes the sells at 105 (cell 2) and 110
    (cell 3), which fill at the open 120 as grid sells, then the take-profit, with nothing left to
    sell. The bot is done; equity 1,000 + 2.5 * 20 + 250/105 * 20.
    """
    r = simulate_grid(
        bars([(100, 100, 100, 100), (120, 121, 119, 120)]),
        GridSettings(**FIVE_LINES, **NO_FEES, take_profit=115.0),
    )
    assert fills_of(r)[2:] == [(1, 2, -1, "grid", 120.0), (1, 3, -1, "grid", 120.0)]
    assert (r.stopped_at, r.stop_reason) == (1, "take_profit")
    assert r.final_equity == pytest.approx(1000 + 2.5 * 20 + 250 / 105 * 20, rel=1e-12)
    # Inside a bar the take-profit fills at its price, after the leg's grid sells.
    r2 = simulate_grid(
        bars([(100, 100, 100, 100), (100, 116, 100, 116)]),
        GridSettings(**FIVE_LINES, **NO_FEES, take_profit=115.0),
    )
    assert fills_of(r2)[2:] == [(1, 2, -1, "grid", 105.0), (1, 3, -1, "grid", 110.0)]
    assert r2.stop_reason == "take_profit"
    # Held quantity at the take-profit sells there: start below the range, all cells hold.
    r3 = simulate_grid(
        bars([(80, 80, 80, 80), (80, 116, 80, 116)]),
        GridSettings(**FIVE_LINES, **NO_FEES, take_profit=115.0, stop_loss=70.0),
    )
    kinds = [k for (_, _, _, k, _) in fills_of(r3)]
    assert kinds == ["start"] * 4 + ["grid"] * 4
    assert r3.exit_pnl == 0.0


def test_geometric_lines_have_equal_ratios_and_round_to_the_tick() -> None:
    lines = grid_levels(
        GridSettings(lower=100, upper=400, levels=3, investment=1, spacing="geometric")
    )
    assert list(lines) == [100.0, 200.0, 400.0]
    ticked = grid_levels(
        GridSettings(lower=100, upper=200, levels=4, investment=1, spacing="geometric", tick=0.5)
    )
    # 100 * 2^(1/3) = 125.99, 100 * 2^(2/3) = 158.74, to the half: 126.0, 158.5
    assert list(ticked) == [100.0, 126.0, 158.5, 200.0]
    arith = grid_levels(GridSettings(lower=1, upper=2, levels=4, investment=1, tick=0.01))
    assert arith == pytest.approx([1.0, 1.33, 1.67, 2.0], abs=1e-12)


# --- validation -------------------------------------------------------------------------------


def test_a_tick_too_coarse_for_the_levels_names_the_maximum() -> None:
    # 100..101 at a tick of 0.1 holds 11 distinct lines (100.0, 100.1, ..., 101.0).
    settings = GridSettings(lower=100, upper=101, levels=20, investment=1000, tick=0.1)
    assert max_levels_for_tick(settings) == 11
    with pytest.raises(
        ConfigError, match=r"^levels: a tick of 0.1 cannot separate 20 .* at most 11 fit$"
    ):
        grid_levels(settings)
    assert (
        len(grid_levels(GridSettings(lower=100, upper=101, levels=11, investment=1000, tick=0.1)))
        == 11
    )


def test_too_many_levels_for_the_investment_names_the_maximum() -> None:
    # 100 with a 0.1 % fee over k cells is 100 / k / 1.001 per order; at least 10 means k <= 9.
    settings = GridSettings(lower=100, upper=200, levels=20, investment=100, min_notional=10)
    assert max_levels_for_investment(settings) == 10
    with pytest.raises(ConfigError) as err:
        grid_levels(settings)
    assert str(err.value) == (
        "levels: 100 over 19 cells is 5.2579 per order, below the minimum notional of 10; "
        "at most 10 levels for this investment"
    )
    grid_levels(GridSettings(lower=100, upper=200, levels=10, investment=100, min_notional=10))
    tiny = GridSettings(lower=100, upper=200, levels=2, investment=5, min_notional=10)
    with pytest.raises(ConfigError, match="does not cover even one cell"):
        grid_levels(tiny)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lower": 0.0}, "lower must be above 0"),
        ({"upper": 80.0}, "upper (80) must be above lower (90)"),
        ({"levels": 1}, "levels must be at least 2"),
        ({"levels": 2.5}, "levels must be a whole number"),
        ({"levels": 10_001}, "levels must be at most 10,000"),
        ({"investment": 0.0}, "investment must be above 0"),
        ({"investment": math.inf}, "investment must be a finite number"),
        ({"spacing": "log"}, "spacing must be 'arithmetic' or 'geometric'"),
        ({"maker_fee": -0.001}, "maker_fee must be at least 0"),
        ({"tick": -1.0}, "tick must be 0 (none) or positive"),
        ({"stop_loss": 95.0}, "stop_loss must be 0 (off) or a price between 0 and lower (90)"),
        ({"take_profit": 105.0}, "take_profit must be 0 (off) or a price above upper (110)"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_setting(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        GridSettings(**{**FIVE_LINES, **changes})
    assert str(err.value).startswith(message)


def test_a_start_already_past_the_stop_or_target_is_refused() -> None:
    with pytest.raises(ConfigError, match="first open 80 is already at or below the stop 85"):
        simulate_grid(bars([(80, 80, 80, 80)]), GridSettings(**FIVE_LINES, stop_loss=85.0))
    with pytest.raises(ConfigError, match="first open 120 is already at or above the target"):
        simulate_grid(bars([(120, 120, 120, 120)]), GridSettings(**FIVE_LINES, take_profit=115.0))


# --- against the independent loop -------------------------------------------------------------


def random_bars(n: int, seed: int) -> list[Row]:
    """A mean-reverting walk around 100 with gaps between bars and wicks, so every rule gets
    exercised."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)  # log price, pulled back towards 100 so the walk keeps crossing the grid
    shocks = rng.normal(0.0, 0.012, n)
    for i in range(1, n):
        x[i] = 0.95 * x[i - 1] + shocks[i]
    close = 100.0 * np.exp(x)
    gap = np.where(rng.random(n) < 0.3, np.exp(rng.normal(0.0, 0.004, n)), 1.0)
    open_ = np.r_[100.0, close[:-1]] * gap
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    return [
        (float(o), float(h), float(lo), float(c))
        for o, h, lo, c in zip(open_, high, low, close, strict=True)
    ]


FEES: dict[str, Any] = {"maker_fee": 0.0002, "taker_fee": 0.0007}
CASES: list[dict[str, Any]] = [
    {"lower": 85.0, "upper": 115.0, "levels": 7, "investment": 5000.0},
    {"lower": 80.0, "upper": 125.0, "levels": 25, "investment": 1e4, "spacing": "geometric",
     "tick": 0.01},
    {"lower": 95.0, "upper": 105.0, "levels": 3, "investment": 100.0, **NO_FEES},
    {"lower": 90.0, "upper": 110.0, "levels": 11, "investment": 2000.0, "stop_loss": 86.0,
     "take_profit": 118.0},
    {"lower": 60.0, "upper": 160.0, "levels": 40, "investment": 1e6, "spacing": "geometric",
     **FEES, "stop_loss": 50.0},
    # Close stops: every seed ends on a stop-loss or a take-profit.
    {"lower": 97.0, "upper": 103.0, "levels": 6, "investment": 1000.0, "stop_loss": 94.0,
     "take_profit": 106.0},
]  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_kernel_agrees_with_the_plain_python_loop_on_random_series(case: int, seed: int) -> None:
    settings = GridSettings(**CASES[case])
    rows = random_bars(400, seed)
    got = simulate_grid(bars(rows), settings)
    ref = reference_grid(
        rows, list(got.lines), settings.investment, maker=settings.maker_fee,
        taker=settings.taker_fee, stop=settings.stop_loss, take=settings.take_profit,
    )  # fmt: skip
    assert fills_of(got) == [(f.bar, f.cell, f.side, f.kind, f.price) for f in ref.fills]
    assert len(got.fills) >= 8
    np.testing.assert_allclose(got.fills["qty"], [f.qty for f in ref.fills], rtol=1e-14)
    np.testing.assert_allclose(got.fills["fee"], [f.fee for f in ref.fills], rtol=1e-13)
    np.testing.assert_allclose(got.fills["pnl"], [f.pnl for f in ref.fills], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.equity, ref.equity, rtol=1e-11)
    np.testing.assert_allclose(got.cell_pnl, ref.cell_pnl, rtol=1e-9, atol=1e-9)
    assert got.grid_profit == pytest.approx(ref.grid_profit, rel=1e-10, abs=1e-9)
    assert got.exit_pnl == pytest.approx(ref.exit_pnl, rel=1e-10, abs=1e-9)
    assert got.unrealized_pnl == pytest.approx(ref.unrealized, rel=1e-10, abs=1e-9)
    assert got.stopped_at == ref.stopped_at
    if case == len(CASES) - 1:
        assert got.stop_reason in ("stop_loss", "take_profit")
        assert got.equity[got.stopped_at :].min() == got.equity[-1]  # flat once done
        assert got.equity[got.stopped_at :].max() == got.equity[-1]
    # The three parts of the P&L add up to the change in equity.
    total = got.grid_profit + got.exit_pnl + got.unrealized_pnl
    assert total == pytest.approx(got.final_equity - settings.investment, rel=1e-9, abs=1e-7)


def test_python_kernel_agrees_with_the_compiled_one(kernel_mode: str) -> None:
    settings = GridSettings(**CASES[3])
    rows = random_bars(150, 11)
    got = simulate_grid(bars(rows), settings)
    ref = reference_grid(
        rows, list(got.lines), settings.investment, maker=settings.maker_fee,
        taker=settings.taker_fee, stop=settings.stop_loss, take=settings.take_profit,
    )  # fmt: skip
    assert fills_of(got) == [(f.bar, f.cell, f.side, f.kind, f.price) for f in ref.fills]
    np.testing.assert_allclose(got.equity, ref.equity, rtol=1e-11)


def test_no_candles_leave_the_investment_untouched() -> None:
    r = simulate_grid(bars([(100, 100, 100, 100)]).slice(0, 0), GridSettings(**FIVE_LINES))
    assert (len(r.fills), r.final_equity, r.round_trips) == (0, 1000.0, 0)


# --- the optimizer's entry point --------------------------------------------------------------


def test_grid_metrics_takes_a_settings_dict_and_returns_every_metric() -> None:
    c = bars(random_bars(600, 3))
    settings = {**CASES[0], "levels": 9.0}  # an optimizer may hand whole numbers as floats
    out = grid_metrics(c, settings)
    assert list(out) == [m.key for m in METRICS] + list(GRID_ONLY_METRICS)
    assert all(isinstance(v, float) for v in out.values())
    r = simulate_grid(c, GridSettings(**{**CASES[0], "levels": 9}))
    assert out["final_equity"] == r.final_equity
    assert out["total_return"] == pytest.approx(r.final_equity / 5000.0 - 1.0, rel=1e-12)
    assert out["trades"] == float(np.sum(r.fills["side"] < 0))
    assert out["round_trips"] == float(r.round_trips)
    assert out["grid_profit"] == r.grid_profit
    assert out["fees_paid"] == pytest.approx(r.fees_paid, rel=1e-12)
    numpy_row = {**CASES[0], "levels": np.int64(9), "investment": np.float64(5000.0)}
    assert grid_metrics(c, numpy_row) == out
    # Searching the level count: different settings give different, consistent results.
    by_levels = {n: grid_metrics(c, {**CASES[0], "levels": n}) for n in (3, 5, 9, 17)}
    assert len({m["final_equity"] for m in by_levels.values()}) == 4
    assert by_levels[17]["round_trips"] >= by_levels[3]["round_trips"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({**FIVE_LINES, "grids": 4}, "unknown grid setting 'grids'"),
        ({"lower": 90.0, "upper": 110.0, "levels": 5}, "investment is required"),
        ({**FIVE_LINES, "levels": 5.5}, "levels must be a whole number"),
        ({**FIVE_LINES, "min_notional": 300.0}, "at most 4 levels for this investment"),
    ],
)
def test_grid_metrics_refuses_bad_settings_dicts(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        grid_metrics(bars(random_bars(50, 1)), settings)


# --- trailing the range up ----------------------------------------------------------------------


def test_a_trailing_grid_shifts_up_one_line_when_the_price_passes_its_top(
    kernel_mode: str,
) -> None:
    """Lines 90, 95, 100, 105, 110, trailing, no fees, 250 a cell. Start at 100: cells 2 and 3
    buy at 100 (2.5 and 250/105 units); cells 0 and 1 rest buys at 90 and 95.
    Bar 1 (100, 116, 100, 116): the low is nearer (0 < 16): 100 -> 100 -> 116 -> 116. The rise
      fills cell 2's sell at 105 (+12.5) and cell 3's at 110 (+250/105 * 10). 116 is past the
      line one spacing above the top (115): the grid shifts once: cell 0 (its buy at 90) leaves,
      cell 4 joins buying at 110 and selling at 115. The next line, 120, is not reached.
    Bar 2 (116, 116, 108, 109): the high is nearer (0): 116 -> 108 buys cell 4 at 110
      (250/110 units), nothing more. The range is now 95..115, and cell 4 is marked at 109.
    """
    r = simulate_grid(
        bars([(100, 100, 100, 100), (100, 116, 100, 116), (116, 116, 108, 109)]),
        GridSettings(**FIVE_LINES, **NO_FEES, trailing=True),
    )
    assert list(r.lines) == [90.0, 95.0, 100.0, 105.0, 110.0, 115.0]
    assert fills_of(r) == [
        (0, 2, 1, "start", 100.0),
        (0, 3, 1, "start", 100.0),
        (1, 2, -1, "grid", 105.0),
        (1, 3, -1, "grid", 110.0),
        (2, 4, 1, "grid", 110.0),
    ]
    assert (r.shifts, list(r.shift_bars), r.lowest_cell) == (1, [1], 1)
    assert r.final_range == (95.0, 115.0)
    assert [CELL_STATES[s] for s in r.cell_state] == [
        "done", "buy_resting", "buy_resting", "buy_resting", "sell_resting",
    ]  # fmt: skip
    assert r.qty[4] == pytest.approx(250 / 110, rel=1e-15)  # the cell's share, bought at 110
    assert r.grid_profit == pytest.approx(12.5 + 250 / 105 * 10, rel=1e-13)
    assert r.unrealized_pnl == pytest.approx(-250 / 110, rel=1e-12)
    assert r.final_equity == pytest.approx(1000 + 12.5 + 250 / 105 * 10 - 250 / 110, rel=1e-12)
    # The same candles without trailing: no shift, cell 0 still rests its buy at 90.
    fixed = simulate_grid(
        bars([(100, 100, 100, 100), (100, 116, 100, 116), (116, 116, 108, 109)]),
        GridSettings(**FIVE_LINES, **NO_FEES),
    )
    assert (fixed.shifts, len(fixed.lines), fixed.final_range) == (0, 5, (90.0, 110.0))


def test_a_gap_over_several_lines_shifts_once_per_line(kernel_mode: str) -> None:
    """Lines 90..110 (5 each), trailing. Start at 100 (cells 2, 3 hold). Bar 1 opens at 121:
    the gap sells cells 2 and 3 at the open, then passes 115 and 120 (not 125): two shifts,
    cells 0 and 1 leave, cells 4 (110/115) and 5 (115/120) join with resting buys.
    Bar 2 falls to 112: cell 5 buys at 115 (cell 4's line, 110, is not reached)."""
    r = simulate_grid(
        bars([(100, 100, 100, 100), (121, 121, 121, 121), (121, 121, 112, 112)]),
        GridSettings(**FIVE_LINES, **NO_FEES, trailing=True),
    )
    assert fills_of(r)[2:] == [
        (1, 2, -1, "grid", 121.0),
        (1, 3, -1, "grid", 121.0),
        (2, 5, 1, "grid", 115.0),
    ]
    assert (r.shifts, list(r.shift_bars), r.final_range) == (2, [1, 1], (100.0, 120.0))


def test_a_geometric_trailing_grid_continues_its_ratio() -> None:
    """Lines 100, 200, 400 (ratio 2), 500 invested, trailing, no fees. Start at 150: cell 1
    (200/400) buys 1.25 at 150; cell 0 rests at 100. Bar 0 rises to 900: cell 1 sells at 400
    (+312.5), and 800 (400 x 2) is passed: one shift, the range is 200..800; 1,600 is not."""
    r = simulate_grid(
        bars([(150, 900, 150, 850)]),
        GridSettings(
            lower=100,
            upper=400,
            levels=3,
            investment=500,
            spacing="geometric",
            trailing=True,
            **NO_FEES,
        ),
    )
    assert list(r.lines) == [100.0, 200.0, 400.0, 800.0]
    assert r.grid_profit == pytest.approx(312.5, rel=1e-14)
    assert (r.shifts, r.final_range) == (1, (200.0, 800.0))
    assert gb.grid_line(r.settings, 3) == 800.0
    assert gb.grid_line(r.settings, 4) == 1600.0


TRAILING_CASES = [
    {"lower": 92.0, "upper": 100.0, "levels": 5, "investment": 1000.0, "trailing": True},
    {"lower": 90.0, "upper": 101.0, "levels": 12, "investment": 3000.0, "spacing": "geometric",
     "tick": 0.01, **FEES, "trailing": True, "stop_loss": 85.0},
    {"lower": 95.0, "upper": 99.0, "levels": 5, "investment": 500.0, "trailing": True,
     "take_profit": 109.0},
]  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("case", range(len(TRAILING_CASES)))
def test_trailing_kernel_agrees_with_the_plain_python_loop(case: int, seed: int) -> None:
    settings = GridSettings(**TRAILING_CASES[case])
    rows = random_bars(400, seed)
    got = simulate_grid(bars(rows), settings)
    every = gb.trail_lines(settings, max(h for _, h, _, _ in rows))
    ref = reference_grid(
        rows, list(every[: settings.levels]), settings.investment, maker=settings.maker_fee,
        taker=settings.taker_fee, stop=settings.stop_loss, take=settings.take_profit,
        above=list(every[settings.levels :]),
    )  # fmt: skip
    assert fills_of(got) == [(f.bar, f.cell, f.side, f.kind, f.price) for f in ref.fills]
    assert list(got.shift_bars) == ref.shifts
    assert got.lowest_cell == ref.lowest
    np.testing.assert_allclose(got.equity, ref.equity, rtol=1e-11)
    assert got.grid_profit == pytest.approx(ref.grid_profit, rel=1e-10, abs=1e-9)
    assert got.unrealized_pnl == pytest.approx(ref.unrealized, rel=1e-10, abs=1e-9)
    total = got.grid_profit + got.exit_pnl + got.unrealized_pnl
    assert total == pytest.approx(got.final_equity - settings.investment, rel=1e-9, abs=1e-7)


def test_trailing_cases_do_trail() -> None:
    """The random series climb past the first case's range, so its grid shifts."""
    shifts = [
        simulate_grid(bars(random_bars(400, seed)), GridSettings(**TRAILING_CASES[0])).shifts
        for seed in range(5)
    ]
    assert sum(shifts) >= 3, shifts


def test_trailing_setting_from_an_optimizer_row() -> None:
    c = bars(random_bars(200, 2))
    on = grid_metrics(c, {**TRAILING_CASES[0], "trailing": 1.0})
    assert on == grid_metrics(c, {**TRAILING_CASES[0], "trailing": np.bool_(True)})
    with pytest.raises(ConfigError, match="trailing must be true or false"):
        GridSettings(**{**FIVE_LINES, "trailing": "yes"})


# --- the stop checked inside the bar (the live bot's entry point) -------------------------------


def test_bar_exit_follows_the_intrabar_path() -> None:
    """Stop 85, target 115. A bar (100, 116, 84, 90) whose high is nearer (16 vs 16: a tie, the
    high first) reaches the target first; with the low nearer (100, 117, 84, 90: 16 < 17) the
    stop fires first. A gap from 100 to an open of 80 fills the stop at the open."""
    assert gb.bar_exit(100, 100, 116, 84, 90, stop=85, take=115) == ("take_profit", 115.0)
    assert gb.bar_exit(100, 100, 117, 84, 90, stop=85, take=115) == ("stop_loss", 85.0)
    assert gb.bar_exit(100, 80, 82, 79, 81, stop=85, take=115) == ("stop_loss", 80.0)
    assert gb.bar_exit(100, 100, 110, 90, 100, stop=85, take=115) is None
    assert gb.bar_exit(100, 100, 110, 80, 100, stop=0, take=0) is None


@pytest.mark.parametrize("seed", range(6))
def test_bar_exit_fires_on_the_simulations_stop_bar_at_its_price(seed: int) -> None:
    settings = GridSettings(**CASES[5])
    rows = random_bars(400, seed)
    got = simulate_grid(bars(rows), settings)
    assert got.stopped_at >= 0
    prev = rows[0][0]
    first: tuple[int, tuple[str, float]] | None = None
    for i, (o, h, lo, c) in enumerate(rows):
        hit = gb.bar_exit(prev, o, h, lo, c, stop=settings.stop_loss, take=settings.take_profit)
        if hit is not None:
            first = (i, hit)
            break
        prev = c
    assert first is not None
    bar, hit = first
    assert bar == got.stopped_at
    exits = [f for f in got.fills if FILL_KINDS[int(f["kind"])] in ("stop_loss", "take_profit")]
    assert hit[0] == got.stop_reason
    if exits:  # nothing held: no exit fill
        assert {float(f["price"]) for f in exits} == {hit[1]}
