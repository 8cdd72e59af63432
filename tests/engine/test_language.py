"""The strategy language: what it accepts, what it refuses (and where), and what it computes.

Oracles: tiny arrays worked out by hand in the comments, plain numpy/Python loops, and TA-Lib.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import talib

from backtester.engine import indicators
from backtester.engine.candles import Candles
from backtester.engine.errors import StrategyError
from backtester.engine.language import (
    FUNCTIONS,
    PRESETS,
    Param,
    StrategySpec,
    compile_strategy,
    evaluate_expression,
    functions,
    parse_rule,
    strategy_warmup,
    validate_expression,
    validate_strategy,
)

NAN = np.nan


def random_walk(n: int = 600, seed: int = 3, **extra: np.ndarray) -> Candles:
    """Geometric random walk with consistent OHLC and positive volume."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.004, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.004, n))
    return Candles(
        timestamp=np.arange(n, dtype=np.int64) * 3_600_000,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=rng.uniform(1, 100, n),
        extra=extra,
    )


def flat(**extra: list[float]) -> Candles:
    """Flat price bars carrying hand-made extra columns (``a``, ``b``...) to test on."""
    n = len(next(iter(extra.values())))
    ones = np.full(n, 100.0)
    return Candles(
        timestamp=np.arange(n, dtype=np.int64) * 60_000,
        open=ones,
        high=ones,
        low=ones,
        close=ones,
        volume=ones,
        extra={k: np.asarray(v, dtype=float) for k, v in extra.items()},
    )


def rule(expr: str, candles: Candles, **params: Any) -> list[bool]:
    """Evaluate one condition through the full compile path (as entry_long)."""
    declared = tuple(
        Param(name, "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float", v)
        for name, v in params.items()
    )
    signals = compile_strategy(StrategySpec("t", entry_long=expr, params=declared), candles, {})
    return signals.entry_long.tolist()


def refused(expr: str, **kwargs: Any) -> StrategyError:
    kwargs.setdefault("params", ())
    kwargs.setdefault("columns", ())
    with pytest.raises(StrategyError) as info:
        validate_expression(expr, **kwargs)
    return info.value


# --- cross_above / cross_below / shift / rising / falling on tiny arrays ------------------------


def test_cross_above_fires_when_a_moves_from_at_or_below_b_to_above_it() -> None:
    # t=0 never fires; t=1: 2 > 2 is false; t=2: 3 > 2 and a[1]=2 <= 2 -> true (equality at
    # t-1 counts as "not above"); t=3: 2 > 2 false; t=4: 4 > 2 and a[3]=2 <= 2 -> true.
    c = flat(a=[1, 2, 3, 2, 4], b=[2, 2, 2, 2, 2])
    assert rule("cross_above(a, b)", c) == [False, False, True, False, True]


def test_cross_above_needs_strictly_above_now_and_never_fires_on_the_first_bar() -> None:
    # a starts above b (no cross at t=0), drops below at t=1, touches b at t=2 (2 > 2 is
    # false) and only moves above it at t=3.
    c = flat(a=[3, 1, 2, 3], b=[2, 2, 2, 2])
    assert rule("cross_above(a, b)", c) == [False, False, False, True]


def test_cross_is_false_whenever_a_value_at_t_or_t_minus_1_is_nan() -> None:
    # t=1: a is NaN; t=2: a[1] is NaN although 3 > 2; t=4: real cross from 1 to 3.
    c = flat(a=[1, NAN, 3, 1, 3], b=[2, 2, 2, 2, 2])
    assert rule("cross_above(a, b)", c) == [False, False, False, False, True]
    # NaN on b's side blocks the cross the same way.
    c = flat(a=[1, 3, 1, 3], b=[2, 2, NAN, 2])
    assert rule("cross_above(a, b)", c) == [False, True, False, False]


def test_cross_below_mirrors_cross_above() -> None:
    # t=2: 1 < 2 and a[1]=2 >= 2 -> true; t=4: 0 < 2 and a[3]=3 >= 2 -> true; NaN at t=5/6.
    c = flat(a=[3, 2, 1, 3, 0, NAN, 1], b=[2, 2, 2, 2, 2, 2, 2])
    assert rule("cross_below(a, b)", c) == [False, False, True, False, True, False, False]


def test_cross_accepts_a_number_on_either_side() -> None:
    c = flat(a=[1, 3, 1, 3])
    assert rule("cross_above(a, 2)", c) == [False, True, False, True]
    # 2 crossing above a is a crossing below: t=2 (2 > 1 and 2 <= 3).
    assert rule("cross_above(2, a)", c) == [False, False, True, False]


def test_cross_kernel_as_python_and_compiled_agree_with_a_plain_loop() -> None:
    # Whole numbers make ties (a == b) common; NaNs sit on both sides. The kernel is compiled
    # from a plain function: run that as Python too.
    rng = np.random.default_rng(9)
    a = rng.integers(0, 4, 500).astype(np.float64)
    b = rng.integers(0, 4, 500).astype(np.float64)
    a[rng.random(500) < 0.05] = np.nan
    b[rng.random(500) < 0.05] = np.nan
    up = [False] + [bool(a[t] > b[t] and a[t - 1] <= b[t - 1]) for t in range(1, 500)]
    down = [False] + [bool(a[t] < b[t] and a[t - 1] >= b[t - 1]) for t in range(1, 500)]
    assert functions._cross_py(a, b, True).tolist() == up
    assert functions._cross_py(a, b, False).tolist() == down
    a.flags.writeable = False  # cached indicators reach the kernel read-only
    assert functions._cross_kernel(a, b, True).tolist() == up
    assert functions._cross_kernel(a, b, False).tolist() == down
    level = np.broadcast_to(np.float64(2.0), (500,))  # a number on one side
    expected = [False] + [bool(a[t] > 2 and a[t - 1] <= 2) for t in range(1, 500)]
    assert functions._cross_kernel(a, level, True).tolist() == expected
    assert functions._cross_py(a[:0], b[:0], True).shape == (0,)


