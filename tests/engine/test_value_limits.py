"""Candles at the engine's value bounds compute exactly as ordinary ones, without a warning.

Candles refuse prices above ``MAX_PRICE`` (1e15) and volumes above ``MAX_VOLUME`` (1e24)
(tests/engine/test_candles.py). Near the float maximum a window sum overflowed: ``sma``
returned NaN although the mean was finite, ``vwap`` raised numpy's overflow RuntimeWarning and
the strategy silently made no trades. These tests show the bounds leave every computation room:
a series scaled by a power of two (exact in floating point) up to just under the bounds gives
the same indicators (scaled) and the same trades as the original.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from backtester.engine.candles import MAX_PRICE, MAX_VOLUME, Candles
from backtester.engine.errors import CandleError
from backtester.engine.indicators import bollinger, obv, rolling_std, sma, vwap
from backtester.engine.language import PRESETS
from backtester.engine.run import run_backtest
from backtester.engine.simulate import SimConfig

PRICE_SCALE = 2.0**43  # 50 * 2**43 = 4.4e14: the walk stays under MAX_PRICE
VOLUME_SCALE = 2.0**76  # 10 * 2**76 = 7.6e23: under MAX_VOLUME
HOUR = 3_600_000


def walk(n: int = 3_000, *, price_scale: float = 1.0, volume_scale: float = 1.0) -> Candles:
    rng = np.random.default_rng(5)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[50.0, close[:-1]]
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.004, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.004, n))
    volume = rng.uniform(1.0, 10.0, n)
    return Candles(
        timestamp=np.arange(n, dtype=np.int64) * HOUR,
        open=open_ * price_scale,
        high=high * price_scale,
        low=low * price_scale,
        close=close * price_scale,
        volume=volume * volume_scale,
        timeframe="1h",
    )


def test_the_scaled_walk_sits_just_under_the_bounds() -> None:
    big = walk(price_scale=PRICE_SCALE, volume_scale=VOLUME_SCALE)
    assert MAX_PRICE / 3 < big.high.max() <= MAX_PRICE
    assert MAX_VOLUME / 2 < big.volume.max() <= MAX_VOLUME


def test_indicators_at_the_bounds_are_finite_scaled_copies_without_warnings() -> None:
    small = walk()
    big = walk(price_scale=PRICE_SCALE, volume_scale=VOLUME_SCALE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning fails the test
        pairs = [
            (sma(big.close, 30), sma(small.close, 30) * PRICE_SCALE),
            (
                vwap(big.high, big.low, big.close, big.volume, 50),
                vwap(small.high, small.low, small.close, small.volume, 50) * PRICE_SCALE,
            ),
            (rolling_std(big.volume, 200), rolling_std(small.volume, 200) * VOLUME_SCALE),
            (bollinger(big.close, 20)[1], bollinger(small.close, 20)[1] * PRICE_SCALE),
            (obv(big.close, big.volume), obv(small.close, small.volume) * VOLUME_SCALE),
        ]
    for got, expected in pairs:
        finite = ~np.isnan(expected)
        assert finite.sum() > 2_500
        assert np.array_equal(np.isnan(got), ~finite)
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trades_the_same_at_the_bounds(name: str) -> None:
    config = SimConfig(taker_fee=0.001, maker_fee=0.0005)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = run_backtest(walk(), PRESETS[name], {}, config)
        big = run_backtest(
            walk(price_scale=PRICE_SCALE, volume_scale=VOLUME_SCALE), PRESETS[name], {}, config
        )
    assert len(small.sim.trades) > 0
    for field in ("entry_index", "exit_index", "side", "exit_reason"):
        assert np.array_equal(big.sim.trades[field], small.sim.trades[field]), field
    np.testing.assert_allclose(big.sim.equity, small.sim.equity, rtol=1e-12)


def test_the_issues_candles_near_the_float_maximum_are_refused_not_traded_silently() -> None:
    # The probe's series: an ordinary walk multiplied up to ~1e307.
    with pytest.raises(CandleError, match=r"^row 0: open .* is above the largest price"):
        walk(price_scale=1e305)
