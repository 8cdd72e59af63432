"""Read-only samples open to every signed-in user, Pro or not: the built-in strategies
(presets), the shared demo market data and one finished sample backtest.

A Free account (or one whose trial ended) sees what the product does before paying. Nothing
here writes or runs anything: GET only, no exports, no links into Pro pages; only shared demo
series are shown (an upload is never a sample), and the sample result is the demo user's
sample backtest (``seed_demo`` makes it).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from backtester.engine.language import PRESETS
from backtester.models import MarketSeries
from backtester.results import charts
from backtester.results.store import ms_to_datetime
from backtester.results.views import results_context
from backtester.selectors import marketdata as md
from backtester.selectors.samples import sample_backtest
from backtester.services.strategies import param_to_dict, preset_label

PREVIEW_BARS = 300
NO_SAMPLE = (
    "There is no sample result on this server yet: an operator creates it with "
    "`python manage.py seed_demo`."
)


def _demo_series() -> list[dict[str, Any]]:
    rows = (
        MarketSeries.objects.filter(owner=None, source=MarketSeries.Source.DEMO)
        .exclude(count=0)
        .order_by("symbol", "timeframe")
    )
    return [
        {
            "series": s,
            "first": ms_to_datetime(s.first_ts) if s.first_ts is not None else None,
            "last": ms_to_datetime(s.last_ts) if s.last_ts is not None else None,
        }
        for s in rows
    ]


def _presets() -> list[dict[str, Any]]:
    return [
        {
            "key": key,
            "label": preset_label(key),
            "description": spec.description,
            "rules": [(rule, text) for rule, text in spec.rules.items() if text],
            "params": [param_to_dict(p) for p in spec.params],
        }
        for key, spec in PRESETS.items()
    ]


@login_required
@require_GET
def samples(request: HttpRequest) -> HttpResponse:
    """The presets with their rules and parameters, the demo series, the sample result."""
    return render(
        request,
        "backtester/samples/index.html",
        {"presets": _presets(), "series": _demo_series(), "sample": sample_backtest()},
    )


@login_required
@require_GET
def sample_series(request: HttpRequest, pk: int) -> HttpResponse:
    """One shared demo series: its span and a chart of its last candles. 404 for anything
    that is not a shared demo series (uploads and downloads are not samples)."""
    series = MarketSeries.objects.filter(pk=pk, owner=None, source=MarketSeries.Source.DEMO).first()
    if series is None:
        raise Http404("No such demo series.")
    preview = md.series_preview(series, bars=PREVIEW_BARS)
    label = f"{series.symbol} (synthetic)" if series.synthetic else series.symbol
    figure = charts.preview_figure(preview, label=label, timeframe=series.timeframe)
    return render(
        request,
        "backtester/samples/series.html",
        {
            "series": series,
            "figure": figure,
            "first": ms_to_datetime(series.first_ts) if series.first_ts is not None else None,
            "last": ms_to_datetime(series.last_ts) if series.last_ts is not None else None,
        },
    )


@login_required
@require_GET
def sample_result(request: HttpRequest) -> HttpResponse:
    """The sample backtest's report (charts, metrics, first page of trades), read-only."""
    backtest = sample_backtest()
    if backtest is None:
        context: dict[str, Any] = {"results": {"available": False, "message": NO_SAMPLE}}
    else:
        context = results_context(backtest)
        context["results"]["read_only"] = True
        if "trades" in context["results"]:
            context["results"]["trades"]["read_only"] = True
    context["backtest"] = backtest
    return render(request, "backtester/samples/result.html", context)


urlpatterns = [
    path("samples/", samples, name="samples"),
    path("samples/data/<int:pk>/", sample_series, name="sample_series"),
    path("samples/result/", sample_result, name="sample_result"),
]