def test_shift_lags_by_n_bars_and_fills_the_start_with_nan() -> None:
    c = flat(a=[1, 2, 3, 4, 5], b=[NAN, NAN, 1, 2, 3])
    # shift(a, 2) = [nan, nan, 1, 2, 3]; nan == nan is false.
    assert rule("shift(a, 2) == b", c) == [False, False, True, True, True]
    assert rule("shift(a, 0) == a", c) == [True] * 5
    assert rule("shift(a, 5) > 0", c) == [False] * 5


def test_shift_of_a_condition_fills_the_start_with_false() -> None:
    # a > 2 is [F, F, T, T, T]; one bar later [F, F, F, T, T].
    c = flat(a=[1, 2, 3, 4, 5])
    assert rule("shift(a > 2, 1)", c) == [False, False, False, True, True]


def test_shift_refuses_a_negative_lag_because_that_would_look_ahead() -> None:
    err = refused("shift(close, -1) > 0")
    assert err.message == "shift bars must be at least 0, got -1"
    assert err.col == 13


def test_rising_and_falling_compare_with_the_value_n_bars_back() -> None:
    c = flat(a=[1, 2, 2, 3, 1, NAN, 4])
    assert rule("rising(a, 1)", c) == [False, True, False, True, False, False, False]
    assert rule("falling(a, 1)", c) == [False, False, False, False, True, False, False]
    # Two bars back: 2 > 1, 3 > 2, 1 < 2, nan, 4 > 1 (the NaN in between does not matter).
    assert rule("rising(a, 2)", c) == [False, False, True, True, False, False, True]


def test_comparisons_involving_nan_are_false_even_not_equal() -> None:
    c = flat(a=[NAN, 1, 5])
    assert rule("a != 5", c) == [False, True, False]
    assert rule("a == 5", c) == [False, False, True]
    assert rule("a < 5", c) == [False, True, False]


def test_chained_comparison_means_both_halves() -> None:
    c = flat(a=[0, 1, 2, 3, 4])
    assert rule("1 <= a < 3", c) == [False, True, True, False, False]


def test_abs_min_max_work_elementwise_and_scalars_broadcast() -> None:
    c = flat(a=[-3, -1, 0, 2], b=[1, -2, 5, 1])
    assert rule("abs(a) > 1", c) == [True, False, False, True]
    assert rule("min(a, b) == b", c) == [False, True, False, True]
    assert rule("max(a, 0) == 0", c) == [True, True, True, False]


def test_and_or_not_combine_conditions_bar_by_bar() -> None:
    c = flat(a=[0, 1, 2, 3])
    assert rule("a > 0 and a < 3", c) == [False, True, True, False]
    assert rule("a < 1 or a > 2", c) == [True, False, False, True]
    assert rule("not a > 1", c) == [True, True, False, False]


def test_true_false_and_scalar_conditions_fill_every_bar() -> None:
    c = flat(a=[0, 1, 2])
    assert rule("True", c) == [True] * 3
    assert rule("false or a > 1", c) == [False, False, True]
    assert rule("fast < slow", c, fast=5, slow=20) == [True] * 3
    assert rule("fast < slow and a > 0", c, fast=30, slow=20) == [False] * 3


def test_bool_parameter_switches_a_clause_on_and_off() -> None:
    c = flat(a=[0, 1, 2])
    assert rule("(use_filter and a > 1) or (not use_filter and a > 0)", c, use_filter=True) == [
        False,
        False,
        True,
    ]
    assert rule("(use_filter and a > 1) or (not use_filter and a > 0)", c, use_filter=False) == [
        False,
        True,
        True,
    ]


def test_arithmetic_on_series_matches_numpy() -> None:
    c = random_walk()
    expected = (c.close - c.open) / c.open * 100 > 0.5
    got = compile_strategy(
        StrategySpec("t", entry_long="(close - open) / open * 100 > 0.5"), c, {}
    ).entry_long
    np.testing.assert_array_equal(got, expected)
    value = evaluate_expression("-close % 7 + close ** 0.5 - +high", c)
    np.testing.assert_allclose(value, np.remainder(-c.close, 7) + np.sqrt(c.close) - c.high)


def test_typical_price_columns_are_averages_of_the_bar() -> None:
    c = random_walk(50)
    np.testing.assert_allclose(evaluate_expression("hl2", c), (c.high + c.low) / 2)
    np.testing.assert_allclose(evaluate_expression("hlc3", c), (c.high + c.low + c.close) / 3)
    np.testing.assert_allclose(
        evaluate_expression("ohlc4", c), (c.open + c.high + c.low + c.close) / 4
    )


def test_division_by_zero_in_a_series_gives_no_signal_instead_of_an_error() -> None:
    c = flat(a=[0, 1, -1])
    # 0/0 is nan (false), 1/0 is +inf, -1/0 is -inf.
    assert rule("a / 0 > 1", c) == [False, True, False]


# --- a realistic rule against an independent computation --------------------------------------


