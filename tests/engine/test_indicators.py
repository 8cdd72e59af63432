"""Indicators against TA-Lib (the oracle) and against small cases worked out by hand."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import talib

from backtester.engine import indicators as ind

RTOL = 1e-9

SMA_TYPE = talib.MA_Type.SMA  # TA-Lib's simple moving average (0)


def assert_same(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Same NaN positions, and every number equal to 1e-9 relative."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)


@pytest.fixture(scope="module")
def ohlcv() -> dict[str, np.ndarray]:
    """A deterministic random walk of 3,000 bars around 100 with plausible highs and lows."""
    rng = np.random.default_rng(20240601)
    n = 3000
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1])) * (1 + rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.uniform(10.0, 1000.0, n)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


# --------------------------------------------------------------------------------- TA-Lib


@pytest.mark.parametrize("n", [1, 2, 14, 50])
def test_sma_matches_talib(ohlcv: dict[str, np.ndarray], n: int) -> None:
    c = ohlcv["close"]
    expected = c.copy() if n == 1 else talib.SMA(c, n)  # TA-Lib refuses n=1; SMA(1) is x
    assert_same(ind.sma(c, n), expected)


@pytest.mark.parametrize("n", [2, 9, 20, 200])
def test_ema_matches_talib_with_sma_seed(ohlcv: dict[str, np.ndarray], n: int) -> None:
    assert_same(ind.ema(ohlcv["close"], n), talib.EMA(ohlcv["close"], n))


@pytest.mark.parametrize("n", [2, 10, 30])
def test_wma_matches_talib(ohlcv: dict[str, np.ndarray], n: int) -> None:
    assert_same(ind.wma(ohlcv["close"], n), talib.WMA(ohlcv["close"], n))


@pytest.mark.parametrize("n", [2, 14, 30])
def test_rsi_matches_talib_wilder(ohlcv: dict[str, np.ndarray], n: int) -> None:
    assert_same(ind.rsi(ohlcv["close"], n), talib.RSI(ohlcv["close"], n))


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (5, 35, 5), (3, 10, 16)])
def test_macd_matches_talib_including_late_fast_seed(
    ohlcv: dict[str, np.ndarray], fast: int, slow: int, signal: int
) -> None:
    ours = ind.macd(ohlcv["close"], fast, slow, signal)
    theirs = talib.MACD(ohlcv["close"], fast, slow, signal)
    for a, b in zip(ours, theirs, strict=True):
        assert_same(a, b)


def test_macd_swaps_fast_and_slow_given_the_wrong_way_round_like_talib(
    ohlcv: dict[str, np.ndarray],
) -> None:
    ours = ind.macd(ohlcv["close"], 26, 12, 9)
    for a, b in zip(ours, talib.MACD(ohlcv["close"], 12, 26, 9), strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("n", [1, 2, 14, 40])
def test_atr_matches_talib(ohlcv: dict[str, np.ndarray], n: int) -> None:
    h, lo, c = ohlcv["high"], ohlcv["low"], ohlcv["close"]
    assert_same(ind.atr(h, lo, c, n), talib.ATR(h, lo, c, n))


@pytest.mark.parametrize(("n", "k"), [(20, 2.0), (10, 1.5), (50, 3.0)])
def test_bollinger_matches_talib_bbands_with_population_std(
    ohlcv: dict[str, np.ndarray], n: int, k: float
) -> None:
    mid, upper, lower = ind.bollinger(ohlcv["close"], n, k)
    t_upper, t_mid, t_lower = talib.BBANDS(ohlcv["close"], n, k, k, SMA_TYPE)
    assert_same(mid, t_mid)
    assert_same(upper, t_upper)
    assert_same(lower, t_lower)


@pytest.mark.parametrize(("k", "k_smooth", "d"), [(14, 3, 3), (5, 1, 1), (9, 4, 2)])
def test_stoch_matches_talib_with_sma_smoothing(
    ohlcv: dict[str, np.ndarray], k: int, k_smooth: int, d: int
) -> None:
    h, lo, c = ohlcv["high"], ohlcv["low"], ohlcv["close"]
    slow_k, slow_d = ind.stoch(h, lo, c, k, k_smooth, d)
    t_k, t_d = talib.STOCH(h, lo, c, k, k_smooth, SMA_TYPE, d, SMA_TYPE)
    assert_same(slow_k, t_k)
    assert_same(slow_d, t_d)


@pytest.mark.parametrize("n", [2, 14, 30])
def test_adx_matches_talib(ohlcv: dict[str, np.ndarray], n: int) -> None:
    h, lo, c = ohlcv["high"], ohlcv["low"], ohlcv["close"]
    assert_same(ind.adx(h, lo, c, n), talib.ADX(h, lo, c, n))


def test_obv_matches_talib(ohlcv: dict[str, np.ndarray]) -> None:
    c = ohlcv["close"].copy()
    c[100:110] = c[100]  # unchanged closes keep OBV flat
    assert_same(ind.obv(c, ohlcv["volume"]), talib.OBV(c, ohlcv["volume"]))


@pytest.mark.parametrize("n", [2, 20, 250])
def test_highest_and_lowest_match_talib_max_and_min(ohlcv: dict[str, np.ndarray], n: int) -> None:
    assert_same(ind.highest(ohlcv["high"], n), talib.MAX(ohlcv["high"], n))
    assert_same(ind.lowest(ohlcv["low"], n), talib.MIN(ohlcv["low"], n))


@pytest.mark.parametrize("n", [5, 20, 100])
def test_rolling_std_matches_talib_stddev(ohlcv: dict[str, np.ndarray], n: int) -> None:
    assert_same(ind.rolling_std(ohlcv["close"], n), talib.STDDEV(ohlcv["close"], n, 1))


@pytest.mark.parametrize("n", [1, 2, 7])
def test_rolling_std_is_the_population_std_of_each_window(
    ohlcv: dict[str, np.ndarray], n: int
) -> None:
    # TA-Lib's running sums of x and x**2 lose ~1e-9 on the tightest 2-bar windows of a price
    # near 100, so short windows are checked against np.std per window instead.
    x = ohlcv["close"][:500]
    expected = np.full(500, np.nan)
    for end in range(n - 1, 500):
        expected[end] = np.std(x[end - n + 1 : end + 1])
    np.testing.assert_allclose(ind.rolling_std(x, n), expected, rtol=1e-9, atol=1e-12)


def test_volume_sma_matches_talib_sma(ohlcv: dict[str, np.ndarray]) -> None:
    assert_same(ind.volume_sma(ohlcv["volume"], 20), talib.SMA(ohlcv["volume"], 20))


def test_donchian_bands_are_talib_max_of_high_and_min_of_low(ohlcv: dict[str, np.ndarray]) -> None:
    upper, mid, lower = ind.donchian(ohlcv["high"], ohlcv["low"], 20)
    t_upper, t_lower = talib.MAX(ohlcv["high"], 20), talib.MIN(ohlcv["low"], 20)
    assert_same(upper, t_upper)
    assert_same(lower, t_lower)
    assert_same(mid, (t_upper + t_lower) / 2)


# ------------------------------------------------------------------- leading NaNs (TA-Lib)


def test_ema_of_the_macd_line_skips_its_warm_up_like_talib(ohlcv: dict[str, np.ndarray]) -> None:
    line = talib.MACD(ohlcv["close"])[0]  # NaN for the first 33 bars
    assert_same(ind.ema(line, 9), talib.EMA(line, 9))
    assert_same(ind.sma(line, 9), talib.SMA(line, 9))
    assert_same(ind.wma(line, 5), talib.WMA(line, 5))
    assert_same(ind.rsi(line, 7), talib.RSI(line, 7))
    assert_same(ind.rolling_std(line, 9), talib.STDDEV(line, 9, 1))
    assert_same(ind.highest(line, 9), talib.MAX(line, 9))


def test_macd_of_a_series_that_starts_with_nans_matches_talib(
    ohlcv: dict[str, np.ndarray],
) -> None:
    x = talib.EMA(ohlcv["close"], 30)
    for a, b in zip(ind.macd(x, 5, 10, 3), talib.MACD(x, 5, 10, 3), strict=True):
        assert_same(a, b)


def test_multi_input_indicators_start_where_every_input_is_a_number(
    ohlcv: dict[str, np.ndarray],
) -> None:
    h, lo, c, v = (ohlcv[k].copy() for k in ("high", "low", "close", "volume"))
    h[:5] = np.nan
    c[:8] = np.nan
    assert_same(ind.atr(h, lo, c, 14), talib.ATR(h, lo, c, 14))
    assert_same(ind.adx(h, lo, c, 14), talib.ADX(h, lo, c, 14))
    for a, b in zip(
        ind.stoch(h, lo, c, 14, 3, 3),
        talib.STOCH(h, lo, c, 14, 3, SMA_TYPE, 3, SMA_TYPE),
        strict=True,
    ):
        assert_same(a, b)
    assert_same(ind.obv(c, v), talib.OBV(c, v))


def test_all_nan_input_gives_all_nan(ohlcv: dict[str, np.ndarray]) -> None:
    x = np.full(50, np.nan)
    assert np.isnan(ind.sma(x, 5)).all()
    assert np.isnan(ind.ema(x, 5)).all()
    assert all(np.isnan(part).all() for part in ind.macd(x))
    assert np.isnan(ind.obv(x, x)).all()
    assert all(np.isnan(part).all() for part in ind.polyreg_bands(x, 10))


def test_nan_in_the_middle_spoils_only_the_windows_that_hold_it() -> None:
    x = np.arange(1.0, 21.0)
    x[10] = np.nan
    out = ind.sma(x, 3)
    # by hand: windows ending at 10, 11, 12 contain bar 10; the others are plain means
    for t in range(20):
        if t < 2 or 10 <= t <= 12:
            assert np.isnan(out[t]), t
        else:
            assert out[t] == pytest.approx((x[t] + x[t - 1] + x[t - 2]) / 3)
    maxed = ind.highest(x, 3)
    assert np.isnan(maxed[10:13]).all()
    assert maxed[13] == 14.0
    assert np.isnan(ind.rolling_std(x, 3)[10:13]).all()
    assert ind.rolling_std(x, 3)[13] == pytest.approx(np.std([12.0, 13.0, 14.0]))


# ------------------------------------------------------------------------ warm-up and shapes


def test_window_longer_than_the_data_gives_all_nan() -> None:
    x = np.arange(5.0)
    for out in (
        ind.sma(x, 6),
        ind.ema(x, 6),
        ind.wma(x, 6),
        ind.rsi(x, 5),
        ind.highest(x, 6),
        ind.rolling_std(x, 6),
        ind.atr(x + 1, x, x, 5),
        ind.adx(x + 1, x, x, 3),
        ind.returns(x, 5),
        *ind.macd(x, 2, 3, 4),
        *ind.stoch(x + 1, x, x, 3, 2, 3),
        *ind.polyreg_bands(x, 6, 1),
    ):
        assert out.shape == (5,)
        assert np.isnan(out).all()


def test_empty_input_gives_empty_output() -> None:
    empty = np.array([], dtype=np.float64)
    assert ind.sma(empty, 3).shape == (0,)
    assert ind.ema(empty, 3).shape == (0,)
    assert ind.obv(empty, empty).shape == (0,)


def test_lists_are_accepted_and_float64_comes_back() -> None:
    out = ind.sma([1, 2, 3, 4], 2)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [np.nan, 1.5, 2.5, 3.5])


@pytest.mark.parametrize("bad", [0, -3, 2.5, 3.0, True, "5", None])
@pytest.mark.parametrize(
    "call",
    [
        lambda n: ind.sma(np.ones(10), n),
        lambda n: ind.ema(np.ones(10), n),
        lambda n: ind.rsi(np.ones(10), n),
        lambda n: ind.atr(np.ones(10), np.ones(10), np.ones(10), n),
        lambda n: ind.macd(np.ones(10), 3, n, 2),
        lambda n: ind.stoch(np.ones(10), np.ones(10), np.ones(10), 3, 3, n),
        lambda n: ind.bollinger(np.ones(10), n),
        lambda n: ind.returns(np.ones(10), n),
        lambda n: ind.polyreg_bands(np.ones(10), n),
        lambda n: ind.vwap(np.ones(10), np.ones(10), np.ones(10), np.ones(10), n),
    ],
)
def test_window_must_be_a_positive_int(call: Callable[[Any], Any], bad: Any) -> None:
    with pytest.raises(ValueError, match="positive whole number"):
        call(bad)


def test_numpy_integer_windows_are_fine() -> None:
    # A numpy integer window on purpose (the signature says int).
    got = ind.sma(np.arange(4.0), np.int64(2))  # type: ignore[arg-type]
    np.testing.assert_array_equal(got, [np.nan, 0.5, 1.5, 2.5])


def test_inputs_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        ind.atr(np.ones(5), np.ones(4), np.ones(5), 2)


def test_two_dimensional_input_is_refused() -> None:
    with pytest.raises(ValueError, match="one-dimensional"):
        ind.sma(np.ones((3, 3)), 2)


# --------------------------------------------------------------------- small cases by hand


def test_rsi_is_zero_when_prices_never_move_as_in_talib() -> None:
    flat = np.full(30, 5.0)
    assert_same(ind.rsi(flat, 14), talib.RSI(flat, 14))
    assert ind.rsi(flat, 14)[14] == 0.0


def test_rsi_of_a_steady_rise_is_100() -> None:
    assert ind.rsi(np.arange(20.0), 5)[5:].tolist() == [100.0] * 15


def test_stoch_is_zero_when_the_range_is_empty_as_in_talib() -> None:
    flat = np.full(30, 5.0)
    k, d = ind.stoch(flat, flat, flat, 5, 3, 3)
    assert_same(k, talib.STOCH(flat, flat, flat, 5, 3, SMA_TYPE, 3, SMA_TYPE)[0])
    assert k[9:].tolist() == [0.0] * 21
    assert d[9:].tolist() == [0.0] * 21


def test_adx_holds_its_value_while_nothing_moves() -> None:
    h = np.r_[np.linspace(10, 20, 20), np.full(10, 20.0)]
    lo, c = h - 1, h - 0.5
    assert_same(ind.adx(h, lo, c, 3), talib.ADX(h, lo, c, 3))
    flat = np.full(12, 3.0)
    out = ind.adx(flat, flat, flat, 3)
    # no true range at all: every DX is skipped, so the first ADX is 0/3 and stays there
    assert np.isnan(out[:5]).all()
    assert out[5:].tolist() == [0.0] * 7


def test_vwap_by_hand() -> None:
    high = np.array([11.0, 12.0, 13.0, 14.0])
    low = np.array([9.0, 10.0, 11.0, 12.0])
    close = np.array([10.0, 11.0, 12.0, 13.0])
    volume = np.array([1.0, 3.0, 0.0, 2.0])
    # typical prices: 10, 11, 12, 13
    # bar 1: (10*1 + 11*3) / 4 = 10.75; bar 2: (33 + 0) / 3 = 11; bar 3: (0 + 26) / 2 = 13
    out = ind.vwap(high, low, close, volume, 2)
    np.testing.assert_allclose(out, [np.nan, 10.75, 11.0, 13.0], rtol=RTOL)


def test_vwap_is_nan_where_the_window_has_no_volume() -> None:
    out = ind.vwap(np.ones(3) * 2, np.ones(3), np.ones(3), np.zeros(3), 2)
    assert np.isnan(out).all()


def test_donchian_by_hand() -> None:
    high = np.array([5.0, 7.0, 6.0, 9.0, 8.0])
    low = np.array([4.0, 3.0, 5.0, 6.0, 7.0])
    upper, mid, lower = ind.donchian(high, low, 3)
    np.testing.assert_array_equal(upper, [np.nan, np.nan, 7.0, 9.0, 9.0])
    np.testing.assert_array_equal(lower, [np.nan, np.nan, 3.0, 3.0, 5.0])
    np.testing.assert_array_equal(mid, [np.nan, np.nan, 5.0, 6.0, 7.0])


def test_volume_ratio_by_hand() -> None:
    volume = np.array([2.0, 4.0, 6.0, 0.0, 0.0, 0.0])
    # 2-bar averages: -, 3, 5, 3, 0, 0 -> ratios 4/3, 6/5, 0/3, then 0/0 -> NaN
    out = ind.volume_ratio(volume, 2)
    np.testing.assert_allclose(out, [np.nan, 4 / 3, 1.2, 0.0, np.nan, np.nan], rtol=RTOL)


def test_returns_by_hand() -> None:
    x = np.array([100.0, 110.0, 99.0, 99.0])
    np.testing.assert_allclose(ind.returns(x), [np.nan, 0.1, -0.1, 0.0], rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(ind.returns(x, 2), [np.nan, np.nan, -0.01, -0.1], rtol=RTOL)


def test_obv_by_hand() -> None:
    close = np.array([10.0, 11.0, 11.0, 9.0, 12.0])
    volume = np.array([5.0, 2.0, 7.0, 3.0, 1.0])
    # start at 5, up +2 = 7, flat 7, down -3 = 4, up +1 = 5
    np.testing.assert_array_equal(ind.obv(close, volume), [5.0, 7.0, 7.0, 4.0, 5.0])


def test_wma_by_hand() -> None:
    # (1*1 + 2*2 + 3*4) / 6 = 17/6: the newest value weighs most
    np.testing.assert_allclose(ind.wma([1.0, 2.0, 4.0], 3), [np.nan, np.nan, 17 / 6], rtol=RTOL)


def test_sma_stays_accurate_over_a_long_drifting_series() -> None:
    # A 100k-step random walk (about -10 to +400), checked against exactly rounded window
    # sums. A plain cumsum difference is off by ~6e-10 here because the running total reaches
    # millions; the compensated running sum stays at rounding level (TA-Lib is ~2e-12 off).
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(0.0, 1.0, 100_000))
    exact = np.array([math.fsum(x[end - 9 : end + 1]) / 10 for end in range(9, x.shape[0])])
    ours = ind.sma(x, 10)
    assert np.isnan(ours[:9]).all()
    assert np.max(np.abs(ours[9:] - exact)) < 1e-12


def _fsum_means(x: np.ndarray, n: int) -> np.ndarray:
    """The oracle: each window's exactly rounded sum (math.fsum) divided by n."""
    return np.array([math.fsum(x[end - n + 1 : end + 1]) / n for end in range(n - 1, x.size)])


