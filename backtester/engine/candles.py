"""The validated candle container every other engine module works on.

``Candles`` holds one series of OHLCV bars as numpy arrays plus optional extra columns. It is
checked once on construction so the indicators and the simulator can trust it: equal lengths,
strictly increasing UTC millisecond timestamps, finite prices with a consistent high/low, and
finite non-negative volume. Missing bars are never invented; ``gaps()`` reports them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from backtester.engine.errors import CandleError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
# Bounds that keep every sum and product the engine forms (window sums of price x volume over
# millions of bars, squares of prices and volumes, cash / price) many orders of magnitude away
# from the float range, so no indicator overflows and no fill divides by a vanishing price.
# Real markets sit far inside them (BTC quoted in the weakest currencies is ~1e10; tokens
# quoted in BTC go down to ~1e-14; the largest token supplies are ~1e18 units).
MIN_PRICE: float = 1e-20
MAX_PRICE: float = 1e15
MAX_VOLUME: float = 1e24

_MINUTE_MS = 60_000
_UNIT_MS = {
    "m": _MINUTE_MS,
    "h": 60 * _MINUTE_MS,
    "d": 1_440 * _MINUTE_MS,
    "w": 10_080 * _MINUTE_MS,
}
_DAY_MS = _UNIT_MS["d"]
_WEEK_MS = _UNIT_MS["w"]
# 1970-01-01 was a Thursday; exchanges open their weekly candles on Monday 00:00 UTC.
_WEEK_ORIGIN_MS = 4 * _DAY_MS
_TIMEFRAME_RE = re.compile(r"(\d+)([mhdw])")


def timeframe_ms(tf: str) -> int:
    """Length of a timeframe such as "1m", "15m", "4h", "1d" or "1w" in milliseconds.

    Raises CandleError for anything that is not a positive whole number followed by m, h, d or w.
    """
    match = _TIMEFRAME_RE.fullmatch(tf.strip()) if isinstance(tf, str) else None
    if match is None or int(match.group(1)) == 0:
        raise CandleError(
            f"timeframe {tf!r} is not a positive number followed by m, h, d or w (e.g. '15m')"
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def bars_per_year(tf_ms: int) -> float:
    """How many bars of ``tf_ms`` milliseconds fit in a 365-day year (crypto trades every day)."""
    if tf_ms <= 0:
        raise CandleError(f"timeframe of {tf_ms} ms is not positive")
    return 365 * _DAY_MS / tf_ms


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of missing bars between bar ``after_index`` and the next one.

    ``start_ms`` is where the first missing bar would open and ``end_ms`` is the open time of
    the next bar present, so the missing span is ``[start_ms, end_ms)``.
    """

    after_index: int
    start_ms: int
    end_ms: int
    missing_bars: int


def _as_float_column(name: str, values: Any) -> FloatArray:
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CandleError(f"column {name!r} does not hold numbers ({exc})") from None
    if arr.ndim != 1:
        raise CandleError(f"column {name!r} must be one-dimensional, got shape {arr.shape}")
    return arr


def _as_timestamps(values: Any) -> IntArray:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise CandleError(f"column 'timestamp' must be one-dimensional, got shape {raw.shape}")
    if np.issubdtype(raw.dtype, np.datetime64):
        # Any datetime64 unit is accepted and brought to milliseconds (sub-ms is truncated).
        if np.isnat(raw).any():
            row = int(np.flatnonzero(np.isnat(raw))[0])
            raise CandleError("timestamp is missing", row=row)
        return np.ascontiguousarray(raw.astype("datetime64[ms]").astype(np.int64))
    if raw.dtype.kind in "iu":
        return np.ascontiguousarray(raw, dtype=np.int64)
    try:
        as_float = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise CandleError("column 'timestamp' does not hold epoch milliseconds") from None
    bad = ~np.isfinite(as_float) | (as_float != np.round(as_float))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CandleError(
            f"timestamp {float(as_float[row])!r} is not a whole number of milliseconds", row=row
        )
    return np.ascontiguousarray(as_float.astype(np.int64))


def _first(mask: npt.NDArray[np.bool_]) -> int | None:
    """Index of the first True, or None (mask is never empty here)."""
    i = int(np.argmax(mask))
    return i if mask[i] else None


