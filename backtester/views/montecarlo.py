"""Monte Carlo pages: the form on a backtest, my runs, a run's page (fan chart, histograms,
confidence intervals, probability of ruin) and the status JSON the page polls while it runs."""

from __future__ import annotations

import itertools
from typing import Any

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_http_methods

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.forms.montecarlo import MonteCarloForm
from backtester.models import Backtest, MonteCarloRun
from backtester.results.charts import _layout, num_list
from backtester.results.metric_table import ratio_text, signed_pct
from backtester.selectors.backtests import backtest_get, backtest_symbols
from backtester.selectors.montecarlo import montecarlo_get, montecarlo_runs_for
from backtester.services.montecarlo import (
    backtest_bars,
    montecarlo_create,
    status_payload,
)
from backtester.views.common import backtest_run_form_page

PAGE_SIZE = 25
METHOD_HELP = {
    "shuffle": "The same trades in a random order: the final return never changes, the path "
    "and its drawdowns do. Shows how much of the drawdown was the luck of the order.",
    "bootstrap": "As many trades as the backtest had, drawn with replacement from its trades: "
    "some repeat, some are left out. Shows the spread of outcomes the same edge could give.",
    "block": "The backtest's per-bar returns, resampled in blocks of consecutive bars (wrapping "
    "round the end), so runs of good and bad bars stay together.",
}
METRIC_ROWS = (
    ("final_return", "Final return", "pct"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe (annualised)", "ratio"),
)
BAND_FILL = {"outer": "rgba(31, 99, 214, 0.12)", "inner": "rgba(31, 99, 214, 0.24)"}


def _fmt(value: Any, kind: str) -> str:
    return signed_pct(value) if kind == "pct" else ratio_text(value)


# --- figures --------------------------------------------------------------------------------


def fan_figure(results: dict[str, Any]) -> dict[str, Any]:
    """Equity percentile bands (5-95 and 25-75 filled), the median and the original path."""
    fan = results["fan"]
    x = fan["x"]
    bands = fan["bands"]
    unit = "Trade" if results["unit"] == "trade" else "Bar"
    hover = "%{y:,.2f}<extra>%{fullData.name}</extra>"

    def line(key: str, name: str, **extra: Any) -> dict[str, Any]:
        return {
            "type": "scatter",
            "mode": "lines",
            "name": name,
            "x": x,
            "y": bands[key],
            "hovertemplate": hover,
            **extra,
        }

    quiet = {"line": {"width": 0}, "showlegend": False}
    data = [
        line("p5", "5th percentile", **quiet),
        line("p95", "5th-95th percentile", fill="tonexty", fillcolor=BAND_FILL["outer"], **quiet),
        line("p25", "25th percentile", **quiet),
        line("p75", "25th-75th percentile", fill="tonexty", fillcolor=BAND_FILL["inner"], **quiet),
        line("p50", "Median", line={"width": 2}, meta={"role": "equity"}),
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Backtest (original order)",
            "x": x,
            "y": fan["original"],
            "line": {"width": 1.4, "dash": "dot"},
            "meta": {"role": "benchmark"},
            "hovertemplate": hover,
        },
    ]
    # The filled areas need a legend entry of their own: the band traces hide theirs.
    data[1]["showlegend"] = True
    data[3]["showlegend"] = True
    return {
        "data": data,
        "layout": _layout(
            margin={"l": 70, "b": 48},
            legend={"y": 1.1},
            xaxis={"type": "linear", "title": {"text": f"{unit} number"}},
            yaxis={"title": {"text": "Equity"}, "tickformat": ",.0f"},
            height=400,
        ),
    }


def histogram_figure(
    hist: dict[str, Any], *, name: str, original: float | None, axis: str
) -> dict[str, Any]:
    """Pre-binned bars of a per-path statistic with the backtest's own value as a line."""
    edges = hist["edges"]
    counts = hist["counts"]
    centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    widths = [(b - a) * 0.96 for a, b in itertools.pairwise(edges)]
    if len(centers) == 1:
        # Every path has the same value (a shuffle's final return): a bar of a visible width.
        widths = [max(abs(centers[0]) * 0.04, 0.002)]
    sign = ["loss" if c < 0 else "win" for c in centers]
    shapes = []
    if original is not None:
        shapes.append(
            {
                "type": "line",
                "x0": original,
                "x1": original,
                "yref": "paper",
                "y0": 0,
                "y1": 1,
                "line": {"dash": "dot", "width": 2, "color": "#142033"},
            }
        )
    return {
        "data": [
            {
                "type": "bar",
                "name": name,
                "x": num_list(centers, significant=6),
                "y": counts,
                "width": num_list(widths, significant=6),
                "customdata": [[a, b] for a, b in itertools.pairwise(edges)],
                "hovertemplate": "%{customdata[0]:.2%} to %{customdata[1]:.2%}: %{y} paths"
                "<extra></extra>",
                "meta": {"role": "histogram", "sign": sign},
            }
        ],
        "layout": {
            "margin": {"l": 60, "r": 16, "t": 24, "b": 48},
            "showlegend": False,
            "hovermode": "closest",
            "bargap": 0.04,
            "shapes": shapes,
            "xaxis": {"type": "linear", "tickformat": ".0%", "title": {"text": axis}},
            "yaxis": {"title": {"text": "Paths"}},
            "height": 300,
        },
    }


