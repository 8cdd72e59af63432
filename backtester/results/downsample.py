"""Shrinking long series for the browser while keeping their shape.

* ``lttb_indices(x, y, threshold, keep=())`` — Largest-Triangle-Three-Buckets (Steinarsson,
  2013): the first and last points, and in each of ``threshold - 2`` equal buckets the point
  that spans the largest triangle with the previously chosen point and the next bucket's mean.
  Indices listed in ``keep`` (for instance the curve's peak and the drawdown's trough) are
  always in the output, so the result has at most ``threshold + len(keep)`` points.
* ``lttb(x, y, threshold)`` — the same, returning the chosen ``(x, y)``.
* ``minmax_indices(y, buckets)`` — the min/max envelope: per bucket the lowest and the highest
  point, in time order (at most ``2 * buckets`` points); exact extremes, coarser shape.
* ``ohlc_buckets(timestamp, open, high, low, close, max_candles)`` — consecutive candles
  merged ``k`` at a time (open first, high max, low min, close last) so that at most
  ``max_candles`` remain; ``chart_candles`` prefers the engine's UTC-aligned ``resample``.

The LTTB loop is a numba kernel: about 3 ms for 525,600 points down to 2,000.
"""

from __future__ import annotations

from collections.abc import Iterable

import numba
import numpy as np
import numpy.typing as npt

