"""The functions and columns a strategy rule may use, with their argument signatures.

Each entry says what its arguments must be (a number series, a whole-number period, ...) so the
parser can refuse a wrong call before any data is touched, and how to compute it over candles.
Indicators are looked up on the ``indicators`` module at call time, so one implementation
serves every rule and tests can count calls.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from numba import njit

from backtester.engine import indicators
from backtester.engine.candles import Candles

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
# What evaluating a (sub-)expression yields: a per-bar series or a single scalar.
Value = FloatArray | BoolArray | int | float | bool


class Type(enum.Enum):
    """Static type of an expression; the value is how error messages name it."""

    SERIES = "a number series"
    CONDITION = "a condition (a true/false series)"
    INT = "a whole number"
    FLOAT = "a number"
    BOOL = "true/false"

    @property
    def is_series(self) -> bool:
        """One value per bar (numbers or a condition)."""
        return self in (Type.SERIES, Type.CONDITION)

    @property
    def is_numeric(self) -> bool:
        """Usable in arithmetic: a number series or a single number."""
        return self in (Type.SERIES, Type.INT, Type.FLOAT)

    @property
    def is_bool(self) -> bool:
        """Usable with and/or/not: a condition or true/false."""
        return self in (Type.CONDITION, Type.BOOL)


ArgKind = Literal["series", "numeric", "shiftable", "int", "number"]


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One positional argument.

    kind: "series" a number series; "numeric" a series or a number; "shiftable" a number series
    or a condition; "int" a whole number known before the data is read (a constant or an int
    parameter); "number" any number known before the data is read. ``window`` marks a look-back
    length: it adds to the warm-up and may not exceed the number of bars.
    """

    name: str
    kind: ArgKind
    default: int | float | None = None
    minimum: int | None = None
    maximum: int | None = None
    window: bool = False


class Args:
    """Evaluated arguments handed to a function's ``compute``, with typed accessors."""

    __slots__ = ("_values",)

    def __init__(self, values: Sequence[Value]) -> None:
        self._values = tuple(values)

    def value(self, i: int) -> Value:
        """Argument i as evaluated (array or scalar)."""
        return self._values[i]

    def series(self, i: int) -> FloatArray:
        """Argument i, which the parser guaranteed is a number series."""
        v = self._values[i]
        assert isinstance(v, np.ndarray)
        return v  # type: ignore[return-value]  # the parser guarantees a float64 series

    def whole(self, i: int) -> int:
        """Argument i, which the parser guaranteed is a whole number."""
        v = self._values[i]
        assert isinstance(v, int)
        assert not isinstance(v, bool)
        return v

    def number(self, i: int) -> float:
        """Argument i, a single number, as a float."""
        v = self._values[i]
        assert isinstance(v, int | float)
        assert not isinstance(v, bool)
        return float(v)


