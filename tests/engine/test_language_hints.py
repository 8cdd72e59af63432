"""What a new user types by habit gets a hint, not just "invalid syntax" or "unknown name"."""

from __future__ import annotations

import pytest

from backtester.engine.errors import StrategyError
from backtester.engine.language import validate_expression


def refused(expr: str, params: tuple[str, ...] = ()) -> StrategyError:
    with pytest.raises(StrategyError) as info:
        validate_expression(expr, params=params, columns=())
    return info.value


@pytest.mark.parametrize(
    ("expr", "written", "meant", "col"),
    [
        ("close =< 3", "=<", "<=", 6),
        ("close => open", "=>", ">=", 6),
        ("close <> open", "<>", "!=", 6),
        ("rsi(close, 14) = 30", "=", "==", 15),
        ("close > open and volume =< 5", "=<", "<=", 24),
    ],
)
def test_a_misspelt_comparison_says_which_operator_was_meant(expr, written, meant, col):
    err = refused(expr)
    assert err.message == (
        f"syntax error: '{written}' is not an operator here; did you mean '{meant}'?"
    )
    assert err.col == col
    validate_expression(expr.replace(written, meant, 1), params=(), columns=())  # the fix works


def test_other_syntax_errors_keep_pythons_own_words():
    assert refused("close > (").message == "syntax error: '(' was never closed"
    assert refused("close >= 3 and").message == "syntax error: invalid syntax"


def test_an_unknown_name_suggests_the_closest_column_and_declaring_a_parameter():
    err = refused("closee > 3")
    assert err.message.startswith("unknown name 'closee'; did you mean 'close'?")
    assert "declare it as a parameter" in err.message


def test_an_unknown_name_close_to_a_function_shows_how_to_call_it():
    err = refused("close > ema2")
    assert "did you mean the function ema(series, period)?" in err.message
    assert "declare it as a parameter" in err.message


def test_an_unknown_name_close_to_nothing_still_says_how_to_declare_it():
    err = refused("rsi(close, 14) < threshold_value")
    assert err.message == (
        "unknown name 'threshold_value'. If 'threshold_value' is a value you want to set or "
        "optimize, declare it as a parameter of the strategy."
    )
    validate_expression("rsi(close, 14) < threshold_value", params=("threshold_value",), columns=())
