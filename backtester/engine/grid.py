"""Parameter grid search over one data set: indicators computed once, runs in parallel threads.

Every combination is compiled in the calling thread with one shared indicator cache (so an SMA
cross over 10 fast x 10 slow lengths computes 20 SMAs, not 200), and simulated through
``simulate_arrays`` on a thread pool. The simulation kernel releases the GIL, so the threads
run truly in parallel while the calling thread compiles the next combinations. Only summary
numbers are kept per combination, never per-bar arrays, so memory stays flat in the grid size.
"""

from __future__ import annotations

import ast
import itertools
import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from backtester.engine.candles import Candles
from backtester.engine.errors import EngineError, StrategyError
from backtester.engine.language import ParamValue, StrategySpec, compile_strategy
from backtester.engine.simulate import (
    GridStats,
    SimConfig,
    aux_inputs,
    candle_periods_per_year,
    simulate_arrays,
)

Constraint = Callable[[Mapping[str, ParamValue]], bool] | str

# Grid metrics in the order of the result rows, and whether a larger value is better.
GRID_METRICS: Final[dict[str, bool]] = {
    "sharpe": True,
    "total_return": True,
    "cagr": True,
    "final_equity": True,
    "max_drawdown": True,  # negative fraction: closer to zero is better
    "calmar": True,
    "annual_volatility": False,
    "trades": True,
    "fees_paid": False,
}
# More combinations than this is almost certainly a typo in a range.
MAX_COMBINATIONS: Final = 1_000_000
# Indicator arrays the grid keeps for reuse; past this the least recently used are dropped.
INDICATOR_CACHE_BYTES: Final = 512 * 1024 * 1024

# A frozen dataclass is immutable, so one shared default instance is safe.
DEFAULT_CONFIG = SimConfig()


@dataclass(frozen=True, slots=True)
class GridResult:
    """The evaluated combinations, best first, plus how the grid was run.

    ``rows`` holds one dict per combination that passed ``constraint`` and ``min_trades``:
    ``{"params": {...}, "objective": value, <GRID_METRICS>...}``, sorted by ``objective``
    (best first, NaN last). ``indicator_counts`` says how many times each indicator was
    computed (by indicator name), ``indicator_hits`` how often a cached one was reused and
    ``indicator_evictions`` how many were dropped to stay within the cache budget.
    """

    objective: str
    rows: tuple[dict[str, Any], ...]
    combinations: int
    evaluated: int
    skipped: int
    below_min_trades: int
    indicator_counts: dict[str, int]
    indicator_hits: int
    indicator_evictions: int
    engine_seconds: float
    workers: int

    @property
    def best(self) -> dict[str, Any] | None:
        """The best row, or None when no combination qualified."""
        return self.rows[0] if self.rows else None


class _CountingCache(dict[Hashable, Any]):
    """The compile cache: counts indicator computations and reuses, and bounds its memory.

    Indicator results are arrays (or tuples of arrays); anything else the compiler keeps in
    the cache (such as the fingerprint of the candles) is neither counted nor evicted. When the
    indicators held exceed ``budget`` bytes the least recently used ones are dropped (they are
    recomputed if needed again), so a wide grid over long data cannot exhaust memory.
    """

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.held = 0
        self.computed: Counter[str] = Counter()
        self.hits = 0
        self.evicted = 0

    def __setitem__(self, key: Hashable, value: Any) -> None:
        size = _indicator_bytes(value)
        if size:
            name = key[0] if isinstance(key, tuple) and key and isinstance(key[0], str) else "?"
            self.computed[name] += 1
            if key in self:
                self.held -= _indicator_bytes(super().__getitem__(key))
            self.held += size
        super().__setitem__(key, value)
        if size and self.held > self.budget:
            self._evict(keep=key)

    def __getitem__(self, key: Hashable) -> Any:
        value = super().__getitem__(key)
        if _indicator_bytes(value):
            self.hits += 1
            # Re-insert so dict order runs from least to most recently used.
            super().__delitem__(key)
            super().__setitem__(key, value)
        return value

    def clear(self) -> None:
        super().clear()
        self.held = 0

    def _evict(self, keep: Hashable) -> None:
        for key in list(self):
            if self.held <= self.budget:
                return
            if key == keep:
                continue
            size = _indicator_bytes(super().__getitem__(key))
            if size:
                super().__delitem__(key)
                self.held -= size
                self.evicted += 1


