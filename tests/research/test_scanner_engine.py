"""The scanner's maths (backtester/engine/scanner.py) against fits worked out by hand and by
np.polyfit, and its rules for BUY / SELL / HOLD and for symbols it cannot judge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtester.engine.errors import ConfigError
from backtester.engine.indicators import polyreg_bands
from backtester.engine.scanner import (
    BUY,
    HOLD,
    REASON_ABOVE,
    REASON_BELOW,
    REASON_INSIDE,
    REASON_NO_SPREAD,
    REASON_NOT_POSITIVE,
    SELL,
    BandSettings,
    fit_windows,
    reason_missing_value,
    reason_too_little_data,
    scan,
)

# --- the hand-computed fit ---------------------------------------------------------------------
#
# Window y = [10, 11, 9, 12, 8] at x = 0..4, a straight line (degree 1), k = 1.
#   mean x = 2, mean y = 10
#   Sxy = (-2)(0) + (-1)(1) + (0)(-1) + (1)(2) + (2)(-2) = -3,   Sxx = 4 + 1 + 0 + 1 + 4 = 10
#   slope = -3 / 10 = -0.3,   intercept = 10 - (-0.3)(2) = 10.6
#   fitted = 10.6, 10.3, 10.0, 9.7, 9.4             -> mid (fit at the last x) = 9.4
#   residuals = -0.6, 0.7, -1.0, 2.3, -1.4
#   sum of squares = 0.36 + 0.49 + 1.00 + 5.29 + 1.96 = 9.10
#   std (population) = sqrt(9.10 / 5) = sqrt(1.82) = 1.3490737563...
#   lower = 9.4 - 1.34907... = 8.0509262436...,  upper = 9.4 + 1.34907... = 10.7490737563...
#   the last close 8 < lower  -> BUY
#   potential return = upper / close - 1 = 10.7490737563 / 8 - 1 = 0.3436342195...
#   z = (8 - 9.4) / 1.3490737563 = -1.0377490433...
HAND_WINDOW = [10.0, 11.0, 9.0, 12.0, 8.0]
HAND_STD = math.sqrt(1.82)


def test_a_straight_line_fit_matches_the_hand_computation():
    result = scan({"HAND/USDT": HAND_WINDOW}, BandSettings(lookback=5, degree=1, k=1.0))
    out = result.outcome(0)
    assert out.mid == pytest.approx(9.4, abs=1e-12)
    assert out.std == pytest.approx(HAND_STD, abs=1e-12)
    assert out.lower == pytest.approx(9.4 - HAND_STD, abs=1e-12)
    assert out.upper == pytest.approx(9.4 + HAND_STD, abs=1e-12)
    assert out.signal == BUY
    assert out.reason == REASON_BELOW
    assert out.potential_return == pytest.approx((9.4 + HAND_STD) / 8.0 - 1.0, abs=1e-12)
    assert out.potential_return == pytest.approx(0.3436342195, abs=1e-9)
    assert out.zscore == pytest.approx(-1.4 / HAND_STD, abs=1e-12)
    assert out.zscore == pytest.approx(-1.0377490433, abs=1e-9)
    assert out.price == 8.0
    assert out.bars == 5


def test_a_quadratic_fit_matches_numpy_polyfit_on_a_tiny_window():
    y = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 9.0, 7.5])
    x = np.arange(y.size, dtype=float)
    coeffs = np.polyfit(x, y, 2)
    fitted = np.polyval(coeffs, x)
    std = float(np.sqrt(np.mean((y - fitted) ** 2)))
    mid = float(fitted[-1])
    result = scan({"Q/USDT": y}, BandSettings(lookback=7, degree=2, k=1.5))
    out = result.outcome(0)
    assert out.mid == pytest.approx(mid, rel=1e-12)
    assert out.std == pytest.approx(std, rel=1e-12)
    assert out.lower == pytest.approx(mid - 1.5 * std, rel=1e-12)
    assert out.upper == pytest.approx(mid + 1.5 * std, rel=1e-12)


def test_only_the_last_lookback_closes_are_fitted():
    early = [500.0, -3.0, 1e6]  # would wreck the fit if it were used
    result = scan({"A/USDT": [*early, *HAND_WINDOW]}, BandSettings(lookback=5, degree=1, k=1.0))
    assert result.mid[0] == pytest.approx(9.4, abs=1e-12)
    assert result.bars[0] == 8


def test_the_bands_are_those_of_polyreg_bands_at_the_last_bar_on_a_long_series():
    rng = np.random.default_rng(5)
    closes = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.02, 720)))
    for degree in (1, 2, 3):
        mid, upper, lower = polyreg_bands(closes, 120, degree, 2.25)
        out = scan({"X": closes}, BandSettings(lookback=120, degree=degree, k=2.25)).outcome(0)
        assert out.mid == pytest.approx(mid[-1], rel=1e-10)
        assert out.upper == pytest.approx(upper[-1], rel=1e-10)
        assert out.lower == pytest.approx(lower[-1], rel=1e-10)


def test_fit_windows_fits_each_row_on_its_own():
    rows = np.array([HAND_WINDOW, [1.0, 2.0, 3.0, 4.0, 6.0], [8.0, 12.0, 9.0, 11.0, 10.0]])
    mid, std, lower, upper = fit_windows(rows, 1, 2.0)
    for i, y in enumerate(rows):
        coeffs = np.polyfit(np.arange(5.0), y, 1)
        fitted = np.polyval(coeffs, np.arange(5.0))
        assert mid[i] == pytest.approx(fitted[-1], abs=1e-12)
        assert std[i] == pytest.approx(np.sqrt(np.mean((y - fitted) ** 2)), abs=1e-12)
    np.testing.assert_allclose(upper - lower, 4.0 * std, atol=1e-12)


def test_fit_windows_keeps_its_digits_for_prices_far_from_zero():
    base = np.array(HAND_WINDOW) * 1e-3 + 1e7  # a big price moving in tiny steps
    mid, std, _, _ = fit_windows(base[None, :], 1, 1.0)
    assert mid[0] == pytest.approx(1e7 + 9.4e-3, abs=1e-8)
    assert std[0] == pytest.approx(HAND_STD * 1e-3, rel=1e-6)


def test_fit_windows_refuses_bad_shapes_and_takes_no_rows():
    with pytest.raises(ConfigError, match="2-D"):
        fit_windows(np.arange(5.0), 1, 1.0)
    with pytest.raises(ConfigError, match="larger than the degree"):
        fit_windows(np.ones((2, 3)), 3, 1.0)
    empty = fit_windows(np.empty((0, 10)), 2, 2.0)
    assert all(a.shape == (0,) for a in empty)


# --- BUY / SELL / HOLD -------------------------------------------------------------------------


def _line_with_last(last: float, n: int = 60) -> np.ndarray:
    """A rising line with a small alternating wiggle, then ``last``."""
    i = np.arange(n - 1, dtype=float)
    body = 100.0 + 0.5 * i + np.where(i % 2 == 0, 0.4, -0.4)
    return np.append(body, last)


def test_a_close_far_below_the_curve_is_buy_far_above_is_sell_near_it_is_hold():
    settings = BandSettings(lookback=60, degree=1, k=2.0)
    on_line = 100.0 + 0.5 * 59
    result = scan(
        {
            "DOWN/USDT": _line_with_last(on_line - 6.0),
            "UP/USDT": _line_with_last(on_line + 6.0),
            "FLAT/USDT": _line_with_last(on_line),
        },
        settings,
    )
    assert [result.signal(i) for i in range(3)] == [BUY, SELL, HOLD]
    assert result.reasons == (REASON_BELOW, REASON_ABOVE, REASON_INSIDE)
    buy, sell, hold = result.outcomes()
    assert buy.price < buy.lower
    assert sell.price > sell.upper
    assert hold.lower <= hold.price <= hold.upper
    assert buy.zscore < -2
    assert sell.zscore > 2
    assert abs(hold.zscore) < 2
    assert buy.is_alert
    assert sell.is_alert
    assert not hold.is_alert


def test_potential_return_is_the_move_to_the_opposite_band_in_the_trades_direction():
    settings = BandSettings(lookback=60, degree=1, k=2.0)
    on_line = 100.0 + 0.5 * 59
    result = scan(
        {"D": _line_with_last(on_line - 6.0), "U": _line_with_last(on_line + 6.0)}, settings
    )
    buy, sell = result.outcomes()
    # Long from the close out at the upper band.
    assert buy.potential_return == pytest.approx(buy.upper / buy.price - 1.0, rel=1e-12)
    # Short from the close, covered at the lower band: gain over the price sold at.
    assert sell.potential_return == pytest.approx((sell.price - sell.lower) / sell.price, rel=1e-12)
    assert 0 < sell.potential_return < 1
    assert math.isnan(scan({"H": _line_with_last(on_line)}, settings).potential_return[0])


def test_a_short_never_claims_more_than_the_whole_price_when_the_lower_band_is_below_zero():
    closes = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0])
    out = scan({"WILD": closes}, BandSettings(lookback=8, degree=0, k=0.5)).outcome(0)
    assert out.signal == SELL
    assert out.lower < 0
    assert out.potential_return == pytest.approx(1.0)


def test_a_close_exactly_on_a_band_is_inside():
    # Degree 0: the fit is the mean. [100, 104, 100, 104] has mean 102 and std exactly 2, so
    # with k = 1 the bands are exactly 100 and 104: the last close sits on the upper band.
    settings = BandSettings(lookback=4, degree=0, k=1.0)
    result = scan(
        {"UP": [100.0, 104.0, 100.0, 104.0], "DN": [104.0, 100.0, 104.0, 100.0]}, settings
    )
    up, down = result.outcomes()
    assert (up.lower, up.mid, up.upper) == (100.0, 102.0, 104.0)
    assert up.price == up.upper
    assert down.price == down.lower
    assert up.signal == down.signal == HOLD
    assert up.reason == down.reason == REASON_INSIDE


# --- what the scanner cannot judge -------------------------------------------------------------


def test_a_symbol_with_fewer_candles_than_the_lookback_is_hold_with_the_reason():
    result = scan(
        {"NEW/USDT": [1.0, 2.0, 3.0], "NONE/USDT": [], "OK/USDT": HAND_WINDOW},
        BandSettings(lookback=5, degree=1, k=1.0),
    )
    new, none, ok = result.outcomes()
    assert new.signal == HOLD
    assert new.reason == reason_too_little_data(3, 5)
    assert new.reason == "Too little data: 3 candles, the lookback needs 5"
    assert np.isnan([new.lower, new.mid, new.upper, new.zscore, new.potential_return]).all()
    assert (new.price, new.bars) == (3.0, 3)
    assert none.reason == "Too little data: 0 candles, the lookback needs 5"
    assert math.isnan(none.price)
    assert result.fitted.tolist() == [False, False, True]
    assert ok.signal == BUY  # one short symbol does not disturb the others
    assert reason_too_little_data(1, 5) == "Too little data: 1 candle, the lookback needs 5"


def test_a_missing_value_inside_the_window_is_hold_but_one_before_it_does_not_matter():
    settings = BandSettings(lookback=5, degree=1, k=1.0)
    result = scan({"GAP": [10.0, 11.0, np.nan, 12.0, 8.0], "OLD": [np.nan, *HAND_WINDOW]}, settings)
    assert result.outcome(0).signal == HOLD
    assert result.outcome(0).reason == reason_missing_value(5)
    assert result.outcome(1).signal == BUY


def test_closes_lying_on_the_curve_have_no_bands_to_cross():
    line = 50.0 + 0.25 * np.arange(30.0)
    result = scan({"LINE": line}, BandSettings(lookback=30, degree=1, k=2.0))
    out = result.outcome(0)
    assert out.signal == HOLD
    assert out.reason == REASON_NO_SPREAD
    assert math.isnan(out.zscore)


def test_a_last_close_that_is_not_a_positive_price_is_hold():
    y = np.array([3.0, 2.0, 1.0, 2.0, -5.0])
    out = scan({"NEG": y}, BandSettings(lookback=5, degree=1, k=0.5)).outcome(0)
    assert out.signal == HOLD
    assert out.reason == REASON_NOT_POSITIVE
    assert math.isnan(out.potential_return)
    assert out.zscore < 0  # the fit itself is still reported


# --- the result as a whole ---------------------------------------------------------------------


def test_counts_and_top_lists_rank_by_potential_return_with_ties_by_symbol():
    settings = BandSettings(lookback=60, degree=1, k=2.0)
    on_line = 100.0 + 0.5 * 59
    closes = {
        "B1": _line_with_last(on_line - 6.0),
        "B2": _line_with_last(on_line - 9.0),
        "B0": _line_with_last(on_line - 9.0),
        "S1": _line_with_last(on_line + 7.0),
        "H1": _line_with_last(on_line),
        "SHORT": [1.0],
    }
    result = scan(list(closes.items()), settings)
    assert result.symbols == tuple(closes)  # input order kept
    assert len(result) == 6
    assert result.counts() == {BUY: 3, SELL: 1, HOLD: 2}
    assert [o.symbol for o in result.top(BUY, 2)] == ["B0", "B2"]
    assert [o.symbol for o in result.top(BUY)] == ["B0", "B2", "B1"]
    assert [o.symbol for o in result.top(SELL)] == ["S1"]
    assert result.top(SELL, 0) == []
    with pytest.raises(ValueError, match="BUY or SELL"):
        result.top(HOLD)


def test_an_empty_scan_is_an_empty_result():
    result = scan({})
    assert len(result) == 0
    assert result.counts() == {BUY: 0, SELL: 0, HOLD: 0}
    assert result.settings == BandSettings()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lookback": 1}, "at least 2"),
        ({"lookback": 5.0}, "whole number"),
        ({"lookback": True}, "whole number"),
        ({"degree": -1}, "between 0 and 10"),
        ({"degree": 11, "lookback": 50}, "between 0 and 10"),
        ({"lookback": 3, "degree": 3}, "larger than the degree"),
        ({"k": 0}, "above 0"),
        ({"k": float("nan")}, "above 0"),
        ({"k": "2"}, "must be a number"),
        ({"k": False}, "must be a number"),
    ],
)
def test_band_settings_refuse_values_that_make_no_fit(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BandSettings(**kwargs)


def test_closes_must_be_one_dimensional():
    with pytest.raises(ConfigError, match="one-dimensional"):
        scan({"M": np.ones((3, 3))})
