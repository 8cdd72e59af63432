"""Built-in strategies: each compiles, trades on a random walk, and means what its name says.

Oracles: TA-Lib and plain numpy/Python loops written out in the tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import talib

from backtester.engine import indicators
from backtester.engine.candles import Candles
from backtester.engine.language import PRESETS, StrategySpec, compile_strategy, validate_strategy


def random_walk(n: int = 2000, seed: int = 7) -> Candles:
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
    )


def crosses(a: np.ndarray, b: np.ndarray, *, up: bool) -> np.ndarray:
    """Crossings by a plain loop: a above (below) b now, at or below (above) one bar ago."""
    out = np.zeros(a.shape[0], dtype=bool)
    for t in range(1, a.shape[0]):
        if up:
            out[t] = bool(a[t] > b[t] and a[t - 1] <= b[t - 1])
        else:
            out[t] = bool(a[t] < b[t] and a[t - 1] >= b[t - 1])
    return out


def moving_average(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    for t in range(n - 1, x.shape[0]):
        out[t] = x[t - n + 1 : t + 1].mean()
    return out


def test_presets_are_the_documented_set_and_keyed_by_their_own_name() -> None:
    assert set(PRESETS) == {
        "sma_cross",
        "ema_cross",
        "rsi_reversion",
        "rsi_ma_filter",
        "macd_cross",
        "bollinger_reversion",
        "donchian_breakout",
        "polyband_reversion",
    }
    for name, spec in PRESETS.items():
        assert spec.name == name
        assert spec.description
        assert all(p.description for p in spec.params)
        validate_strategy(spec)


@pytest.mark.parametrize("seed", [7, 21, 1234])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_enters_and_exits_on_a_2000_bar_random_walk(name: str, seed: int) -> None:
    signals = compile_strategy(PRESETS[name], random_walk(2000, seed), {})
    assert signals.entry_long.sum() >= 1
    assert signals.exit_long.sum() >= 1


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_compiles_at_the_corners_of_its_parameter_grid(name: str) -> None:
    spec = PRESETS[name]
    c = random_walk(2000)
    for corner in (0, -1):
        params = {p.name: p.values()[corner] for p in spec.params}
        signals = compile_strategy(spec, c, params)
        assert len(signals) == 2000
    for p in spec.params:
        assert p.default in p.values() or p.kind == "bool"


def test_long_only_presets_have_empty_short_rules_and_two_presets_trade_short() -> None:
    with_shorts = {n for n, s in PRESETS.items() if s.entry_short or s.exit_short}
    assert with_shorts == {"ema_cross", "donchian_breakout"}
    c = random_walk()
    for name in with_shorts:
        signals = compile_strategy(PRESETS[name], c, {})
        assert signals.entry_short.any()
        assert signals.exit_short.any()


def test_sma_cross_matches_crossings_of_plain_moving_averages() -> None:
    c = random_walk(600, seed=3)
    signals = compile_strategy(PRESETS["sma_cross"], c, {"fast": 5, "slow": 20})
    fast, slow = moving_average(c.close, 5), moving_average(c.close, 20)
    np.testing.assert_array_equal(signals.entry_long, crosses(fast, slow, up=True))
    np.testing.assert_array_equal(signals.exit_long, crosses(fast, slow, up=False))


def test_ema_cross_short_rules_mirror_the_long_rules() -> None:
    c = random_walk(600, seed=4)
    signals = compile_strategy(PRESETS["ema_cross"], c, {})
    fast, slow = talib.EMA(c.close, 12), talib.EMA(c.close, 26)
    np.testing.assert_array_equal(signals.entry_long, crosses(fast, slow, up=True))
    np.testing.assert_array_equal(signals.entry_short, signals.exit_long)
    np.testing.assert_array_equal(signals.exit_short, signals.entry_long)


def test_rsi_reversion_buys_below_lower_and_sells_above_upper() -> None:
    c = random_walk(600, seed=5)
    signals = compile_strategy(PRESETS["rsi_reversion"], c, {"lower": 35, "upper": 60})
    rsi = talib.RSI(c.close, 14)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(signals.entry_long, rsi < 35)
        np.testing.assert_array_equal(signals.exit_long, rsi > 60)


def test_rsi_ma_filter_only_buys_dips_above_the_long_sma() -> None:
    c = random_walk(2000, seed=7)
    signals = compile_strategy(PRESETS["rsi_ma_filter"], c, {"trend": 100})
    rsi, trend = talib.RSI(c.close, 14), moving_average(c.close, 100)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(signals.entry_long, (rsi < 30) & (c.close > trend))
    assert (
        signals.entry_long.sum()
        < compile_strategy(PRESETS["rsi_reversion"], c, {}).entry_long.sum()
    )


def test_macd_cross_matches_talib_macd_crossings() -> None:
    c = random_walk(600, seed=6)
    signals = compile_strategy(PRESETS["macd_cross"], c, {"fast": 8, "slow": 20, "signal": 5})
    line, signal, _ = talib.MACD(c.close, 8, 20, 5)
    np.testing.assert_array_equal(signals.entry_long, crosses(line, signal, up=True))
    np.testing.assert_array_equal(signals.exit_long, crosses(line, signal, up=False))


def test_bollinger_reversion_buys_under_the_lower_band_and_exits_over_the_middle() -> None:
    c = random_walk(600, seed=8)
    signals = compile_strategy(PRESETS["bollinger_reversion"], c, {"k": 1.5, "period": 25})
    _, mid, lower = talib.BBANDS(c.close, 25, 1.5, 1.5)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(signals.entry_long, c.close < lower)
        np.testing.assert_array_equal(signals.exit_long, c.close > mid)


def test_donchian_breakout_compares_the_close_with_the_previous_bars_channel() -> None:
    c = random_walk(600, seed=9)
    signals = compile_strategy(PRESETS["donchian_breakout"], c, {})
    entry = np.zeros(600, dtype=bool)
    exit_ = np.zeros(600, dtype=bool)
    for t in range(600):
        # Upper channel of the 20 bars before t (t excluded): needs bars t-20..t-1.
        if t >= 20:
            entry[t] = c.close[t] > c.high[t - 20 : t].max()
        if t >= 10:
            exit_[t] = c.close[t] < c.low[t - 10 : t].min()
    np.testing.assert_array_equal(signals.entry_long, entry)
    np.testing.assert_array_equal(signals.exit_long, exit_)
    assert entry.any()


def test_polyband_reversion_exits_at_the_mid_line_or_at_the_upper_band_on_request() -> None:
    c = random_walk(600, seed=10)
    mid, upper, lower = indicators.polyreg_bands(c.close, 60, 2, 1.5)
    params = {"window": 60, "k": 1.5}
    at_mid = compile_strategy(PRESETS["polyband_reversion"], c, params)
    at_upper = compile_strategy(PRESETS["polyband_reversion"], c, {**params, "exit_at_upper": True})
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(at_mid.entry_long, c.close < lower)
        np.testing.assert_array_equal(at_mid.exit_long, c.close > mid)
        np.testing.assert_array_equal(at_upper.exit_long, c.close > upper)
        assert (c.close > upper).sum() < (c.close > mid).sum()


def test_a_preset_is_an_ordinary_spec_that_can_be_copied_and_edited() -> None:
    base = PRESETS["sma_cross"]
    edited = StrategySpec(
        "mine",
        entry_long=base.entry_long + " and rsi(close, 14) < 70",
        exit_long=base.exit_long,
        params=base.params,
    )
    c = random_walk(600, seed=3)
    a = compile_strategy(base, c, {})
    b = compile_strategy(edited, c, {})
    assert (b.entry_long <= a.entry_long).all()
