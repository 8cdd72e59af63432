"""Built-in strategies, written in the strategy language like any user strategy.

There is one path from a rule to signals: a preset is only a ``StrategySpec`` with sensible
defaults and optimization ranges, so everything that works for presets works for user rules.
"""

from __future__ import annotations

from backtester.engine.language.spec import Param, StrategySpec


def _period(name: str, default: int, low: int, high: int, step: int, what: str) -> Param:
    return Param(name, "int", default, low, high, step, what)


def _crossing(
    name: str,
    fast: str,
    slow: str,
    params: tuple[Param, ...],
    description: str,
    *,
    shorts: bool = False,
) -> StrategySpec:
    """Long while ``fast`` crosses above ``slow`` until the cross back (and, with ``shorts``,
    short on the opposite crosses)."""
    up, down = f"cross_above({fast}, {slow})", f"cross_below({fast}, {slow})"
    short_entry, short_exit = (down, up) if shorts else ("", "")
    return StrategySpec(
        name, up, down, short_entry, short_exit, params=params, description=description
    )


_SMA_FAST = "sma(close, fast)"
_SMA_SLOW = "sma(close, slow)"
_EMA_FAST = "ema(close, fast)"
_EMA_SLOW = "ema(close, slow)"
_MACD = "close, fast, slow, signal"
_POLY = "close, window, degree, k"

_RSI_PARAMS = (
    _period("period", 14, 2, 50, 2, "RSI look-back in bars"),
    _period("lower", 30, 10, 45, 5, "buy when RSI falls below this level"),
    _period("upper", 70, 55, 90, 5, "sell when RSI rises above this level"),
)

PRESETS: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        _crossing(
            "sma_cross",
            _SMA_FAST,
            _SMA_SLOW,
            (
                _period("fast", 10, 5, 50, 5, "fast moving average length"),
                _period("slow", 30, 20, 200, 10, "slow moving average length"),
            ),
            "Buy when the fast SMA crosses above the slow SMA, sell on the cross back.",
        ),
        _crossing(
            "ema_cross",
            _EMA_FAST,
            _EMA_SLOW,
            (
                _period("fast", 12, 4, 50, 2, "fast EMA length"),
                _period("slow", 26, 10, 200, 4, "slow EMA length"),
            ),
            "Long when the fast EMA crosses above the slow EMA, short on the opposite cross "
            "(shorts only trade when the simulation allows them).",
            shorts=True,
        ),
        StrategySpec(
            name="rsi_reversion",
            entry_long="rsi(close, period) < lower",
            exit_long="rsi(close, period) > upper",
            params=_RSI_PARAMS,
            description="Buy an oversold RSI, sell once it is overbought.",
        ),
        StrategySpec(
            name="rsi_ma_filter",
            entry_long="rsi(close, period) < lower and close > sma(close, trend)",
            exit_long="rsi(close, period) > upper",
            params=(
                *_RSI_PARAMS,
                _period("trend", 200, 50, 400, 25, "only buy above the SMA of this length"),
            ),
            description="RSI reversion, buying dips only while price is above a long SMA.",
        ),
        _crossing(
            "macd_cross",
            f"macd_line({_MACD})",
            f"macd_signal({_MACD})",
            (
                _period("fast", 12, 4, 30, 2, "fast EMA length"),
                _period("slow", 26, 10, 60, 2, "slow EMA length"),
                _period("signal", 9, 3, 21, 2, "signal EMA length"),
            ),
            "Buy when the MACD line crosses above its signal line, sell on the cross back.",
        ),
        StrategySpec(
            name="bollinger_reversion",
            entry_long="close < bb_lower(close, period, k)",
            exit_long="close > bb_mid(close, period, k)",
            params=(
                _period("period", 20, 10, 50, 5, "band length in bars"),
                Param("k", "float", 2.0, 1.0, 3.5, 0.25, "band width in standard deviations"),
            ),
            description="Buy a close below the lower Bollinger band, sell back at the middle band.",
        ),
        StrategySpec(
            name="donchian_breakout",
            # The channel includes the current bar, so compare with the one that closed a bar
            # earlier: a close above its own bar's high is impossible.
            entry_long="close > shift(donchian_upper(entry_period), 1)",
            exit_long="close < shift(donchian_lower(exit_period), 1)",
            entry_short="close < shift(donchian_lower(entry_period), 1)",
            exit_short="close > shift(donchian_upper(exit_period), 1)",
            params=(
                _period("entry_period", 20, 10, 100, 5, "breakout channel length"),
                _period("exit_period", 10, 5, 50, 5, "exit channel length"),
            ),
            description=(
                "Turtle-style breakout: buy a close above the previous N-bar high, exit below the "
                "previous M-bar low (mirrored for shorts)."
            ),
        ),
        StrategySpec(
            name="polyband_reversion",
            entry_long=f"close < poly_lower({_POLY})",
            exit_long=(
                f"(exit_at_upper and close > poly_upper({_POLY}))"
                f" or (not exit_at_upper and close > poly_mid({_POLY}))"
            ),
            params=(
                _period("window", 100, 30, 300, 10, "regression window in bars"),
                Param("degree", "int", 2, 1, 3, 1, "polynomial degree"),
                Param("k", "float", 2.0, 1.0, 3.0, 0.25, "band width in residual deviations"),
                Param("exit_at_upper", "bool", False, description="exit at the upper band"),
            ),
            description=(
                "Buy below the lower polynomial-regression band; exit back at the fitted line, "
                "or at the upper band when exit_at_upper is set."
            ),
        ),
    )
}
