"""Scanner pages: watchlists and the last scan's summary, a scan's live progress and results,
all alerts (filtered, paginated), one alert's chart of price with its bands, and the
one-click backtest of the band strategy behind an alert.

Views parse forms and call ``backtester.services.scanner``; an ApplicationError becomes a form
error on its field or a message. Every page is ``pro_required``; another user's watchlist, scan
or alert is a 404.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlencode

import numpy as np
from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.engine.candles import timeframe_ms
from backtester.engine.errors import EngineError
from backtester.engine.indicators import polyreg_bands
from backtester.engine.scanner import BUY, HOLD, SELL
from backtester.forms.scanner import AlertFilterForm, WatchlistForm
from backtester.marketdata.store import load_candles
from backtester.models import Alert, ScanRun, Watchlist
from backtester.results.charts import _layout, int_list, num_list
from backtester.selectors.scanner import (
    alert_get,
    alerts_for,
    last_completed_scan,
    latest_scans,
    scan_get,
    scans_for,
    watchlist_get,
    watchlists_for,
)
from backtester.services.scan_alerts import alert_backtest_create, scan_summary
from backtester.services.scan_watchlists import watchlist_create, watchlist_delete, watchlist_update
from backtester.services.scanner import scan_payload, scan_start
from backtester.views.common import redirect_after
from config.exceptions import ApplicationError
from exchanges.clients import exchange_label

ALERTS_PER_PAGE = 50
RECENT_SCANS = 8
CHART_MIN_BARS = 300  # history drawn behind an alert: at least this, or 3 lookbacks


def _exchange_name(exchange: str) -> str:
    return "Demo" if exchange == "demo" else exchange_label(exchange)


def _fmt_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


# --- watchlists --------------------------------------------------------------------------


def _watchlist_initial(watchlist: Watchlist | None) -> dict[str, Any]:
    if watchlist is None:
        return {"lookback": 100, "degree": 2, "k": 2.0, "exchange": "binance", "timeframe": "1d"}
    return {
        "name": watchlist.name,
        "exchange": watchlist.exchange,
        "timeframe": watchlist.timeframe,
        "universe": watchlist.universe,
        "symbols": ", ".join(watchlist.symbols or []),
        "top_n": watchlist.top_n,
        "quote": watchlist.quote,
        "lookback": watchlist.lookback,
        "degree": watchlist.degree,
        "k": watchlist.k,
        "schedule_minutes": watchlist.schedule_minutes,
        "notify": watchlist.notify,
    }


def _form_error(form: forms.Form, exc: ApplicationError) -> None:
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


def _watchlist_page(
    request: AuthenticatedHttpRequest,
    watchlist: Watchlist | None,
    save: Callable[..., Watchlist],
) -> HttpResponse:
    """The watchlist form (new when ``watchlist`` is None): ``save(**values)`` creates or
    updates it; a refusal lands on the form."""
    form = WatchlistForm(request.POST or None, initial=_watchlist_initial(watchlist))
    if request.method == "POST" and form.is_valid():
        try:
            saved = save(**form.service_kwargs())
        except ApplicationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"Watchlist “{saved.name}” saved.")
            return redirect("backtester:scanner")
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "watchlist": watchlist}
    return render(request, "backtester/scanner/watchlist_form.html", context, status=status)


@pro_required
@require_http_methods(["GET", "POST"])
def watchlist_create_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _watchlist_page(request, None, partial(watchlist_create, user=request.user))


@pro_required
@require_http_methods(["GET", "POST"])
def watchlist_edit_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    watchlist = watchlist_get(user=request.user, pk=pk)
    save = partial(watchlist_update, user=request.user, watchlist=watchlist)
    return _watchlist_page(request, watchlist, save)


@pro_required
@require_POST
def watchlist_delete_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    watchlist = watchlist_get(user=request.user, pk=pk)
    name = watchlist.name
    watchlist_delete(user=request.user, watchlist=watchlist)
    messages.success(request, f"Watchlist “{name}” deleted. Its scans and alerts are kept.")
    return redirect("backtester:scanner")


# --- the scanner page ------------------------------------------------------------------------


@pro_required
@require_GET
def scanner(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Watchlists, recent scans and the last completed scan's summary (of one watchlist with
    ``?watchlist=<id>``)."""
    watchlists = list(watchlists_for(request.user))
    chosen: Watchlist | None = None
    raw = request.GET.get("watchlist", "")
    if raw.isdigit():
        chosen = watchlist_get(user=request.user, pk=int(raw))
    recent = list(scans_for(request.user)[:RECENT_SCANS])
    last = last_completed_scan(request.user, watchlist=chosen)
    latest = {run.watchlist_id: run for run in latest_scans(request.user, watchlists)}
    for w in watchlists:
        w.last_scan = latest.get(w.pk)  # type: ignore[attr-defined]  # shown by the template only
        # (type: ignore below) shown by the template only
        w.exchange_name = _exchange_name(w.exchange)  # type: ignore[attr-defined]
    return render(
        request,
        "backtester/scanner/scanner.html",
        {
            "watchlists": watchlists,
            "chosen": chosen,
            "recent": recent,
            "summary": scan_summary(last),
            "last": last,
            "last_exchange": _exchange_name(last.exchange) if last else "",
        },
    )