_RNG = np.random.default_rng(11)
_LEN = 12_000  # crosses the rolling sum's rebuild points (every 4,096 bars for short windows)
PRICE_LIKE = {
    # a large offset: a plain running sum loses the noise's low digits against the level
    "offset_1e9": 1e9 + _RNG.normal(0.0, 1.0, _LEN),
    # a walk through zero whose running total reaches thousands
    "walk_through_zero": np.cumsum(_RNG.normal(0.0, 1.0, _LEN)),
    # a sub-cent coin
    "sub_cent": 1e-6 * np.exp(np.cumsum(_RNG.normal(0.0, 0.01, _LEN))),
    # windows that cancel to a millionth of their values
    "alternating_1e8": np.where(np.arange(_LEN) % 2 == 0, 1e8, -1e8) + _RNG.normal(0, 1e-3, _LEN),
}


@pytest.mark.parametrize("n", [2, 10, 50])
@pytest.mark.parametrize("case", sorted(PRICE_LIKE))
def test_sma_is_the_fsum_of_each_window_bit_for_bit(case: str, n: int) -> None:
    # The running sum keeps its rounding errors exactly, so each window sum comes out as
    # math.fsum of the window (a plain running sum is off by ~1e-10 relative after 10^6 bars
    # and flips near-ties of two averages).
    x = PRICE_LIKE[case]
    ours = ind.sma(x, n)
    assert np.isnan(ours[: n - 1]).all()
    np.testing.assert_array_equal(ours[n - 1 :], _fsum_means(x, n))