Compute = Callable[[Candles, Args], object]
ResultType = Callable[[Sequence[Type]], Type]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A callable name in the language.

    ``cache_name`` set means the result is an indicator worth memoizing in the compile cache
    (multi-output indicators share one entry and pick ``output`` from the tuple).
    ``extra_warmup`` is look-back the function adds beyond its window arguments.
    ``compute`` receives the candles and the evaluated arguments and returns an array (or a
    tuple of arrays, for ``output``).
    """

    name: str
    args: tuple[ArgSpec, ...]
    compute: Compute
    doc: str
    returns: Type | ResultType = Type.SERIES
    cache_name: str | None = None
    output: int | None = None
    extra_warmup: int = 0
    # How to apply the function when every argument is a single number (abs/min/max), so the
    # result stays a Python int usable as a period.
    scalar: Callable[[Sequence[int | float]], int | float] | None = None

    @property
    def required(self) -> int:
        """How many leading arguments have no default."""
        return sum(1 for a in self.args if a.default is None)

    @property
    def signature(self) -> str:
        """Argument list as shown in messages: ``(series, period=14)``."""
        parts = [a.name if a.default is None else f"{a.name}={a.default!r}" for a in self.args]
        return "(" + ", ".join(parts) + ")"

    def result_type(self, arg_types: Sequence[Type]) -> Type:
        """Type of a call with arguments of ``arg_types``."""
        if isinstance(self.returns, Type):
            return self.returns
        return self.returns(arg_types)


# Columns every Candles has; hl2/hlc3/ohlc4 are the usual typical-price shorthands.
BUILTIN_COLUMNS: tuple[str, ...] = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "hl2",
    "hlc3",
    "ohlc4",
)
# Lower-case spellings of the constants are accepted too (people type JSON-style booleans).
BOOL_NAMES: dict[str, bool] = {"true": True, "false": False}


def column_values(candles: Candles, name: str) -> FloatArray:
    """The named column of ``candles``, computing the derived typical prices on demand."""
    if name == "hl2":
        return (candles.high + candles.low) / 2.0
    if name == "hlc3":
        return (candles.high + candles.low + candles.close) / 3.0
    if name == "ohlc4":
        return (candles.open + candles.high + candles.low + candles.close) / 4.0
    return np.asarray(candles.column(name), dtype=np.float64)


def _as_float_series(v: Value, n: int) -> FloatArray:
    return np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))


def _cross_py(x: FloatArray, y: FloatArray, up: bool) -> BoolArray:
    """True at t when x goes from <= y at t-1 to > y at t (``up``), or from >= to <.

    One pass that carries the previous bar's comparison, instead of four temporaries. NaN
    compares False both ways, so a NaN at t or t-1 never produces a cross.
    """
    n = x.shape[0]
    out = np.empty(n, dtype=np.bool_)
    if n == 0:
        return out
    out[0] = False
    if up:
        was = x[0] <= y[0]
        for i in range(1, n):
            out[i] = was & (x[i] > y[i])
            was = x[i] <= y[i]
    else:
        was = x[0] >= y[0]
        for i in range(1, n):
            out[i] = was & (x[i] < y[i])
            was = x[i] >= y[i]
    return out


_cross_kernel: Callable[[FloatArray, FloatArray, bool], BoolArray] = njit(cache=True, nogil=True)(
    _cross_py
)


def _cross(candles: Candles, a: Args, *, up: bool) -> BoolArray:
    n = len(candles)
    x = _as_float_series(a.value(0), n)
    y = _as_float_series(a.value(1), n)
    return _cross_kernel(x, y, up)


def _shift(candles: Candles, a: Args) -> FloatArray | BoolArray:
    x = a.value(0)
    assert isinstance(x, np.ndarray)
    k = a.whole(1)
    out: FloatArray | BoolArray
    if x.dtype == np.bool_:
        out = np.zeros(x.shape[0], dtype=np.bool_)
    else:
        out = np.full(x.shape[0], np.nan, dtype=np.float64)
    if k < x.shape[0]:
        out[k:] = x[: x.shape[0] - k]
    return out


def _trend(candles: Candles, a: Args, *, up: bool) -> BoolArray:
    x = a.series(0)
    k = a.whole(1)
    out = np.zeros(x.shape[0], dtype=np.bool_)
    if k < x.shape[0]:
        with np.errstate(invalid="ignore"):
            out[k:] = x[k:] > x[:-k] if up else x[k:] < x[:-k]
    return out


def _elementwise(op: Callable[[FloatArray, FloatArray], FloatArray]) -> Compute:
    def compute(candles: Candles, a: Args) -> object:
        x = np.asarray(a.value(0), dtype=np.float64)
        y = np.asarray(a.value(1), dtype=np.float64)
        return op(x, y)

    return compute


def _abs(candles: Candles, a: Args) -> object:
    return np.abs(np.asarray(a.value(0), dtype=np.float64))


def _same_as_first(types: Sequence[Type]) -> Type:
    return types[0]


def _numeric_result(types: Sequence[Type]) -> Type:
    if any(t.is_series for t in types):
        return Type.SERIES
    return Type.INT if all(t is Type.INT for t in types) else Type.FLOAT


def _period(name: str = "period", default: int | None = None) -> ArgSpec:
    return ArgSpec(name, "int", default, minimum=1, window=True)


_SERIES = ArgSpec("series", "series")
_K = ArgSpec("k", "number", 2.0)
_MACD_ARGS = (
    _SERIES,
    _period("fast", 12),
    _period("slow", 26),
    _period("signal", 9),
)
_BB_ARGS = (_SERIES, _period("period", 20), _K)
_STOCH_ARGS = (_period("period", 14), _period("smooth", 3), _period("d_period", 3))
_POLY_ARGS = (
    _SERIES,
    _period("window"),
    ArgSpec("degree", "int", 2, minimum=0, maximum=6),
    _K,
)


def _macd(c: Candles, a: Args) -> object:
    return indicators.macd(a.series(0), a.whole(1), a.whole(2), a.whole(3))


def _bollinger(c: Candles, a: Args) -> object:
    return indicators.bollinger(a.series(0), a.whole(1), a.number(2))


def _stoch(c: Candles, a: Args) -> object:
    return indicators.stoch(c.high, c.low, c.close, a.whole(0), a.whole(1), a.whole(2))


def _donchian(c: Candles, a: Args) -> object:
    return indicators.donchian(c.high, c.low, a.whole(0))


def _poly(c: Candles, a: Args) -> object:
    return indicators.polyreg_bands(a.series(0), a.whole(1), a.whole(2), a.number(3))


def _f(*specs: FunctionSpec) -> dict[str, FunctionSpec]:
    return {s.name: s for s in specs}


def _windowed(name: str, doc: str, default: int | None = None) -> FunctionSpec:
    """``name(series, period)``: the indicator of that name over a series, memoized."""

    def compute(c: Candles, a: Args) -> object:
        return getattr(indicators, name)(a.series(0), a.whole(1))

    return FunctionSpec(name, (_SERIES, _period("period", default)), compute, doc, cache_name=name)


def _on_candles(
    name: str, columns: tuple[str, ...], args: tuple[ArgSpec, ...], doc: str
) -> FunctionSpec:
    """The indicator of that name over the candles' columns, then its whole-number arguments."""

    def compute(c: Candles, a: Args) -> object:
        periods = [a.whole(i) for i in range(len(args))]
        return getattr(indicators, name)(*(getattr(c, col) for col in columns), *periods)

    return FunctionSpec(name, args, compute, doc, cache_name=name)