def test_a_compiled_rule_matches_the_same_rule_computed_with_talib_and_a_loop() -> None:
    c = random_walk(800, seed=11)
    spec = StrategySpec(
        "t",
        entry_long="cross_above(ema(close, fast), sma(close, slow)) and rsi(close, 14) < 60",
        exit_long="macd_hist(close) < 0 or close < bb_lower(close, 20, k)",
        params=(Param("fast", "int", 5), Param("slow", "int", 20), Param("k", "float", 2.0)),
    )
    signals = compile_strategy(spec, c, {"k": 1.5})
    fast, slow, rsi = talib.EMA(c.close, 5), talib.SMA(c.close, 20), talib.RSI(c.close, 14)
    expected = np.zeros(len(c), dtype=bool)
    for t in range(1, len(c)):
        crossed = fast[t] > slow[t] and fast[t - 1] <= slow[t - 1]
        expected[t] = bool(crossed and rsi[t] < 60)
    np.testing.assert_array_equal(signals.entry_long, expected)
    assert expected.sum() > 3
    _, _, hist = talib.MACD(c.close, 12, 26, 9)
    _, _, lower = talib.BBANDS(c.close, 20, 1.5, 1.5)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(signals.exit_long, (hist < 0) | (c.close < lower))
    assert not signals.entry_short.any()
    assert not signals.exit_short.any()


@pytest.mark.parametrize(
    ("expr", "oracle"),
    [
        ("sma(close, 10)", lambda c: talib.SMA(c.close, 10)),
        ("ema(close, 10)", lambda c: talib.EMA(c.close, 10)),
        ("wma(close, 10)", lambda c: talib.WMA(c.close, 10)),
        ("rsi(close)", lambda c: talib.RSI(c.close, 14)),
        ("atr()", lambda c: talib.ATR(c.high, c.low, c.close, 14)),
        ("macd_line(close)", lambda c: talib.MACD(c.close, 12, 26, 9)[0]),
        ("macd_signal(close)", lambda c: talib.MACD(c.close, 12, 26, 9)[1]),
        ("macd_hist(close)", lambda c: talib.MACD(c.close, 12, 26, 9)[2]),
        ("bb_upper(close)", lambda c: talib.BBANDS(c.close, 20, 2.0, 2.0)[0]),
        ("bb_mid(close, 20, 2)", lambda c: talib.BBANDS(c.close, 20, 2.0, 2.0)[1]),
        ("bb_lower(close, 10, 1.5)", lambda c: talib.BBANDS(c.close, 10, 1.5, 1.5)[2]),
        ("highest(high, 7)", lambda c: talib.MAX(c.high, 7)),
        ("lowest(low, 7)", lambda c: talib.MIN(c.low, 7)),
        ("donchian_upper(9)", lambda c: talib.MAX(c.high, 9)),
        ("donchian_lower(9)", lambda c: talib.MIN(c.low, 9)),
        ("donchian_mid(9)", lambda c: (talib.MAX(c.high, 9) + talib.MIN(c.low, 9)) / 2),
        ("rolling_std(close, 12)", lambda c: talib.STDDEV(c.close, 12, 1.0)),
        ("obv()", lambda c: talib.OBV(c.close, c.volume)),
        ("volume_sma(5)", lambda c: talib.SMA(c.volume, 5)),
        ("returns(close, 3)", lambda c: np.r_[[NAN] * 3, c.close[3:] / c.close[:-3] - 1]),
        ("shift(close, 4)", lambda c: np.r_[[NAN] * 4, c.close[:-4]]),
        ("ema(close - open, fast * 2)", lambda c: talib.EMA(c.close - c.open, 10)),
        ("sma(close, max(fast, 3) + 1)", lambda c: talib.SMA(c.close, 6)),
        ("sma(close, 10.0)", lambda c: talib.SMA(c.close, 10)),
    ],
)
def test_language_functions_compute_what_talib_computes(
    expr: str, oracle: Callable[[Candles], np.ndarray]
) -> None:
    c = random_walk(300, seed=5)
    got = evaluate_expression(expr, c, {"fast": 5})
    want = oracle(c)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("names", "indicator", "call"),
    [
        (("macd_line", "macd_signal", "macd_hist"), "macd", "(close, 5, 13, 4)"),
        (("bb_mid", "bb_upper", "bb_lower"), "bollinger", "(close, 15, 1.5)"),
        (("stoch_k", "stoch_d"), "stoch", "(10, 3, 4)"),
        (("donchian_upper", "donchian_mid", "donchian_lower"), "donchian", "(12)"),
        (("poly_mid", "poly_upper", "poly_lower"), "polyreg_bands", "(close, 40, 2, 1.5)"),
    ],
)
def test_multi_output_indicators_map_each_name_to_its_own_output(
    names: tuple[str, ...], indicator: str, call: str
) -> None:
    c = random_walk(300, seed=9)
    fn = getattr(indicators, indicator)
    args = {
        "macd": (c.close, 5, 13, 4),
        "bollinger": (c.close, 15, 1.5),
        "stoch": (c.high, c.low, c.close, 10, 3, 4),
        "donchian": (c.high, c.low, 12),
        "polyreg_bands": (c.close, 40, 2, 1.5),
    }[indicator]
    outputs = fn(*args)
    assert len(outputs) == len(names)
    for name, want in zip(names, outputs, strict=True):
        np.testing.assert_array_equal(evaluate_expression(name + call, c), want)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_evaluates_on_data_with_its_documented_arguments(name: str) -> None:
    func = FUNCTIONS[name]
    sample = {"series": "close", "numeric": "close", "shiftable": "close", "number": "1.5"}
    whole = {"window": "30", "degree": "2", "fast": "5", "slow": "10"}
    args = [sample.get(a.kind, whole.get(a.name, "4")) for a in func.args]
    c = random_walk(120)
    out = evaluate_expression(f"{name}({', '.join(args)})", c)
    assert out.shape == (120,)
    assert func.doc  # every function is documented for the help page
    if func.required < len(func.args):
        # Leaving out the optional arguments means their defaults.
        short = evaluate_expression(f"{name}({', '.join(args[: func.required])})", c)
        assert short.shape == (120,)