def test_sma_stays_within_an_ulp_of_fsum_on_extreme_data() -> None:
    # Values spanning 16 orders of magnitude, and 1e15 spikes among values near 1. The
    # compensation itself is rounded (~1e-32 of the values it has seen per step), so a sum
    # can land one ulp off, and a window that cancels to almost nothing right after a huge
    # value left carries that tiny absolute error: bounded here by one ulp of the exact
    # mean plus 1e-27 of the largest value.
    rng = np.random.default_rng(5)
    mixed = rng.normal(0.0, 1.0, 20_000) * 10.0 ** rng.integers(-8, 9, 20_000)
    spikes = np.where(rng.random(20_000) < 0.001, 1e15, 1.0) * rng.normal(1.0, 0.1, 20_000)
    for x in (mixed, spikes):
        for n in (2, 7):
            exact = _fsum_means(x, n)
            error = np.abs(ind.sma(x, n)[n - 1 :] - exact)
            assert (error <= np.spacing(np.abs(exact)) + 1e-27 * np.abs(x).max()).all()
            assert np.mean(error == 0.0) > 0.97  # and nearly always bit for bit


def test_rolling_sum_kernel_as_python_matches_fsum_across_rebuilds() -> None:
    # The numba kernel is compiled from a plain function: run it as Python with a rebuild
    # every 16 bars, and check it against the oracle and against the compiled kernel.
    x = PRICE_LIKE["offset_1e9"][:300]
    out, finite = ind._rolling_sum_py(x, 5, 5.0, 16)
    assert finite
    assert np.isnan(out[:4]).all()
    np.testing.assert_array_equal(out[4:], _fsum_means(x, 5))
    compiled, _ = ind._rolling_sum_kernel(x, 5, 5.0, 16)
    np.testing.assert_array_equal(out, compiled)
    # too short for one window: all NaN, and no value seen to be non-finite
    short, finite = ind._rolling_sum_py(x[:3], 5, 5.0, 16)
    assert finite
    assert np.isnan(short).all()
    with np.errstate(invalid="ignore"):  # inf - inf inside the (discarded) sums
        _, finite = ind._rolling_sum_py(np.array([1.0, np.inf, 2.0]), 2, 1.0, 16)
    assert not finite


