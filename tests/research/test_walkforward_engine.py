"""Specification of the walk-forward part of backtester.engine.optimize: window maths, selection
on training data only, test runs that see the past but never the future, stitching, the
efficiency and parameter stability."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from backtester.engine import optimize as opt
from backtester.engine.candles import Candles
from backtester.engine.errors import EngineError
from backtester.engine.language import PRESETS, Param, StrategySpec, compile_strategy
from backtester.engine.run import run_backtest
from backtester.engine.simulate import SimConfig

HOUR = 3_600_000
DAY = 86_400_000
START = 1_700_000_000_000
CROSS = PRESETS["sma_cross"]
CONFIG = SimConfig(taker_fee=0.001, slippage_bps=1.0)


def from_close(close: np.ndarray, *, step_ms: int = HOUR, timeframe: str = "1h") -> Candles:
    n = close.size
    open_ = np.r_[close[0], close[:-1]]
    return Candles(
        START + step_ms * np.arange(n, dtype=np.int64),
        open_,
        np.maximum(open_, close) * 1.001,
        np.minimum(open_, close) * 0.999,
        close,
        np.ones(n),
        timeframe=timeframe,
    )


def in_sample(r: opt.WindowResult) -> dict[str, Any]:
    """The window winner's training row (set whenever a combination qualified)."""
    assert r.in_sample is not None
    return r.in_sample


def best(rows: list[dict[str, Any]]) -> Mapping[str, Any]:
    row = opt.best_row(rows)
    assert row is not None
    return row


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def walk(n: int, seed: int = 5) -> Candles:
    rng = np.random.default_rng(seed)
    return from_close(100 * np.exp(np.cumsum(rng.normal(0.0001, 0.01, n))))


# --- windows --------------------------------------------------------------------------------


def test_rolling_windows_in_bars_keep_the_training_length() -> None:
    ts = START + HOUR * np.arange(100, dtype=np.int64)
    windows = opt.walk_forward_windows(ts, train=40, test=20)
    assert [(w.train_start, w.train_end, w.test_start, w.test_end) for w in windows] == [
        (0, 40, 40, 60),
        (20, 60, 60, 80),
        (40, 80, 80, 100),
    ]
    assert [w.index for w in windows] == [0, 1, 2]
    assert all(w.train_bars == 40 and w.test_bars == 20 for w in windows)


def test_anchored_windows_train_from_the_first_bar() -> None:
    ts = START + HOUR * np.arange(100, dtype=np.int64)
    windows = opt.walk_forward_windows(ts, train=40, test=25, anchored=True)
    assert [(w.train_start, w.train_end, w.test_end) for w in windows] == [(0, 40, 65), (0, 65, 90)]


def test_a_step_longer_than_the_test_skips_bars_and_only_whole_test_windows_are_made() -> None:
    ts = START + HOUR * np.arange(100, dtype=np.int64)
    windows = opt.walk_forward_windows(ts, train=30, test=10, step=25)
    assert [(w.train_start, w.test_start, w.test_end) for w in windows] == [
        (0, 30, 40),
        (25, 55, 65),
        (50, 80, 90),
    ]


def test_windows_in_days_follow_the_calendar_across_gaps() -> None:
    # Hourly bars for 20 days with day 7 missing entirely.
    hours = np.arange(20 * 24, dtype=np.int64)
    hours = hours[(hours < 7 * 24) | (hours >= 8 * 24)]
    ts = START - START % DAY + HOUR * hours
    windows = opt.walk_forward_windows(ts, train=5, test=5, unit="days")
    bounds = [(ts[w.train_start], ts[w.test_start], ts[w.test_end - 1]) for w in windows]
    day0 = ts[0]
    assert [(int(a - day0) // DAY, int(b - day0) // DAY) for a, b, _ in bounds] == [
        (0, 5),
        (5, 10),
        (10, 15),
    ]
    # The first test window (days 5-9) lost day 7's 24 bars; nothing is invented.
    assert windows[0].test_bars == 4 * 24
    assert windows[1].test_bars == 5 * 24
    assert all(ts[w.test_end - 1] - ts[w.test_start] < 5 * DAY for w in windows)


def test_a_day_window_must_lie_wholly_inside_the_data() -> None:
    ts = START + HOUR * np.arange(10 * 24, dtype=np.int64)  # exactly 10 days
    assert len(opt.walk_forward_windows(ts, train=5, test=5, unit="days")) == 1
    # Without the last hour the tenth day is not wholly covered: no window.
    with pytest.raises(EngineError, match="too short"):
        opt.walk_forward_windows(ts[:-1], train=5, test=5, unit="days")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"train": 0, "test": 5}, "training length"),
        ({"train": 5, "test": 2.5}, "test length"),
        ({"train": 5, "test": 5, "step": True}, "step"),
        ({"train": 5, "test": 5, "unit": "weeks"}, "bars or days"),
        ({"train": 95, "test": 10}, "too short"),
        ({"train": 5, "test": 5, "unit": "days"}, "too short"),
    ],
)
def test_bad_window_settings_are_refused(kwargs, fragment) -> None:
    ts = START + HOUR * np.arange(100, dtype=np.int64)
    with pytest.raises(EngineError, match=fragment):
        opt.walk_forward_windows(ts, **kwargs)