def _indicator_bytes(value: object) -> int:
    """Bytes held by an indicator result, 0 for anything that is not one."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, tuple) and value and all(isinstance(v, np.ndarray) for v in value):
        return sum(int(v.nbytes) for v in value)
    return 0


# --------------------------------------------------------------------------------------------
# Constraint expressions: a tiny evaluator over the parameter values (no eval()).

_CMP: Final[dict[type[ast.cmpop], Callable[[Any, Any], bool]]] = {
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
}
_BIN: Final[dict[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_MAX_CONSTRAINT_LENGTH: Final = 500
# The strategy language spells the booleans in lower case; a parameter of that name wins.
_WORDS: Final[dict[str, bool]] = {"true": True, "false": False}


def _constraint_error(message: str, expr: str, node: ast.AST | None = None) -> StrategyError:
    col = getattr(node, "col_offset", None) if node is not None else None
    return StrategyError(message, col=col, expression=expr, field="constraint")


def _check_constraint(node: ast.AST, names: frozenset[str], expr: str) -> None:
    """Raise StrategyError unless ``node`` uses only the whitelisted syntax and known names."""
    if isinstance(node, ast.Expression):
        _check_constraint(node.body, names, expr)
    elif isinstance(node, ast.BoolOp):
        for v in node.values:
            _check_constraint(v, names, expr)
    elif isinstance(node, ast.Compare):
        if not all(type(op) in _CMP for op in node.ops):
            raise _constraint_error("only < <= > >= == != comparisons are allowed", expr, node)
        for v in (node.left, *node.comparators):
            _check_constraint(v, names, expr)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BIN:
            raise _constraint_error("only + - * / // % arithmetic is allowed", expr, node)
        _check_constraint(node.left, names, expr)
        _check_constraint(node.right, names, expr)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
            raise _constraint_error("only not, - and + are allowed as unary operators", expr, node)
        _check_constraint(node.operand, names, expr)
    elif isinstance(node, ast.Name):
        if node.id not in names and node.id not in _WORDS:
            known = ", ".join(sorted(names)) or "none"
            raise _constraint_error(
                f"unknown parameter '{node.id}' in the constraint (declared: {known})", expr, node
            )
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, str | bytes) or node.value is None:
            raise _constraint_error("only numbers, true and false are allowed", expr, node)
    else:
        raise _constraint_error(f"{type(node).__name__} is not allowed in a constraint", expr, node)


def _eval_constraint(node: ast.AST, values: Mapping[str, ParamValue]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval_constraint(node.body, values)
    if isinstance(node, ast.BoolOp):
        parts = (bool(_eval_constraint(v, values)) for v in node.values)
        return all(parts) if isinstance(node.op, ast.And) else any(parts)
    if isinstance(node, ast.Compare):
        left = _eval_constraint(node.left, values)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval_constraint(comp, values)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BinOp):
        a = _eval_constraint(node.left, values)
        b = _eval_constraint(node.right, values)
        try:
            return _BIN[type(node.op)](a, b)
        except ZeroDivisionError:
            return math.nan  # every comparison with NaN is False: the combination is skipped
    if isinstance(node, ast.UnaryOp):
        v = _eval_constraint(node.operand, values)
        if isinstance(node.op, ast.Not):
            return not v
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.Name):
        return values[node.id] if node.id in values else _WORDS[node.id]
    assert isinstance(node, ast.Constant)
    return node.value


def parse_constraint(
    constraint: Constraint | None, spec: StrategySpec
) -> Callable[[Mapping[str, ParamValue]], bool] | None:
    """A predicate over a parameter dict from a callable or an expression like "fast < slow".

    The expression may use the spec's parameter names, numbers, true/false, arithmetic,
    comparisons and and/or/not. Raises StrategyError (field "constraint") for anything else.
    """
    if constraint is None or callable(constraint):
        return constraint
    expr = constraint.strip()
    if not expr:
        return None
    if len(expr) > _MAX_CONSTRAINT_LENGTH:
        raise _constraint_error(
            f"the constraint is longer than {_MAX_CONSTRAINT_LENGTH} characters", expr
        )
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        col = None if exc.offset is None else max(exc.offset - 1, 0)
        raise StrategyError(
            f"the constraint is not a valid expression ({exc.msg})",
            col=col,
            expression=expr,
            field="constraint",
        ) from None
    _check_constraint(tree, frozenset(p.name for p in spec.params), expr)

    def predicate(values: Mapping[str, ParamValue]) -> bool:
        return bool(_eval_constraint(tree, values))

    return predicate


# --------------------------------------------------------------------------------------------
# The grid.


def _axes(
    spec: StrategySpec, param_grid: Mapping[str, Sequence[object]] | None
) -> list[tuple[str, tuple[ParamValue, ...]]]:
    """Each parameter's checked, de-duplicated values, in declaration order."""
    grid = dict(param_grid or {})
    declared = {p.name for p in spec.params}
    unknown = [name for name in grid if name not in declared]
    if unknown:
        spec.resolve_params({unknown[0]: None})  # raises with a did-you-mean hint
    axes: list[tuple[str, tuple[ParamValue, ...]]] = []
    for p in spec.params:
        if p.name in grid:
            raw = grid[p.name]
            if isinstance(raw, str | bytes) or not isinstance(raw, Sequence | range):
                raise StrategyError(
                    f"the grid of '{p.name}' must be a list of values", field=p.name
                )
            values = tuple(dict.fromkeys(p.coerce(v) for v in raw))
            if not values:
                raise StrategyError(f"the grid of '{p.name}' has no values", field=p.name)
        else:
            values = p.values()
        axes.append((p.name, values))
    return axes


