"""Grid bot pages: backtest a grid on stored candles, deploy it on an account, my grid bots, one
grid bot (its levels), and pause / start / stop. Pro only; another user's bot is a 404.

The backtest is ``backtester.engine.gridbot.simulate_grid`` on a market of the data store, run in
the request (a grid over a few hundred thousand candles takes well under a second), validated
with the market's rules exactly as the deployment will be.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from accounts.gating import pro_required
from backtester.engine.errors import EngineError
from backtester.engine.gridbot import CELL_STATES, simulate_grid
from backtester.forms.bots import GRID_NAMES, GridBacktestForm, GridDeployForm, GridSearchForm
from backtester.models import GridBot, GridSearch, MarketSeries
from backtester.results.charts import equity_figure
from backtester.services.grid_bots import (
    grid_bot_create,
    grid_bot_get,
    grid_bot_pause,
    grid_bot_resume,
    grid_bot_snapshot,
    grid_bot_stop,
    grid_bots_for,
    grid_mark,
    grid_settings,
    grid_unrealized,
)
from backtester.services.grid_search import (
    grid_search_cancel,
    grid_search_create,
    grid_search_get,
    grid_search_heatmap,
    grid_searches_for,
)
from config.exceptions import ApplicationError

MAX_BARS = 500_000
CHART_POINTS = 3000


def _apply_error(form: forms.Form, exc: ApplicationError) -> None:
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


def _backtest(series: MarketSeries, values: dict[str, Any]) -> dict[str, Any]:
    """Run the grid over the whole stored series; raises ApplicationError (with the field)."""
    from backtester.marketdata.store import load_candles
    from exchanges.paper import market_rules

    market = market_rules(series.symbol)
    settings = grid_settings(market=market, **values)
    candles = load_candles(series)
    if len(candles) == 0:
        raise ApplicationError("This market has no candles", field="series")
    if len(candles) > MAX_BARS:
        candles = candles.slice(len(candles) - MAX_BARS, len(candles))
    try:
        result = simulate_grid(candles, settings)
    except EngineError as exc:  # e.g. "stop_loss: the first open is already below the stop"
        head = str(exc).split(":", 1)[0]
        raise ApplicationError(str(exc), field=head if head in GRID_NAMES else None) from None
    n = len(candles)
    keep = np.unique(np.linspace(0, n - 1, min(n, CHART_POINTS)).astype(np.int64))
    close = candles.close
    hold = settings.investment * close / close[0]
    figure = equity_figure(
        {
            "chart.equity.x": candles.timestamp[keep],
            "chart.equity.y": result.equity[keep],
            "chart.benchmark.x": candles.timestamp[keep],
            "chart.benchmark.y": hold[keep],
        },
        title="Grid equity",
    )
    rows = [
        {
            "index": i,
            "buy": float(result.lines[i]),
            "sell": float(result.lines[i + 1]),
            "qty": float(result.qty[i]),
            "trips": int(result.cell_round_trips[i]),
            "pnl": float(result.cell_pnl[i]),
            "unrealized": float(result.cell_unrealized[i]),
            "state": CELL_STATES[int(result.cell_state[i])].replace("_", " "),
        }
        for i in range(len(result.qty))  # a trailing grid's cells include those it added
    ]
    return {
        "figure": figure,
        "rows": rows,
        "result": result,
        "market": market,
        "bars": n,
        "total": result.final_equity - settings.investment,
        "final_range": result.final_range,
    }


@pro_required
def grid_bot_list(request: HttpRequest) -> HttpResponse:
    return render(request, "backtester/grid/list.html", {"bots": grid_bots_for(user=request.user)})


@pro_required
@require_http_methods(["GET"])
def grid_backtest(request: HttpRequest) -> HttpResponse:
    """The form; with its fields in the query, the simulation's result and a Deploy form."""
    context: dict[str, Any] = {}
    status = 200
    if "series" in request.GET:
        form = GridBacktestForm(request.GET, user=request.user)
        if form.is_valid():
            try:
                context["bt"] = _backtest(form.cleaned_data["series"], form.grid_values())
            except ApplicationError as exc:
                _apply_error(form, exc)
                status = 400
            else:
                initial = {n: form.cleaned_data.get(n) for n in GRID_NAMES}
                initial["symbol"] = form.cleaned_data["series"].symbol
                context["deploy"] = GridDeployForm(initial=initial, user=request.user)
        else:
            status = 400
    else:
        form = GridBacktestForm(user=request.user)
    context["form"] = form
    return render(request, "backtester/grid/backtest.html", context, status=status)


