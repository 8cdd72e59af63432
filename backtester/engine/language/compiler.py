"""Evaluate checked rules over candles into the boolean ``Signals`` the simulator consumes.

A recursive walker over the typed tree from ``parser``: series are numpy arrays, scalars are
Python numbers (parameters are known before any bar is read). Indicator results go through an
optional cache keyed on the canonical form of the call, so a parameter grid over one data set
computes each distinct indicator once.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Hashable, Iterable, Mapping, MutableMapping
from typing import Any

import numpy as np

from backtester.engine.candles import Candles
from backtester.engine.errors import StrategyError
from backtester.engine.language.functions import (
    Args,
    BoolArray,
    FloatArray,
    Type,
    Value,
    column_values,
)
from backtester.engine.language.parser import (
    MAX_INT,
    Binary,
    Call,
    ColumnRef,
    Comparison,
    Const,
    Logic,
    Node,
    ParamRef,
    Unary,
    int_argument_problem,
    parse_rule,
)
from backtester.engine.language.spec import RULES, ParamValue, StrategySpec
from backtester.engine.signals import Signals

Cache = MutableMapping[Hashable, Any]
Key = Hashable
Scalar = int | float | bool

# Under this key the cache remembers which candles its entries belong to.
_FINGERPRINT = ("__candles__",)

_ARRAY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "%": np.remainder,
    "**": np.power,
}
_INT_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "%": operator.mod,
}
_COMPARE_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


def _fail(message: str, node: Node) -> StrategyError:
    # The caller's except clause adds the rule name and expression.
    return StrategyError(message, col=node.col)


def _scalar(node: Node, params: Mapping[str, ParamValue]) -> Scalar:
    """Value of a sub-expression whose type is a single number or true/false."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, ParamRef):
        return params[node.name]
    if isinstance(node, Unary):
        v = _scalar(node.operand, params)
        if node.op == "not":
            return not v
        return -v if node.op == "-" else v
    if isinstance(node, Binary):
        a, b = _scalar(node.left, params), _scalar(node.right, params)
        if node.type is Type.INT:
            assert isinstance(a, int)
            assert isinstance(b, int)
            if node.op == "%" and b == 0:
                raise _fail("division by zero", node)
            result = _INT_OPS[node.op](a, b)
            if abs(result) > MAX_INT:
                raise _fail("number too large", node)
            return result
        # numpy scalars turn 1/0 and 10.0 ** 400 into inf/nan instead of raising.
        with np.errstate(all="ignore"):
            return float(_ARRAY_OPS[node.op](np.float64(a), np.float64(b)))
    if isinstance(node, Comparison):
        values = [_scalar(o, params) for o in node.operands]
        return all(bool(_compare(op, values[i], values[i + 1])) for i, op in enumerate(node.ops))
    if isinstance(node, Logic):
        values = [bool(_scalar(o, params)) for o in node.operands]
        return all(values) if node.op == "and" else any(values)
    assert isinstance(node, Call)
    assert node.func.scalar is not None
    args = [_scalar(a, params) for a in node.args]
    return node.func.scalar(args)


def _compare(op: str, a: Any, b: Any) -> Any:
    """Element-wise comparison in which anything involving NaN is False (also for !=)."""
    with np.errstate(invalid="ignore"):
        result = _COMPARE_OPS[op](a, b)
        if op == "!=":
            result = result & ~(np.isnan(a) | np.isnan(b))
    return result


def _fingerprint(candles: Candles) -> tuple[object, ...]:
    n = len(candles)
    if n == 0:
        return (0,)
    ends = (0, n - 1)
    return (
        n,
        *(int(candles.timestamp[i]) for i in ends),
        *(float(candles.close[i]) for i in ends),
        tuple(candles.extra),
    )