def test_infinities_spoil_only_their_windows_and_opposite_ones_give_nan() -> None:
    x = np.arange(1.0, 41.0)
    x[10] = np.inf
    x[12] = -np.inf
    x[30] = np.nan
    out = ind.sma(x, 3)
    # by hand: windows end at t and hold t-2..t
    #   t = 10, 11: +inf only -> +inf; t = 12: +inf and -inf -> NaN; t = 13, 14: -inf only
    #   t = 30..32 hold the NaN; every other window is a plain mean of finite numbers
    assert out[10] == out[11] == np.inf
    assert np.isnan(out[12])
    assert out[13] == out[14] == -np.inf
    assert np.isnan(out[30:33]).all()
    for t in [*range(2, 10), *range(15, 30), *range(33, 40)]:
        assert out[t] == math.fsum(x[t - 2 : t + 1]) / 3, t
    sums = ind.vwap(x, x, x, np.ones(40), 3)  # sum(typical * volume) / sum(volume)
    assert sums[11] == np.inf
    assert np.isnan(sums[12])
    assert sums[20] == pytest.approx(20.0)


# ------------------------------------------------------------------ polynomial regression


def _polyfit_bands(x: np.ndarray, window: int, degree: int, k: float) -> tuple[np.ndarray, ...]:
    mid = np.full(x.shape, np.nan)
    upper, lower = mid.copy(), mid.copy()
    t = np.arange(window, dtype=np.float64)
    for end in range(window - 1, x.shape[0]):
        y = x[end - window + 1 : end + 1]
        coef = np.polyfit(t, y, degree)
        fit = np.polyval(coef, t)
        std = np.sqrt(np.mean((y - fit) ** 2))
        mid[end] = fit[-1]
        upper[end] = fit[-1] + k * std
        lower[end] = fit[-1] - k * std
    return mid, upper, lower


