"""Plotly figures of the risk dashboard as plain dicts (``{"data", "layout"}``), drawn by
static/js/charts.js like the backtest charts: x values in epoch milliseconds on date axes,
fractions as fractions with percent axes, non-finite numbers as null."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np

from backtester.results.charts import num_list

Figure = dict[str, Any]


def equity_drawdown_figure(curve: Sequence[tuple[datetime, Decimal]]) -> Figure:
    """Equity (top) and drawdown from the running peak (bottom, a negative fraction)."""
    xs = [int(at.timestamp() * 1000) for at, _ in curve]
    eq = np.asarray([float(v) for _, v in curve], dtype=np.float64)
    peak = np.maximum.accumulate(eq) if eq.size else eq
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = np.where(peak > 0, eq / np.where(peak > 0, peak, 1.0) - 1.0, np.nan)
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Equity",
                "x": xs,
                "y": num_list(eq),
                "meta": {"role": "equity"},
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Drawdown",
                "x": xs,
                "y": num_list(dd),
                "yaxis": "y2",
                "fill": "tozeroy",
                "meta": {"role": "drawdown"},
            },
        ],
        "layout": {
            "height": 360,
            "xaxis": {"type": "date"},
            "yaxis": {"title": {"text": "Equity"}, "domain": [0.38, 1.0]},
            "yaxis2": {"title": {"text": "Drawdown"}, "tickformat": ".1%", "domain": [0, 0.3]},
            "showlegend": False,
            "margin": {"t": 10, "r": 10, "b": 40, "l": 60},
        },
    }


def exposure_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Exposure (|value| / equity) and heat (loss to stop / equity) per symbol, as bars."""
    symbols = [str(r["symbol"]) for r in rows]
    return {
        "data": [
            {
                "type": "bar",
                "name": "Exposure",
                "x": symbols,
                "y": num_list([r["exposure"] for r in rows]),
            },
            {"type": "bar", "name": "Heat", "x": symbols, "y": num_list([r["heat"] for r in rows])},
        ],
        "layout": {
            "height": 300,
            "barmode": "group",
            "yaxis": {"tickformat": ".1%"},
            "margin": {"t": 10, "r": 10, "b": 40, "l": 60},
        },
    }


def correlation_figure(symbols: Sequence[str], matrix: np.ndarray) -> Figure:
    """Heatmap of the pairwise return correlations of the open positions (-1..1)."""
    return {
        "data": [
            {
                "type": "heatmap",
                "x": list(symbols),
                "y": list(symbols),
                "z": [num_list(row, significant=3) for row in matrix],
                "zmin": -1,
                "zmax": 1,
                "colorscale": "RdBu",
                "reversescale": True,
            }
        ],
        "layout": {"height": 320, "margin": {"t": 10, "r": 10, "b": 60, "l": 80}},
    }