def _combinations(
    axes: list[tuple[str, tuple[ParamValue, ...]]],
) -> Iterator[dict[str, ParamValue]]:
    names = [name for name, _ in axes]
    for combo in itertools.product(*(values for _, values in axes)):
        yield dict(zip(names, combo, strict=True))


def _row(
    params: dict[str, ParamValue], st: GridStats, ppy: float, initial_cash: float, objective: str
) -> dict[str, Any]:
    """The summary numbers of one run, defined as ``metrics.compute_metrics`` defines them."""
    m = st.n_returns
    mean, std = st.mean_return, st.std_return
    if m >= 2:
        # compute_metrics' conventions: 0/0 is NaN, x/0 is +/-inf.
        if std > 0.0:
            sharpe = mean / std * math.sqrt(ppy)
        else:
            sharpe = math.nan if mean == 0.0 else math.copysign(math.inf, mean)
        vol = std * math.sqrt(ppy)
    else:
        sharpe = vol = math.nan
    ending = st.final_equity / initial_cash
    if ending > 0.0 and m > 0:
        try:
            cagr = ending ** (ppy / m) - 1.0
        except OverflowError:
            cagr = math.inf
    else:
        cagr = -1.0 if ending == 0.0 else math.nan
    # Reported as a negative fraction like compute_metrics, whatever sign the kernel uses.
    mdd = -abs(st.max_drawdown)
    calmar = cagr / abs(mdd) if mdd < 0.0 and math.isfinite(cagr / abs(mdd)) else math.nan
    row: dict[str, Any] = {"params": params, "objective": math.nan}
    row.update(
        sharpe=sharpe,
        total_return=st.total_return,
        cagr=cagr,
        final_equity=st.final_equity,
        max_drawdown=mdd,
        calmar=calmar,
        annual_volatility=vol,
        trades=st.n_trades,
        fees_paid=st.fees_paid,
    )
    row["objective"] = float(row[objective])
    return row