def results_context(run: MonteCarloRun) -> dict[str, Any]:
    """Everything the completed run's page shows, from its stored results."""
    res = run.results or {}
    summaries = res.get("summaries", {})
    source = res.get("source", {})
    level = round(float(res.get("ci_level", 0.95)) * 100)
    rows = []
    for key, label, kind in METRIC_ROWS:
        s = summaries.get(key)
        if not s:
            continue
        rows.append(
            {
                "key": key,
                "label": label,
                "original": _fmt(s.get("original"), kind),
                "mean": _fmt(s.get("mean"), kind),
                "median": _fmt(s.get("median"), kind),
                "p5": _fmt(s.get("p5"), kind),
                "p95": _fmt(s.get("p95"), kind),
                "ci_low": _fmt(s.get("ci_low"), kind),
                "ci_high": _fmt(s.get("ci_high"), kind),
            }
        )
    final = summaries.get("final_return", {})
    drawdown = summaries.get("max_drawdown", {})
    hist = res.get("histograms", {})
    ruin = res.get("ruin", {})
    return {
        "ci_level": level,
        "ci_rows": rows,
        "ruin_pct": f"{float(ruin.get('probability', 0.0)) * 100:.2f} %",
        "ruin_paths": ruin.get("paths", 0),
        "ruin_threshold_pct": f"{float(ruin.get('threshold', run.ruin_threshold)) * 100:g} %",
        "median_return": signed_pct(final.get("median")),
        "return_ci": (signed_pct(final.get("ci_low")), signed_pct(final.get("ci_high"))),
        "drawdown_ci": (signed_pct(drawdown.get("ci_low")), signed_pct(drawdown.get("ci_high"))),
        "median_drawdown": signed_pct(drawdown.get("median")),
        "source": source,
        "backtest_return": signed_pct(source.get("backtest_return")),
        # The headline compares like with like: the paths' measure, the backtest's own path
        # (its trades in their order, or its bars) as the "original order" row shows it.
        "original_drawdown": signed_pct(drawdown.get("original")),
        "backtest_drawdown": signed_pct(source.get("backtest_max_drawdown")),
        "realized_return": signed_pct(source.get("realized_return")),
        "fan_figure": fan_figure(res),
        "final_figure": histogram_figure(
            hist["final_return"],
            name="Final return",
            original=final.get("original"),
            axis="Final return",
        ),
        "drawdown_figure": histogram_figure(
            hist["max_drawdown"],
            name="Max drawdown",
            original=drawdown.get("original"),
            axis="Maximum drawdown",
        ),
    }


# --- views ----------------------------------------------------------------------------------


def _method_initial(backtest: Backtest) -> dict[str, Any]:
    """Block resampling is the default for a backtest with fewer than two trades."""
    result = getattr(backtest, "result", None)
    if result is not None and result.trade_count < 2:
        return {"method": "block"}
    return {}


def _montecarlo_args(data: dict[str, Any]) -> dict[str, Any]:
    """The form's fields as ``montecarlo_create``'s arguments (the ruin threshold from %)."""
    return {
        "method": data["method"],
        "iterations": data["iterations"],
        "block_length": data["block_length"],
        "ruin_threshold": data["ruin_threshold"] / 100.0,
        "seed": data["seed"],
    }


@pro_required
@require_http_methods(["GET", "POST"])
def montecarlo_create_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    backtest = backtest_get(user=request.user, pk=pk)
    return backtest_run_form_page(
        request,
        backtest,
        MonteCarloForm,
        initial=lambda: _method_initial(backtest),
        create=lambda form: montecarlo_create(
            user=request.user, backtest=backtest, **_montecarlo_args(form.cleaned_data)
        ),
        detail="backtester:montecarlo_detail",
        template="backtester/montecarlo/create.html",
        runs=montecarlo_runs_for,
        context=lambda: {
            "trade_count": backtest.result.trade_count if hasattr(backtest, "result") else 0,
            "bars": backtest_bars(backtest),
            "method_help": METHOD_HELP,
        },
    )


@pro_required
def montecarlo_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    page = Paginator(montecarlo_runs_for(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "backtester/montecarlo/list.html",
        {"page": page, "runs": list(page.object_list)},
    )


@pro_required
def montecarlo_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    run = montecarlo_get(user=request.user, pk=pk)
    context: dict[str, Any] = {
        "run": run,
        "backtest": run.backtest,
        "symbols": backtest_symbols(run.backtest),
        "state": status_payload(run),
        "method_help": METHOD_HELP.get(run.method, ""),
        "ruin_threshold_pct": f"{run.ruin_threshold * 100:g} %",
    }
    if run.status == MonteCarloRun.Status.COMPLETED and run.results:
        context.update(results_context(run))
    return render(request, "backtester/montecarlo/detail.html", context)


def hub_context(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    """The research hub's Monte Carlo section (see views/research.py HUB_SECTIONS)."""
    return {"montecarlo_recent": list(montecarlo_runs_for(request.user)[:5])}


urlpatterns = [
    path("montecarlo/", montecarlo_list, name="montecarlo_list"),
    path("montecarlo/<int:pk>/", montecarlo_detail, name="montecarlo_detail"),
    path(
        "backtests/<int:pk>/montecarlo/",
        montecarlo_create_view,
        name="montecarlo_create",
    ),
]