def test_abs_min_max_of_numbers_stay_numbers_that_can_be_periods() -> None:
    c = random_walk(100)
    np.testing.assert_allclose(
        evaluate_expression("sma(close, abs(-3) + min(2, 9))", c), talib.SMA(c.close, 5)
    )
    assert evaluate_expression("max(1.5, 2) * 2 == 4", c).all()
    assert evaluate_expression("5 % 3 == 2 and 2 ** 3 == 8 and 7 / 2 == 3.5", c).all()
    assert evaluate_expression(
        "-fast == -4 and +fast == 4 and not flag", c, {"fast": 4, "flag": False}
    ).all()
    assert not evaluate_expression("1 != 1 or 2 < 1 < 3", c).any()


def test_evaluate_expression_refuses_an_empty_expression_and_reports_data_errors() -> None:
    with pytest.raises(StrategyError, match="empty"):
        evaluate_expression("  ", random_walk(10))
    with pytest.raises(StrategyError) as info:
        evaluate_expression("sma(close, 20)", random_walk(10))
    assert info.value.message == "sma period 20 exceeds the 10 bars of data"
    assert (info.value.col, info.value.expression) == (11, "sma(close, 20)")


def test_rules_compile_on_empty_candles_to_empty_signals() -> None:
    nothing = np.zeros(0)
    empty = Candles(np.zeros(0, dtype=np.int64), nothing, nothing, nothing, nothing, nothing)
    cache: dict[Any, Any] = {}
    signals = compile_strategy(StrategySpec("t", entry_long="close > open"), empty, {}, cache)
    assert len(signals) == 0


# --- refusals: message and column ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message", "col"),
    [
        # security-relevant constructs
        ("__import__('os').system('x')", "attribute access is not allowed", 16),
        ("__import__('os')", "unknown function '__import__'", 0),
        ("().__class__", "attribute access is not allowed", 2),
        ("open.__globals__", "attribute access is not allowed", 4),
        ("close.real > 1", "attribute access is not allowed", 5),
        ("getattr(close, 'real') > 1", "unknown function 'getattr'", 0),
        ("eval('1') > 0", "unknown function 'eval'", 0),
        ("[x for x in y]", "comprehensions are not allowed", 0),
        ("any(x for x in close)", "unknown function 'any'", 0),
        ("max(close, [x for x in y]) > 1", "comprehensions are not allowed", 11),
        ("lambda: 1", "lambda is not allowed", 0),
        ("(lambda: 1)() > 0", "lambda is not allowed", 1),
        ("'abc'", "strings are not allowed", 0),
        ("close > 'abc'", "strings are not allowed", 8),
        ("b'x' == 1", "strings are not allowed", 0),
        ("f'{close}' > 1", "strings are not allowed", 0),
        ("close > None", "None is not allowed", 8),
        ("close > ...", "Ellipsis is not allowed", 8),
        ("1j > close", "complex numbers are not allowed", 0),
        ("close[1] > 2", "use shift(x, n) instead of subscripts", 5),
        ("close[-1:] > 2", "use shift(x, n) instead of subscripts", 5),
        ("max(*close) > 1", "starred expressions (*x) are not allowed", 4),
        ("sma(close, n=5) > 1", "keyword arguments are not allowed", 11),
        ("(x := 1)", "assignment (:=) is not allowed", 1),
        ("close if True else open", "'x if c else y' is not supported", 0),
        ("[close] == [1]", "lists are not allowed", 0),
        ("(close, 1) == 1", "tuples are not allowed", 0),
        ("{1} == close", "sets are not allowed", 0),
        ("{1: 2} == close", "dicts are not allowed", 0),
        ("close in (1, 2)", "'in' is not supported", 6),
        ("close not in (1, 2)", "'not in' is not supported", 6),
        ("close is 1", "'is' is not supported; use == or !=", 6),
        ("close is not 1", "'is not' is not supported; use !=", 6),
        ("close > 1 & open > 1", "use 'and' instead of '&'", 10),
        ("(close > 1) | (open > 1)", "use 'or' instead of '|'", 12),
        ("~(close > 1)", "use 'not' instead of '~'", 0),
        ("close ^ 2 > 1", "'^' is not supported; use '**' for powers", 6),
        ("close // 2 > 1", "'//' is not supported; use '/'", 6),
        ("close << 2 > 1", "'<<' is not supported", 6),
        ("close >> 2 > 1", "'>>' is not supported", 6),
        ("close @ close > 1", "'@' is not supported", 6),
        # names and functions
        ("clsoe > 1", "unknown name 'clsoe'; did you mean 'close'?", 0),
        ("close > 1 and volum > 2", "unknown name 'volum'; did you mean 'volume'?", 14),
        ("zzz > 1", "unknown name 'zzz'", 0),
        ("emaa(close, 5) > 1", "unknown function 'emaa'; did you mean 'ema'?", 0),
        ("sma > 1", "'sma' is a function; call it as sma(series, period)", 0),
        ("close(1) > 1", "'close' is not a function", 0),
        ("(close + 1)(2) > 1", "only named functions can be called", 0),
        # argument counts and types
        ("ema(close) > 1", "ema takes 2 arguments (series, period), got 1", 0),
        ("rsi(close, 14, 3) > 1", "rsi takes 1 to 2 arguments (series, period=14), got 3", 0),
        ("abs(close, 1) > 1", "abs takes 1 argument (x), got 2", 0),
        ("obv(1) > 1", "obv takes no arguments, got 1", 0),
        (
            "ema(close, close) > 1",
            "ema period must be a whole number (a constant or an int parameter), "
            "got a number series",
            11,
        ),
        ("sma(close, 2.5) > 1", "sma period must be a whole number", 11),
        ("sma(close, 10 / 2) > 1", "sma period must be a whole number", 11),
        ("sma(close, 0) > 1", "sma period must be at least 1, got 0", 11),
        ("poly_mid(close, 50, 9) > 1", "poly_mid degree must be at most 6, got 9", 20),
        ("sma(close > 1, 5) > 1", "sma series must be a number series, got a condition", 4),
        ("rsi(5) > 1", "rsi series must be a number series, got a whole number", 4),
        ("bb_upper(close, 20, close) > 1", "bb_upper k must be a single number", 20),
        ("shift(5, 1) > 1", "shift series must be a series or a condition", 6),
        ("abs(close > 1) > 1", "abs x must be a number or number series, got a condition", 4),
        ("close > 1 and 5", "'and' combines conditions, but this is a whole number", 14),
        ("not close", "'not' needs a condition, but this is a number series", 4),
        ("-(close > 1) < 0", "'-' needs a number, but this is a condition", 2),
        ("close + (open > 1) > 0", "'+' needs numbers on both sides, but this is a condition", 9),
        ("(close > 1) > 0", "comparisons need numbers, but this is a condition", 1),
        # a rule must be a condition
        ("close", "a rule must be a condition (true/false), but this is a number series", 0),
        ("rsi(close) + 1", "a rule must be a condition", 0),
        ("3", "a rule must be a condition (true/false), but this is a whole number", 0),
        # numbers
        ("1e999 > close", "number too large", 0),
        ("close > 10000000000000000", "number too large", 8),
        # syntax, layout
        ("close > 1)", "syntax error: unmatched ')'", 9),
        ("close >", "syntax error: invalid syntax", 7),
        ("(close > 1", "syntax error: '(' was never closed", 0),
        ("  clsoe > 1", "unknown name 'clsoe'", 2),
        ("close > 1 and\nclsoe > 1", "unknown name 'clsoe'", 14),
        ("close > 1 and\r\n\tclsoe > 1", "unknown name 'clsoe'", 16),
        ("close\x00 > 1", "unexpected control character", 5),
    ],
)
def test_refused_construct_reports_message_and_column(expr: str, message: str, col: int) -> None:
    err = refused(expr, field="entry_long")
    assert message in err.message
    assert err.col == col
    assert err.field == "entry_long"
    assert err.expression == expr


