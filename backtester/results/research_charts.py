"""Plotly figures of research results, as plain dicts for ``json_script`` (static/js/charts.js
draws them in the house colours). No URL patterns here: views/research.py calls these.

Heatmap: one metric over two chosen parameters, every other parameter held at a chosen value
(by default the best combination's). Scatter: every combination's total return against its
maximum drawdown, coloured by the objective. Walk-forward: the stitched out-of-sample equity
with the test windows marked, in-sample against out-of-sample CAGR per window, and the value
each parameter took per window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from backtester.engine.optimize import OBJECTIVES, ROW_METRICS
from backtester.models import OptimizationJob, WalkForwardJob
from backtester.selectors.research import ChartRows, heatmap_matrix, optimization_chart_rows

HEAT_METRICS = ("objective", *ROW_METRICS)
PCT = frozenset(
    {"total_return", "cagr", "max_drawdown", "win_rate", "exposure", "annual_volatility"}
)
DIVERGING = [[0.0, "#c62f3a"], [0.5, "#f3f5f9"], [1.0, "#13805b"]]


def _label(metric: str, job: OptimizationJob) -> str:
    if metric == "objective":
        objective = OBJECTIVES.get(job.objective)
        return f"Objective ({objective.label if objective else job.objective})"
    return metric.replace("_", " ").capitalize()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def heatmap_choice(job: OptimizationJob, query: Mapping[str, Any]) -> dict[str, Any]:
    """Which parameters go on the axes, what the others are held at, which metric is shown,
    read from ``?hx=&hy=&hm=&hf_<name>=`` with sensible defaults (the first two parameters with
    more than one value; others at the best combination's values)."""
    ranges: dict[str, list[Any]] = dict(job.ranges or {})
    varying = [name for name, values in ranges.items() if len(values) > 1]
    best = job.best_params or {}
    x = query.get("hx") if query.get("hx") in varying else (varying[0] if varying else None)
    rest = [n for n in varying if n != x]
    y = query.get("hy") if query.get("hy") in rest else (rest[0] if rest else None)
    metric = query.get("hm") if query.get("hm") in HEAT_METRICS else "objective"
    fixed: dict[str, Any] = {}
    others = []
    for name, values in ranges.items():
        if name in (x, y):
            continue
        wanted = query.get(f"hf_{name}")
        chosen = next((v for v in values if _text(v) == wanted), None)
        if chosen is None:
            chosen = best.get(name, values[0]) if best.get(name) in values else values[0]
        fixed[name] = chosen
        others.append(
            {
                "name": name,
                "field": f"hf_{name}",
                "options": [(_text(v), _text(v) == _text(chosen)) for v in values],
            }
        )
    return {
        "x": x,
        "y": y,
        "metric": metric,
        "fixed": fixed,
        "others": others,
        "varying": varying,
        "x_values": ranges.get(x, []) if x else [],
        "y_values": ranges.get(y, []) if y else [],
        "metrics": [(m, _label(m, job)) for m in HEAT_METRICS],
    }


def load_chart_rows(job: OptimizationJob, metric: str) -> ChartRows:
    return optimization_chart_rows(job, ["objective", "total_return", "max_drawdown", metric])


def _clip(values: Sequence[float | None]) -> tuple[list[float | None], list[str]]:
    """Infinite values become the largest finite magnitude (so the colour scale stays
    readable); the hover text still says ∞."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    bound = max(finite) if finite else 1.0
    out: list[float | None] = []
    text: list[str] = []
    for v in values:
        if v is None:
            out.append(None)
            text.append("")
        elif math.isinf(v):
            out.append(math.copysign(bound, v))
            text.append("∞" if v > 0 else "-∞")
        else:
            out.append(round(v, 6))
            text.append("")
    return out, text


def _fmt(metric: str, value: float) -> str:
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if metric in PCT:
        return f"{value * 100:+.1f}%"
    if metric == "trades":
        return f"{int(value)}"
    return f"{value:.2f}"


def heatmap_figure(
    job: OptimizationJob, rows: ChartRows, choice: Mapping[str, Any]
) -> dict[str, Any]:
    """The chosen metric over the two axis parameters; with one varying parameter, a line of the
    metric against it; with none, an empty figure."""
    metric = choice["metric"]
    x, y = choice["x"], choice["y"]
    if x is None:
        return {"data": [], "layout": {"height": 120}}
    if y is None:
        matrix = heatmap_matrix(
            rows, x=x, y=x, fixed=choice["fixed"], metric=metric,
            x_values=choice["x_values"], y_values=choice["x_values"],
        )  # fmt: skip
        line = [matrix[i][i] for i in range(len(choice["x_values"]))]
        clipped, _ = _clip(line)
        return {
            "data": [
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "x": [_text(v) for v in choice["x_values"]],
                    "y": clipped,
                    "name": _label(metric, job),
                    "meta": {"role": "equity"},
                }
            ],
            "layout": {
                "margin": {"l": 60, "r": 16, "t": 24, "b": 48},
                "xaxis": {"title": {"text": x}, "type": "category"},
                "yaxis": {"title": {"text": _label(metric, job)}},
                "showlegend": False,
                "height": 360,
            },
        }
    matrix = heatmap_matrix(
        rows, x=x, y=y, fixed=choice["fixed"], metric=metric,
        x_values=choice["x_values"], y_values=choice["y_values"],
    )  # fmt: skip
    flat = [v for r in matrix for v in r]
    clipped, marks = _clip(flat)
    width = len(choice["x_values"])
    z = [clipped[i * width : (i + 1) * width] for i in range(len(matrix))]
    text = [
        [
            (marks[i * width + j] or _fmt(metric, value)) if value is not None else ""
            for j, value in enumerate(matrix[i][:width])
        ]
        for i in range(len(matrix))
    ]
    finite = [abs(v) for v in clipped if v is not None]
    bound = max(finite) if finite else 1.0
    trace: dict[str, Any] = {
        "type": "heatmap",
        "x": [_text(v) for v in choice["x_values"]],
        "y": [_text(v) for v in choice["y_values"]],
        "z": z,
        "text": text,
        "hovertemplate": f"{x}=%{{x}}<br>{y}=%{{y}}<br>%{{text}}<extra></extra>",
        "colorscale": DIVERGING,
        "xgap": 1,
        "ygap": 1,
        "colorbar": {"thickness": 12},
        "meta": {"role": "heatmap"},
    }
    has_negative = any(v is not None and v < 0 for v in clipped)
    if has_negative:
        trace.update(zmid=0, zmin=-bound, zmax=bound)
    else:
        trace["colorscale"] = [[0.0, "#f3f5f9"], [1.0, "#13805b"]]
    if width * len(matrix) <= 400:
        trace["texttemplate"] = "%{text}"
    return {
        "data": [trace],
        "layout": {
            "margin": {"l": 60, "r": 16, "t": 24, "b": 48},
            "xaxis": {"title": {"text": x}, "type": "category"},
            "yaxis": {"title": {"text": y}, "type": "category"},
            "showlegend": False,
            "hovermode": "closest",
            "height": max(320, min(640, 60 + 22 * len(matrix))),
        },
    }


def scatter_figure(job: OptimizationJob, rows: ChartRows) -> dict[str, Any]:
    """Total return against maximum drawdown, one point per combination, coloured by the
    objective (unranked runs in grey); hover names the parameters."""
    ret = rows.values["total_return"]
    mdd = rows.values["max_drawdown"]
    obj = rows.values["objective"]
    ranked: dict[str, list[Any]] = {"x": [], "y": [], "c": [], "t": []}
    other: dict[str, list[Any]] = {"x": [], "y": [], "t": []}
    for i, params in enumerate(rows.params):
        r, dd = ret[i], mdd[i]
        if r is None or dd is None:
            continue
        label = f"#{rows.index[i] + 1} " + ", ".join(f"{k}={_text(v)}" for k, v in params.items())
        if obj[i] is None:
            other["x"].append(round(dd, 6))
            other["y"].append(round(r, 6))
            other["t"].append(label)
        else:
            ranked["x"].append(round(dd, 6))
            ranked["y"].append(round(r, 6))
            ranked["c"].append(obj[i])
            ranked["t"].append(label)
    colour, _ = _clip(ranked["c"])
    kind = "scattergl" if len(rows.params) > 2000 else "scatter"
    data: list[dict[str, Any]] = [
        {
            "type": kind,
            "mode": "markers",
            "name": "Ranked",
            "x": ranked["x"],
            "y": ranked["y"],
            "text": ranked["t"],
            "marker": {
                "size": 7,
                "color": colour,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": "Objective"}, "thickness": 12},
            },
            "hovertemplate": "%{text}<br>return %{y:.2%}<br>max DD %{x:.2%}<extra></extra>",
            "meta": {"role": "scatter"},
        }
    ]
    if other["x"]:
        data.append(
            {
                "type": kind,
                "mode": "markers",
                "name": "Too few trades / undefined",
                "x": other["x"],
                "y": other["y"],
                "text": other["t"],
                "marker": {"size": 6, "color": "#9aa7b8"},
                "hovertemplate": "%{text}<br>return %{y:.2%}<br>max DD %{x:.2%}<extra></extra>",
                "meta": {"role": "scatter-muted"},
            }
        )
    return {
        "data": data,
        "layout": {
            "margin": {"l": 60, "r": 16, "t": 24, "b": 48},
            "xaxis": {"title": {"text": "Max drawdown"}, "tickformat": ".0%"},
            "yaxis": {"title": {"text": "Total return"}, "tickformat": ".0%"},
            "hovermode": "closest",
            "legend": {"orientation": "h", "x": 0, "y": 1.1},
            "height": 420,
        },
    }


def _num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def walkforward_figures(job: WalkForwardJob) -> list[dict[str, Any]]:
    """[{id, title, figure}] for the walk-forward page."""
    windows = list(job.windows or ())
    curve = job.curve or {}
    shapes = [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": w["test_from"],
            "x1": w["test_to"],
            "y0": 0,
            "y1": 1,
            "fillcolor": "rgba(31, 99, 214, 0.06)" if w["index"] % 2 else "rgba(31, 99, 214, 0.0)",
            "line": {"width": 0},
        }
        for w in windows
    ]
    equity = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Out-of-sample equity",
                "x": curve.get("x", []),
                "y": curve.get("y", []),
                "meta": {"role": "equity"},
                "hovertemplate": "%{y:,.2f}<extra>Out of sample</extra>",
            }
        ],
        "layout": {
            "margin": {"l": 60, "r": 16, "t": 24, "b": 40},
            "xaxis": {"type": "date"},
            "yaxis": {"title": {"text": "Equity"}, "tickformat": ",.0f"},
            "shapes": shapes,
            "showlegend": False,
            "hovermode": "x unified",
            "height": 360,
        },
    }
    labels = [f"W{int(w['index']) + 1}" for w in windows]
    compare = {
        "data": [
            {
                "type": "bar",
                "name": f"{name} CAGR",
                "x": labels,
                "y": [_num((w.get(key) or {}).get("cagr")) for w in windows],
                "marker": {"color": color},
                "hovertemplate": f"%{{y:.1%}}<extra>{key.replace('_', ' ')}</extra>",
            }
            for key, name, color in (
                ("in_sample", "In-sample", "#8aa4c8"),
                ("out_of_sample", "Out-of-sample", "#1f63d6"),
            )
        ],
        "layout": {
            "barmode": "group",
            "margin": {"l": 60, "r": 16, "t": 24, "b": 40},
            "xaxis": {"type": "category"},
            "yaxis": {"tickformat": ".0%"},
            "legend": {"orientation": "h", "x": 0, "y": 1.12},
            "height": 320,
        },
    }
    names = list(job.ranges or {})
    k = max(1, len(names))
    gap = 0.06
    height = (1.0 - gap * (k - 1)) / k
    data = []
    layout: dict[str, Any] = {
        "margin": {"l": 60, "r": 16, "t": 24, "b": 40},
        "showlegend": False,
        "hovermode": "x unified",
        "height": max(220, 150 * k),
        "xaxis": {"type": "category", "anchor": f"y{k}" if k > 1 else "y"},
    }
    for i, name in enumerate(names):
        axis = "y" if i == 0 else f"y{i + 1}"
        values = [(w.get("params") or {}).get(name) for w in windows]
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": name,
                "x": labels,
                "y": [int(v) if isinstance(v, bool) else v for v in values],
                "yaxis": axis,
                "line": {"shape": "hv"},
                "hovertemplate": f"{name}=%{{y}}<extra></extra>",
                "meta": {"role": "equity"},
            }
        )
        top = 1.0 - i * (height + gap)
        layout["yaxis" if i == 0 else f"yaxis{i + 1}"] = {
            "title": {"text": name},
            "domain": [max(0.0, top - height), top],
        }
    params = {"data": data, "layout": layout}
    return [
        {
            "id": "wf-equity",
            "title": "Out-of-sample equity (test windows stitched)",
            "figure": equity,
        },
        {"id": "wf-compare", "title": "In-sample against out-of-sample CAGR", "figure": compare},
        {"id": "wf-params", "title": "Chosen parameters per window", "figure": params},
    ]