@pro_required
@require_POST
def scan_start_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    watchlist = watchlist_get(user=request.user, pk=pk)
    start = partial(scan_start, user=request.user, watchlist=watchlist)
    return redirect_after(request, start, "backtester:scanner_scan", "backtester:scanner")


def _result_rows(run: ScanRun) -> list[Alert]:
    """The scan's outcomes: BUY then SELL by potential return, then HOLD by symbol."""
    alerts = list(Alert.objects.filter(scan=run))
    order = {BUY: 0, SELL: 1, HOLD: 2}
    alerts.sort(
        key=lambda a: (
            order.get(a.signal, 3),
            -(a.potential_return if a.potential_return is not None else -math.inf),
            a.symbol,
        )
    )
    return alerts


@pro_required
@require_GET
def scan_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    run = scan_get(user=request.user, pk=pk)
    context: dict[str, Any] = {
        "run": run,
        "state": scan_payload(run),
        "exchange_name": _exchange_name(run.exchange),
    }
    if run.status == ScanRun.Status.COMPLETED:
        context["rows"] = _result_rows(run)
        context["summary"] = scan_summary(run)
    return render(request, "backtester/scanner/scan.html", context)


# --- all alerts ------------------------------------------------------------------------------


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@pro_required
@require_GET
def alert_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    watchlists = list(watchlists_for(request.user))
    form = AlertFilterForm(request.GET or None, watchlists=watchlists)
    data: dict[str, Any] = {}
    if request.GET:
        form.is_valid()
        data = {k: v for k, v in form.cleaned_data.items() if k not in form.errors}
    choice = data.get("signal") or "alerts"
    signals = {"alerts": [BUY, SELL], "all": None}.get(choice, [choice])
    chosen = next((w for w in watchlists if w.pk == data.get("watchlist")), None)
    alerts = alerts_for(
        request.user,
        signals=signals,
        symbol=data.get("symbol") or "",
        since=_day_start(data["since"]) if data.get("since") else None,
        until=_day_start(data["until"]) + timedelta(days=1) if data.get("until") else None,
        watchlist=chosen,
    )
    page = Paginator(alerts, ALERTS_PER_PAGE).get_page(request.GET.get("page"))
    query = {k: v for k, v in request.GET.items() if k != "page" and v}
    return render(
        request,
        "backtester/scanner/alerts.html",
        {
            "form": form,
            "page": page,
            "alerts": list(page.object_list),
            "query": urlencode(query),
            "filtered": bool(query),
        },
        status=400 if form.errors else 200,
    )


# --- one alert: its chart, and the backtest of the band strategy -------------------------------


