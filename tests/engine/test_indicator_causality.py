"""Every indicator is causal to the bit: its value at bar t is the same when the data stops at t."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from backtester.engine import indicators as ind

rng = np.random.default_rng(20261121)
N = 600
CLOSE = 30_000.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, N))
HIGH = CLOSE * (1.0 + rng.uniform(0.0, 0.01, N))
LOW = CLOSE * (1.0 - rng.uniform(0.0, 0.01, N))
VOLUME = rng.uniform(1.0, 100.0, N)

CASES: dict[str, Callable[[int], object]] = {
    "sma": lambda t: ind.sma(CLOSE[:t], 20),
    "ema": lambda t: ind.ema(CLOSE[:t], 20),
    "wma": lambda t: ind.wma(CLOSE[:t], 20),
    "rsi": lambda t: ind.rsi(CLOSE[:t], 14),
    "macd": lambda t: ind.macd(CLOSE[:t], 12, 26, 9),
    "atr": lambda t: ind.atr(HIGH[:t], LOW[:t], CLOSE[:t], 14),
    "bollinger": lambda t: ind.bollinger(CLOSE[:t], 20, 2.0),
    "stoch": lambda t: ind.stoch(HIGH[:t], LOW[:t], CLOSE[:t], 14, 3, 3),
    "adx": lambda t: ind.adx(HIGH[:t], LOW[:t], CLOSE[:t], 14),
    "obv": lambda t: ind.obv(CLOSE[:t], VOLUME[:t]),
    "vwap": lambda t: ind.vwap(HIGH[:t], LOW[:t], CLOSE[:t], VOLUME[:t], 20),
    "donchian": lambda t: ind.donchian(HIGH[:t], LOW[:t], 20),
    "volume_ratio": lambda t: ind.volume_ratio(VOLUME[:t], 20),
    "polyreg_bands": lambda t: ind.polyreg_bands(CLOSE[:t], 50, 2, 2.0),
    "highest": lambda t: ind.highest(HIGH[:t], 20),
    "lowest": lambda t: ind.lowest(LOW[:t], 20),
    "rolling_std": lambda t: ind.rolling_std(CLOSE[:t], 20),
    "returns": lambda t: ind.returns(CLOSE[:t], 3),
}


def _outputs(value: object) -> list[np.ndarray]:
    # (type: ignore below) indicators return an array or a tuple of arrays
    return list(value) if isinstance(value, tuple) else [value]  # type: ignore[list-item]


@pytest.mark.parametrize("name", sorted(CASES))
def test_indicator_value_at_t_does_not_depend_on_later_bars(name: str) -> None:
    full = _outputs(CASES[name](N))
    for cut in (60, 137, 301, 599):
        part = _outputs(CASES[name](cut))
        for f, p in zip(full, part, strict=True):
            # Bit-for-bit: rounding that depends on later data is look-ahead too.
            np.testing.assert_array_equal(f[:cut], p)