class _Evaluator:
    """Evaluates typed trees for one candles/params pair."""

    def __init__(
        self, candles: Candles, params: Mapping[str, ParamValue], cache: Cache | None
    ) -> None:
        self.candles = candles
        self.n = len(candles)
        self.params = params
        # Without a caller's cache, one private to this compile still computes an indicator
        # that several rules share (sma_cross's two SMAs appear in both rules) only once.
        self.cache: Cache = {} if cache is None else cache
        if cache is not None:
            fingerprint = _fingerprint(candles)
            if cache.get(_FINGERPRINT) != fingerprint:
                # Entries computed on other candles would be silently wrong here.
                cache.clear()
                cache[_FINGERPRINT] = fingerprint

    def rule(self, node: Node) -> BoolArray:
        """A fresh boolean array of one value per bar."""
        value, _ = self.eval(node)
        out = np.zeros(self.n, dtype=np.bool_)
        out[:] = value
        return out

    def eval(self, node: Node) -> tuple[Value, Key]:
        """The node's value and a hashable key naming the computation (params substituted)."""
        if not node.type.is_series:
            value = _scalar(node, self.params)
            return value, ("bool" if node.type is Type.BOOL else "num", value)
        if isinstance(node, ColumnRef):
            return column_values(self.candles, node.name), ("col", node.name)
        if isinstance(node, Unary):
            v, k = self.eval(node.operand)
            if node.op == "not":
                return np.logical_not(v), ("not", k)
            return (np.negative(v) if node.op == "-" else v), (node.op, k)
        if isinstance(node, Binary):
            (a, ka), (b, kb) = self.eval(node.left), self.eval(node.right)
            with np.errstate(all="ignore"):
                result = _ARRAY_OPS[node.op](a, b)
            return np.asarray(result, dtype=np.float64), (node.op, ka, kb)
        if isinstance(node, Comparison):
            pairs = [self.eval(o) for o in node.operands]
            parts = [_compare(op, pairs[i][0], pairs[i + 1][0]) for i, op in enumerate(node.ops)]
            keys = tuple(k for _, k in pairs)
            return functools.reduce(np.logical_and, parts), ("cmp", node.ops, keys)
        if isinstance(node, Logic):
            pairs = [self.eval(o) for o in node.operands]
            combine = np.logical_and if node.op == "and" else np.logical_or
            values = [v for v, _ in pairs]
            return functools.reduce(combine, values), (node.op, tuple(k for _, k in pairs))
        assert isinstance(node, Call)
        return self.call(node)

    def call(self, node: Call) -> tuple[Value, Key]:
        func = node.func
        values: list[Value] = []
        keys: list[Key] = []
        for spec, arg in zip(func.args, node.args, strict=True):
            value, key = self.eval(arg)
            if spec.kind == "int":
                assert isinstance(value, int)
                problem = int_argument_problem(func, spec, value)
                if problem is not None:
                    raise _fail(problem, arg)
                if spec.window and value > self.n:
                    raise _fail(
                        f"{func.name} {spec.name} {value} exceeds the {self.n} bars of data", arg
                    )
            values.append(value)
            keys.append(key)
        args_key = tuple(keys)
        cache_key = None if func.cache_name is None else (func.cache_name, args_key)
        if cache_key is not None and cache_key in self.cache:
            result = self.cache[cache_key]
        else:
            try:
                result = func.compute(self.candles, Args(values))
            except ValueError as exc:
                raise _fail(f"{func.name}: {exc}", node) from None
            result = _freeze(result)
            if cache_key is not None:
                self.cache[cache_key] = result
        if func.output is not None:
            result = result[func.output]
        dtype = np.bool_ if node.type is Type.CONDITION else np.float64
        array: BoolArray | FloatArray = np.asarray(result, dtype=dtype)
        if array.shape != (self.n,):
            raise AssertionError(f"{func.name} returned shape {array.shape}, expected ({self.n},)")
        return array, (func.name, args_key)


def _freeze(result: object) -> object:
    """Make cached arrays read-only so no later step can change a shared result."""
    parts = result if isinstance(result, tuple) else (result,)
    for part in parts:
        if isinstance(part, np.ndarray):
            part.flags.writeable = False
    return result


@functools.lru_cache(maxsize=1024)
def _parse_cached(
    expr: str, kinds: tuple[tuple[str, str], ...], columns: tuple[str, ...], field: str
) -> Node | None:
    return parse_rule(expr, params=dict(kinds), columns=columns, field=field)


def _parsed_rules(spec: StrategySpec, columns: Iterable[str]) -> dict[str, Node | None]:
    kinds = tuple((p.name, p.kind) for p in spec.params)
    cols = tuple(columns)
    return {rule: _parse_cached(getattr(spec, rule), kinds, cols, rule) for rule in RULES}


