"""Parameter search (grid and seeded random) and walk-forward analysis over one data set.

Pure functions over Candles and small dataclasses, no Django. The web app fans the search out
over Celery workers in chunks; each chunk calls ``evaluate_combinations`` on its slice of the
list ``plan_combinations`` produced, so a chunk's rows are exactly what one process running the
whole list would have produced.

Every combination runs the same path as ``run.run_backtest``: compile the rules (with one
indicator cache shared by the combinations, so each distinct indicator is computed once), the
recorded simulation, then ``metrics.compute_metrics``. The objectives are read from those
metrics, so an optimization row and a backtest of the same parameters agree to the last bit.

Walk-forward (``walk_forward``): the data is cut into windows of a training span followed by a
test span (rolling or anchored). The search runs on each training span alone; the winner then
runs on the test span only, its signals computed from the training span plus the test bars up
to each bar (warm-up from the past, nothing after the window's end). Each test run starts flat
with the previous test run's ending equity, and the test equity curves are stitched into one
out-of-sample curve.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from backtester.engine.candles import Candles, FloatArray, IntArray, timeframe_ms
from backtester.engine.errors import EngineError, StrategyError
from backtester.engine.grid import (
    INDICATOR_CACHE_BYTES,
    Constraint,
    _CountingCache,
    parse_constraint,
)
from backtester.engine.language import Param, ParamValue, StrategySpec, compile_strategy
from backtester.engine.metrics import compute_metrics
from backtester.engine.run import _metrics
from backtester.engine.signals import Signals
from backtester.engine.simulate import TRADE_DTYPE, SimConfig, candle_periods_per_year, simulate

Method = Literal["grid", "random"]
Unit = Literal["bars", "days"]
StopCheck = Callable[[], bool]

METHODS: Final[tuple[str, ...]] = ("grid", "random")
UNITS: Final[tuple[str, ...]] = ("bars", "days")
# A grid is enumerated (and its constraint checked) in full before anything runs; past this
# many lattice points that alone takes seconds, so a bigger space must be sampled instead.
MAX_LATTICE: Final = 1_000_000
# Random search draws from a permutation of the whole lattice up to this size (exact, without
# replacement); beyond it, it draws each parameter independently and drops repeats.
_PERMUTATION_LIMIT: Final = 2_000_000
# How many draws random search makes per wanted sample before it settles for fewer (a
# constraint that almost nothing satisfies).
_DRAWS_PER_SAMPLE: Final = 200
# ``should_stop`` is asked after this many combinations.
STOP_CHECK_EVERY: Final = 25
_MS_PER_DAY: Final = 86_400_000


class SearchCancelled(EngineError):
    """``should_stop`` answered True: the search stopped between two combinations."""


# --------------------------------------------------------------------------------------------
# Objectives and the metrics kept per combination.


@dataclass(frozen=True, slots=True)
class ObjectiveDef:
    """One objective the user may rank by; every objective is "larger is better"."""

    key: str
    label: str
    definition: str


OBJECTIVES: Final[dict[str, ObjectiveDef]] = {
    o.key: o
    for o in (
        ObjectiveDef(
            "sharpe",
            "Sharpe ratio",
            "The backtest's Sharpe ratio: mean per-bar return over its standard deviation "
            "(ddof=1) times sqrt(bars per year), risk-free rate 0.",
        ),
        ObjectiveDef(
            "sortino",
            "Sortino ratio",
            "The backtest's Sortino ratio: mean per-bar return times bars per year over the "
            "annualized downside risk.",
        ),
        ObjectiveDef(
            "calmar",
            "Calmar ratio",
            "CAGR over the absolute maximum drawdown (undefined without a drawdown).",
        ),
        ObjectiveDef(
            "total_return",
            "Total return",
            "Final equity over the starting capital, minus one.",
        ),
        ObjectiveDef(
            "profit_factor",
            "Profit factor",
            "Gross profit of the winning trades over the gross loss of the losing ones "
            "(infinite with wins and no loss, undefined without trades).",
        ),
        ObjectiveDef(
            "return_over_drawdown",
            "Return / drawdown",
            "Total return over the absolute maximum drawdown (infinite for a gain without any "
            "drawdown, undefined for a flat curve).",
        ),
    )
}

# The numbers kept for each evaluated combination, in display order. All but
# return_over_drawdown and final_equity are compute_metrics keys, taken as they are.
ROW_METRICS: Final[tuple[str, ...]] = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "return_over_drawdown",
    "profit_factor",
    "win_rate",
    "trades",
    "exposure",
    "annual_volatility",
    "fees_paid",
    "final_equity",
)


def return_over_drawdown(total_return: float, max_drawdown: float) -> float:
    """``total_return / |max_drawdown|``; a nonzero return without a drawdown is +/-inf, a zero
    one NaN (the metrics module's convention for a zero denominator)."""
    if math.isnan(total_return) or math.isnan(max_drawdown):
        return math.nan
    depth = abs(max_drawdown)
    if depth == 0.0:
        return math.nan if total_return == 0.0 else math.copysign(math.inf, total_return)
    return total_return / depth


def row_metrics(metrics: Mapping[str, float], initial_cash: float) -> dict[str, float]:
    """The ROW_METRICS of one run from its ``compute_metrics`` output."""
    out = {key: float(metrics[key]) for key in ROW_METRICS if key in metrics}
    out["return_over_drawdown"] = return_over_drawdown(out["total_return"], out["max_drawdown"])
    out["final_equity"] = initial_cash * (1.0 + out["total_return"])
    return {key: out[key] for key in ROW_METRICS}


def objective_value(objective: str, metrics: Mapping[str, float]) -> float:
    """The value of ``objective`` in a ``compute_metrics`` dict or a row's metrics."""
    if objective not in OBJECTIVES:
        raise EngineError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if objective == "return_over_drawdown" and objective not in metrics:
        return return_over_drawdown(metrics["total_return"], metrics["max_drawdown"])
    return float(metrics[objective])


def _check_objective(objective: str) -> None:
    objective_value(objective, dict.fromkeys(ROW_METRICS, 0.0))


# --------------------------------------------------------------------------------------------
# The search space.

Axis = tuple[str, tuple[ParamValue, ...]]
RangeSpec = Sequence[object] | Mapping[str, object] | int | float | bool | str


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """Each parameter's candidate values, in declaration order; the lattice is their product.

    ``combination(i)`` decodes lattice index ``i`` (the last parameter varies fastest, as
    ``itertools.product`` orders them).
    """

    axes: tuple[Axis, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.axes)

    @property
    def size(self) -> int:
        return math.prod(len(values) for _, values in self.axes)

    def combination(self, index: int) -> dict[str, ParamValue]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        out: dict[str, ParamValue] = {}
        for name, values in reversed(self.axes):
            index, pos = divmod(index, len(values))
            out[name] = values[pos]
        return {name: out[name] for name in self.names}

    def __iter__(self) -> Iterator[dict[str, ParamValue]]:
        names = self.names
        for combo in itertools.product(*(values for _, values in self.axes)):
            yield dict(zip(names, combo, strict=True))


def _range_values(param: Param, spec: Mapping[str, object]) -> tuple[ParamValue, ...]:
    """``low..high`` by ``step`` with the grid rules of ``Param.values`` (missing bounds come
    from the declaration), each value checked against the declared range."""
    unknown = sorted(set(spec) - {"low", "high", "step"})
    if unknown:
        raise StrategyError(
            f"a range takes low, high and step; got {unknown[0]!r}", field=param.name
        )
    if param.kind == "bool":
        raise StrategyError(
            f"'{param.name}' is true/false: give the values to try, not a range", field=param.name
        )
    low = param.coerce(spec["low"]) if spec.get("low") is not None else param.low
    high = param.coerce(spec["high"]) if spec.get("high") is not None else param.high
    if low is None or high is None:
        raise StrategyError(
            f"'{param.name}' declares no range: give low and high", field=param.name
        )
    raw_step = spec.get("step")
    step = param.step if raw_step is None else _step(raw_step, param)
    if low > high:
        raise StrategyError(
            f"the range of '{param.name}' starts above its end ({low} > {high})", field=param.name
        )
    # A throwaway Param carries the grid rules (int step 1, float rounding, the value cap).
    probe = Param(param.name, param.kind, low, low, high, step)
    return tuple(param.coerce(v) for v in probe.values())


def _step(value: object, param: Param) -> int | float:
    """A range's step: a whole number >= 1 for an int parameter, a positive number for a float
    one. Not range-checked against the declaration (a step of 1 is fine for "20 to 200")."""
    text = value.strip() if isinstance(value, str) else value
    try:
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise ValueError
        number = float(text)
    except ValueError:
        raise StrategyError(
            f"the step of '{param.name}' must be a number", field=param.name
        ) from None
    if not math.isfinite(number) or number <= 0:
        raise StrategyError(f"the step of '{param.name}' must be more than 0", field=param.name)
    if param.kind == "int":
        if not number.is_integer():
            raise StrategyError(
                f"the step of '{param.name}' must be a whole number", field=param.name
            )
        return int(number)
    return number


def search_space(spec: StrategySpec, ranges: Mapping[str, RangeSpec] | None = None) -> SearchSpace:
    """The candidate values of every declared parameter.

    ``ranges`` maps a parameter name to a list of values, a ``{"low", "high", "step"}`` mapping
    (missing keys fall back to the declaration) or one fixed value; a parameter left out takes
    ``Param.values()`` (its declared range, or its default without one). Every value must lie in
    the declared range; StrategyError names the parameter otherwise.
    """
    given = dict(ranges or {})
    declared = {p.name for p in spec.params}
    unknown = [name for name in given if name not in declared]
    if unknown:
        spec.resolve_params({unknown[0]: None})  # raises with a did-you-mean hint
    axes: list[Axis] = []
    for p in spec.params:
        raw = given.get(p.name)
        values: tuple[ParamValue, ...]
        if raw is None:
            values = p.values()
        elif isinstance(raw, Mapping):
            values = _range_values(p, raw)
        elif isinstance(raw, str | bytes | int | float | bool):
            values = (p.coerce(raw),)
        elif isinstance(raw, Sequence):
            values = tuple(dict.fromkeys(p.coerce(v) for v in raw))
        else:
            raise StrategyError(f"the values of '{p.name}' must be a list", field=p.name)
        if not values:
            raise StrategyError(f"'{p.name}' has no values to try", field=p.name)
        axes.append((p.name, values))
    return SearchSpace(tuple(axes))


@dataclass(frozen=True, slots=True)
class CombinationPlan:
    """The combinations to evaluate, in evaluation order, and how they were chosen.

    ``space_size`` is the size of the whole lattice, ``rejected`` how many lattice points the
    constraint turned away while the plan was drawn.
    """

    method: str
    combinations: tuple[dict[str, ParamValue], ...]
    space_size: int
    rejected: int


def grid_combinations(
    space: SearchSpace, constraint: Callable[[Mapping[str, ParamValue]], bool] | None = None
) -> CombinationPlan:
    """Every lattice point that passes ``constraint``, in lattice order."""
    size = space.size
    if size > MAX_LATTICE:
        raise EngineError(
            f"the grid spans {size:,} combinations; at most {MAX_LATTICE:,} can be enumerated "
            "(narrow the ranges, use larger steps or random search)"
        )
    return _filtered("grid", space, size, constraint, None)


def _filtered(
    method: Literal["grid", "random"],
    candidates: Iterable[dict[str, ParamValue]],
    size: int,
    constraint: Callable[[Mapping[str, ParamValue]], bool] | None,
    cap: int | None,
) -> CombinationPlan:
    """The candidates that pass ``constraint``, in order, stopping once ``cap`` are kept."""
    kept: list[dict[str, ParamValue]] = []
    rejected = 0
    for combo in candidates:
        if constraint is not None and not constraint(combo):
            rejected += 1
            continue
        kept.append(combo)
        if len(kept) == cap:
            break
    return CombinationPlan(method, tuple(kept), size, rejected)


def random_combinations(
    space: SearchSpace,
    samples: int,
    *,
    seed: int,
    constraint: Callable[[Mapping[str, ParamValue]], bool] | None = None,
) -> CombinationPlan:
    """``samples`` distinct lattice points drawn uniformly without replacement (fewer when fewer
    pass ``constraint``), in the order drawn; the same ``seed`` always draws the same ones."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise EngineError(f"samples must be a whole number >= 1, got {samples!r}")
    size = space.size
    draws = _random_draws(space, size, samples, np.random.default_rng(seed))
    return _filtered("random", draws, size, constraint, samples)


def _random_draws(
    space: SearchSpace, size: int, samples: int, rng: np.random.Generator
) -> Iterator[dict[str, ParamValue]]:
    """Lattice points in a random order, each at most once (drawn lazily, as they are used)."""
    if size <= _PERMUTATION_LIMIT:
        for index in rng.permutation(size).tolist():
            yield space.combination(int(index))
        return
    # A lattice too large to permute: draw each parameter's position independently (uniform
    # over the lattice) and skip points already drawn.
    seen: set[tuple[int, ...]] = set()
    lengths = [len(values) for _, values in space.axes]
    for _ in range(samples * _DRAWS_PER_SAMPLE):
        point = tuple(int(rng.integers(n)) for n in lengths)
        if point in seen:
            continue
        seen.add(point)
        yield {name: values[i] for (name, values), i in zip(space.axes, point, strict=True)}


def plan_combinations(
    spec: StrategySpec,
    space: SearchSpace,
    *,
    method: str = "grid",
    samples: int | None = None,
    seed: int = 0,
    constraint: Constraint | None = None,
) -> CombinationPlan:
    """The combinations a search evaluates: the whole (constrained) grid, or ``samples`` random
    lattice points. ``constraint`` is a predicate or an expression such as "fast < slow"
    (``grid.parse_constraint``)."""
    keep = parse_constraint(constraint, spec)
    if method == "grid":
        return grid_combinations(space, keep)
    if method == "random":
        if samples is None:
            raise EngineError("random search needs the number of samples")
        return random_combinations(space, samples, seed=seed, constraint=keep)
    raise EngineError(f"unknown search method {method!r}; choose grid or random")


# --------------------------------------------------------------------------------------------
# Evaluation.


def evaluate_combinations(
    candles: Candles,
    spec: StrategySpec,
    combinations: Sequence[Mapping[str, object]],
    config: SimConfig,
    *,
    objective: str = "sharpe",
    min_trades: int = 0,
    start_index: int = 0,
    cache: dict[Any, Any] | None = None,
    should_stop: StopCheck | None = None,
) -> list[dict[str, Any]]:
    """Run each combination as ``run_backtest`` would and keep its summary, in input order.

    A row is ``{"index", "params", "objective", "qualified", <ROW_METRICS>}``; ``index`` counts
    from ``start_index``. A run with fewer than ``min_trades`` closed trades is kept but not
    qualified, and its objective is NaN (it is never ranked). ``should_stop`` is asked every
    STOP_CHECK_EVERY combinations; True raises SearchCancelled.
    """
    _check_objective(objective)
    if isinstance(min_trades, bool) or not isinstance(min_trades, int) or min_trades < 0:
        raise EngineError(f"min_trades must be a whole number >= 0, got {min_trades!r}")
    if len(candles) == 0:
        raise EngineError("the candles are empty: nothing to backtest")
    ppy = candle_periods_per_year(candles)
    shared = _CountingCache(INDICATOR_CACHE_BYTES) if cache is None else cache
    rows: list[dict[str, Any]] = []
    for i, raw in enumerate(combinations):
        if should_stop is not None and i % STOP_CHECK_EVERY == 0 and i and should_stop():
            raise SearchCancelled("the search was cancelled")
        params = spec.resolve_params(raw)
        signals = compile_strategy(spec, candles, params, shared)
        sim = simulate(candles, signals, config)
        metrics = _metrics(sim, candles.close, ppy)
        summary = row_metrics(metrics, config.initial_cash)
        qualified = summary["trades"] >= min_trades
        value = objective_value(objective, summary) if qualified else math.nan
        rows.append(
            {
                "index": start_index + i,
                "params": params,
                "objective": value,
                "qualified": qualified,
                **summary,
            }
        )
    return rows


def _rank_key(row: Mapping[str, Any]) -> tuple[bool, float, int]:
    value = float(row["objective"])
    if math.isnan(value):
        return (True, 0.0, int(row["index"]))
    return (False, -value, int(row["index"]))


def rank_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Best first: by objective (larger is better, +inf first), ties by combination index,
    rows without an objective (NaN) last."""
    return sorted(rows, key=_rank_key)


def best_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The best qualified row with a defined objective, or None."""
    ranked = [r for r in rows if not math.isnan(float(r["objective"]))]
    return min(ranked, key=_rank_key) if ranked else None


def is_better(candidate: Mapping[str, Any], incumbent: Mapping[str, Any] | None) -> bool:
    """Whether ``candidate`` ranks above ``incumbent`` (the order of ``rank_rows``)."""
    if math.isnan(float(candidate["objective"])):
        return False
    return incumbent is None or _rank_key(candidate) < _rank_key(incumbent)


# --------------------------------------------------------------------------------------------
# Walk-forward windows.


@dataclass(frozen=True, slots=True)
class Window:
    """One walk-forward step as bar indices, half-open: train ``[train_start, train_end)``,
    test ``[test_start, test_end)`` with ``test_start == train_end``."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    @property
    def train_bars(self) -> int:
        return self.train_end - self.train_start

    @property
    def test_bars(self) -> int:
        return self.test_end - self.test_start


MAX_WINDOWS: Final = 500


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EngineError(f"{what} must be a whole number >= 1, got {value!r}")
    return value


def walk_forward_windows(
    timestamps: npt.ArrayLike,
    *,
    train: int,
    test: int,
    step: int | None = None,
    anchored: bool = False,
    unit: str = "bars",
) -> tuple[Window, ...]:
    """The windows of a walk-forward over bars with these ``timestamps`` (ms, increasing).

    Window k trains on ``train`` units and tests on the next ``test`` units; each window starts
    ``step`` units (default ``test``) after the previous one. Rolling windows keep the training
    length; anchored ones train from the first bar every time (the training span grows by
    ``step``). ``unit`` is "bars" or "days" (calendar days from the first bar's time; bars are
    assigned by their open time). Only windows whose test span lies wholly inside the data are
    made. Raises EngineError when not even one window fits.
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    n = int(ts.shape[0])
    train = _whole(train, "the training length")
    test = _whole(test, "the test length")
    step = test if step is None else _whole(step, "the step")
    if unit not in UNITS:
        raise EngineError(f"unit must be bars or days, got {unit!r}")
    windows: list[Window] = []
    k = 0
    while True:
        if unit == "bars":
            shift = k * step
            a = 0 if anchored else shift
            b = shift + train
            c = b + test
            if c > n:
                break
        else:
            if n == 0:
                break
            origin = int(ts[0])
            shift_ms = k * step * _MS_PER_DAY
            end_ms = origin + shift_ms + (train + test) * _MS_PER_DAY
            # The last bar covers up to its own close: a test span ending after the data's
            # last bar opened is not wholly inside the data.
            bar = int(np.median(np.diff(ts))) if n > 1 else 0
            if end_ms > int(ts[-1]) + bar:
                break
            start_ms = origin if anchored else origin + shift_ms
            a, b, c = (
                int(np.searchsorted(ts, x, side="left"))
                for x in (start_ms, origin + shift_ms + train * _MS_PER_DAY, end_ms)
            )
        if b > a and c > b:
            windows.append(Window(len(windows), a, b, b, c))
        k += 1
        if len(windows) > MAX_WINDOWS:
            raise EngineError(
                f"these lengths make more than {MAX_WINDOWS} windows; use a larger step"
            )
    if not windows:
        raise EngineError(
            f"the data ({n} bars) is too short for one window of {train} + {test} {unit}"
        )
    return tuple(windows)


def bars_for_days(days: int, timeframe: str) -> int:
    """How many bars of ``timeframe`` fill ``days`` calendar days (for messages and checks)."""
    return max(1, days * _MS_PER_DAY // timeframe_ms(timeframe))


# --------------------------------------------------------------------------------------------
# Walk-forward runs.


def window_signals(
    candles: Candles,
    spec: StrategySpec,
    params: Mapping[str, object],
    window: Window,
    cache: dict[Any, Any] | None = None,
) -> Signals:
    """The strategy's signals on the test bars of ``window`` only.

    They are compiled over the training span followed by the test span, so indicators are
    warmed up on data before the test window; no bar after ``window.test_end`` is passed to
    the compiler, so nothing after the window can leak in.
    """
    context = candles.slice(window.train_start, window.test_end)
    signals = compile_strategy(spec, context, spec.resolve_params(params), cache)
    cut = window.test_start - window.train_start
    return Signals(
        signals.entry_long[cut:],
        signals.exit_long[cut:],
        signals.entry_short[cut:],
        signals.exit_short[cut:],
    )


@dataclass(frozen=True, slots=True)
class WindowTest:
    """One out-of-sample run: the test bars' candles, signals, simulation and metrics."""

    candles: Candles
    signals: Signals
    equity: FloatArray
    trades: npt.NDArray[np.void]
    metrics: dict[str, float]
    start_equity: float
    turnover: float


def run_window_test(
    candles: Candles,
    spec: StrategySpec,
    params: Mapping[str, object],
    window: Window,
    config: SimConfig,
    *,
    start_equity: float,
) -> WindowTest:
    """Run ``params`` on the test span of ``window`` alone, starting flat with
    ``start_equity``; an open position at the end is marked at the last close (no exit fee),
    as at the end of any backtest."""
    signals = window_signals(candles, spec, params, window)
    part = candles.slice(window.test_start, window.test_end)
    cfg = dataclasses.replace(config, initial_cash=start_equity)
    sim = simulate(part, signals, cfg)
    metrics = _metrics(sim, part.close, candle_periods_per_year(candles))
    return WindowTest(part, signals, sim.equity, sim.trades, metrics, start_equity, sim.turnover)


@dataclass(frozen=True, slots=True)
class WindowResult:
    """What one walk-forward window produced.

    ``params`` is None when no combination qualified on the training span; the test span is then
    sat out in cash (flat equity, no trades). ``in_sample`` holds the winner's row on the
    training span, ``out_of_sample`` the ROW_METRICS of its test run.
    """

    window: Window
    params: dict[str, ParamValue] | None
    in_sample: dict[str, Any] | None
    out_of_sample: dict[str, float]
    start_equity: float
    end_equity: float
    evaluated: int
    qualified: int
    efficiency: float


@dataclass(frozen=True, slots=True)
class WalkForwardResult:
    """The stitched out-of-sample run and each window's in-sample against out-of-sample numbers.

    ``timestamp``/``equity`` are the test spans' bars and equity back to back; ``metrics`` are
    ``compute_metrics`` of that curve (starting from the configured capital); ``efficiency`` is
    the walk-forward efficiency (see ``walk_forward_efficiency``) of the stitched curve against
    the mean in-sample CAGR of the windows' winners.
    """

    windows: tuple[WindowResult, ...]
    timestamp: IntArray
    equity: FloatArray
    trades: npt.NDArray[np.void]
    metrics: dict[str, float]
    in_sample_cagr: float
    efficiency: float
    stability: dict[str, dict[str, Any]]


def walk_forward_efficiency(oos_cagr: float, is_cagr: float) -> float:
    """Walk-forward efficiency: annualized out-of-sample return over annualized in-sample
    return (CAGR over bars, as the metrics define it). Undefined (NaN) unless the in-sample
    return is positive: a ratio against a loss or a zero says nothing useful."""
    if not (math.isfinite(oos_cagr) and math.isfinite(is_cagr)) or is_cagr <= 0.0:
        return math.nan
    return oos_cagr / is_cagr


def parameter_stability(
    chosen: Sequence[Mapping[str, ParamValue] | None], names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """How steady each parameter's winning value was across windows.

    Per name: ``values`` (one per window, None where no winner), ``distinct``, ``mode`` (the
    most chosen value, earliest on ties), ``mode_share`` (its share of the windows with a
    winner), and for numbers ``mean``, ``std`` (ddof=0) and ``cv`` (std / |mean|, NaN at 0).
    """
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        values = [None if c is None else c[name] for c in chosen]
        present = [v for v in values if v is not None]
        entry: dict[str, Any] = {"values": values, "distinct": len(set(present))}
        if present:
            counts = Counter(present)
            top = max(counts.values())
            mode = next(v for v in present if counts[v] == top)
            entry.update(mode=mode, mode_share=top / len(present))
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
                arr = np.asarray(present, dtype=np.float64)
                mean = float(arr.mean())
                std = float(arr.std())
                entry.update(mean=mean, std=std, cv=std / abs(mean) if mean != 0 else math.nan)
        else:
            entry.update(mode=None, mode_share=math.nan)
        out[name] = entry
    return out


def walk_forward(
    candles: Candles,
    spec: StrategySpec,
    combinations: Sequence[Mapping[str, object]],
    config: SimConfig,
    windows: Sequence[Window],
    *,
    objective: str = "sharpe",
    min_trades: int = 0,
    on_window: Callable[[WindowResult], None] | None = None,
    should_stop: StopCheck | None = None,
) -> WalkForwardResult:
    """Optimize on each window's training span, run the winner on its test span, stitch.

    ``combinations`` (from ``plan_combinations``) are evaluated on every training span with
    ``evaluate_combinations``; the best by ``objective`` wins (ties: the earlier combination).
    Test spans must follow one another without overlap (as ``walk_forward_windows`` makes them
    when ``step >= test``). ``on_window`` is called after each window; ``should_stop`` is asked
    between combinations and windows (True raises SearchCancelled).
    """
    _check_objective(objective)
    if not windows:
        raise EngineError("a walk-forward needs at least one window")
    if not combinations:
        raise EngineError("a walk-forward needs at least one combination to try")
    n = len(candles)
    for prev, cur in itertools.pairwise(windows):
        if cur.test_start < prev.test_end:
            raise EngineError(
                "test windows overlap: the step must be at least the test length so each bar "
                "is traded out of sample once"
            )
    for w in windows:
        if not (0 <= w.train_start < w.train_end == w.test_start < w.test_end <= n):
            raise EngineError(f"window {w.index} does not fit the {n} bars")

    results: list[WindowResult] = []
    curves: list[FloatArray] = []
    stamps: list[IntArray] = []
    trades: list[npt.NDArray[np.void]] = []
    equity = float(config.initial_cash)
    turnover = 0.0
    ppy = candle_periods_per_year(candles)
    for w in windows:
        if should_stop is not None and should_stop():
            raise SearchCancelled("the walk-forward was cancelled")
        train = candles.slice(w.train_start, w.train_end)
        rows = evaluate_combinations(
            train, spec, combinations, config,
            objective=objective, min_trades=min_trades, should_stop=should_stop,
        )  # fmt: skip
        best = best_row(rows)
        qualified = sum(1 for r in rows if r["qualified"])
        test_part = candles.slice(w.test_start, w.test_end)
        if best is None:
            params = None
            in_sample = None
            curve = np.full(w.test_bars, equity)
            window_trades = np.zeros(0, dtype=TRADE_DTYPE)
            oos = _flat_metrics(test_part, equity, ppy)
        else:
            params = dict(best["params"])
            in_sample = dict(best)
            run = run_window_test(candles, spec, params, w, config, start_equity=equity)
            curve = run.equity
            window_trades = _shift_trades(run.trades, w.test_start)
            oos = row_metrics(run.metrics, equity)
            turnover += run.turnover
        end_equity = float(curve[-1])
        efficiency = walk_forward_efficiency(
            oos["cagr"], math.nan if in_sample is None else float(in_sample["cagr"])
        )
        result = WindowResult(
            window=w,
            params=params,
            in_sample=in_sample,
            out_of_sample=oos,
            start_equity=equity,
            end_equity=end_equity,
            evaluated=len(rows),
            qualified=qualified,
            efficiency=efficiency,
        )
        results.append(result)
        curves.append(np.asarray(curve, dtype=np.float64))
        stamps.append(test_part.timestamp)
        trades.append(window_trades)
        equity = end_equity
        if on_window is not None:
            on_window(result)

    eq = np.concatenate(curves)
    ts = np.concatenate(stamps)
    all_trades = np.concatenate(trades) if trades else np.zeros(0, dtype=TRADE_DTYPE)
    closes = np.concatenate([candles.close[w.test_start : w.test_end] for w in windows])
    metrics = compute_metrics(
        equity=eq,
        timestamps=ts,
        trade_pnl=all_trades["pnl"],
        trade_returns=all_trades["return"],
        trade_bars_held=all_trades["bars_held"],
        fees_paid=float(sum(r.out_of_sample["fees_paid"] for r in results)),
        turnover=turnover,
        initial_cash=config.initial_cash,
        benchmark_close=closes,
        bars_per_year=ppy,
    )
    is_cagrs = [float(r.in_sample["cagr"]) for r in results if r.in_sample is not None]
    finite = [v for v in is_cagrs if math.isfinite(v)]
    is_cagr = float(np.mean(finite)) if finite else math.nan
    names = [p.name for p in spec.params]
    return WalkForwardResult(
        windows=tuple(results),
        timestamp=ts,
        equity=eq,
        trades=all_trades,
        metrics=metrics,
        in_sample_cagr=is_cagr,
        efficiency=walk_forward_efficiency(metrics["cagr"], is_cagr),
        stability=parameter_stability([r.params for r in results], names),
    )


def _shift_trades(trades: npt.NDArray[np.void], offset: int) -> npt.NDArray[np.void]:
    """Trades of a test run with bar indices counted from the start of the whole data."""
    out = trades.copy()
    out["entry_index"] += offset
    out["exit_index"] += offset
    return out


def _flat_metrics(part: Candles, equity: float, ppy: float) -> dict[str, float]:
    """ROW_METRICS of sitting out ``part`` in cash."""
    metrics = compute_metrics(
        equity=np.full(len(part), equity),
        timestamps=part.timestamp,
        trade_pnl=np.zeros(0),
        trade_returns=np.zeros(0),
        trade_bars_held=np.zeros(0, dtype=np.int64),
        fees_paid=0.0,
        turnover=0.0,
        initial_cash=equity,
        benchmark_close=part.close,
        bars_per_year=ppy,
    )
    return row_metrics(metrics, equity)
