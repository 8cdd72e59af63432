"""Plotly figures of a backtest result as plain dicts and lists (no plotly-python objects).

Two layers:

* ``chart_arrays(...)`` runs once when a result is saved (``results.result_save``): it turns
  the full per-bar curves into the small arrays the page draws — LTTB-downsampled equity,
  buy-and-hold and drawdown curves, monthly returns, a trade-return histogram and coarse
  candles per symbol — so rendering a result never touches hundreds of thousands of points.
* ``*_figure(...)`` builders take those small arrays (or trade rows) and return
  ``{"data": [...], "layout": {...}}`` dicts ready for ``json_script`` and ``Plotly.react``.
  Colours and fonts are left to static/js/charts.js, which applies the house CSS variables.

Conventions: x values are epoch milliseconds on a ``type: "date"`` axis (Plotly reads them as
UTC instants); fractions stay fractions and the axes format them as percentages; every
non-finite number becomes null, never NaN (which is not JSON).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from backtester.engine.candles import Candles
from backtester.results.downsample import chart_candles, lttb_indices

CURVE_POINTS = 2000  # per curve in the browser
MAX_CANDLES = 1500  # per candlestick chart
MAX_MARKER_TRADES = 1000  # per candlestick chart: the trades with the largest |P&L| beyond it
HIST_MAX_BINS = 60
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Figure = dict[str, Any]
_MARKER_HOVER = "%{y:,.6g}<br>P&L %{customdata[0]:,.2f} (%{customdata[1]:+.2%})<extra></extra>"
FloatArray = npt.NDArray[np.float64]
# Trade markers: entries point the way of the trade, exits (hollow) the other way.
_MARKER_SYMBOLS = {
    ("entry", 1): "triangle-up",
    ("entry", -1): "triangle-down",
    ("exit", 1): "triangle-down-open",
    ("exit", -1): "triangle-up-open",
}


# --- numbers → JSON-ready lists --------------------------------------------------------------


def _decimals_for(values: np.ndarray, significant: int) -> int:
    finite = np.abs(values[np.isfinite(values)])
    if finite.size == 0:
        return 2
    top = float(finite.max())
    if top == 0.0:
        return 2
    return int(min(12, max(0, significant - 1 - math.floor(math.log10(top)))))


def num_list(values: npt.ArrayLike, *, significant: int = 9) -> list[float | None]:
    """Floats rounded to ``significant`` digits of the largest magnitude, NaN/inf → None."""
    arr = np.asarray(values, np.float64)
    rounded = np.round(arr, _decimals_for(arr, significant))
    if np.all(np.isfinite(rounded)):
        return rounded.tolist()
    return [v if math.isfinite(v) else None for v in rounded.tolist()]


def int_list(values: npt.ArrayLike) -> list[int]:
    return np.asarray(values, np.int64).tolist()


def ms_iso(ms: int) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- analytics on full curves --------------------------------------------------------------


def drawdown(equity: npt.ArrayLike, initial_cash: float | None = None) -> FloatArray:
    """Underwater curve: equity / running peak - 1 (≤ 0). The initial cash counts as the first
    peak when given, as the engine's max_drawdown does."""
    eq = np.asarray(equity, np.float64)
    peak = np.maximum.accumulate(eq)
    if initial_cash is not None:
        peak = np.maximum(peak, float(initial_cash))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(peak > 0, eq / peak - 1.0, np.nan)
    return out