# eq=False: comparing array fields with == is ambiguous, so equality and hashing are by identity
# (which also lets a Candles object key a cache).
@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Candles:
    """One OHLCV series: UTC millisecond timestamps, float64 prices/volume and extra columns.

    Construction converts the inputs to contiguous int64/float64 arrays and raises CandleError
    (with ``row`` set to the first offending bar) when a validation rule is broken.
    """

    timestamp: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    extra: Mapping[str, FloatArray] = field(default_factory=dict)
    symbol: str = ""
    timeframe: str = ""

    def __post_init__(self) -> None:
        ts = _as_timestamps(self.timestamp)
        n = ts.shape[0]
        columns: dict[str, FloatArray] = {}
        for name in PRICE_COLUMNS:
            arr = _as_float_column(name, getattr(self, name))
            if arr.shape[0] != n:
                raise CandleError(
                    f"column {name!r} has {arr.shape[0]} values but timestamp has {n}"
                )
            columns[name] = arr
        extras: dict[str, FloatArray] = {}
        for key, values in dict(self.extra).items():
            if not isinstance(key, str) or not key:
                raise CandleError(f"extra column name {key!r} must be a non-empty string")
            if key in PRICE_COLUMNS or key == "timestamp":
                raise CandleError(f"extra column {key!r} clashes with a built-in column")
            arr = _as_float_column(key, values)
            if arr.shape[0] != n:
                raise CandleError(
                    f"extra column {key!r} has {arr.shape[0]} values but timestamp has {n}"
                )
            extras[key] = arr
        if self.timeframe:
            timeframe_ms(self.timeframe)
        _validate(ts, columns)
        object.__setattr__(self, "timestamp", ts)
        for name, arr in columns.items():
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "extra", MappingProxyType(extras))

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def __repr__(self) -> str:
        span = ""
        if len(self):
            first = np.datetime64(int(self.timestamp[0]), "ms")
            last = np.datetime64(int(self.timestamp[-1]), "ms")
            span = f", from={first}, to={last}"
        extras = f", extra={list(self.extra)}" if self.extra else ""
        return (
            f"Candles(symbol={self.symbol!r}, timeframe={self.timeframe!r}, "
            f"bars={len(self)}{span}{extras})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The read-only extra mapping cannot be pickled; rebuild from plain parts instead
        # (process pools pickle candles when they fan work out).
        return (
            _trusted,
            (self.timestamp, self._price_dict(), dict(self.extra), self.symbol, self.timeframe),
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """Names ``column()`` accepts: the five OHLCV columns, then the extras."""
        return PRICE_COLUMNS + tuple(self.extra)

    def column(self, name: str) -> FloatArray:
        """The open/high/low/close/volume or extra column called ``name`` (KeyError if none)."""
        if name in PRICE_COLUMNS:
            arr: FloatArray = getattr(self, name)
            return arr
        if name in self.extra:
            return self.extra[name]
        raise KeyError(f"no column {name!r}; available: {', '.join(self.columns)}")

    def slice(self, start: int | None = None, stop: int | None = None) -> Candles:
        """Bars ``start:stop`` (Python slice rules) as new Candles sharing this one's memory."""
        part = slice(start, stop)
        return _trusted(
            self.timestamp[part],
            {name: getattr(self, name)[part] for name in PRICE_COLUMNS},
            {key: arr[part] for key, arr in self.extra.items()},
            self.symbol,
            self.timeframe,
        )

    @property
    def timeframe_ms(self) -> int:
        """Bar length in ms: from ``timeframe`` when set, else the median spacing of the bars."""
        if self.timeframe:
            return timeframe_ms(self.timeframe)
        if len(self) < 2:
            raise CandleError("cannot infer the timeframe from fewer than two bars")
        return int(np.median(np.diff(self.timestamp)))

    def gaps(self, timeframe_ms: int | None = None) -> list[Gap]:
        """Every place where the spacing between two bars exceeds one bar length.

        The bar length is ``timeframe_ms`` if given, else the ``timeframe_ms`` property. A spacing
        that is not a whole multiple counts the bars that would have opened inside it.
        """
        if len(self) < 2:
            return []
        tf = self.timeframe_ms if timeframe_ms is None else int(timeframe_ms)
        if tf <= 0:
            raise CandleError(f"timeframe of {tf} ms is not positive")
        spacing = np.diff(self.timestamp)
        found: list[Gap] = []
        for i in np.flatnonzero(spacing > tf).tolist():
            found.append(
                Gap(
                    after_index=i,
                    start_ms=int(self.timestamp[i]) + tf,
                    end_ms=int(self.timestamp[i + 1]),
                    missing_bars=(int(spacing[i]) - 1) // tf,
                )
            )
        return found

    def resample(self, timeframe: str) -> Candles:
        """Aggregate to a coarser ``timeframe`` whose buckets start on UTC boundaries.

        Open is the first, high the max, low the min, close the last, volume the sum and each
        extra the last value in a bucket. Weeks start on Monday. Buckets with no bar (gaps) are
        left out, not filled; a partial first or last bucket is kept. A target that is finer
        than, or not a whole multiple of, the current timeframe raises CandleError.
        """
        target = timeframe_ms(timeframe)
        n = len(self)
        # With fewer than two bars and no timeframe there is nothing to compare the target with.
        source = target if n < 2 and not self.timeframe else self.timeframe_ms
        if target < source:
            raise CandleError(
                f"cannot resample {self._tf_label()} candles to the finer timeframe {timeframe!r}"
            )
        if target % source:
            raise CandleError(
                f"{timeframe!r} is not a whole multiple of the {self._tf_label()} timeframe"
            )
        origin = _WEEK_ORIGIN_MS if target % _WEEK_MS == 0 else 0
        bucket = (self.timestamp - origin) // target * target + origin
        if n == 0:
            return _trusted(bucket, self._price_dict(), dict(self.extra), self.symbol, timeframe)
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:], n] - 1
        prices = {
            "open": self.open[starts],
            "high": np.maximum.reduceat(self.high, starts),
            "low": np.minimum.reduceat(self.low, starts),
            "close": self.close[ends],
            "volume": np.add.reduceat(self.volume, starts),
        }
        return _trusted(
            np.ascontiguousarray(bucket[starts]),
            {k: np.ascontiguousarray(v) for k, v in prices.items()},
            {k: np.ascontiguousarray(arr[ends]) for k, arr in self.extra.items()},
            self.symbol,
            timeframe,
        )

    def _price_dict(self) -> dict[str, FloatArray]:
        return {name: getattr(self, name) for name in PRICE_COLUMNS}

    def _tf_label(self) -> str:
        return repr(self.timeframe) if self.timeframe else f"{self.timeframe_ms} ms"