def test_non_text_expression_and_unknown_param_kind_are_refused() -> None:
    with pytest.raises(StrategyError, match="must be text"):
        validate_expression(5, params=())  # type: ignore[arg-type]  # a wrong type on purpose
    with pytest.raises(StrategyError, match="unknown parameter kind 'str'"):
        parse_rule("close > x", params={"x": "str"})


def test_a_crash_inside_the_python_parser_is_reported_as_too_complex(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def overflow(*args: object, **kwargs: object) -> None:
        raise RecursionError

    monkeypatch.setattr(ast, "parse", overflow)
    err = refused("close > 1")
    assert (err.message, err.col) == ("expression is too complex to read", 0)


def test_error_text_names_the_rule_and_a_one_based_column() -> None:
    err = refused("clsoe > 1", field="exit_long")
    assert str(err).startswith("exit_long: unknown name 'clsoe'; did you mean 'close'? ")
    assert str(err).endswith(" (column 1)")


def test_columns_count_characters_not_utf8_bytes() -> None:
    # "é" is two bytes in UTF-8; the error must still point at character 10.
    err = refused("é > 1 and clsoe > 2", columns=["é"])
    assert err.col == 10


def test_a_float_parameter_cannot_be_a_period_but_can_be_a_multiplier() -> None:
    params = [Param("ratio", "float", 2.0), Param("n", "int", 20)]
    err = refused("sma(close, ratio) > 1", params=params)
    assert "got the float parameter 'ratio'" in err.message
    assert err.col == 11
    validate_expression("close < bb_lower(close, n, ratio)", params=params, columns=())


def test_bare_parameter_names_validate_as_whole_numbers() -> None:
    validate_expression("sma(close, fast) > sma(close, slow) * k", params=["fast", "slow", "k"])
    validate_expression("", params=[])  # an empty rule is valid: it never fires
    err = refused("sma(close, fast) > 1", params=[])
    assert err.message.startswith("unknown name 'fast'.")


def test_extra_candle_columns_are_names_only_when_declared() -> None:
    validate_expression("funding_rate > 0.0001", params=(), columns=["funding_rate"])
    err = refused("fundng_rate > 0.0001", columns=["funding_rate"])
    assert err.message.startswith("unknown name 'fundng_rate'; did you mean 'funding_rate'?")


# --- size limits (denial of service) ------------------------------------------------------------


def test_expression_longer_than_2000_characters_is_refused_before_parsing() -> None:
    err = refused("close > 1 and " * 150 + "close > 1")
    assert "too long" in err.message
    assert err.col == 2000


def test_expression_with_too_many_parts_is_refused() -> None:
    expr = " and ".join(["close > 0"] * 140)  # 1,955 characters, 421 nodes
    assert len(expr) <= 2000
    err = refused(expr)
    assert err.message == "expression is too large (more than 400 parts)"


@pytest.mark.parametrize(
    "expr",
    ["not " * 150 + "close > 1", "-" * 1500 + "close > 1", "+".join(["1"] * 300) + " > close"],
)
def test_deeply_nested_expression_is_refused_without_recursion_error(expr: str) -> None:
    err = refused(expr)
    assert err.message == "expression is nested too deeply (more than 100 levels)"


def test_too_many_parentheses_is_a_syntax_error_not_a_crash() -> None:
    err = refused("(" * 250 + "1" + ")" * 250)
    assert err.message.startswith("syntax error")


def test_a_moderately_long_sum_is_still_accepted() -> None:
    c = flat(a=[1.0, 2.0])
    assert rule("+".join(["a"] * 60) + " > 90", c) == [False, True]


def test_huge_integer_powers_are_computed_as_floats_not_big_integers() -> None:
    # 10 ** 10 ** 10 as an integer would take gigabytes; as a float it is inf.
    c = flat(a=[1.0])
    assert rule("10 ** 10 ** 10 > a", c) == [True]


def test_compiling_never_calls_eval_or_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec must not be used")

    c = random_walk(300)
    # (ast.parse itself uses compile() with PyCF_ONLY_AST, which builds no code object.)
    for name in ("eval", "exec"):
        monkeypatch.setattr(builtins, name, forbidden)
    for spec in PRESETS.values():
        compile_strategy(spec, c, {})


# --- errors that need data or parameter values ------------------------------------------------


def test_window_longer_than_the_data_is_refused_with_the_bar_count() -> None:
    spec = StrategySpec("t", entry_long="ema(close, 500) > 1")
    with pytest.raises(StrategyError) as info:
        compile_strategy(spec, random_walk(300), {})
    err = info.value
    assert err.message == "ema period 500 exceeds the 300 bars of data"
    assert (err.field, err.col, err.expression) == ("entry_long", 11, "ema(close, 500) > 1")


def test_window_from_a_parameter_is_checked_against_the_data() -> None:
    spec = StrategySpec(
        "t", exit_long="close > 1 and sma(close, slow) > 1", params=(Param("slow", "int", 30),)
    )
    with pytest.raises(StrategyError) as info:
        compile_strategy(spec, random_walk(300), {"slow": 400})
    assert info.value.message == "sma period 400 exceeds the 300 bars of data"
    assert (info.value.field, info.value.col) == ("exit_long", 25)


def test_period_parameter_below_one_is_refused_at_compile_time() -> None:
    spec = StrategySpec("t", entry_long="sma(close, n) > 1", params=(Param("n", "int", 0),))
    with pytest.raises(StrategyError, match="sma period must be at least 1, got 0"):
        compile_strategy(spec, random_walk(50), {})


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("sma(close, 5 % 0) > 1", "division by zero"),
        ("sma(close, 99999999 * 99999999) > 1", "number too large"),
    ],
)
def test_whole_number_arithmetic_errors_are_reported_not_raised_raw(
    expr: str, message: str
) -> None:
    with pytest.raises(StrategyError) as info:
        compile_strategy(StrategySpec("t", entry_short=expr), random_walk(50), {})
    assert info.value.message == message
    assert (info.value.field, info.value.col) == ("entry_short", 11)