def test_too_many_windows_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(opt, "MAX_WINDOWS", 5)
    ts = START + HOUR * np.arange(100, dtype=np.int64)
    with pytest.raises(EngineError, match="larger step"):
        opt.walk_forward_windows(ts, train=10, test=5)


def test_empty_data_has_no_window() -> None:
    with pytest.raises(EngineError, match="too short"):
        opt.walk_forward_windows(np.zeros(0, dtype=np.int64), train=1, test=1, unit="days")


# --- selection uses training data only -------------------------------------------------------

SIDE = StrategySpec(
    "side",
    entry_long="close > 0 and side > 0",
    exit_long="close > 0 and side < 0",
    entry_short="close > 0 and side < 0",
    exit_short="close > 0 and side > 0",
    params=(Param("side", "int", 1, -1, 1, 2, "1 long, -1 short"),),
)


def _rise_then_falls() -> Candles:
    """300 bars rising 50 %, then four 100-bar stretches each falling about 5 %: every
    (anchored) training span is up overall, every test span is down."""
    up = np.linspace(0.0, math.log(1.5), 300)
    down = math.log(1.5) + np.cumsum(np.full(400, math.log(0.95) / 100))
    return from_close(100 * np.exp(np.r_[up, down]))


def test_walk_forward_picks_the_training_best_even_when_the_test_window_prefers_another() -> None:
    candles = _rise_then_falls()
    config = SimConfig(taker_fee=0.0, maker_fee=0.0, allow_short=True)
    windows = opt.walk_forward_windows(candles.timestamp, train=300, test=100, anchored=True)
    assert len(windows) == 4
    combos = [{"side": 1}, {"side": -1}]

    # The construction: on every window, long wins in training and short wins in the test.
    for w in windows:
        train = candles.slice(w.train_start, w.train_end)
        test = candles.slice(w.test_start, w.test_end)
        is_rows = opt.evaluate_combinations(train, SIDE, combos, config, objective="total_return")
        oos_rows = opt.evaluate_combinations(test, SIDE, combos, config, objective="total_return")
        assert best(is_rows)["params"] == {"side": 1}
        assert best(oos_rows)["params"] == {"side": -1}

    result = opt.walk_forward(candles, SIDE, combos, config, windows, objective="total_return")
    assert [r.params for r in result.windows] == [{"side": 1}] * 4
    # Chosen on the past, it loses in every test window: that is the honest answer.
    assert all(r.out_of_sample["total_return"] < 0 for r in result.windows)
    assert result.metrics["total_return"] < 0
    assert all(in_sample(r)["total_return"] > 0 for r in result.windows)


def test_each_windows_winner_is_the_best_single_backtest_on_its_training_span() -> None:
    candles = walk(1500, seed=9)
    combos = [{"fast": f, "slow": s} for f in (5, 10, 20) for s in (30, 60, 120)]
    windows = opt.walk_forward_windows(candles.timestamp, train=500, test=250)
    result = opt.walk_forward(candles, CROSS, combos, CONFIG, windows, objective="sharpe")
    for r in result.windows:
        train = candles.slice(r.window.train_start, r.window.train_end)
        scored = []
        for i, combo in enumerate(combos):
            sharpe = run_backtest(train, CROSS, combo, CONFIG).metrics["sharpe"]
            scored.append((-sharpe if math.isfinite(sharpe) else math.inf, i))
        best = combos[min(scored)[1]]
        assert r.params == best
        assert in_sample(r)["sharpe"] == pytest.approx(-min(scored)[0], rel=1e-12)
        assert r.evaluated == len(combos)


# --- the test run sees the past, never the future --------------------------------------------


def _cross_candles() -> Candles:
    # A slow wave: SMA crosses happen every few dozen bars, including right after bar 400.
    t = np.arange(800)
    return from_close(100 + 10 * np.sin(t / 23.0) + 0.01 * t)