def _outputs(
    cache_name: str, args: tuple[ArgSpec, ...], compute: Compute, *named: tuple[str, str]
) -> tuple[FunctionSpec, ...]:
    """One function per output of a multi-output indicator, given as (name, doc) in order."""
    return tuple(
        FunctionSpec(name, args, compute, doc, cache_name=cache_name, output=i)
        for i, (name, doc) in enumerate(named)
    )


def _crossing(name: str, up: bool, doc: str) -> FunctionSpec:
    """``name(a, b)``: the bar where a crosses b upwards (``up``) or downwards."""
    return FunctionSpec(
        name,
        (ArgSpec("a", "numeric"), ArgSpec("b", "numeric")),
        lambda c, a: _cross(c, a, up=up),
        doc,
        returns=Type.CONDITION,
        extra_warmup=1,
    )


def _trending(name: str, up: bool, doc: str) -> FunctionSpec:
    """``name(series, bars)``: the series is above (``up``) or below its value bars ago."""
    return FunctionSpec(
        name,
        (_SERIES, ArgSpec("bars", "int", minimum=1, window=True)),
        lambda c, a: _trend(c, a, up=up),
        doc,
        returns=Type.CONDITION,
    )


def _pairwise(
    name: str,
    op: Callable[[FloatArray, FloatArray], FloatArray],
    pick: Callable[[int | float, int | float], int | float],
    doc: str,
) -> FunctionSpec:
    """``name(a, b)`` bar by bar with ``op``; ``pick`` when both are single numbers."""
    return FunctionSpec(
        name,
        (ArgSpec("a", "numeric"), ArgSpec("b", "numeric")),
        _elementwise(op),
        doc,
        returns=_numeric_result,
        scalar=lambda v: pick(v[0], v[1]),
    )