@pro_required
@require_http_methods(["GET", "POST"])
def grid_bot_new(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = GridDeployForm(request.POST, user=request.user)
        if form.is_valid():
            d = form.cleaned_data
            try:
                bot = grid_bot_create(
                    user=request.user,
                    account=d["account"],
                    symbol=d["symbol"],
                    name=d.get("name") or "",
                    **form.grid_values(),
                )
            except ApplicationError as exc:
                _apply_error(form, exc)
            else:
                messages.success(request, "Grid bot started: its first step places the grid.")
                return redirect("backtester:grid_bot_detail", pk=bot.pk)
        status = 400
    else:
        form, status = GridDeployForm(user=request.user, initial=request.GET.dict()), 200
    return render(request, "backtester/grid/new.html", {"form": form}, status=status)


@pro_required
def grid_bot_detail(request: HttpRequest, pk: int) -> HttpResponse:
    bot = _get(request, pk)
    mark = grid_mark(bot)
    unrealized = grid_unrealized(bot, mark) if mark is not None else None
    return render(
        request,
        "backtester/grid/detail.html",
        {
            "bot": bot,
            "levels": list(bot.grid_levels.order_by("-index")),
            "mark": mark,
            "unrealized": unrealized,
            "held": sum((lv.held for lv in bot.grid_levels.all()), Decimal(0)),
            "snapshot": grid_bot_snapshot(bot, mark),
        },
    )


def _get(request: HttpRequest, pk: int) -> GridBot:
    try:
        return grid_bot_get(user=request.user, pk=pk)
    except ApplicationError:
        raise Http404("Grid bot not found.") from None


def _lifecycle(action: Any, **options: Any) -> Any:
    @pro_required
    @require_POST
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        bot = _get(request, pk)
        extra = {"sell": request.POST.get("sell") == "on"} if options.get("sell") else {}
        try:
            action(user=request.user, bot=bot, **extra)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect("backtester:grid_bot_detail", pk=bot.pk)

    return view


# --- searching grid settings in the background (backtester/services/grid_search.py) -------------


@pro_required
@require_http_methods(["GET", "POST"])
def grid_search_new(request: HttpRequest) -> HttpResponse:
    """The search form; a valid one queues the search and opens its page."""
    status = 200
    if request.method == "POST":
        form = GridSearchForm(request.POST, user=request.user)
        if form.is_valid():
            try:
                search = grid_search_create(user=request.user, **form.values())
            except ApplicationError as exc:
                _apply_error(form, exc)
            else:
                return redirect("backtester:grid_search_detail", pk=search.pk)
        status = 400
    else:
        form = GridSearchForm(user=request.user, initial=request.GET.dict() or None)
    searches = grid_searches_for(user=request.user)[:20]
    return render(
        request, "backtester/grid/search_new.html", {"form": form, "searches": searches},
        status=status,
    )  # fmt: skip


SEARCH_TABLE_ROWS = 50


def _deploy_query(search: GridSearch, row: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    query = {
        "symbol": search.series.symbol, "lower": row["lower"], "upper": row["upper"],
        "levels": row["levels"], "spacing": row["spacing"], "investment": search.investment,
    }  # fmt: skip
    if row["trailing"]:
        query["trailing"] = "on"
    return urlencode(query)


@pro_required
def grid_search_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Progress while it runs (live over ws/runs/gridsearch/<id>/), then the ranked table,
    the heatmap and a Deploy link per row."""
    from config.runs.lifecycle import state

    try:
        search = grid_search_get(user=request.user, pk=pk)
    except ApplicationError:
        raise Http404("Grid search not found.") from None
    rows = list(search.rows[:SEARCH_TABLE_ROWS])
    for row in rows:
        row["deploy"] = _deploy_query(search, row)
        if row.get("total_return") is not None:
            row["return_pct"] = row["total_return"] * 100.0
    figure = grid_search_heatmap(search) if search.rows else None
    return render(
        request,
        "backtester/grid/search_detail.html",
        {"search": search, "rows": rows, "state": state(search), "figure": figure},
    )


@pro_required
@require_POST
def grid_search_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        search = grid_search_get(user=request.user, pk=pk)
    except ApplicationError:
        raise Http404("Grid search not found.") from None
    try:
        grid_search_cancel(user=request.user, search=search)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("backtester:grid_search_detail", pk=search.pk)


urlpatterns = [
    path("bots/grid/search/", grid_search_new, name="grid_search_new"),
    path("bots/grid/search/<int:pk>/", grid_search_detail, name="grid_search_detail"),
    path("bots/grid/search/<int:pk>/cancel/", grid_search_cancel_view, name="grid_search_cancel"),
    path("bots/grid/", grid_bot_list, name="grid_bot_list"),
    path("bots/grid/backtest/", grid_backtest, name="grid_backtest"),
    path("bots/grid/new/", grid_bot_new, name="grid_bot_new"),
    path("bots/grid/<int:pk>/", grid_bot_detail, name="grid_bot_detail"),
    path("bots/grid/<int:pk>/pause/", _lifecycle(grid_bot_pause), name="grid_bot_pause"),
    path("bots/grid/<int:pk>/start/", _lifecycle(grid_bot_resume), name="grid_bot_resume"),
    path("bots/grid/<int:pk>/stop/", _lifecycle(grid_bot_stop, sell=True), name="grid_bot_stop"),
]