def monthly_returns(
    timestamp: npt.ArrayLike, equity: npt.ArrayLike, initial_cash: float
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Return of each calendar month (UTC) that has bars.

    A month's return compounds its per-bar returns, which telescopes to its last equity over
    the previous month's last equity (the initial cash for the first month), minus one.
    Returns ``(month_index, returns)``, month_index = months since 1970-01.
    """
    ts = np.asarray(timestamp, np.int64)
    eq = np.asarray(equity, np.float64)
    if ts.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    month = ts.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)
    last = np.flatnonzero(np.r_[month[1:] != month[:-1], True])
    ends = eq[last]
    starts = np.r_[float(initial_cash), ends[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = np.where(starts > 0, ends / starts - 1.0, np.nan)
    return month[last], rets


def trade_histogram(
    returns: npt.ArrayLike, max_bins: int = HIST_MAX_BINS
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Bin edges and counts of trade returns: equal-width bins (numpy's "auto" rule, at most
    ``max_bins``), with an edge at 0 so no bin mixes winners and losers."""
    r = np.asarray(returns, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    lo, hi = float(r.min()), float(r.max())
    # Returns equal within rounding (a few ulps apart) are one value: numpy cannot split so
    # narrow a range into finite-sized bins ("Too many bins for data range").
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1.0):
        lo = hi
    if lo == hi:
        half = max(abs(lo) * 0.01, 1e-6)
        edges = np.array([lo - half, hi + half])
        return edges, np.array([r.size], np.int64)
    auto = np.histogram_bin_edges(r, bins="auto")
    bins = int(min(max_bins, max(1, auto.size - 1)))
    width = (hi - lo) / bins
    # With winners and losers, shift the grid so that 0 falls on an edge.
    start = math.floor(lo / width) * width if lo < 0.0 < hi else lo
    count = math.ceil((hi - start) / width - 1e-9) or 1
    edges = start + width * np.arange(count + 1)
    if edges[-1] < hi:
        edges = np.r_[edges, edges[-1] + width]
    counts, _ = np.histogram(r, bins=edges)
    # float64 throughout; numpy's stubs widen the arithmetic above to floating[Any].
    return cast(FloatArray, edges), counts.astype(np.int64)


def chart_arrays(
    *,
    timestamp: npt.ArrayLike,
    equity: npt.ArrayLike,
    benchmark: npt.ArrayLike,
    candles: Sequence[Candles],
    initial_cash: float,
    trade_returns: npt.ArrayLike,
    points: int = CURVE_POINTS,
    max_candles: int = MAX_CANDLES,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The small arrays a results page needs, computed from the full curves.

    Names: ``chart.equity.{x,y}``, ``chart.benchmark.{x,y}``, ``chart.drawdown.{x,y}``,
    ``chart.monthly.{month,ret}``, ``chart.hist.{edges,counts}``,
    ``chart.candles.<i>.{timestamp,open,high,low,close}``; meta ``candle_timeframes``.
    The equity curve keeps its peak and trough, the drawdown curve its deepest point.
    """
    ts = np.asarray(timestamp, np.int64)
    eq = np.asarray(equity, np.float64)
    bench = np.asarray(benchmark, np.float64)
    out: dict[str, np.ndarray] = {}

    def _curve(name: str, y: FloatArray, keep: Iterable[int]) -> None:
        idx = lttb_indices(ts, y, points, keep=keep)
        out[f"chart.{name}.x"] = ts[idx]
        out[f"chart.{name}.y"] = y[idx]

    finite = np.isfinite(eq)
    keep_eq = [
        int(np.argmax(np.where(finite, eq, -np.inf))),
        int(np.argmin(np.where(finite, eq, np.inf))),
    ]
    _curve("equity", eq, keep_eq)
    if np.any(np.isfinite(bench)):
        _curve("benchmark", bench, [])
    dd = drawdown(eq, initial_cash)
    keep_dd = [int(np.nanargmin(dd))] if np.any(np.isfinite(dd)) else []
    _curve("drawdown", dd, keep_dd)
    months, rets = monthly_returns(ts, eq, initial_cash)
    out["chart.monthly.month"] = months
    out["chart.monthly.ret"] = rets
    edges, counts = trade_histogram(trade_returns)
    out["chart.hist.edges"] = edges
    out["chart.hist.counts"] = counts
    timeframes: list[str] = []
    for i, c in enumerate(candles):
        cols, tf = chart_candles(c, max_candles)
        for key, arr in cols.items():
            out[f"chart.candles.{i}.{key}"] = arr
        timeframes.append(tf)
    return out, {"candle_timeframes": timeframes}


# --- figures ----------------------------------------------------------------------------------


def _layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "margin": {"l": 60, "r": 16, "t": 36, "b": 40},
        "hovermode": "x unified",
        "showlegend": True,
        "legend": {"orientation": "h", "x": 0, "y": 1.08},
        "xaxis": {"type": "date"},
        "yaxis": {},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def equity_figure(arrays: Mapping[str, np.ndarray], *, title: str = "Equity") -> Figure:
    """Strategy equity against buy-and-hold of the first symbol, in account money."""
    data: list[dict[str, Any]] = [
        {
            "type": "scattergl" if arrays["chart.equity.x"].size > 5000 else "scatter",
            "mode": "lines",
            "name": "Strategy",
            "x": int_list(arrays["chart.equity.x"]),
            "y": num_list(arrays["chart.equity.y"]),
            "line": {"width": 1.6},
            "meta": {"role": "equity"},
            "hovertemplate": "%{y:,.2f}<extra>Strategy</extra>",
        }
    ]
    if "chart.benchmark.x" in arrays:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Buy & hold",
                "x": int_list(arrays["chart.benchmark.x"]),
                "y": num_list(arrays["chart.benchmark.y"]),
                "line": {"width": 1.2, "dash": "dot"},
                "meta": {"role": "benchmark"},
                "hovertemplate": "%{y:,.2f}<extra>Buy & hold</extra>",
            }
        )
    return {
        "data": data,
        "layout": _layout(
            title={"text": title},
            yaxis={"title": {"text": "Equity"}, "tickformat": ",.0f"},
            height=380,
        ),
    }


def drawdown_figure(arrays: Mapping[str, np.ndarray]) -> Figure:
    """Underwater chart: drawdown from the running peak, as a filled area at or below 0."""
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Drawdown",
                "x": int_list(arrays["chart.drawdown.x"]),
                "y": num_list(arrays["chart.drawdown.y"], significant=6),
                "fill": "tozeroy",
                "line": {"width": 1},
                "meta": {"role": "drawdown"},
                "hovertemplate": "%{y:.2%}<extra>Drawdown</extra>",
            }
        ],
        "layout": _layout(
            title={"text": "Drawdown"},
            showlegend=False,
            yaxis={"tickformat": ".0%", "rangemode": "tozero"},
            height=240,
        ),
    }


def monthly_matrix(
    months: npt.ArrayLike, rets: npt.ArrayLike
) -> tuple[list[int], list[list[float | None]]]:
    """Years (ascending) and a year-by-12 matrix of monthly returns (None where no bars)."""
    m = np.asarray(months, np.int64)
    r = np.asarray(rets, np.float64)
    if m.size == 0:
        return [], []
    years = list(range(1970 + int(m.min()) // 12, 1970 + int(m.max()) // 12 + 1))
    grid: list[list[float | None]] = [[None] * 12 for _ in years]
    for month, ret in zip(m.tolist(), r.tolist(), strict=True):
        year, mon = divmod(month, 12)
        grid[1970 + year - years[0]][mon] = ret if math.isfinite(ret) else None
    return years, grid


def monthly_figure(arrays: Mapping[str, np.ndarray]) -> Figure:
    """Heatmap of monthly returns: one row per year, one column per month, diverging at 0."""
    years, grid = monthly_matrix(arrays["chart.monthly.month"], arrays["chart.monthly.ret"])
    text = [["" if v is None else f"{v * 100:+.1f}%" for v in row] for row in grid]
    z = [[None if v is None else round(v, 6) for v in row] for row in grid]
    finite = [abs(v) for row in z for v in row if v is not None]
    bound = max(finite) if finite else 0.01
    return {
        "data": [
            {
                "type": "heatmap",
                "x": list(MONTHS),
                "y": [str(y) for y in years],
                "z": z,
                "text": text,
                "texttemplate": "%{text}",
                "hovertemplate": "%{x} %{y}: %{z:.2%}<extra></extra>",
                "zmid": 0,
                "zmin": -bound,
                "zmax": bound,
                "colorscale": [[0.0, "#c62f3a"], [0.5, "#f3f5f9"], [1.0, "#13805b"]],
                "showscale": False,
                "xgap": 2,
                "ygap": 2,
                "meta": {"role": "monthly"},
            }
        ],
        "layout": _layout(
            title={"text": "Monthly returns"},
            showlegend=False,
            hovermode="closest",
            xaxis={"type": "category", "side": "top"},
            yaxis={"type": "category", "autorange": "reversed"},
            height=max(160, 60 + 34 * len(years)),
        ),
    }


def histogram_figure(arrays: Mapping[str, np.ndarray]) -> Figure:
    """Distribution of closed trades' returns as pre-binned bars (losers and winners apart)."""
    edges = np.asarray(arrays["chart.hist.edges"], np.float64)
    counts = np.asarray(arrays["chart.hist.counts"], np.int64)
    centers = (edges[:-1] + edges[1:]) / 2 if edges.size > 1 else np.zeros(0)
    widths = np.diff(edges)
    sign = ["loss" if c < 0 else "win" for c in centers.tolist()]
    return {
        "data": [
            {
                "type": "bar",
                "name": "Trades",
                "x": num_list(centers, significant=6),
                "y": int_list(counts),
                "width": num_list(widths * 0.96, significant=6),
                "customdata": [
                    [lo, hi]
                    for lo, hi in zip(
                        num_list(edges[:-1], significant=6),
                        num_list(edges[1:], significant=6),
                        strict=True,
                    )
                ],
                "hovertemplate": (
                    "%{customdata[0]:.2%} to %{customdata[1]:.2%}: %{y} trades<extra></extra>"
                ),
                "meta": {"role": "histogram", "sign": sign},
            }
        ],
        "layout": _layout(
            title={"text": "Trade returns"},
            showlegend=False,
            hovermode="closest",
            bargap=0.04,
            xaxis={"type": "linear", "tickformat": ".1%", "title": {"text": "Return per trade"}},
            yaxis={"title": {"text": "Trades"}},
            height=300,
        ),
    }


def candles_figure(
    arrays: Mapping[str, np.ndarray],
    index: int,
    *,
    symbol: str,
    timeframe: str,
    trades: Sequence[Mapping[str, Any]],
    total_trades: int | None = None,
) -> Figure:
    """Candlesticks of symbol ``index`` with entry and exit markers of ``trades``.

    ``trades`` are dicts with side (+1/-1), entry_ms, exit_ms, entry_price, exit_price, pnl,
    ret. Entries: a triangle pointing the way the trade bets (up for a long, down for a
    short); exits: the opposite triangle. Longs are green, shorts red.
    """
    p = f"chart.candles.{index}."
    data: list[dict[str, Any]] = [
        {
            "type": "candlestick",
            "name": symbol,
            "x": int_list(arrays[p + "timestamp"]),
            "open": num_list(arrays[p + "open"]),
            "high": num_list(arrays[p + "high"]),
            "low": num_list(arrays[p + "low"]),
            "close": num_list(arrays[p + "close"]),
            "meta": {"role": "candles"},
            "showlegend": False,
        }
    ]
    for side, label in ((1, "Long"), (-1, "Short")):
        group = [t for t in trades if int(t["side"]) == side]
        if not group:
            continue
        custom = [[t["pnl"], t["ret"]] for t in group]
        for role in ("entry", "exit"):
            marker: dict[str, Any] = {"symbol": _MARKER_SYMBOLS[role, side], "size": 9}
            if role == "exit":
                marker["line"] = {"width": 2}
            data.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": f"{label} {role}",
                    "x": [int(t[f"{role}_ms"]) for t in group],
                    "y": [t[f"{role}_price"] for t in group],
                    "customdata": custom,
                    "marker": marker,
                    "hovertemplate": f"{label} {role} {_MARKER_HOVER}",
                    "meta": {"role": role, "side": side},
                }
            )
    title = f"{symbol} · {timeframe} candles" if timeframe else symbol
    if total_trades is not None and total_trades > len(trades):
        title += f" · markers for the {len(trades):,} largest of {total_trades:,} trades"
    return {
        "data": data,
        "layout": _layout(
            title={"text": title},
            hovermode="closest",
            xaxis={"rangeslider": {"visible": False}},
            yaxis={"title": {"text": "Price"}, "tickformat": ",.6~g"},
            height=460,
        ),
    }