_HLC = ("high", "low", "close")

FUNCTIONS: dict[str, FunctionSpec] = _f(
    # Moving averages and oscillators over any number series.
    _windowed("sma", "simple moving average"),
    _windowed("ema", "exponential moving average seeded with the SMA of its first values"),
    _windowed("wma", "linearly weighted moving average"),
    _windowed("rsi", "relative strength index (Wilder), 0..100", 14),
    *_outputs(
        "macd",
        _MACD_ARGS,
        _macd,
        ("macd_line", "MACD line: fast EMA minus slow EMA"),
        ("macd_signal", "EMA of the MACD line"),
        ("macd_hist", "MACD line minus its signal"),
    ),
    *_outputs(
        "bollinger",
        _BB_ARGS,
        _bollinger,
        ("bb_mid", "Bollinger middle band (SMA)"),
        ("bb_upper", "Bollinger upper band: mid + k std"),
        ("bb_lower", "Bollinger lower band: mid - k std"),
    ),
    _windowed("highest", "highest value of the last period bars (current bar included)"),
    _windowed("lowest", "lowest value of the last period bars (current bar included)"),
    _windowed("rolling_std", "population standard deviation of the last period values"),
    _windowed("returns", "fractional change over period bars", 1),
    *_outputs(
        "polyreg_bands",
        _POLY_ARGS,
        _poly,
        ("poly_mid", "polynomial-regression fit at the bar"),
        ("poly_upper", "polynomial-regression fit + k residual std"),
        ("poly_lower", "polynomial-regression fit - k residual std"),
    ),
    # Indicators that read the candles' own high/low/close/volume.
    _on_candles("atr", _HLC, (_period("period", 14),), "average true range (Wilder)"),
    _on_candles(
        "adx", _HLC, (_period("period", 14),), "average directional index (Wilder), 0..100"
    ),
    *_outputs(
        "stoch",
        _STOCH_ARGS,
        _stoch,
        ("stoch_k", "stochastic %K (smoothed), 0..100"),
        ("stoch_d", "stochastic %D: SMA of %K"),
    ),
    _on_candles("obv", ("close", "volume"), (), "on-balance volume"),
    _on_candles(
        "vwap",
        (*_HLC, "volume"),
        (_period(),),
        "volume-weighted average typical price over period bars",
    ),
    *_outputs(
        "donchian",
        (_period(),),
        _donchian,
        ("donchian_upper", "highest high of period bars"),
        ("donchian_mid", "middle of the Donchian channel"),
        ("donchian_lower", "lowest low of period bars"),
    ),
    _on_candles("volume_sma", ("volume",), (_period(),), "simple moving average of volume"),
    _on_candles("volume_ratio", ("volume",), (_period(),), "volume divided by its moving average"),
    # Helpers over any series.
    _crossing("cross_above", True, "true on the bar where a moves from at or below b to above it"),
    _crossing("cross_below", False, "true on the bar where a moves from at or above b to below it"),
    FunctionSpec(
        "shift",
        (ArgSpec("series", "shiftable"), ArgSpec("bars", "int", minimum=0, window=True)),
        _shift,
        "the value bars ago (empty before the start); there is no way to look ahead",
        returns=_same_as_first,
    ),
    _trending("rising", True, "true where the series is above its value bars ago"),
    _trending("falling", False, "true where the series is below its value bars ago"),
    FunctionSpec(
        "abs",
        (ArgSpec("x", "numeric"),),
        _abs,
        "absolute value",
        returns=_numeric_result,
        scalar=lambda v: abs(v[0]),
    ),
    _pairwise("min", np.minimum, min, "the smaller of a and b, bar by bar"),
    _pairwise("max", np.maximum, max, "the larger of a and b, bar by bar"),
)

# Names a parameter may not take: it would hide a column or function, or a constant.
RESERVED_NAMES: frozenset[str] = frozenset(
    {*FUNCTIONS, *BUILTIN_COLUMNS, *BOOL_NAMES, "True", "False", "None", "timestamp"}
)
