"""Technical indicators over float64 arrays, following TA-Lib's conventions.

Every function takes 1-D arrays (anything ``np.asarray`` accepts) and returns float64 arrays of
the same length, NaN during the warm-up exactly where TA-Lib puts it. Window arguments must be
positive ints (ValueError otherwise); a window longer than the data gives all NaN.

NaN inputs: leading NaNs (an indicator of an indicator, e.g. an EMA of the MACD line) are
skipped the way TA-Lib's Python wrapper does: the calculation starts at the first bar where
every input is a number and the warm-up counts from there. A NaN after that spoils only the
windows that contain it for the windowed indicators (SMA, WMA, std, max/min, VWAP, ...), and
carries forward for the recursive ones (EMA, RSI, ATR, ADX, MACD), as in TA-Lib.

Two deliberate differences from TA-Lib, both only for tiny numbers: TA-Lib treats a variance,
a gain+loss sum or a true range below 1e-8 as zero, which freezes RSI/ADX and zeroes the
standard deviation of coins priced below about a cent; here only an exact zero is zero. And the
rolling standard deviation is computed window by window (two-pass) rather than from running
sums of x and x**2, so it does not lose digits when the price is large relative to its spread.

Rolling sums (SMA, stochastic smoothing, VWAP) are running sums that carry their rounding
errors exactly, so each window's sum is math.fsum of the window to within an ulp however long
and far from zero the series is: two averages that nearly tie are compared on their true
values, not on accumulated rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = npt.NDArray[np.float64]

# Keeps the temporary (rows x window) blocks of the two-pass std around 2 MB.
_STD_CHUNK_ELEMENTS = 1 << 18
# Fewest bars between two rebuilds of a rolling sum from its window alone.
_MIN_ANCHOR = 4096


# --------------------------------------------------------------------------------------------
# argument checks and NaN bookkeeping


def _window(value: Any, name: str = "n") -> int:
    """A window length: a positive int (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def _series(values: Any, name: str = "x") -> FloatArray:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _same_length(*arrays: FloatArray) -> int:
    n = arrays[0].shape[0]
    for arr in arrays[1:]:
        if arr.shape[0] != n:
            raise ValueError(f"inputs have different lengths: {[a.shape[0] for a in arrays]}")
    return int(n)


def _valid_from(*arrays: FloatArray) -> int:
    """First index where every input is a number (len if there is none), as TA-Lib's wrapper."""
    if all(arr.shape[0] > 0 and not math.isnan(arr[0]) for arr in arrays):
        return 0  # the usual case, without a pass over the data
    bad = np.isnan(arrays[0])
    for arr in arrays[1:]:
        bad = bad | np.isnan(arr)
    if not bad[:1].any():
        return 0
    good = ~bad
    return int(np.argmax(good)) if good.any() else int(bad.shape[0])


def _nans(n: int) -> FloatArray:
    return np.full(n, np.nan, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# windowed building blocks (no leading NaN in their input)


def _rolling_sum_py(y: FloatArray, n: int, divisor: float, anchor: int) -> tuple[FloatArray, bool]:
    """Sum of each window of n values divided by ``divisor`` (NaN for the first n-1), and
    whether every value was finite (if not, the sums are meaningless; see _rolling_sum).

    One pass with a running sum whose rounding errors are kept exactly (Knuth's TwoSum) in a
    second accumulator, so each window sum comes out correctly rounded give or take an ulp,
    like math.fsum of the window, on series of any length and offset (a plain running sum
    drifts by ~1e-10 over 10^6 bars and flips near-ties of two averages). Every ``anchor``
    bars (>= n) the sum is rebuilt from the window alone, so a long-gone value, however large,
    leaves no rounding behind. Bar t only ever reads bars <= t.
    """
    m = y.shape[0]
    out = np.empty(m)
    if m < n:
        out[:] = math.nan
        return out, True
    s = 0.0  # running sum of the window
    c = 0.0  # the exact rounding errors of every step that built s
    seen = 0.0  # sum of v * 0: NaN as soon as any value is NaN or infinite
    for i in range(n):
        v = y[i]
        seen += v * 0.0
        t = s + v
        z = t - s
        c += (s - (t - z)) + (v - z)
        s = t
        out[i] = math.nan
    out[n - 1] = (s + c) / divisor
    start = n
    next_anchor = anchor
    while start < m:
        stop = min(next_anchor, m)
        for i in range(start, stop):
            v = y[i]
            old = y[i - n]
            seen += v * 0.0
            # TwoSum twice: d + e1 == v - old and t + e2 == s + d, both exactly.
            d = v - old
            z = d - v
            e1 = (v - (d - z)) - (old + z)
            t = s + d
            z = t - s
            e2 = (s - (t - z)) + (d - z)
            s = t
            c += e1 + e2
            out[i] = (s + c) / divisor
        if stop == m:
            break
        # Rebuild the sum of the window ending at bar `stop` from its own values.
        seen += y[stop] * 0.0
        s = 0.0
        c = 0.0
        for j in range(stop - n + 1, stop + 1):
            v = y[j]
            t = s + v
            z = t - s
            c += (s - (t - z)) + (v - z)
            s = t
        out[stop] = (s + c) / divisor
        start = stop + 1
        next_anchor += anchor
    return out, seen == 0.0


def _rolling_sum_div(y: FloatArray, n: int, divisor: float) -> FloatArray:
    """Window sums over ``divisor``; a window holding a NaN (or both infinities) is NaN, one
    holding infinities of one sign is that infinity."""
    # Rebuilding a window costs n additions; every 8n bars (at least 4096) that is <= 1/8 more.
    anchor = max(8 * n, _MIN_ANCHOR)
    out, finite = _rolling_sum_kernel(y, n, divisor, anchor)
    if finite:
        return out
    # Rare: sum the finite values alone, then mark the windows the others fall in.
    nan = np.isnan(y)
    pos = y == np.inf
    neg = y == -np.inf
    out, _ = _rolling_sum_kernel(np.where(nan | pos | neg, 0.0, y), n, divisor, anchor)
    if y.shape[0] >= n:
        tail = out[n - 1 :]

        def in_window(flags: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
            count = np.concatenate(([0], np.cumsum(flags)))
            return (count[n:] - count[:-n]) > 0

        has_pos, has_neg = in_window(pos), in_window(neg)
        tail[has_pos] = np.inf
        tail[has_neg] = -np.inf
        tail[in_window(nan) | (has_pos & has_neg)] = np.nan
    return out


def _rolling_sum(y: FloatArray, n: int) -> FloatArray:
    """Sum of each window of n values, NaN for the first n-1 and for windows holding a NaN."""
    return _rolling_sum_div(y, n, 1.0)


def _rolling_mean(y: FloatArray, n: int) -> FloatArray:
    # Divided inside the pass: (sum) / n exactly as TA-Lib, without a second array.
    return _rolling_sum_div(y, n, float(n))


def _rolling_std(y: FloatArray, n: int) -> FloatArray:
    """Population standard deviation of each window, two-pass per window for accuracy."""
    m = y.shape[0]
    out = _nans(m)
    if m < n:
        return out
    windows = sliding_window_view(y, n)
    rows = windows.shape[0]
    step = max(1, _STD_CHUNK_ELEMENTS // n)
    for start in range(0, rows, step):
        block = windows[start : start + step]
        dev = block - block.mean(axis=1, keepdims=True)
        out[n - 1 + start : n - 1 + start + block.shape[0]] = np.sqrt(
            np.einsum("ij,ij->i", dev, dev) / n
        )
    return out


def _rolling_extreme(y: FloatArray, n: int, pick: np.ufunc) -> FloatArray:
    """Running max or min (``pick`` = np.maximum / np.minimum) of each window of n values.

    van Herk / Gil-Werman: with blocks of n, a window [a, a+n-1] is the part of a's block from
    a on plus the part of the next block up to a+n-1, so one suffix and one prefix scan per
    block give every window in O(len) whatever n is. A NaN spoils exactly its windows.
    """
    m = y.shape[0]
    out = _nans(m)
    if m < n:
        return out
    blocks = -(-m // n)
    padded = np.full(blocks * n, y[-1])
    padded[:m] = y
    grid = padded.reshape(blocks, n)
    prefix = pick.accumulate(grid, axis=1).ravel()
    suffix = pick.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
    starts = np.arange(m - n + 1)
    out[n - 1 :] = pick(suffix[starts], prefix[starts + n - 1])
    return out


def _rolling_max(y: FloatArray, n: int) -> FloatArray:
    return _rolling_extreme(y, n, np.maximum)


def _rolling_min(y: FloatArray, n: int) -> FloatArray:
    return _rolling_extreme(y, n, np.minimum)


def _apply(core: Callable[[FloatArray], FloatArray], x: FloatArray) -> FloatArray:
    """Run ``core`` from the first number in x on, padding the skipped start with NaN."""
    start = _valid_from(x)
    if start == 0:
        return core(x)  # no copy into a padded array when nothing is skipped
    out = _nans(x.shape[0])
    out[start:] = core(x[start:])
    return out


# --------------------------------------------------------------------------------------------
# recursions numpy cannot vectorize (numba)


def _ema_py(y: FloatArray, n: int, k: float, seed_end: int) -> FloatArray:
    # Seed with the mean of the n values ending at seed_end, then x*k + prev*(1-k) onwards.
    m = y.shape[0]
    out = np.full(m, np.nan)
    if seed_end >= m:
        return out
    total = 0.0
    for i in range(seed_end - n + 1, seed_end + 1):
        total += y[i]
    prev = total / n
    out[seed_end] = prev
    for i in range(seed_end + 1, m):
        prev = (y[i] - prev) * k + prev
        out[i] = prev
    return out


def _rsi_py(y: FloatArray, n: int) -> FloatArray:
    m = y.shape[0]
    out = np.full(m, np.nan)
    if m <= n:
        return out
    gain = 0.0
    loss = 0.0
    for i in range(1, n + 1):
        change = y[i] - y[i - 1]
        if change < 0:
            loss -= change
        else:
            gain += change
    gain /= n
    loss /= n
    total = gain + loss
    out[n] = 100.0 * (gain / total) if total != 0.0 else 0.0
    for i in range(n + 1, m):
        change = y[i] - y[i - 1]
        gain *= n - 1
        loss *= n - 1
        if change < 0:
            loss -= change
        else:
            gain += change
        gain /= n
        loss /= n
        total = gain + loss
        out[i] = 100.0 * (gain / total) if total != 0.0 else 0.0
    return out


def _wilder_py(tr: FloatArray, n: int) -> FloatArray:
    # tr[0] is unused (no previous close); the first value at n is the mean of tr[1..n].
    m = tr.shape[0]
    out = np.full(m, np.nan)
    if m <= n:
        return out
    total = 0.0
    for i in range(1, n + 1):
        total += tr[i]
    prev = total / n
    out[n] = prev
    for i in range(n + 1, m):
        prev = (prev * (n - 1) + tr[i]) / n
        out[i] = prev
    return out


def _adx_py(high: FloatArray, low: FloatArray, close: FloatArray, n: int) -> FloatArray:
    # TA-Lib's sequence: DM/TR sums over bars 1..n-1, Wilder-smoothed from bar n, DX averaged
    # over bars n..2n-1 for the first ADX at 2n-1, then ADX Wilder-smoothed.
    m = high.shape[0]
    out = np.full(m, np.nan)
    if m < 2 * n:
        return out
    minus_dm = 0.0
    plus_dm = 0.0
    tr_sum = 0.0
    for i in range(1, n):
        up = high[i] - high[i - 1]
        down = low[i - 1] - low[i]
        if down > 0 and up < down:
            minus_dm += down
        elif up > 0 and up > down:
            plus_dm += up
        tr = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        tr_sum += tr
    sum_dx = 0.0
    adx = 0.0
    for i in range(n, m):
        up = high[i] - high[i - 1]
        down = low[i - 1] - low[i]
        minus_dm -= minus_dm / n
        plus_dm -= plus_dm / n
        if down > 0 and up < down:
            minus_dm += down
        elif up > 0 and up > down:
            plus_dm += up
        tr = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        tr_sum = tr_sum - tr_sum / n + tr
        have_dx = False
        dx = 0.0
        if tr_sum != 0.0:
            minus_di = 100.0 * (minus_dm / tr_sum)
            plus_di = 100.0 * (plus_dm / tr_sum)
            di_sum = minus_di + plus_di
            if di_sum != 0.0:
                dx = 100.0 * (abs(minus_di - plus_di) / di_sum)
                have_dx = True
        if i < 2 * n:
            if have_dx:
                sum_dx += dx
            if i == 2 * n - 1:
                adx = sum_dx / n
                out[i] = adx
        else:
            if have_dx:
                adx = (adx * (n - 1) + dx) / n
            out[i] = adx
    return out


_ema_kernel: Callable[[FloatArray, int, float, int], FloatArray] = njit(cache=True)(_ema_py)
_rsi_kernel: Callable[[FloatArray, int], FloatArray] = njit(cache=True)(_rsi_py)
_wilder_kernel: Callable[[FloatArray, int], FloatArray] = njit(cache=True)(_wilder_py)
_adx_kernel: Callable[[FloatArray, FloatArray, FloatArray, int], FloatArray] = njit(cache=True)(
    _adx_py
)
_rolling_sum_kernel: Callable[[FloatArray, int, float, int], tuple[FloatArray, bool]] = njit(
    cache=True, nogil=True
)(_rolling_sum_py)


def _true_range(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    """True range per bar; bar 0 has no previous close and is NaN."""
    tr = _nans(high.shape[0])
    if high.shape[0] > 1:
        prev = close[:-1]
        tr[1:] = np.maximum.reduce(
            [high[1:] - low[1:], np.abs(high[1:] - prev), np.abs(low[1:] - prev)]
        )
    return tr


# --------------------------------------------------------------------------------------------
# moving averages


def sma(x: npt.ArrayLike, n: int) -> FloatArray:
    """Simple moving average of the last n values (TA-Lib SMA); first value at n-1."""
    n = _window(n)
    return _apply(lambda y: _rolling_mean(y, n), _series(x))


def ema(x: npt.ArrayLike, n: int) -> FloatArray:
    """Exponential moving average, k = 2/(n+1), seeded with the SMA of the first n values."""
    n = _window(n)
    k = 2.0 / (n + 1)
    return _apply(lambda y: _ema_kernel(y, n, k, n - 1), _series(x))


def wma(x: npt.ArrayLike, n: int) -> FloatArray:
    """Linearly weighted moving average (newest weight n, oldest 1) as TA-Lib WMA."""
    n = _window(n)
    weights = np.arange(n, 0, -1, dtype=np.float64) / (n * (n + 1) / 2.0)

    def core(y: FloatArray) -> FloatArray:
        out = _nans(y.shape[0])
        if y.shape[0] >= n:
            # convolve flips the kernel, so weights[0] = n multiplies the newest value.
            out[n - 1 :] = np.convolve(y, weights, mode="valid")
        return out

    return _apply(core, _series(x))


# --------------------------------------------------------------------------------------------
# oscillators and trend


def rsi(x: npt.ArrayLike, n: int = 14) -> FloatArray:
    """Relative strength index with Wilder smoothing (TA-Lib RSI); first value at n.

    When prices did not move at all over the smoothing (gain + loss == 0) the value is 0, as
    in TA-Lib.
    """
    n = _window(n)
    return _apply(lambda y: _rsi_kernel(y, n), _series(x))


def macd(
    x: npt.ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line, signal line and histogram exactly as TA-Lib MACD.

    TA-Lib seeds the fast EMA at the same bar as the slow one (with the mean of the ``fast``
    values ending there), swaps fast and slow if given the wrong way round, and starts all three
    outputs at bar slow + signal - 2.
    """
    fast = _window(fast, "fast")
    slow = _window(slow, "slow")
    signal = _window(signal, "signal")
    if slow < fast:
        fast, slow = slow, fast
    arr = _series(x)
    m = arr.shape[0]
    line, sig, hist = _nans(m), _nans(m), _nans(m)
    start = _valid_from(arr)
    y = arr[start:]
    first = slow + signal - 2
    if y.shape[0] <= first:
        return line, sig, hist
    fast_ema = _ema_kernel(y, fast, 2.0 / (fast + 1), slow - 1)
    slow_ema = _ema_kernel(y, slow, 2.0 / (slow + 1), slow - 1)
    raw = fast_ema[slow - 1 :] - slow_ema[slow - 1 :]
    smooth = _ema_kernel(raw, signal, 2.0 / (signal + 1), signal - 1)
    line[start + first :] = raw[signal - 1 :]
    sig[start + first :] = smooth[signal - 1 :]
    hist[start + first :] = raw[signal - 1 :] - smooth[signal - 1 :]
    return line, sig, hist


def atr(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, n: int = 14) -> FloatArray:
    """Average true range with Wilder smoothing (TA-Lib ATR); first value at n."""
    n = _window(n)
    h, lo, c = _series(high, "high"), _series(low, "low"), _series(close, "close")
    m = _same_length(h, lo, c)
    out = _nans(m)
    start = _valid_from(h, lo, c)
    out[start:] = _wilder_kernel(_true_range(h[start:], lo[start:], c[start:]), n)
    return out


def adx(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, n: int = 14) -> FloatArray:
    """Average directional index (TA-Lib ADX, Wilder smoothing); first value at 2n-1."""
    n = _window(n)
    h, lo, c = _series(high, "high"), _series(low, "low"), _series(close, "close")
    m = _same_length(h, lo, c)
    out = _nans(m)
    start = _valid_from(h, lo, c)
    out[start:] = _adx_kernel(h[start:], lo[start:], c[start:], n)
    return out


def stoch(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    k: int = 14,
    k_smooth: int = 3,
    d: int = 3,
) -> tuple[FloatArray, FloatArray]:
    """Slow stochastic %K and %D (TA-Lib STOCH with SMA smoothing).

    Fast %K is 100*(close - lowest low)/(highest high - lowest low) over k bars (0 when the
    range is 0), %K its k_smooth-bar SMA, %D the d-bar SMA of %K. Both start at
    k + k_smooth + d - 3, as in TA-Lib.
    """
    k = _window(k, "k")
    k_smooth = _window(k_smooth, "k_smooth")
    d = _window(d, "d")
    h, lo, c = _series(high, "high"), _series(low, "low"), _series(close, "close")
    m = _same_length(h, lo, c)
    slow_k, slow_d = _nans(m), _nans(m)
    start = _valid_from(h, lo, c)
    first = start + k + k_smooth + d - 3
    if m <= first:
        return slow_k, slow_d
    hh = _rolling_max(h[start:], k)[k - 1 :]
    ll = _rolling_min(lo[start:], k)[k - 1 :]
    span = (hh - ll) / 100.0
    with np.errstate(invalid="ignore", divide="ignore"):
        fast_k = np.where(span != 0.0, (c[start + k - 1 :] - ll) / span, 0.0)
    smooth_k = _rolling_mean(fast_k, k_smooth)[k_smooth - 1 :]
    smooth_d = _rolling_mean(smooth_k, d)
    slow_k[first:] = smooth_k[d - 1 :]
    slow_d[first:] = smooth_d[d - 1 :]
    return slow_k, slow_d


def obv(close: npt.ArrayLike, volume: npt.ArrayLike) -> FloatArray:
    """On-balance volume (TA-Lib OBV): starts at the first volume, then adds the volume on an
    up close, subtracts it on a down close and keeps it on an unchanged close.
    """
    c, v = _series(close, "close"), _series(volume, "volume")
    m = _same_length(c, v)
    out = _nans(m)
    start = _valid_from(c, v)
    if start >= m:
        return out
    cs, vs = c[start:], v[start:]
    flow = np.empty(cs.shape[0])
    flow[0] = vs[0]
    flow[1:] = np.sign(cs[1:] - cs[:-1]) * vs[1:]
    out[start:] = np.cumsum(flow)
    return out


# --------------------------------------------------------------------------------------------
# bands, ranges and volume


def bollinger(
    x: npt.ArrayLike, n: int = 20, k: float = 2.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Bollinger bands (mid, upper, lower): SMA(n) ± k population standard deviations."""
    n = _window(n)
    arr = _series(x)
    mid, std = sma(arr, n), rolling_std(arr, n)
    return mid, mid + k * std, mid - k * std


def rolling_std(x: npt.ArrayLike, n: int) -> FloatArray:
    """Population (ddof=0) standard deviation of the last n values (TA-Lib STDDEV, nbdev=1)."""
    n = _window(n)
    return _apply(lambda y: _rolling_std(y, n), _series(x))


def highest(x: npt.ArrayLike, n: int) -> FloatArray:
    """Maximum of the last n values, current bar included (TA-Lib MAX)."""
    n = _window(n)
    return _apply(lambda y: _rolling_max(y, n), _series(x))


def lowest(x: npt.ArrayLike, n: int) -> FloatArray:
    """Minimum of the last n values, current bar included (TA-Lib MIN)."""
    n = _window(n)
    return _apply(lambda y: _rolling_min(y, n), _series(x))


def donchian(
    high: npt.ArrayLike, low: npt.ArrayLike, n: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Donchian channel (upper, mid, lower): highest high, their midpoint, lowest low over n."""
    n = _window(n)
    h, lo = _series(high, "high"), _series(low, "low")
    _same_length(h, lo)
    upper, lower = highest(h, n), lowest(lo, n)
    return upper, (upper + lower) / 2.0, lower


def vwap(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
    n: int,
) -> FloatArray:
    """Rolling VWAP over n bars: sum(typical*volume)/sum(volume), typical = (high+low+close)/3.

    NaN where the window's volume is zero.
    """
    n = _window(n)
    h, lo, c = _series(high, "high"), _series(low, "low"), _series(close, "close")
    v = _series(volume, "volume")
    m = _same_length(h, lo, c, v)
    out = _nans(m)
    start = _valid_from(h, lo, c, v)
    vs = v[start:]
    typical = (h[start:] + lo[start:] + c[start:]) / 3.0
    num = _rolling_sum(typical * vs, n)
    den = _rolling_sum(vs, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[start:] = np.where(den > 0.0, num / den, np.nan)
    return out


def volume_sma(volume: npt.ArrayLike, n: int) -> FloatArray:
    """Simple moving average of volume over n bars."""
    return sma(volume, n)


def volume_ratio(volume: npt.ArrayLike, n: int) -> FloatArray:
    """Volume divided by its n-bar SMA (1.0 = an average bar; NaN when the average is 0)."""
    v = _series(volume, "volume")
    avg = volume_sma(v, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(avg != 0.0, v / avg, np.nan)


def returns(x: npt.ArrayLike, n: int = 1) -> FloatArray:
    """Simple return over n bars: x[t] / x[t-n] - 1 (NaN for the first n bars)."""
    n = _window(n)
    arr = _series(x)
    out = _nans(arr.shape[0])
    if arr.shape[0] > n:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[n:] = arr[n:] / arr[:-n] - 1.0
    return out


# --------------------------------------------------------------------------------------------
# polynomial regression bands


def _orthonormal_basis(window: int, degree: int) -> FloatArray:
    """Orthonormal basis (window x degree+1) of polynomials of the given degree on the window.

    The span does not depend on how x is scaled, so x runs over [-1, 1] to keep the
    Vandermonde matrix well conditioned; its QR factor Q gives fitted = Q @ (Q.T @ y).
    """
    t = np.linspace(-1.0, 1.0, window) if window > 1 else np.zeros(1)
    vander = np.vander(t, degree + 1, increasing=True)
    q, _ = np.linalg.qr(vander)
    return np.ascontiguousarray(q)


def polyreg_bands(
    x: npt.ArrayLike, window: int, degree: int = 2, k: float = 2.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Rolling least-squares polynomial bands (mid, upper, lower).

    For each bar t >= window-1 a polynomial of ``degree`` is fitted to the last ``window``
    values (x = 0..window-1); mid is the fit at the last point, std the population standard
    deviation of the window's residuals, and the bands mid ± k*std. Each window costs a few
    dot products (its coordinates in an orthonormal polynomial basis), never a fit per bar.
    """
    window = _window(window, "window")
    if isinstance(degree, bool) or not isinstance(degree, int | np.integer) or degree < 0:
        raise ValueError(f"degree must be a whole number >= 0, got {degree!r}")
    degree = int(degree)
    if window <= degree:
        raise ValueError(f"window ({window}) must be larger than degree ({degree})")
    arr = _series(x)
    m = arr.shape[0]
    mid, upper, lower = _nans(m), _nans(m), _nans(m)
    start = _valid_from(arr)
    y = arr[start:]
    if y.shape[0] < window:
        return mid, upper, lower
    # Residuals do not change when a constant is subtracted (constants are in the fit), and a
    # centred series keeps sum(y**2) - |coefficients|**2 from cancelling away its digits. The
    # reference is the first value: a statistic of the whole series (a median, say) would make
    # bar t depend, by rounding, on bars after t.
    ref = float(y[0]) if np.isfinite(y[0]) else 0.0
    z = y - ref
    basis = _orthonormal_basis(window, degree)
    coords = np.stack([np.convolve(z, basis[::-1, j], mode="valid") for j in range(degree + 1)])
    fitted_last = basis[-1] @ coords
    sum_sq = np.convolve(z * z, np.ones(window), mode="valid")
    resid_sq = np.maximum(sum_sq - np.einsum("ij,ij->j", coords, coords), 0.0)
    std = np.sqrt(resid_sq / window)
    centre = fitted_last + ref
    first = start + window - 1
    mid[first:] = centre
    upper[first:] = centre + k * std
    lower[first:] = centre - k * std
    return mid, upper, lower