def test_test_window_signals_are_warmed_up_on_the_bars_before_the_window() -> None:
    candles = _cross_candles()
    params = {"fast": 10, "slow": 50}
    window = opt.Window(0, 200, 400, 400, 600)
    signals = opt.window_signals(candles, CROSS, params, window)
    assert len(signals) == 200
    # The same signals as a strategy that had run over all the history up to the window ...
    full = compile_strategy(CROSS, candles.slice(0, 600), params)
    for name in ("entry_long", "exit_long"):
        np.testing.assert_array_equal(getattr(signals, name), getattr(full, name)[400:600])
    # ... which here differs from starting cold at the window: the 50-bar SMA would be
    # undefined for the window's first 49 bars and the crosses there would be missed.
    cold = compile_strategy(CROSS, candles.slice(400, 600), params)
    warm_crosses = np.flatnonzero(signals.entry_long | signals.exit_long)
    assert warm_crosses.size > 0
    assert warm_crosses[0] < 49
    assert not (cold.entry_long[:49] | cold.exit_long[:49]).any()


def test_nothing_after_the_test_window_changes_its_signals_or_its_run() -> None:
    candles = _cross_candles()
    window = opt.Window(0, 200, 400, 400, 600)
    params = {"fast": 10, "slow": 50}
    # Replace every bar after the window by a wild, different market.
    rng = np.random.default_rng(1)
    close = candles.close.copy()
    close[600:] = 50 + 200 * rng.random(200)
    future = from_close(close)
    base = opt.run_window_test(candles, CROSS, params, window, CONFIG, start_equity=5000.0)
    other = opt.run_window_test(future, CROSS, params, window, CONFIG, start_equity=5000.0)
    for name in ("entry_long", "exit_long", "entry_short", "exit_short"):
        np.testing.assert_array_equal(getattr(base.signals, name), getattr(other.signals, name))
    np.testing.assert_array_equal(base.equity, other.equity)
    assert base.metrics == pytest.approx(other.metrics, nan_ok=True)
    # While a change inside the warm-up span does reach the window's first signals.
    close = candles.close.copy()
    close[380:400] *= 1.2
    past = opt.run_window_test(
        from_close(close), CROSS, params, window, CONFIG, start_equity=5000.0
    )
    assert not np.array_equal(base.signals.entry_long | base.signals.exit_long,
                              past.signals.entry_long | past.signals.exit_long)  # fmt: skip


def test_a_walk_forward_is_unchanged_by_data_after_each_window() -> None:
    candles = walk(1200, seed=2)
    combos = [{"fast": f, "slow": s} for f in (5, 10) for s in (30, 60)]
    windows = opt.walk_forward_windows(candles.timestamp, train=400, test=200)
    whole = opt.walk_forward(candles, CROSS, combos, CONFIG, windows)
    for k, w in enumerate(windows):
        cut = candles.slice(0, w.test_end)
        partial = opt.walk_forward(cut, CROSS, combos, CONFIG, windows[: k + 1])
        for a, b in zip(partial.windows, whole.windows[: k + 1], strict=True):
            assert a.params == b.params
            assert a.end_equity == b.end_equity
        np.testing.assert_array_equal(partial.equity, whole.equity[: partial.equity.size])


# --- stitching, efficiency, stability ---------------------------------------------------------


def test_test_runs_chain_their_equity_and_stitch_into_one_curve() -> None:
    candles = walk(1600, seed=4)
    combos = [{"fast": f, "slow": s} for f in (5, 10, 20) for s in (40, 80)]
    windows = opt.walk_forward_windows(candles.timestamp, train=600, test=250)
    seen: list[Any] = []
    result = opt.walk_forward(
        candles, CROSS, combos, CONFIG, windows, objective="calmar", on_window=seen.append
    )
    assert [r.window.index for r in seen] == [0, 1, 2, 3]
    assert result.windows[0].start_equity == CONFIG.initial_cash
    pieces = []
    for prev, cur in zip(result.windows, result.windows[1:], strict=False):
        assert cur.start_equity == prev.end_equity
    for r in result.windows:
        assert r.params is not None
        run = opt.run_window_test(
            candles, CROSS, r.params, r.window, CONFIG, start_equity=r.start_equity
        )
        pieces.append(run.equity)
        assert run.equity[-1] == r.end_equity
        assert r.out_of_sample["total_return"] == pytest.approx(r.end_equity / r.start_equity - 1)
    np.testing.assert_array_equal(result.equity, np.concatenate(pieces))
    assert result.timestamp.tolist() == [
        int(t) for w in windows for t in candles.timestamp[w.test_start : w.test_end]
    ]
    assert result.metrics["total_return"] == pytest.approx(
        result.windows[-1].end_equity / CONFIG.initial_cash - 1, rel=1e-12
    )
    # Trades keep bar indices of the whole data set, inside their test windows.
    for trade in result.trades:
        assert any(w.test_start <= trade["entry_index"] < w.test_end for w in windows)