def _sort_key(maximize: bool) -> Callable[[dict[str, Any]], tuple[bool, float]]:
    def key(row: dict[str, Any]) -> tuple[bool, float]:
        v = float(row["objective"])
        if math.isnan(v):
            return (True, 0.0)
        return (False, -v if maximize else v)

    return key


def grid_search(
    candles: Candles,
    spec: StrategySpec,
    param_grid: Mapping[str, Sequence[object]] | None = None,
    config: SimConfig = DEFAULT_CONFIG,
    *,
    objective: str = "sharpe",
    constraint: Constraint | None = None,
    min_trades: int = 0,
    workers: int | None = None,
    cache_bytes: int = INDICATOR_CACHE_BYTES,
) -> GridResult:
    """Run ``spec`` for every combination of ``param_grid`` and rank them by ``objective``.

    Parameters missing from ``param_grid`` (or all, when it is None) take their
    ``Param.values()``. Combinations failing ``constraint`` are skipped; runs with fewer than
    ``min_trades`` closed trades are left out of the rows. ``objective`` is one of
    ``GRID_METRICS``. Runs use ``workers`` threads (default: the number of CPUs); computed
    indicators are kept for reuse up to ``cache_bytes``.
    """
    if objective not in GRID_METRICS:
        raise EngineError(
            f"unknown objective {objective!r}; choose one of {', '.join(GRID_METRICS)}"
        )
    if isinstance(min_trades, bool) or not isinstance(min_trades, int) or min_trades < 0:
        raise EngineError(f"min_trades must be a whole number >= 0, got {min_trades!r}")
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise EngineError(f"workers must be a whole number >= 1, got {workers!r}")
    if len(candles) == 0:
        raise EngineError("the candles are empty: nothing to backtest")

    start = time.perf_counter()
    axes = _axes(spec, param_grid)
    total = math.prod(len(values) for _, values in axes)
    if total > MAX_COMBINATIONS:
        raise EngineError(
            f"the grid has {total} combinations; at most {MAX_COMBINATIONS} are allowed"
        )
    keep = parse_constraint(constraint, spec)
    ppy = candle_periods_per_year(candles)
    atr, vol = aux_inputs(candles.high, candles.low, candles.close, config, periods_per_year=ppy)
    cache = _CountingCache(cache_bytes)
    o, h, lo, c, ts = candles.open, candles.high, candles.low, candles.close, candles.timestamp

    rows: list[dict[str, Any]] = []
    skipped = below = evaluated = 0
    # Bounded look-ahead: enough queued runs to keep every worker busy while this thread
    # compiles, few enough that the signal arrays in flight stay a small multiple of the data.
    window = 2 * n_workers
    pending: deque[tuple[dict[str, ParamValue], Future[GridStats]]] = deque()

    def collect() -> None:
        nonlocal below, evaluated
        params, future = pending.popleft()
        st = future.result()
        evaluated += 1
        if st.n_trades < min_trades:
            below += 1
            return
        rows.append(_row(params, st, ppy, config.initial_cash, objective))

    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="grid") as pool:
        try:
            for params in _combinations(axes):
                if keep is not None and not keep(params):
                    skipped += 1
                    continue
                sig = compile_strategy(spec, candles, params, cache)
                future = pool.submit(
                    simulate_arrays,
                    o, h, lo, c, ts,
                    sig.entry_long, sig.exit_long, sig.entry_short, sig.exit_short,
                    config, atr=atr, vol=vol, periods_per_year=ppy,
                )  # fmt: skip
                pending.append((params, future))
                while len(pending) >= window:
                    collect()
            while pending:
                collect()
        except BaseException:
            for _, future in pending:
                future.cancel()
            raise

    rows.sort(key=_sort_key(GRID_METRICS[objective]))
    return GridResult(
        objective=objective,
        rows=tuple(rows),
        combinations=total,
        evaluated=evaluated,
        skipped=skipped,
        below_min_trades=below,
        indicator_counts=dict(cache.computed),
        indicator_hits=cache.hits,
        indicator_evictions=cache.evicted,
        engine_seconds=time.perf_counter() - start,
        workers=n_workers,
    )
