"""Deterministic synthetic candles for the demo set (pure numpy, no Django).

The demo must look like a crypto market to the eye and to the statistics a trader checks:

* volatility clusters: the variance follows a GARCH(1,1) recursion on hourly shocks (calm
  stretches and storms), and every minute inside an hour draws its size from that hour's
  variance, so squared minute returns are autocorrelated;
* fat tails: the minute shocks are Student-t with 4 degrees of freedom scaled to unit variance
  (kurtosis well above the normal's 3);
* a day has a rhythm: volatility and volume are higher during the US/EU overlap;
* volume rises with the size of the move and with the volatility regime;
* the OHLC rules hold bar by bar: open is the previous close, high >= max(open, close),
  low <= min(open, close), prices on the symbol's tick grid, volume > 0.

Everything comes from ``numpy.random.default_rng(seed)``, so the same seed gives the same candles
on every machine. The hourly and daily series are resampled from the minute series (not drawn
separately), so all three timeframes of a symbol tell the same story.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from backtester.engine.candles import Candles, timeframe_ms

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# The demo year ends at a fixed instant so every install shows the same history.
DEMO_END_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
DEMO_DAYS = 366  # 2024 is a leap year: the whole calendar year 2024
DEMO_TIMEFRAMES: tuple[str, ...] = ("1m", "1h", "1d")


@dataclass(frozen=True, slots=True)
class DemoAsset:
    """How one synthetic market behaves: starting price, tick, yearly volatility, volume scale."""

    symbol: str
    start_price: float
    tick: float
    annual_vol: float
    drift: float  # yearly log drift
    base_volume: float  # typical base-asset volume of a quiet minute
    volume_step: float


DEMO_ASSETS: tuple[DemoAsset, ...] = (
    DemoAsset("BTC/USDT", 42_000.0, 0.01, 0.55, 0.35, 9.0, 1e-5),
    DemoAsset("ETH/USDT", 2_300.0, 0.01, 0.68, 0.25, 120.0, 1e-4),
    DemoAsset("SOL/USDT", 100.0, 0.001, 0.95, 0.30, 2_500.0, 1e-3),
)

_STUDENT_DF = 4.0
# GARCH(1,1) on hourly shocks: persistence alpha + beta = 0.985 gives storms lasting days.
_GARCH_ALPHA = 0.08
_GARCH_BETA = 0.905


def demo_seed_for(symbol: str) -> int:
    """A stable seed per symbol (crc32 of its name), the same on every machine."""
    return zlib.crc32(symbol.encode("utf-8"))


def generate_minutes(
    asset: DemoAsset,
    *,
    end_ms: int = DEMO_END_MS,
    days: int = DEMO_DAYS,
    seed: int | None = None,
) -> Candles:
    """1-minute candles of ``asset`` over ``days`` days ending (exclusive) at ``end_ms``.

    ``end_ms`` must fall on a UTC day boundary. Deterministic for a given seed (default: a seed
    derived from the symbol).
    """
    if end_ms % DAY_MS:
        raise ValueError("end_ms must be a UTC midnight")
    if days < 1:
        raise ValueError("days must be at least 1")
    rng = np.random.default_rng(demo_seed_for(asset.symbol) if seed is None else seed)
    hours = days * 24
    n = hours * 60
    start_ms = end_ms - days * DAY_MS
    timestamp = start_ms + np.arange(n, dtype=np.int64) * MINUTE_MS

    # Unit-variance Student-t shocks: Var(t_nu) = nu / (nu - 2).
    z = rng.standard_t(_STUDENT_DF, size=n) / np.sqrt(_STUDENT_DF / (_STUDENT_DF - 2.0))

    # Intraday rhythm (UTC hour of the day), normalised to mean 1 in variance terms.
    hour_of_day = (timestamp // HOUR_MS) % 24
    shape = 1.0 + 0.45 * np.exp(-0.5 * ((hour_of_day - 15.0) / 3.0) ** 2)
    shape /= np.sqrt(np.mean(shape**2))

    # GARCH(1,1) variance per hour, driven by each hour's realised shock. The recursion is
    # sequential, but over hours (8,784 a year), so a plain loop costs a few milliseconds.
    hourly_var = (asset.annual_vol**2) / (365.0 * 24.0)
    omega = hourly_var * (1.0 - _GARCH_ALPHA - _GARCH_BETA)
    hour_shock = z.reshape(hours, 60).sum(axis=1) / np.sqrt(60.0)
    sigma2 = np.empty(hours)
    var = hourly_var
    for h in range(hours):
        sigma2[h] = var
        var = omega + _GARCH_ALPHA * var * hour_shock[h] ** 2 + _GARCH_BETA * var
    minute_sigma = np.repeat(np.sqrt(sigma2 / 60.0), 60) * shape
    drift = asset.drift / (365.0 * 1440.0)
    log_ret = drift + minute_sigma * z

    close = _on_tick(asset.start_price * np.exp(np.cumsum(log_ret)), asset.tick)
    open_ = np.empty(n)
    open_[0] = _on_tick(np.array([asset.start_price]), asset.tick)[0]
    open_[1:] = close[:-1]

    # Wicks: how far the price strayed beyond the body, a half-normal in units of the bar's sigma.
    up = np.abs(rng.standard_normal(n)) * minute_sigma * 0.6
    down = np.abs(rng.standard_normal(n)) * minute_sigma * 0.6
    body_high = np.maximum(open_, close)
    body_low = np.minimum(open_, close)
    high = np.maximum(_on_tick(body_high * np.exp(up), asset.tick), body_high)
    low = np.minimum(_on_tick(body_low * np.exp(-down), asset.tick), body_low)
    low = np.maximum(low, asset.tick)

    # Volume: busier when the move is large, when volatility is high and at the busy hours.
    surprise = np.abs(log_ret - drift) / np.maximum(minute_sigma, 1e-12)
    regime = np.repeat(np.sqrt(sigma2 / hourly_var), 60)
    noise = rng.lognormal(mean=0.0, sigma=0.5, size=n)
    raw_volume = asset.base_volume * shape * regime**0.7 * (0.4 + 0.6 * surprise) * noise
    volume = np.maximum(_on_tick(raw_volume, asset.volume_step), asset.volume_step)

    return Candles(
        timestamp=timestamp,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        symbol=asset.symbol,
        timeframe="1m",
    )


def generate_series(
    asset: DemoAsset, *, end_ms: int = DEMO_END_MS, days: int = DEMO_DAYS
) -> dict[str, Candles]:
    """The asset's candles at every demo timeframe, the coarser ones resampled from 1m."""
    minutes = generate_minutes(asset, end_ms=end_ms, days=days)
    out = {"1m": minutes}
    for tf in DEMO_TIMEFRAMES:
        if tf != "1m":
            timeframe_ms(tf)
            out[tf] = minutes.resample(tf)
    return out


def _on_tick(values: np.ndarray, tick: float) -> np.ndarray:
    """Round to the tick grid; the rounding is done in tick units so decimals print cleanly."""
    decimals = max(0, round(-np.log10(tick))) if tick < 1 else 0
    return np.round(np.round(values / tick) * tick, decimals)
