"""Market data pages: the catalog, a series' detail, upload, download from an exchange (with
live progress), and deleting one's uploads.

Views parse the forms and call the services; a service's ApplicationError becomes a form error
on its field. Every page is ``pro_required``; another user's upload or download is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.gating import pro_required
from backtester import charts
from backtester.engine.candles import timeframe_ms
from backtester.engine.errors import CandleError
from backtester.marketdata.forms import FetchForm, UploadForm, date_to_ms
from backtester.models import MarketSeries
from backtester.selectors import marketdata as md
from backtester.services.marketdata import (
    MAX_UPLOAD_BYTES,
    fetch_job_create,
    fetch_job_payload,
    series_delete,
    upload_job_create,
)
from config.exceptions import ApplicationError, NotFound
from config.runs import lifecycle
from exchanges.clients import exchange_label

PREVIEW_BARS = 300
GAPS_SHOWN = 200


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _row(series: MarketSeries, user: Any) -> dict[str, Any]:
    gaps = md.series_gaps(series)
    return {
        "series": series,
        "exchange_label": "Demo" if series.exchange == "demo" else exchange_label(series.exchange),
        "first": _utc(series.first_ts),
        "last": _utc(series.last_ts),
        "gaps": len(gaps),
        "missing": sum(g.missing_bars for g in gaps),
        "mine": series.owner_id == user.pk,
    }


def _catalog_order(series: MarketSeries) -> tuple[Any, ...]:
    """Exchange, symbol, then timeframe by its length (1m before 1h before 1d)."""
    try:
        tf = timeframe_ms(series.timeframe)
    except CandleError:
        tf = 0
    return (series.exchange, series.symbol, tf, series.pk)


def _apply_error(form: Any, exc: ApplicationError) -> None:
    field = exc.field if exc.field in form.fields else None
    form.add_error(field, exc.message)


@pro_required
@require_GET
def data_list(request: HttpRequest) -> HttpResponse:
    rows = [_row(s, request.user) for s in md.series_catalog(request.user)]
    rows.sort(key=lambda r: _catalog_order(r["series"]))
    return render(
        request,
        "backtester/marketdata/list.html",
        {
            "shared_rows": [r for r in rows if not r["mine"]],
            "my_rows": [r for r in rows if r["mine"]],
            "jobs": md.recent_fetch_jobs(request.user, limit=5),
        },
    )


@pro_required
@require_GET
def data_detail(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        series = md.series_for_user(user=request.user, pk=pk)
    except NotFound:
        raise Http404("No such market data series") from None
    gaps = md.series_gaps(series)
    preview = md.series_preview(series, bars=PREVIEW_BARS)
    figure = None
    if len(preview):
        arrays = {
            "chart.candles.0.timestamp": preview.timestamp,
            "chart.candles.0.open": preview.open,
            "chart.candles.0.high": preview.high,
            "chart.candles.0.low": preview.low,
            "chart.candles.0.close": preview.close,
        }
        label = series.name or series.symbol
        if series.synthetic:
            label = f"{series.symbol} (Synthetic)"
        figure = charts.candles_figure(
            arrays, 0, symbol=label, timeframe=series.timeframe, trades=[]
        )
        figure["layout"]["title"] = {
            "text": f"{label} · last {len(preview):,} {series.timeframe} candles (UTC)"
        }
    return render(
        request,
        "backtester/marketdata/detail.html",
        {
            "row": _row(series, request.user),
            "series": series,
            "figure": figure,
            "gaps": gaps[:GAPS_SHOWN],
            "gaps_total": len(gaps),
            "gaps_hidden": max(0, len(gaps) - GAPS_SHOWN),
            "missing_total": sum(g.missing_bars for g in gaps),
            "can_delete": series.owner_id == request.user.pk
            and series.source == MarketSeries.Source.UPLOAD,
            "extra_columns": series.extra_columns or [],
        },
    )


@pro_required
@require_http_methods(["GET", "POST"])
def data_upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = upload_job_create(
                owner=request.user,
                file=data["file"],
                filename=data["file"].name,
                symbol=data["symbol"],
                timeframe=data.get("timeframe") or "",
                exchange=data.get("exchange") or "upload",
                name=data.get("name") or "",
            )
        except ApplicationError as exc:
            _apply_error(form, exc)
        else:
            # Parsed in the background: the job's page shows progress, then the series.
            return redirect("backtester:data_upload_job", pk=job.pk)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "backtester/marketdata/upload.html",
        {"form": form, "max_mb": MAX_UPLOAD_BYTES // (1024 * 1024)},
        status=status,
    )


@pro_required
@require_GET
def data_upload_job(request: HttpRequest, pk: int) -> HttpResponse:
    """An upload being parsed in the background: live progress, then the series or the reason."""
    try:
        job = md.upload_job_for_user(user=request.user, pk=pk)
    except NotFound:
        raise Http404("No such upload") from None
    return render(
        request,
        "backtester/marketdata/upload_job.html",
        {"job": job, "state": lifecycle.state(job)},
    )


@pro_required
@require_http_methods(["GET", "POST"])
def data_fetch(request: HttpRequest) -> HttpResponse:
    initial = {k: request.GET[k] for k in ("exchange", "symbol", "timeframe") if k in request.GET}
    form = FetchForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = fetch_job_create(
                owner=request.user,
                exchange=data["exchange"],
                symbol=data["symbol"],
                timeframe=data["timeframe"],
                since_ts=date_to_ms(data["since"]),
                until_ts=date_to_ms(data["until"]) if data.get("until") else None,
            )
        except ApplicationError as exc:
            _apply_error(form, exc)
        else:
            return redirect("backtester:data_fetch_job", pk=job.pk)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "backtester/marketdata/fetch.html",
        {"form": form, "jobs": md.recent_fetch_jobs(request.user, limit=10)},
        status=status,
    )


@pro_required
@require_GET
def data_fetch_job(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        job = md.fetch_job_for_user(user=request.user, pk=pk)
    except NotFound:
        raise Http404("No such download") from None
    payload = fetch_job_payload(job)
    return render(
        request,
        "backtester/marketdata/fetch_job.html",
        {
            "job": job,
            "series": job.series,
            "exchange_label": exchange_label(job.series.exchange),
            "since": _utc(job.since_ts),
            "until": _utc(job.until_ts),
            "payload": payload,
        },
    )


@pro_required
@require_POST
def data_delete(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        series_delete(owner=request.user, series_id=pk)
    except NotFound:
        raise Http404("No such upload") from None
    messages.success(request, "The upload and its candles were deleted.")
    return redirect("backtester:data_list")


urlpatterns = [
    path("data/", data_list, name="data_list"),
    path("data/<int:pk>/", data_detail, name="data_detail"),
    path("data/<int:pk>/delete/", data_delete, name="data_delete"),
    path("data/upload/", data_upload, name="data_upload"),
    path("data/fetch/", data_fetch, name="data_fetch"),
    path("data/uploads/<int:pk>/", data_upload_job, name="data_upload_job"),
    path("data/fetch/<int:pk>/", data_fetch_job, name="data_fetch_job"),
]
