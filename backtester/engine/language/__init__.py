"""The strategy language: rules as whitelisted expressions compiled to numpy signals.

A rule such as ``cross_above(ema(close, fast), ema(close, slow)) and rsi(close, 14) < 70`` is
parsed with ``ast``, checked against a whitelist (numbers, columns, declared parameters,
arithmetic, comparisons, and/or/not, whitelisted functions) and evaluated bar-wise over the
candles. Nothing is ever passed to ``eval`` or ``exec``.
"""

from __future__ import annotations

from backtester.engine.language.compiler import (
    compile_strategy,
    evaluate_expression,
    strategy_warmup,
    validate_strategy,
)
from backtester.engine.language.functions import BUILTIN_COLUMNS, FUNCTIONS, FunctionSpec
from backtester.engine.language.lookahead import (
    LookaheadReport,
    LookaheadViolation,
    check_lookahead,
)
from backtester.engine.language.parser import (
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_NODES,
    parse_rule,
    validate_expression,
)
from backtester.engine.language.presets import PRESETS
from backtester.engine.language.spec import RULES, Param, ParamValue, StrategySpec

__all__ = [
    "BUILTIN_COLUMNS",
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NODES",
    "PRESETS",
    "RULES",
    "FunctionSpec",
    "LookaheadReport",
    "LookaheadViolation",
    "Param",
    "ParamValue",
    "StrategySpec",
    "check_lookahead",
    "compile_strategy",
    "evaluate_expression",
    "parse_rule",
    "strategy_warmup",
    "validate_expression",
    "validate_strategy",
]