def test_an_indicator_refusing_its_input_becomes_a_strategy_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(x: np.ndarray, n: int) -> np.ndarray:
        raise ValueError("window too short")

    monkeypatch.setattr(indicators, "sma", broken)
    with pytest.raises(StrategyError) as info:
        compile_strategy(StrategySpec("t", entry_long="close > sma(close, 5)"), random_walk(50), {})
    assert info.value.message == "sma: window too short"
    assert info.value.col == 8


def test_parameter_named_like_a_data_column_is_refused() -> None:
    spec = StrategySpec("t", entry_long="close > 0", params=(Param("funding", "float", 0.1),))
    c = random_walk(20, funding=np.zeros(20))
    with pytest.raises(StrategyError) as info:
        compile_strategy(spec, c, {})
    assert info.value.field == "funding"
    with pytest.raises(StrategyError):
        validate_strategy(spec, columns=["funding"])


def test_validate_strategy_reports_the_first_bad_rule_by_name() -> None:
    spec = StrategySpec("t", entry_long="close > 1", exit_short="close > x")
    with pytest.raises(StrategyError) as info:
        validate_strategy(spec)
    assert (info.value.field, info.value.col) == ("exit_short", 8)
    validate_strategy(PRESETS["sma_cross"])


# --- compile results ---------------------------------------------------------------------------


def test_empty_rules_never_fire_and_results_are_fresh_writable_arrays() -> None:
    c = random_walk(40)
    signals = compile_strategy(StrategySpec("t", entry_long="true"), c, {})
    assert signals.entry_long.all()
    for arr in (signals.exit_long, signals.entry_short, signals.exit_short):
        assert arr.dtype == np.bool_
        assert arr.shape == (40,)
        assert not arr.any()
    signals.entry_long[0] = False  # the simulator may edit its inputs
    assert len(signals) == 40


def test_extra_columns_can_be_used_in_rules() -> None:
    funding = np.linspace(-1, 1, 30)
    c = random_walk(30, funding=funding)
    spec = StrategySpec("t", entry_long="funding < 0 and close > 0")
    np.testing.assert_array_equal(compile_strategy(spec, c, {}).entry_long, funding < 0)


