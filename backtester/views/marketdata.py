"""Market data pages: the catalog, a series' detail, upload, download from an exchange (with
live progress), and deleting one's uploads.

Views parse the forms and call the services; a service's ApplicationError becomes a form error
on its field. Every page is ``pro_required``; another user's upload or download is a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.engine.candles import timeframe_ms
from backtester.engine.errors import CandleError
from backtester.forms.marketdata import FetchForm, UploadForm, fetch_job_args
from backtester.marketdata.kept import upload_forget, upload_keep, upload_kept
from backtester.models import MarketSeries
from backtester.results import charts
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
_Row = TypeVar("_Row")


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


def _mine_or_404(find: Callable[..., _Row], request: HttpRequest, pk: int, what: str) -> _Row:
    """The user's row found by ``find(user=, pk=)``, or a 404 saying there is no such ``what``."""
    try:
        return find(user=request.user, pk=pk)
    except NotFound:
        raise Http404(f"No such {what}") from None


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
    series = _mine_or_404(md.series_for_user, request, pk, "market data series")
    gaps = md.series_gaps(series)
    preview = md.series_preview(series, bars=PREVIEW_BARS)
    label = series.name or series.symbol
    if series.synthetic:
        label = f"{series.symbol} (Synthetic)"
    figure = charts.preview_figure(preview, label=label, timeframe=series.timeframe)
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
def data_upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Upload a file of candles. A refused try keeps the file on the server (for an hour) and
    the page offers it again, so fixing another field does not mean choosing the file again."""
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user_id, token = request.user.pk, data.get("kept") or ""
        found = upload_kept(user_id=user_id, token=token) if not data.get("file") else None
        if data.get("file"):
            content, filename = data["file"], data["file"].name
        elif found is not None:
            content, filename = found
        else:
            content, filename = b"", ""
            form.add_error(
                "file", "The file from your last try is no longer kept; choose it again."
            )
        if filename:
            try:
                job = upload_job_create(
                    owner=request.user,
                    file=content,
                    filename=filename,
                    symbol=data["symbol"],
                    timeframe=data.get("timeframe") or "",
                    exchange=data.get("exchange") or "upload",
                    name=data.get("name") or "",
                )
            except ApplicationError as exc:
                _apply_error(form, exc)
            else:
                upload_forget(user_id=user_id, token=token)
                # Parsed in the background: the job's page shows progress, then the series.
                return redirect("backtester:data_upload_job", pk=job.pk)
    kept_name = _offer_again(request, form) if request.method == "POST" else ""
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "backtester/marketdata/upload.html",
        {"form": form, "max_mb": MAX_UPLOAD_BYTES // (1024 * 1024), "kept_name": kept_name},
        status=status,
    )


def _offer_again(request: AuthenticatedHttpRequest, form: Any) -> str:
    """After a refused try: keep the file just sent (a new file replaces a kept one), or keep
    offering the one already kept; the form carries its token. Returns the file's name for the
    page, or "" when there is nothing to offer (no file, or one over the size limit)."""
    user_id, token = request.user.pk, form.data.get("kept", "")
    uploaded = request.FILES.get("file")
    if uploaded is not None:
        upload_forget(user_id=user_id, token=token)
        token = ""
        if 0 < (uploaded.size or 0) <= MAX_UPLOAD_BYTES:
            uploaded.seek(0)
            token = upload_keep(user_id=user_id, data=uploaded.read(), filename=uploaded.name or "")
    found = upload_kept(user_id=user_id, token=token) if token else None
    form.data = form.data.copy()
    form.data["kept"] = token if found else ""
    return found[1] if found else ""


@pro_required
@require_GET
def data_upload_job(request: HttpRequest, pk: int) -> HttpResponse:
    """An upload being parsed in the background: live progress, then the series or the reason."""
    job = _mine_or_404(md.upload_job_for_user, request, pk, "upload")
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
                **fetch_job_args(data),
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
    job = _mine_or_404(md.fetch_job_for_user, request, pk, "download")
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