@pytest.mark.parametrize(("window", "degree", "k"), [(20, 2, 2.0), (30, 1, 1.5), (15, 3, 2.5)])
def test_polyreg_bands_match_numpy_polyfit_per_window(
    ohlcv: dict[str, np.ndarray], window: int, degree: int, k: float
) -> None:
    x = ohlcv["close"][:300]
    ours = ind.polyreg_bands(x, window, degree, k)
    expected = _polyfit_bands(x, window, degree, k)
    for a, b in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-8)


def test_polyreg_of_an_exact_quadratic_has_zero_width_bands() -> None:
    t = np.arange(30.0)
    x = 0.5 * t**2 - 3 * t + 7
    mid, upper, lower = ind.polyreg_bands(x, 10, 2, 2.0)
    np.testing.assert_allclose(mid[9:], x[9:], rtol=1e-10)
    # The residual sum of squares is sum(y**2) minus the fitted part, so an exact fit leaves
    # rounding of order 1e-10 whose square root is a width of a few 1e-6 on values up to 400.
    np.testing.assert_allclose(upper[9:] - lower[9:], 0.0, atol=1e-4)


def test_polyreg_degree_zero_is_mean_and_population_std() -> None:
    x = np.array([1.0, 2.0, 4.0, 8.0])
    mid, upper, _ = ind.polyreg_bands(x, 3, 0, 1.0)
    # last window 2, 4, 8: mean 14/3, population std sqrt(56/9)
    assert mid[3] == pytest.approx(14 / 3)
    assert upper[3] - mid[3] == pytest.approx(np.sqrt(56 / 9))