def test_strategy_warmup_adds_nested_windows() -> None:
    spec = StrategySpec(
        "t",
        entry_long="cross_above(ema(sma(close, 10), 20), 1)",  # 10 + 20 + 1 for the cross
        exit_long="shift(close, 5) > 1",
        entry_short="-sma(close, 40) < 0 or not rising(close, 2)",  # 40 inside a unary minus
        params=(),
    )
    assert strategy_warmup(spec, {}) == 40
    spec = StrategySpec("t", entry_long=spec.entry_long, exit_long=spec.exit_long)
    assert strategy_warmup(spec, {}) == 31
    assert strategy_warmup(PRESETS["sma_cross"], {"slow": 50}) == 51
    assert strategy_warmup(StrategySpec("none"), {}) == 0


# --- indicator caching ---------------------------------------------------------------------------


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    original = getattr(indicators, name)

    def wrapper(*args: Any) -> Any:
        calls.append(args[1:])
        return original(*args)

    monkeypatch.setattr(indicators, name, wrapper)
    return calls


def test_a_shared_cache_computes_each_distinct_indicator_once_across_a_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = counting(monkeypatch, "sma")
    c = random_walk(300)
    spec = PRESETS["sma_cross"]
    grid = [{"fast": f, "slow": s} for f in (5, 10) for s in (20, 30)]
    uncached = [compile_strategy(spec, c, p) for p in grid]
    assert len(calls) == 8  # each compile computes its fast and slow SMA once
    calls.clear()
    cache: dict[Any, Any] = {}
    cached = [compile_strategy(spec, c, p, cache) for p in grid]
    assert sorted(calls) == [(5,), (10,), (20,), (30,)]
    for a, b in zip(uncached, cached, strict=True):
        np.testing.assert_array_equal(a.entry_long, b.entry_long)
        np.testing.assert_array_equal(a.exit_long, b.exit_long)


def test_cache_keys_use_parameter_values_so_constants_and_params_share_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = counting(monkeypatch, "ema")
    cache: dict[Any, Any] = {}
    c = random_walk(100)
    spec = StrategySpec(
        "t",
        entry_long="ema(close, 10) > ema(close, n) * 0.99 and ema(close, 2 * 5) > 0",
        exit_long="ema(close - open, 10) > 0",  # a different input series: its own entry
        params=(Param("n", "int", 10),),
    )
    compile_strategy(spec, c, {}, cache)
    assert len(calls) == 2


def test_multi_output_indicator_is_computed_once_for_all_its_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = counting(monkeypatch, "macd")
    cache: dict[Any, Any] = {}
    compile_strategy(PRESETS["macd_cross"], random_walk(200), {}, cache)
    assert len(calls) == 1


def test_cache_is_reset_when_used_with_different_candles(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch, "sma")
    cache: dict[Any, Any] = {}
    a, b = random_walk(300, seed=1), random_walk(300, seed=2)
    spec = PRESETS["sma_cross"]
    compile_strategy(spec, a, {}, cache)
    got = compile_strategy(spec, b, {}, cache)
    assert len(calls) == 4  # a's two SMAs, then b's two: a's entries were not reused
    compile_strategy(spec, b, {}, cache)
    assert len(calls) == 4  # the third call found b's entries
    want = compile_strategy(spec, b, {})
    np.testing.assert_array_equal(got.entry_long, want.entry_long)
    np.testing.assert_array_equal(got.exit_long, want.exit_long)


def test_cached_indicator_arrays_cannot_be_modified_by_later_steps() -> None:
    cache: dict[Any, Any] = {}
    compile_strategy(PRESETS["sma_cross"], random_walk(100), {}, cache)
    arrays = [v for k, v in cache.items() if isinstance(v, np.ndarray)]
    assert arrays
    assert not any(a.flags.writeable for a in arrays)


# --- parameters ------------------------------------------------------------------------------


def spec_with_params() -> StrategySpec:
    return StrategySpec(
        "p",
        entry_long="sma(close, fast) > sma(close, slow) * k and use_filter",
        params=(
            Param("fast", "int", 10, 2, 50, 1),
            Param("slow", "int", 30, low=10),
            Param("k", "float", 1.0, 0.5, 2.0, 0.25),
            Param("use_filter", "bool", True),
        ),
    )