def bands_figure(alert: Alert) -> dict[str, Any] | None:
    """Close and the rolling polynomial bands (as each bar saw them) up to the alert's candle,
    with the alert marked. None when the series or its candles are gone."""
    series = alert.series
    run = alert.scan
    if series is None or alert.candle_ts is None:
        return None
    try:
        tf_ms = timeframe_ms(series.timeframe)
    except EngineError:
        return None
    bars = max(CHART_MIN_BARS, 3 * run.lookback)
    start = alert.candle_ts - (bars + run.lookback) * tf_ms
    candles = load_candles(series, start_ts=start, end_ts=alert.candle_ts + 1)
    if len(candles) == 0:
        return None
    close = candles.close
    try:
        mid, upper, lower = polyreg_bands(close, run.lookback, run.degree, run.k)
    except ValueError:
        return None
    keep = slice(max(0, len(candles) - bars), len(candles))
    x = int_list(candles.timestamp[keep])
    has_bands = bool(np.isfinite(upper[keep]).any())
    data: list[dict[str, Any]] = []
    if has_bands:
        band_line = {"width": 1, "color": "rgba(91, 107, 130, 0.55)"}
        data += [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Lower band",
                "x": x,
                "y": num_list(lower[keep]),
                "line": band_line,
                "hovertemplate": "%{y:,.6~g}<extra>Lower band</extra>",
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Upper band",
                "x": x,
                "y": num_list(upper[keep]),
                "line": band_line,
                "fill": "tonexty",
                "fillcolor": "rgba(91, 107, 130, 0.08)",
                "hovertemplate": "%{y:,.6~g}<extra>Upper band</extra>",
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Fitted line",
                "x": x,
                "y": num_list(mid[keep]),
                "line": {"width": 1.2, "dash": "dot"},
                "meta": {"role": "benchmark"},
                "hovertemplate": "%{y:,.6~g}<extra>Fitted line</extra>",
            },
        ]
    data.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Close",
            "x": x,
            "y": num_list(close[keep]),
            "line": {"width": 1.6},
            "meta": {"role": "equity"},
            "hovertemplate": "%{y:,.6~g}<extra>Close</extra>",
        }
    )
    if alert.signal in (BUY, SELL) and alert.price is not None:
        side = 1 if alert.signal == BUY else -1
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": alert.signal,
                "x": [int(alert.candle_ts)],
                "y": [alert.price],
                "marker": {"symbol": "triangle-up" if side > 0 else "triangle-down", "size": 13},
                "meta": {"role": "entry", "side": side},
                "hovertemplate": f"{alert.signal} at %{{y:,.6~g}}<extra></extra>",
            }
        )
    return {
        "data": data,
        "layout": _layout(yaxis={"title": {"text": "Price"}, "tickformat": ",.6~g"}, height=440),
    }


@pro_required
@require_GET
def alert_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    alert = alert_get(user=request.user, pk=pk)
    run = alert.scan
    return render(
        request,
        "backtester/scanner/alert.html",
        {
            "alert": alert,
            "run": run,
            "figure": bands_figure(alert),
            "candle_time": _fmt_ms(alert.candle_ts),
            "exchange_name": _exchange_name(alert.exchange),
        },
    )


@pro_required
@require_POST
def alert_backtest_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    alert = alert_get(user=request.user, pk=pk)
    return redirect_after(
        request,
        lambda: alert_backtest_create(user=request.user, alert=alert),
        "backtester:backtest_detail",
        "backtester:scanner_alert",
        pk=alert.pk,
    )


_WATCHLIST = "scanner/watchlists/<int:pk>/"
urlpatterns = [
    path("scanner/", scanner, name="scanner"),
    path("scanner/watchlists/new/", watchlist_create_view, name="scanner_watchlist_create"),
    path("scanner/watchlists/<int:pk>/edit/", watchlist_edit_view, name="scanner_watchlist_edit"),
    path(f"{_WATCHLIST}delete/", watchlist_delete_view, name="scanner_watchlist_delete"),
    path("scanner/watchlists/<int:pk>/scan/", scan_start_view, name="scanner_scan_start"),
    path("scanner/scans/<int:pk>/", scan_detail, name="scanner_scan"),
    path("scanner/alerts/", alert_list, name="scanner_alerts"),
    path("scanner/alerts/<int:pk>/", alert_detail, name="scanner_alert"),
    path("scanner/alerts/<int:pk>/backtest/", alert_backtest_view, name="scanner_alert_backtest"),
]
