"""The look-ahead check: honest strategies pass, a strategy that peeks at the future is caught."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from backtester.engine.candles import Candles
from backtester.engine.errors import StrategyError
from backtester.engine.language import (
    PRESETS,
    StrategySpec,
    check_lookahead,
    compile_strategy,
    strategy_warmup,
)
from backtester.engine.language.lookahead import DEFAULT_POINTS, default_points
from backtester.engine.signals import Signals


def random_walk(n: int = 1000, seed: int = 17, **extra: np.ndarray) -> Candles:
    """Geometric random walk with consistent OHLC and positive volume."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.004, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.004, n))
    return Candles(
        timestamp=np.arange(n, dtype=np.int64) * 3_600_000,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=rng.uniform(1, 100, n),
        extra=extra,
    )


def peeking_compile(spec: StrategySpec, candles: Candles, params: Mapping[str, object]) -> Signals:
    """A cheating evaluator: enters at t when the *next* close is higher (unknowable at t)."""
    close = candles.close
    entry = np.zeros(len(candles), dtype=bool)
    entry[:-1] = close[1:] > close[:-1]
    signals = Signals.empty(len(candles))
    return Signals(entry, signals.exit_long, signals.entry_short, signals.exit_short)


def centred_average_compile(
    spec: StrategySpec, candles: Candles, params: Mapping[str, object]
) -> Signals:
    """Another cheat: a 5-bar moving average centred on t uses bars t+1 and t+2."""
    close = candles.close
    avg = np.convolve(close, np.ones(5) / 5, mode="same")
    exit_ = close < avg
    empty = Signals.empty(len(candles))
    return Signals(empty.entry_long, exit_, empty.entry_short, empty.exit_short)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_passes_the_lookahead_check(name: str) -> None:
    report = check_lookahead(PRESETS[name], random_walk(), {})
    assert report.ok, report.violations
    # 1,000 bars: every bar from just past the warm-up to the second-last is a cut.
    warmup = strategy_warmup(PRESETS[name], {})
    assert report.points == tuple(range(warmup + 1, 999))


def test_a_rule_over_an_extra_column_and_lags_passes() -> None:
    n = 600
    spec = StrategySpec(
        "t",
        entry_long="funding < 0 and rising(close, 3) and shift(close > open, 2)",
        exit_long="cross_below(close, highest(high, 10) * 0.98)",
    )
    report = check_lookahead(spec, random_walk(n, funding=np.sin(np.arange(n) / 9)), {})
    assert report.ok


def test_an_evaluator_that_reads_the_next_bar_is_caught_at_every_cut_where_it_matters() -> None:
    c = random_walk(300)
    points = [50, 100, 150, 200, 250]
    report = check_lookahead(PRESETS["sma_cross"], c, {}, points=points, compile_fn=peeking_compile)
    assert not report.ok
    # Cut after bar t, the cheat cannot see bar t+1 and says "no"; with the full data it says
    # "yes" exactly when close[t+1] > close[t]. Every other bar agrees.
    expected = [(t, t) for t in points if c.close[t + 1] > c.close[t]]
    assert expected  # the chosen points include some up-moves
    got = [(v.cut, v.bar) for v in report.violations]
    assert got == expected
    assert all(v.rule == "entry_long" and v.count == 1 for v in report.violations)


def test_a_centred_moving_average_is_caught_too() -> None:
    report = check_lookahead(
        PRESETS["sma_cross"], random_walk(400), {}, compile_fn=centred_average_compile
    )
    assert not report.ok
    assert {v.rule for v in report.violations} == {"exit_long"}
    # Only bars t-1 and t can change: their centred window reached past the cut.
    for v in report.violations:
        assert v.cut - 1 <= v.bar <= v.cut
        assert 1 <= v.count <= 2


def test_honest_custom_compile_function_passes() -> None:
    def trailing(spec: StrategySpec, candles: Candles, params: Mapping[str, object]) -> Signals:
        return compile_strategy(
            StrategySpec("x", entry_long="close > shift(close, 1)"), candles, {}
        )

    assert check_lookahead(PRESETS["sma_cross"], random_walk(200), {}, compile_fn=trailing).ok


def test_default_cut_points_are_every_bar_past_the_warmup_and_before_the_last_bar() -> None:
    assert default_points(1000, 30) == tuple(range(31, 999))
    assert default_points(10, 30) == (8,)
    assert default_points(1, 0) == ()
    assert default_points(12, 0) == tuple(range(1, 11))


def test_on_long_data_the_default_cuts_are_a_fixed_random_sample_of_2000_bars() -> None:
    points = default_points(1_000_000, 100)
    assert len(points) == DEFAULT_POINTS == 2_000
    assert (points[0], points[-1]) == (101, 999_998)
    assert list(points) == sorted(set(points))
    assert default_points(1_000_000, 100) == points  # the same on every run
    # Not a regular grid: spacings vary, so a rule peeking every k-th bar cannot hide.
    assert len(set(np.diff(points).tolist())) > 100


def peeks_on_one_percent(
    spec: StrategySpec, candles: Candles, params: Mapping[str, object]
) -> Signals:
    """The probe's cheat: an honest SMA cross, except that on about 1 % of bars (a fixed
    random set) it also enters when the next bar's close is higher, a bar it cannot know."""
    honest = compile_strategy(PRESETS["sma_cross"], candles, {})
    n = len(candles)
    close = candles.close
    peek_bars = np.flatnonzero(np.random.default_rng(99).random(n) < 0.01)
    peek_bars = peek_bars[peek_bars < n - 1]  # the last bar has nothing to read
    entry = honest.entry_long.copy()
    entry[peek_bars] |= close[peek_bars + 1] > close[peek_bars]
    return Signals(entry, honest.exit_long, honest.entry_short, honest.exit_short)


@pytest.mark.parametrize("n", [1_000, 20_000])
def test_the_defaults_catch_a_rule_that_peeks_one_bar_ahead_on_one_percent_of_bars(
    n: int,
) -> None:
    c = random_walk(n)
    report = check_lookahead(PRESETS["sma_cross"], c, {}, compile_fn=peeks_on_one_percent)
    assert not report.ok
    # Each violation is the cheat's own bar: cut right after a peeking bar whose next close is
    # higher, and only that one bar changes.
    peek = np.random.default_rng(99).random(n) < 0.01
    for v in report.violations:
        assert (v.rule, v.bar, v.cut, v.count) == ("entry_long", v.cut, v.cut, 1)
        assert peek[v.bar]
        assert c.close[v.bar + 1] > c.close[v.bar]
    if n == 1_000:  # every bar is a cut: every peek that changes an answer is found
        expected = [
            t
            for t in np.flatnonzero(peek).tolist()
            if strategy_warmup(PRESETS["sma_cross"], {}) < t < n - 1
            and c.close[t + 1] > c.close[t]
            and not compile_strategy(PRESETS["sma_cross"], c, {}).entry_long[t]
        ]
        assert [v.cut for v in report.violations] == expected


def test_explicit_points_must_lie_inside_the_data() -> None:
    with pytest.raises(StrategyError, match="cut point 500 is outside the 300 bars"):
        check_lookahead(PRESETS["sma_cross"], random_walk(300), {}, points=[100, 500])


def test_lookahead_check_uses_the_given_parameters() -> None:
    report = check_lookahead(PRESETS["sma_cross"], random_walk(400), {"fast": 20, "slow": 150})
    assert report.ok
    assert min(report.points) == 152  # warm-up 150 + 1 for the cross, then one bar past it