def preview_figure(candles: Candles, *, label: str, timeframe: str) -> Figure | None:
    """Candlesticks of a market's latest candles (a data page's preview), titled with how many
    there are; None when there are none."""
    if not len(candles):
        return None
    arrays = {
        "chart.candles.0.timestamp": candles.timestamp,
        "chart.candles.0.open": candles.open,
        "chart.candles.0.high": candles.high,
        "chart.candles.0.low": candles.low,
        "chart.candles.0.close": candles.close,
    }
    figure = candles_figure(arrays, 0, symbol=label, timeframe=timeframe, trades=[])
    figure["layout"]["title"] = {
        "text": f"{label} · last {len(candles):,} {timeframe} candles (UTC)"
    }
    return figure


def compare_figure(curves: Sequence[Mapping[str, Any]]) -> Figure:
    """Several backtests' equity overlaid, each scaled to 100 at its initial cash.

    ``curves``: dicts with name, x (ms), y (equity), initial_cash.
    """
    data: list[dict[str, Any]] = []
    for curve in curves:
        y = np.asarray(curve["y"], np.float64) * (100.0 / float(curve["initial_cash"]))
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": str(curve["name"]),
                "x": int_list(curve["x"]),
                "y": num_list(y, significant=7),
                "line": {"width": 1.5},
                "hovertemplate": "%{y:.2f}<extra>"
                + str(curve["name"]).replace("<", "&lt;")
                + "</extra>",
                "meta": {"role": "compare"},
            }
        )
    return {
        "data": data,
        "layout": _layout(
            title={"text": "Equity, 100 = initial capital"},
            yaxis={"title": {"text": "Growth of 100"}},
            height=460,
        ),
    }


def live_equity_figure(*, initial_cash: float) -> Figure:
    """An empty equity chart for a running backtest; charts.js appends points to it."""
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Strategy",
                "x": [],
                "y": [],
                "line": {"width": 1.6},
                "meta": {"role": "equity"},
            }
        ],
        "layout": _layout(
            title={"text": "Equity (live)"},
            showlegend=False,
            yaxis={"tickformat": ",.0f"},
            shapes=[
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": initial_cash,
                    "y1": initial_cash,
                    "line": {"dash": "dot", "width": 1},
                }
            ],
        ),
    }