def test_polyreg_skips_leading_nans(ohlcv: dict[str, np.ndarray]) -> None:
    x = ohlcv["close"][:100].copy()
    x[:7] = np.nan
    mid, _, _ = ind.polyreg_bands(x, 20, 2)
    expected = _polyfit_bands(x[7:], 20, 2, 2.0)[0]
    assert np.isnan(mid[: 7 + 19]).all()
    np.testing.assert_allclose(mid[7:], expected, rtol=1e-8)


@pytest.mark.parametrize(("window", "degree"), [(3, 3), (2, 5), (5, -1), (5, 1.0), (5, True)])
def test_polyreg_refuses_a_degree_the_window_cannot_fit(window: int, degree: Any) -> None:
    with pytest.raises(ValueError, match="degree"):
        ind.polyreg_bands(np.arange(20.0), window, degree)


def test_polyreg_window_of_one_point_fits_it_exactly() -> None:
    mid, upper, lower = ind.polyreg_bands(np.array([3.0, 4.0]), 1, 0)
    np.testing.assert_array_equal(mid, [3.0, 4.0])
    np.testing.assert_array_equal(upper - lower, [0.0, 0.0])


# ------------------------------------------------------------------ numba kernels as Python


def test_python_kernels_agree_with_talib_too(ohlcv: dict[str, np.ndarray]) -> None:
    """The numba kernels are compiled from plain functions; run those as Python as well."""
    h, lo, c = ohlcv["high"][:400], ohlcv["low"][:400], ohlcv["close"][:400]
    assert_same(ind._ema_py(c, 10, 2.0 / 11, 9), talib.EMA(c, 10))
    assert_same(ind._rsi_py(c, 14), talib.RSI(c, 14))
    assert_same(ind._wilder_py(ind._true_range(h, lo, c), 14), talib.ATR(h, lo, c, 14))
    assert_same(ind._adx_py(h, lo, c, 14), talib.ADX(h, lo, c, 14))
    flat = np.full(12, 3.0)
    assert ind._rsi_py(flat, 5)[5:].tolist() == [0.0] * 7
    assert ind._adx_py(flat, flat, flat, 3)[5:].tolist() == [0.0] * 7
    short = np.arange(3.0)
    assert np.isnan(ind._ema_py(short, 5, 0.5, 4)).all()
    assert np.isnan(ind._rsi_py(short, 5)).all()
    assert np.isnan(ind._wilder_py(short, 5)).all()
    assert np.isnan(ind._adx_py(short, short, short, 5)).all()
