"""Backtest pages: the submit form, my backtests, the live detail page, cancel, the status
JSON the detail page polls when its websocket cannot connect, and the status panel."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.engine.language import PRESETS
from backtester.forms.backtests import PERCENT_FIELDS, BacktestForm, series_options
from backtester.models import Backtest, MarketSeries
from backtester.results.metric_table import ratio_text, sign_tone, signed_pct
from backtester.selectors.backtests import (
    backtest_get,
    backtest_symbols,
    backtests_for,
    series_by_ids,
    series_for,
    status_counts,
    workers_alive,
)
from backtester.selectors.strategies import strategies_for
from backtester.services.backtests import (
    backtest_cancel,
    backtest_create,
    backtest_create_for_preset,
    default_markets,
    default_range,
    default_strategy_choice,
    fmt_day,
    live_equity,
    status_payload,
)
from backtester.services.strategies import preset_label
from backtester.views.common import run_cancel_view
from config.exceptions import ApplicationError

PAGE_SIZE = 25
SIZING_UNITS = {
    "fraction": "% of equity per position",
    "notional": "money per position",
    "risk": "% of equity risked to the stop",
    "vol_target": "% annualised volatility target",
}


def _show_error(form: BacktestForm, exc: ApplicationError) -> None:
    if exc.field == "param_values" and isinstance(exc.extra, dict) and exc.extra.get("param"):
        name = form.param_field(form.cleaned_data.get("strategy", ""), str(exc.extra["param"]))
        if name in form.fields:
            form.add_error(name, exc.message)
            return
    if exc.field and exc.field in form.fields:
        form.add_error(exc.field, exc.message)
    else:
        form.add_error(None, exc.message)


@pro_required
@require_http_methods(["GET", "POST"])
def backtest_create_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    strategies = list(strategies_for(request.user))
    series = list(series_for(request.user))
    if request.method == "POST":
        form = BacktestForm(request.POST, strategies=strategies, series=series)
        if form.is_valid():
            rows = series_by_ids(request.user, [int(v) for v in form.cleaned_data["series"]])
            blank = default_range(rows)
            start: Any = form.cleaned_data["start"]
            end: Any = form.cleaned_data["end"]
            if blank is not None:
                start = start or blank[0]
                end = end or blank[1]
            args = {
                "user": request.user,
                "series": rows,
                "start": start if start is not None else 0,
                "end": end if end is not None else 0,
                "settings": form.settings(),
                "param_values": form.param_values(),
                "name": form.cleaned_data["name"],
                "timeframe": form.cleaned_data["timeframe"],
            }
            choice = form.cleaned_data["strategy"]
            try:
                if choice.startswith("preset:"):
                    backtest = backtest_create_for_preset(preset=choice.split(":", 1)[1], **args)
                else:
                    backtest = backtest_create(strategy=form.strategy_objects[choice], **args)
            except ApplicationError as exc:
                _show_error(form, exc)
            else:
                if backtest.cached_from_id:
                    messages.info(
                        request,
                        "An identical backtest over the same data already ran: here is its result.",
                    )
                return redirect("backtester:backtest_detail", pk=backtest.pk)
        status = 400
        chosen = request.POST.getlist("series")
    else:
        timeframe, chosen = default_markets(
            series,
            timeframe=request.GET.get("timeframe"),
            series_ids=request.GET.getlist("series"),
        )
        initial = {
            "strategy": default_strategy_choice(
                strategies,
                strategy_id=request.GET.get("strategy"),
                preset=request.GET.get("preset"),
            ),
            "timeframe": timeframe,
            "series": chosen,
        }
        form = BacktestForm(initial=initial, strategies=strategies, series=series)
        status = 200
    groups = [{**g, "fields": [form[name] for name in g["names"]]} for g in form.param_groups]
    selected = form["strategy"].value()
    return render(
        request,
        "backtester/backtests/create.html",
        {
            "form": form,
            "series_options": series_options(form, chosen),
            "param_groups": groups,
            "selected_strategy": selected,
            "has_series": bool(series),
        },
        status=status,
    )


def _symbols_by_backtest(backtests: list[Backtest]) -> dict[int, list[str]]:
    ids = {pk for b in backtests for pk in b.series_order}
    names = dict(MarketSeries.objects.filter(pk__in=ids).values_list("pk", "symbol"))
    return {b.pk: [names.get(pk, "?") for pk in b.series_order] for b in backtests}


def _fmt(value: Any, kind: str) -> tuple[str, str]:
    """(text, css class) of a metric for the list: signed percent or a ratio."""
    return (signed_pct(value) if kind == "pct" else ratio_text(value)), sign_tone(value)


def _key_metrics(metrics: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        "total_return": _fmt(metrics.get("total_return"), "pct"),
        "sharpe": _fmt(metrics.get("sharpe"), "ratio"),
        "max_drawdown": _fmt(metrics.get("max_drawdown"), "pct"),
    }


@pro_required
def backtest_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    page = Paginator(backtests_for(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    items = list(page.object_list)
    symbols = _symbols_by_backtest(items)
    rows = []
    for b in items:
        result = getattr(b, "result", None) if b.status == Backtest.Status.COMPLETED else None
        rows.append(
            {
                "backtest": b,
                "symbols": symbols.get(b.pk, []),
                "start": fmt_day(b.start_ts),
                "end": fmt_day(b.end_ts),
                "key_metrics": _key_metrics((result.metrics if result else {}) or {}),
                "trades": result.trade_count if result else None,
            }
        )
    return render(
        request,
        "backtester/backtests/list.html",
        {
            "page": page,
            "rows": rows,
            "counts": status_counts(request.user),
            "workers": workers_alive(),
            "compare_url": reverse("backtester:backtest_compare"),
            "presets": [(name, preset_label(name)) for name in PRESETS],
        },
    )


@pro_required
def backtest_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    backtest = backtest_get(user=request.user, pk=pk)
    state = status_payload(backtest)
    if backtest.is_active:
        state["equity"] = live_equity(backtest.pk)
    context: dict[str, Any] = {
        "backtest": backtest,
        "state": state,
        "symbols": backtest_symbols(backtest),
        "start": fmt_day(backtest.start_ts),
        "end": fmt_day(backtest.end_ts),
        "settings": backtest.settings,
        "percent": {k: (backtest.settings.get(k) or 0) * 100 for k in PERCENT_FIELDS},
    }
    if backtest.status == Backtest.Status.COMPLETED:
        from backtester.results.views import results_context

        context.update(results_context(backtest))
    return render(request, "backtester/backtests/detail.html", context)


backtest_cancel_view = run_cancel_view(
    backtest_get, backtest_cancel, status_payload, label="Backtest", noun="backtest"
)


@pro_required
def backtest_status_panel(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Counts of my backtests by status and whether workers answer; ``?fragment=1`` gives the
    panel alone (the list page refreshes it)."""
    context = {"counts": status_counts(request.user), "workers": workers_alive()}
    template = (
        "backtester/backtests/_status_panel.html"
        if request.GET.get("fragment")
        else "backtester/backtests/status_panel.html"
    )
    return render(request, template, context)


urlpatterns = [
    path("backtests/", backtest_list, name="backtest_list"),
    path("backtests/new/", backtest_create_view, name="backtest_create"),
    path("backtests/status/", backtest_status_panel, name="backtest_status_panel"),
    path("backtests/<int:pk>/", backtest_detail, name="backtest_detail"),
    path("backtests/<int:pk>/cancel/", backtest_cancel_view, name="backtest_cancel"),
]