def test_a_window_where_nothing_qualifies_sits_in_cash() -> None:
    candles = walk(900, seed=6)
    windows = opt.walk_forward_windows(candles.timestamp, train=300, test=300)
    result = opt.walk_forward(
        candles, CROSS, [{"fast": 50, "slow": 200}], CONFIG, windows, min_trades=10_000
    )
    for r in result.windows:
        assert r.params is None
        assert r.in_sample is None
        assert r.qualified == 0
        assert r.evaluated == 1
        assert r.end_equity == r.start_equity == CONFIG.initial_cash
        assert r.out_of_sample["trades"] == 0
        assert math.isnan(r.efficiency)
    assert np.all(result.equity == CONFIG.initial_cash)
    assert math.isnan(result.efficiency)
    assert result.stability["fast"]["values"] == [None, None]
    assert result.stability["fast"]["mode"] is None


def test_walk_forward_efficiency_is_oos_over_is_annualized_return() -> None:
    assert opt.walk_forward_efficiency(0.10, 0.40) == pytest.approx(0.25)
    assert opt.walk_forward_efficiency(-0.10, 0.40) == pytest.approx(-0.25)
    assert math.isnan(opt.walk_forward_efficiency(0.10, -0.40))
    assert math.isnan(opt.walk_forward_efficiency(0.10, 0.0))
    assert math.isnan(opt.walk_forward_efficiency(math.nan, 0.2))
    candles = walk(1500, seed=8)
    combos = [{"fast": f, "slow": s} for f in (5, 10) for s in (40, 80)]
    windows = opt.walk_forward_windows(candles.timestamp, train=500, test=250)
    result = opt.walk_forward(candles, CROSS, combos, CONFIG, windows)
    cagrs = [in_sample(r)["cagr"] for r in result.windows]
    assert result.in_sample_cagr == pytest.approx(float(np.mean(cagrs)))
    assert same(
        result.efficiency,
        opt.walk_forward_efficiency(result.metrics["cagr"], result.in_sample_cagr),
    )
    for r in result.windows:
        expected = opt.walk_forward_efficiency(r.out_of_sample["cagr"], in_sample(r)["cagr"])
        assert same(r.efficiency, expected)
        if in_sample(r)["cagr"] > 0:
            assert r.efficiency == r.out_of_sample["cagr"] / in_sample(r)["cagr"]


def test_parameter_stability_counts_and_spreads_the_chosen_values() -> None:
    chosen = [{"a": 10, "b": True}, {"a": 20, "b": True}, None, {"a": 10, "b": False}]
    out = opt.parameter_stability(chosen, ["a", "b"])
    assert out["a"]["values"] == [10, 20, None, 10]
    assert out["a"]["distinct"] == 2
    assert out["a"]["mode"] == 10
    assert out["a"]["mode_share"] == pytest.approx(2 / 3)
    assert out["a"]["mean"] == pytest.approx(40 / 3)
    assert out["a"]["std"] == pytest.approx(float(np.std([10, 20, 10])))
    assert out["a"]["cv"] == pytest.approx(out["a"]["std"] / out["a"]["mean"])
    assert out["b"]["mode"] is True
    assert "mean" not in out["b"]
    zero = opt.parameter_stability([{"a": 0}, {"a": 0}], ["a"])
    assert zero["a"]["cv"] != zero["a"]["cv"]  # NaN: no spread relative to a zero mean


def test_bad_walk_forward_inputs_are_refused() -> None:
    candles = walk(300)
    windows = opt.walk_forward_windows(candles.timestamp, train=100, test=50)
    with pytest.raises(EngineError, match="at least one window"):
        opt.walk_forward(candles, CROSS, [{}], CONFIG, [])
    with pytest.raises(EngineError, match="at least one combination"):
        opt.walk_forward(candles, CROSS, [], CONFIG, windows)
    with pytest.raises(EngineError, match="unknown objective"):
        opt.walk_forward(candles, CROSS, [{}], CONFIG, windows, objective="alpha")
    overlapping = opt.walk_forward_windows(candles.timestamp, train=100, test=50, step=25)
    with pytest.raises(EngineError, match="overlap"):
        opt.walk_forward(candles, CROSS, [{}], CONFIG, overlapping)
    with pytest.raises(EngineError, match="does not fit"):
        opt.walk_forward(candles.slice(0, 120), CROSS, [{}], CONFIG, windows)


def test_should_stop_cancels_between_windows() -> None:
    candles = walk(600)
    windows = opt.walk_forward_windows(candles.timestamp, train=200, test=100)
    calls = iter([False, False, True])
    with pytest.raises(opt.SearchCancelled):
        opt.walk_forward(
            candles, CROSS, [{"fast": 5, "slow": 20}], CONFIG, windows,
            should_stop=lambda: next(calls),
        )  # fmt: skip


def test_bars_for_days_converts_calendar_days_to_bars() -> None:
    assert opt.bars_for_days(2, "1h") == 48
    assert opt.bars_for_days(1, "1w") == 1