from backtester.engine.candles import Candles, timeframe_ms
from backtester.engine.errors import CandleError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Coarser chart timeframes tried in order when a series has too many candles for a chart.
CHART_TIMEFRAMES = ("1m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "3d", "1w")


@numba.njit(cache=True, nogil=True)
def _lttb_kernel(x: FloatArray, y: FloatArray, threshold: int) -> IntArray:  # pragma: no cover
    n = x.shape[0]
    out = np.empty(threshold, np.int64)
    every = (n - 2) / (threshold - 2)
    a = 0
    out[0] = 0
    for i in range(threshold - 2):
        # Mean of the next bucket (the last bucket's "next" is the final point).
        avg_start = int(np.floor((i + 1) * every)) + 1
        avg_end = int(np.floor((i + 2) * every)) + 1
        if avg_end > n:
            avg_end = n
        avg_x = 0.0
        avg_y = 0.0
        for j in range(avg_start, avg_end):
            avg_x += x[j]
            avg_y += y[j]
        count = avg_end - avg_start
        if count > 0:
            avg_x /= count
            avg_y /= count
        else:
            avg_x = x[n - 1]
            avg_y = y[n - 1]
        start = int(np.floor(i * every)) + 1
        end = int(np.floor((i + 1) * every)) + 1
        if end > n - 1:
            end = n - 1
        ax = x[a]
        ay = y[a]
        best = -1.0
        chosen = start
        for j in range(start, end):
            area = abs((ax - avg_x) * (y[j] - ay) - (ax - x[j]) * (avg_y - ay))
            if area > best:
                best = area
                chosen = j
        out[i + 1] = chosen
        a = chosen
    out[threshold - 1] = n - 1
    return out


def _as_xy(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    xs = np.asarray(x)
    ys = np.asarray(y, np.float64)
    if xs.ndim != 1 or ys.ndim != 1 or xs.shape != ys.shape:
        raise ValueError("x and y must be 1-D arrays of the same length")
    # Relative x keeps the triangle areas exact for epoch-millisecond timestamps.
    xf = xs.astype(np.float64) - (float(xs[0]) if xs.shape[0] else 0.0)
    if not np.all(np.isfinite(ys)):
        # NaN would poison every area in its bucket; carry the last finite value instead.
        ys = ys.copy()
        bad = ~np.isfinite(ys)
        idx = np.where(bad, 0, np.arange(ys.shape[0]))
        np.maximum.accumulate(idx, out=idx)
        ys = ys[idx]
        ys[~np.isfinite(ys)] = 0.0
    return np.ascontiguousarray(xf), np.ascontiguousarray(ys)


def lttb_indices(
    x: npt.ArrayLike, y: npt.ArrayLike, threshold: int, keep: Iterable[int] = ()
) -> IntArray:
    """Sorted indices of the points LTTB keeps (all of them when there are ≤ threshold)."""
    if threshold < 3:
        raise ValueError("threshold must be at least 3 (first, last and one bucket)")
    xf, yf = _as_xy(x, y)
    n = xf.shape[0]
    if n <= threshold:
        return np.arange(n, dtype=np.int64)
    chosen = _lttb_kernel(xf, yf, int(threshold))
    extra = np.asarray([k for k in keep if 0 <= k < n], np.int64)
    if extra.size:
        chosen = np.union1d(chosen, extra)
    return chosen


def warm_up() -> None:
    """Load the LTTB kernel (the live equity curve is thinned with it) before the first run."""
    x = np.arange(300, dtype=np.float64)
    lttb_indices(x, np.sin(x / 10.0), 50)


def lttb(x: npt.ArrayLike, y: npt.ArrayLike, threshold: int) -> tuple[np.ndarray, FloatArray]:
    """The LTTB-chosen ``(x, y)`` points, first and last included."""
    xs = np.asarray(x)
    ys = np.asarray(y, np.float64)
    idx = lttb_indices(xs, ys, threshold)
    return xs[idx], ys[idx]


def minmax_indices(y: npt.ArrayLike, buckets: int) -> IntArray:
    """The min/max envelope: each bucket's lowest and highest point, in index order.

    Keeps the first and last point too; at most ``2 * buckets + 2`` indices.
    """
    ys = np.asarray(y, np.float64)
    n = ys.shape[0]
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    if n <= 2 * buckets:
        return np.arange(n, dtype=np.int64)
    size = -(-n // buckets)
    pad = size * buckets - n
    grid = np.pad(ys, (0, pad), mode="edge").reshape(buckets, size)
    base = np.arange(buckets, dtype=np.int64) * size
    lo = np.minimum(base + np.nanargmin(grid, axis=1), n - 1)
    hi = np.minimum(base + np.nanargmax(grid, axis=1), n - 1)
    return np.unique(np.concatenate(([0, n - 1], lo, hi))).astype(np.int64)


def ohlc_buckets(
    timestamp: npt.ArrayLike,
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    max_candles: int,
) -> dict[str, np.ndarray]:
    """Merge runs of ``k`` consecutive candles so that at most ``max_candles`` remain.

    Each merged candle starts at its first bar's timestamp; open first, high max, low min,
    close last. Returns the columns timestamp, open, high, low, close.
    """
    ts = np.asarray(timestamp, np.int64)
    n = ts.shape[0]
    if max_candles < 1:
        raise ValueError("max_candles must be at least 1")
    k = max(1, -(-n // max_candles))
    starts = np.arange(0, n, k)
    ends = np.minimum(starts + k, n) - 1
    return {
        "timestamp": ts[starts],
        "open": np.asarray(open_, np.float64)[starts],
        "high": np.maximum.reduceat(np.asarray(high, np.float64), starts) if n else ts[:0] * 1.0,
        "low": np.minimum.reduceat(np.asarray(low, np.float64), starts) if n else ts[:0] * 1.0,
        "close": np.asarray(close, np.float64)[ends],
    }


def chart_candles(candles: Candles, max_candles: int) -> tuple[dict[str, np.ndarray], str]:
    """At most ``max_candles`` candles for a chart and the timeframe label they have.

    The finest standard timeframe (UTC-aligned, via ``Candles.resample``) that fits is used; if
    none fits or the series has no regular timeframe, runs of candles are merged by count and
    the label says how many bars each holds.
    """
    cols = ("timestamp", "open", "high", "low", "close")
    if len(candles) <= max_candles:
        return {c: np.asarray(getattr(candles, c)) for c in cols}, candles.timeframe or ""
    source = candles.timeframe_ms
    for tf in CHART_TIMEFRAMES:
        target = timeframe_ms(tf)
        if target <= source or target % source:
            continue
        # Buckets with no bar are skipped, so the span over the target is an upper bound.
        span = int(candles.timestamp[-1] - candles.timestamp[0]) // target + 1
        if span > max_candles:
            continue
        try:
            coarse = candles.resample(tf)
        except CandleError:
            continue
        if len(coarse) <= max_candles:
            return {c: np.asarray(getattr(coarse, c)) for c in cols}, tf
    merged = ohlc_buckets(
        candles.timestamp, candles.open, candles.high, candles.low, candles.close, max_candles
    )
    k = -(-len(candles) // max_candles)
    return merged, f"{k} bars"