def test_resolve_params_fills_defaults_and_converts_command_line_strings() -> None:
    spec = spec_with_params()
    assert spec.resolve_params({}) == {"fast": 10, "slow": 30, "k": 1.0, "use_filter": True}
    got = spec.resolve_params({"fast": "12", "k": " 1.5 ", "use_filter": "False", "slow": 40.0})
    assert got == {"fast": 12, "slow": 40, "k": 1.5, "use_filter": False}
    assert isinstance(got["fast"], int)
    assert isinstance(got["slow"], int)
    assert isinstance(got["k"], float)
    assert spec.resolve_params({"k": 2, "fast": "20.0", "use_filter": "TRUE"})["k"] == 2.0


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"fsat": 3}, "fsat", "unknown parameter 'fsat'; did you mean 'fast'?"),
        ({"zzz": 3}, "zzz", "unknown parameter 'zzz' (declared: fast, slow, k, use_filter)"),
        ({"fast": "ten"}, "fast", "'fast' must be a number, got 'ten'"),
        ({"fast": 10.5}, "fast", "'fast' must be a whole number, got 10.5"),
        ({"fast": "10.5"}, "fast", "'fast' must be a whole number, got '10.5'"),
        ({"fast": True}, "fast", "'fast' must be a number, got True"),
        ({"fast": None}, "fast", "'fast' must be a number, got None"),
        ({"fast": 500}, "fast", "value of 'fast' must be between 2 and 50, got 500"),
        ({"fast": 1}, "fast", "value of 'fast' must be between 2 and 50, got 1"),
        ({"slow": 5}, "slow", "value of 'slow' must be at least 10, got 5"),
        ({"k": float("nan")}, "k", "'k' must be a finite number, got nan"),
        ({"k": "inf"}, "k", "'k' must be a finite number, got 'inf'"),
        ({"k": 2.5}, "k", "value of 'k' must be between 0.5 and 2.0, got 2.5"),
        ({"use_filter": "maybe"}, "use_filter", "'use_filter' must be true or false, got 'maybe'"),
        ({"use_filter": 1}, "use_filter", "'use_filter' must be true or false, got 1"),
    ],
)
def test_resolve_params_refuses_bad_values_naming_the_parameter(
    overrides: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(StrategyError) as info:
        spec_with_params().resolve_params(overrides)
    assert info.value.field == field
    assert info.value.message == message


def test_compile_strategy_checks_params_before_reading_data() -> None:
    with pytest.raises(StrategyError) as info:
        compile_strategy(spec_with_params(), random_walk(100), {"fast": 0})
    assert info.value.field == "fast"


def test_param_upper_bound_only_is_reported_as_at_most() -> None:
    with pytest.raises(StrategyError, match="must be at most 5, got 6"):
        Param("n", "int", 3, high=5).coerce(6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "sma"}, "already a column or function name"),
        ({"name": "close"}, "already a column or function name"),
        ({"name": "hl2"}, "already a column or function name"),
        ({"name": "true"}, "already a column or function name"),
        ({"name": "2fast"}, "must start with a letter"),
        ({"name": "fast-ma"}, "must start with a letter"),
        ({"name": "__class__"}, "must start with a letter"),
        ({"name": "x" * 41}, "must start with a letter"),
        ({"kind": "str"}, "parameter kind must be one of int, float, bool"),
        ({"default": 2.5}, "default of int parameter 'n' must be a whole number"),
        ({"default": "5"}, "default of parameter 'n' must be a number"),
        ({"default": True}, "default of parameter 'n' must be a number"),
        ({"low": 10, "high": 5}, "low 10 of parameter 'n' is above high 5"),
        ({"low": 1, "high": 9, "step": 0}, "step of parameter 'n' must be positive"),
        ({"low": 6}, "default of 'n' must be at least 6, got 5"),
        ({"low": 1, "high": 10**6}, "spans 1000000 grid values; at most 10000"),
        ({"kind": "float", "default": 0.5, "low": 0, "high": 1, "step": 1e-6}, "grid values"),
        ({"kind": "float", "default": float("inf")}, "must be a number"),
        ({"kind": "bool", "default": 1}, "default of a bool parameter must be true or false"),
        ({"kind": "bool", "default": True, "low": 0}, "a bool parameter takes no low"),
    ],
)
def test_param_declaration_is_checked_on_construction(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"name": "n", "kind": "int", "default": 5}
    args.update(kwargs)
    with pytest.raises(StrategyError) as info:
        Param(**args)
    assert message in info.value.message


def test_param_values_enumerate_the_optimization_grid() -> None:
    assert Param("n", "int", 10, 5, 20, 5).values() == (5, 10, 15, 20)
    assert Param("n", "int", 10, 8, 12).values() == (8, 9, 10, 11, 12)
    assert Param("n", "int", 10, 5, 22, 5).values() == (5, 10, 15, 20)
    assert Param("n", "int", 10).values() == (10,)
    assert Param("n", "int", 10, low=1).values() == (10,)
    assert Param("k", "float", 1.0, 0.5, 1.5, 0.1).values() == (
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
        1.1,
        1.2,
        1.3,
        1.4,
        1.5,
    )
    assert Param("k", "float", 1.0, 1.0, 2.0).values() == (1.0, 1.25, 1.5, 1.75, 2.0)
    assert Param("k", "float", 1.0, 1.0, 1.0).values() == (1.0,)
    assert Param("flag", "bool", False).values() == (False, True)


def test_param_normalises_number_types_to_its_kind() -> None:
    p = Param("k", "float", 1, 0, 2, 1)
    assert (type(p.default), type(p.low), type(p.high), type(p.step)) == (float,) * 4
    q = Param("n", "int", 10.0, 5.0, 20.0)
    assert (q.default, q.low, q.high) == (10, 5, 20)
    assert isinstance(q.default, int)


def test_strategy_spec_refuses_duplicate_or_foreign_params_and_non_text_rules() -> None:
    with pytest.raises(StrategyError, match="declared twice"):
        StrategySpec("s", params=(Param("n", "int", 1), Param("n", "int", 2)))
    with pytest.raises(StrategyError, match="Param objects"):
        StrategySpec("s", params=("n",))  # type: ignore[arg-type]  # a wrong type on purpose
    with pytest.raises(StrategyError) as info:
        StrategySpec("s", exit_long=5)  # type: ignore[arg-type]  # a wrong type on purpose
    assert info.value.field == "exit_long"


def test_strategy_spec_accessors() -> None:
    spec = spec_with_params()
    assert spec.param("k").kind == "float"
    with pytest.raises(KeyError):
        spec.param("nope")
    assert spec.defaults()["fast"] == 10
    assert spec.rules["exit_short"] == ""
    # (type: ignore below) a list on purpose: made a tuple
    assert StrategySpec("s", params=[Param("n", "int", 1)]).params == (Param("n", "int", 1),)  # type: ignore[arg-type]
