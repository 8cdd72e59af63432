"""The metric table a results page shows: the engine's metrics (``engine.metrics.METRICS``:
key, group, unit, definition) named (``METRIC_LABELS``), grouped under titles, formatted for
reading, and coloured where the sign means better or worse; the headline row above the charts.
The CLI names its metrics with the same labels."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from backtester.engine.metrics import METRICS

# What each metric of engine.metrics.METRICS is called on a page.
METRIC_LABELS: dict[str, str] = {
    "total_return": "Total return",
    "cagr": "CAGR",
    "annualization_periods": "Bars per year",
    "backtest_duration": "Duration",
    "annual_volatility": "Annual volatility",
    "downside_risk": "Downside risk",
    "var_95": "VaR 95 %",
    "cvar_95": "CVaR 95 %",
    "skew": "Skewness",
    "kurtosis": "Excess kurtosis",
    "tail_ratio": "Tail ratio",
    "sharpe": "Sharpe ratio",
    "sortino": "Sortino ratio",
    "calmar": "Calmar ratio",
    "omega": "Omega ratio",
    "stability": "Stability",
    "max_drawdown": "Max drawdown",
    "max_drawdown_duration": "Max drawdown duration",
    "max_drawdown_time": "Max drawdown time",
    "avg_drawdown": "Average drawdown",
    "longest_recovery": "Longest recovery",
    "trades": "Trades",
    "exposure": "Exposure",
    "win_rate": "Win rate",
    "profit_factor": "Profit factor",
    "expectancy": "Expectancy",
    "avg_trade_return": "Average trade return",
    "avg_win": "Average win",
    "avg_loss": "Average loss",
    "payoff_ratio": "Payoff ratio",
    "largest_win": "Largest win",
    "largest_loss": "Largest loss",
    "avg_bars_held": "Average bars held",
    "max_consecutive_wins": "Max consecutive wins",
    "max_consecutive_losses": "Max consecutive losses",
    "sqn": "SQN",
    "kelly": "Kelly fraction",
    "buy_hold_return": "Buy & hold return",
    "alpha": "Alpha",
    "beta": "Beta",
    "information_ratio": "Information ratio",
    "benchmark_correlation": "Benchmark correlation",
    "fees_paid": "Fees paid",
    "turnover": "Turnover",
}
GROUP_LABELS = {
    "returns": "Returns",
    "risk": "Risk",
    "risk_adjusted": "Risk-adjusted",
    "drawdown": "Drawdown",
    "trades": "Trades",
    "benchmark": "Benchmark (buy & hold)",
    "costs": "Costs",
}
# Shares that cannot be negative: no sign, no colour.
UNSIGNED = frozenset({"exposure", "win_rate", "annual_volatility", "downside_risk"})
# Money or percentages whose sign says nothing good or bad.
UNTONED = frozenset({"fees_paid", "turnover"})
# Ratios whose sign does say it.
TONED_RATIOS = frozenset({"sharpe", "sortino", "calmar", "information_ratio", "sqn"})
HEADLINE = ("total_return", "cagr", "sharpe", "max_drawdown", "trades", "win_rate")


def format_duration(ms: float) -> str:
    """Milliseconds as the two largest units: "1 y 47 d", "3 d 4 h", "5 h 12 min", "42 s"."""
    seconds = round(abs(ms) / 1000)
    units = (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        count, seconds = divmod(seconds, size)
        if count or parts:
            if count:
                parts.append(f"{count} {name}")
            if len(parts) == 2 or (parts and not count):
                break
    return ("-" if ms < 0 else "") + (" ".join(parts) if parts else "0 s")


def format_metric(value: float | None, fmt: str, key: str = "") -> str:
    """A metric as the results table shows it; None (undefined or infinite) is an em dash.

    Percentages carry their sign (+/-) except shares that cannot be negative (``UNSIGNED``).
    """
    if value is None or not math.isfinite(value):
        return "—"
    if fmt == "pct":
        if key in UNSIGNED:
            return f"{value * 100:,.2f} %"
        return f"{value * 100:+,.2f} %"
    if fmt == "ratio":
        return f"{value:,.2f}"
    if fmt == "money":
        return f"{value:,.2f}"
    if fmt == "bars":
        return f"{round(value):,} bars"
    if fmt == "duration":
        return format_duration(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.2f}"


def tone(value: float | None, fmt: str, key: str) -> str:
    """ "pos"/"neg" colouring where the sign means better/worse; "" for everything else."""
    if value is None or not math.isfinite(value) or key in UNSIGNED or key in UNTONED:
        return ""
    if fmt not in ("pct", "money") and key not in TONED_RATIOS:
        return ""
    return "pos" if value > 0 else "neg" if value < 0 else ""


def metric_groups(metrics: Mapping[str, float | None]) -> list[dict[str, Any]]:
    """METRICS grouped in their order, each row: key, label, value (formatted), raw, tone,
    definition."""
    groups: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        if m.key not in metrics:
            continue
        raw = metrics[m.key]
        group = groups.setdefault(
            m.group, {"key": m.group, "label": GROUP_LABELS.get(m.group, m.group), "rows": []}
        )
        group["rows"].append(
            {
                "key": m.key,
                "label": METRIC_LABELS[m.key],
                "value": format_metric(raw, m.fmt, m.key),
                "raw": raw,
                "fmt": m.fmt,
                "tone": tone(raw, m.fmt, m.key),
                "definition": m.definition,
            }
        )
    return list(groups.values())


def annualization_note(metrics: Mapping[str, float | None]) -> str:
    periods = metrics.get("annualization_periods")
    if periods is None:
        return "Annualized over 365-day years, risk-free rate 0."
    return (
        f"Annualized with {periods:,.0f} bars per year (365-day years, crypto trades every "
        "day), risk-free rate 0."
    )


def headline(metrics: Mapping[str, float | None]) -> list[dict[str, Any]]:
    defs = {m.key: m for m in METRICS}
    out = []
    for key in HEADLINE:
        if key in defs and key in metrics:
            m = defs[key]
            out.append(
                {
                    "key": key,
                    "label": METRIC_LABELS[m.key],
                    "value": format_metric(metrics[key], m.fmt, key),
                    "tone": tone(metrics[key], m.fmt, key),
                }
            )
    return out


# --- the research and list pages' short forms ---------------------------------------------------


def finite(value: Any) -> float | None:
    """``value`` when it is a finite number, else None."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def signed_pct(value: Any, *, unit: str = "%") -> str:
    """A fraction as a signed percentage, "+3.45 %" (``unit="pp"``: percentage points for a
    difference of two fractions); an em dash when undefined."""
    number = finite(value)
    return "—" if number is None else f"{number * 100:+.2f} {unit}"


def ratio_text(value: Any) -> str:
    """A ratio to two decimals; an em dash when undefined."""
    number = finite(value)
    return "—" if number is None else f"{number:.2f}"


def sign_tone(value: Any) -> str:
    """ "pos"/"neg" by the sign, "" at zero, "muted" when undefined."""
    number = finite(value)
    if number is None:
        return "muted"
    return "pos" if number > 0 else "neg" if number < 0 else ""