def _trusted(
    ts: IntArray,
    prices: Mapping[str, FloatArray],
    extras: Mapping[str, FloatArray],
    symbol: str,
    timeframe: str,
) -> Candles:
    """Build Candles from arrays already known to be valid, skipping the O(n) checks."""
    obj = object.__new__(Candles)
    object.__setattr__(obj, "timestamp", ts)
    for name in PRICE_COLUMNS:
        object.__setattr__(obj, name, prices[name])
    object.__setattr__(obj, "extra", MappingProxyType(dict(extras)))
    object.__setattr__(obj, "symbol", symbol)
    object.__setattr__(obj, "timeframe", timeframe)
    return obj


def _validate(ts: IntArray, c: Mapping[str, FloatArray]) -> None:
    """Raise CandleError for the first row (in row order) that breaks a rule."""
    n = ts.shape[0]
    if n == 0:
        return
    o, h, lo, cl, v = (c[name] for name in PRICE_COLUMNS)
    # Each check yields the first failing row; the earliest row wins, ties go to the check
    # listed first so the message names the most basic problem.
    checks: list[tuple[int | None, str, str]] = []
    not_increasing = np.r_[False, ts[1:] <= ts[:-1]]
    checks.append((_first(not_increasing), "order", "timestamp"))
    for name in PRICE_COLUMNS:
        checks.append((_first(~np.isfinite(c[name])), "finite", name))
    with np.errstate(invalid="ignore"):
        # One min and one max per column first: the row-by-row masks are built only for a
        # column that breaks a bound, so valid candles pay two reductions per column.
        for name in PRICE_COLUMNS[:4]:
            arr = c[name]
            if not arr.min() >= MIN_PRICE:
                checks.append((_first(arr <= 0.0), "positive", name))
                checks.append((_first(arr < MIN_PRICE), "tiny", name))
        for name, limit in (*((p, MAX_PRICE) for p in PRICE_COLUMNS[:4]), ("volume", MAX_VOLUME)):
            arr = c[name]
            if not arr.max() <= limit:
                checks.append((_first(arr > limit), "huge", name))
        checks.append((_first(h < np.maximum(o, cl)), "high", "high"))
        checks.append((_first(lo > np.minimum(o, cl)), "low", "low"))
        checks.append((_first(v < 0), "negative", "volume"))
    found = [(row, i, what, name) for i, (row, what, name) in enumerate(checks) if row is not None]
    if not found:
        return
    row, _, what, name = min(found)
    value = float(c[name][row]) if name in c else 0.0
    if what == "order":
        raise CandleError(
            f"timestamp {int(ts[row])} is not after the previous one {int(ts[row - 1])}", row=row
        )
    if what == "finite":
        raise CandleError(f"{name} is not a finite number", row=row)
    if what == "positive":
        raise CandleError(f"{name} {value!r} is not positive (prices must be above 0)", row=row)
    if what == "tiny":
        raise CandleError(
            f"{name} {value!r} is below the smallest price the engine accepts ({MIN_PRICE:g})",
            row=row,
        )
    if what == "huge":
        kind, limit = ("volume", MAX_VOLUME) if name == "volume" else ("price", MAX_PRICE)
        raise CandleError(
            f"{name} {value!r} is above the largest {kind} the engine accepts ({limit:g})",
            row=row,
        )
    if what == "high":
        other, ref = ("open", o[row]) if h[row] < o[row] else ("close", cl[row])
        raise CandleError(f"high {float(h[row])!r} is below {other} {float(ref)!r}", row=row)
    if what == "low":
        other, ref = ("open", o[row]) if lo[row] > o[row] else ("close", cl[row])
        raise CandleError(f"low {float(lo[row])!r} is above {other} {float(ref)!r}", row=row)
    raise CandleError(f"volume {float(v[row])!r} is negative", row=row)