def _check_param_names(spec: StrategySpec, columns: Iterable[str]) -> None:
    names = set(columns)
    for p in spec.params:
        if p.name in names:
            raise StrategyError(
                f"parameter '{p.name}' has the same name as a data column; rename it",
                field=p.name,
            )


def validate_strategy(spec: StrategySpec, *, columns: Iterable[str] = ()) -> None:
    """Raise StrategyError for the first rule that is not valid (static check, no data).

    ``columns`` are the extra candle columns the rules may use besides OHLCV.
    """
    cols = tuple(columns)
    _check_param_names(spec, cols)
    _parsed_rules(spec, cols)


def compile_strategy(
    spec: StrategySpec,
    candles: Candles,
    params: Mapping[str, object],
    cache: Cache | None = None,
) -> Signals:
    """Evaluate the spec's four rules on ``candles`` with ``params`` (defaults filled in).

    An empty rule never fires. Errors (bad rule, bad param, a period longer than the data) raise
    StrategyError naming the rule or parameter. Pass the same ``cache`` dict across calls on
    the same candles to compute each distinct indicator once; it is cleared if the candles
    change.
    """
    values = spec.resolve_params(params)
    columns = tuple(candles.extra)
    _check_param_names(spec, columns)
    trees = _parsed_rules(spec, columns)
    evaluator = _Evaluator(candles, values, cache)
    out: dict[str, BoolArray] = {}
    for rule, tree in trees.items():
        if tree is None:
            out[rule] = np.zeros(len(candles), dtype=np.bool_)
            continue
        try:
            out[rule] = evaluator.rule(tree)
        except StrategyError as exc:
            raise StrategyError(
                exc.message, col=exc.col, expression=getattr(spec, rule), field=rule
            ) from None
    return Signals(**out)


def evaluate_expression(
    expr: str,
    candles: Candles,
    params: Mapping[str, ParamValue] | None = None,
    cache: Cache | None = None,
) -> FloatArray | BoolArray:
    """Any expression of the language (not only a condition) as one value per bar.

    For plotting what a rule looks at, e.g. ``ema(close, fast)``. ``params`` are final values;
    each one's kind follows its Python type. Number results are float64, conditions bool.
    """
    values = dict(params or {})
    kinds = {
        name: "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float"
        for name, v in values.items()
    }
    tree = parse_rule(expr, params=kinds, columns=tuple(candles.extra), condition=False)
    if tree is None:
        raise StrategyError("the expression is empty", col=0, expression=expr)
    evaluator = _Evaluator(candles, values, cache)
    try:
        value, _ = evaluator.eval(tree)
    except StrategyError as exc:
        raise StrategyError(exc.message, col=exc.col, expression=expr) from None
    dtype = np.bool_ if tree.type.is_bool else np.float64
    out: FloatArray | BoolArray = np.empty(len(candles), dtype=dtype)
    out[:] = value
    return out


def _warmup(node: Node, params: Mapping[str, ParamValue]) -> int:
    if not node.type.is_series:
        return 0
    if isinstance(node, Call):
        inner = max((_warmup(a, params) for a in node.args), default=0)
        own = node.func.extra_warmup
        for spec, arg in zip(node.func.args, node.args, strict=True):
            if spec.window:
                own += int(_scalar(arg, params))
        return inner + own
    children: tuple[Node, ...] = ()
    if isinstance(node, Unary):
        children = (node.operand,)
    elif isinstance(node, Binary):
        children = (node.left, node.right)
    elif isinstance(node, Comparison | Logic):
        children = node.operands
    return max((_warmup(c, params) for c in children), default=0)


def strategy_warmup(
    spec: StrategySpec, params: Mapping[str, object], *, columns: Iterable[str] = ()
) -> int:
    """Bars of history the rules need before they can fire: the longest chain of look-back
    windows (nested windows add up). An upper bound used to pick where to test for look-ahead."""
    values = spec.resolve_params(params)
    trees = _parsed_rules(spec, columns)
    return max((_warmup(t, values) for t in trees.values() if t is not None), default=0)
