"""The results of a completed backtest: charts, metrics, trades, exports and comparison.

* ``results_context(backtest)`` — what ``templates/backtester/results/_results.html`` needs;
  the backtest detail page (views/backtests.py) calls it for a completed backtest and
  includes the template. Everything in it is bounded: curves are the LTTB-downsampled arrays
  saved with the result, candles are coarse, markers capped, the trade list one page.
* ``backtest_trades`` — the trade list, sortable by any column and paginated in SQL
  (``?sort=-pnl&page=3``); a full page, or the bare table with ``?fragment=1`` (charts.js
  swaps it in place).
* ``backtest_export`` — ``trades-csv``, ``equity-csv`` (every bar), ``json`` (metrics,
  settings, spec, trades, curves) and ``html`` (a self-contained report: plotly.js, the
  figures and the tables inline, nothing fetched when opened).
* ``backtest_compare`` — ``?ids=1&ids=2``: equity curves overlaid (100 = initial capital) and
  the metrics side by side, for the signed-in user's own completed backtests only.

Every view is ``pro_required``; a backtest of another user (or an unknown id) is a 404.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from django.contrib.staticfiles import finders
from django.core.paginator import Paginator
from django.db.models import F, Q
from django.db.models.functions import Abs
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, path, reverse
from django.utils.safestring import mark_safe

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.models import Backtest, BacktestResult, BacktestTrade
from backtester.results import charts
from backtester.results.metric_table import (
    annualization_note,
    format_metric,
    headline,
    metric_groups,
    tone,
)
from backtester.results.store import (
    TRADE_FILL_COLUMNS,
    ms_to_datetime,
    result_chart_arrays,
    result_curves,
    result_meta,
)

TRADES_PER_PAGE = 50
COMPARE_MAX = 8
REPORT_TRADES_MAX = 1000
EXPORT_FORMATS = ("trades-csv", "equity-csv", "json", "html")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Trade list columns: (key, label, model field, numeric)
TRADE_COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("seq", "#", "seq", True),
    ("symbol", "Symbol", "symbol", False),
    ("side", "Side", "side", False),
    ("entry_time", "Entry (UTC)", "entry_time", False),
    ("exit_time", "Exit (UTC)", "exit_time", False),
    ("qty", "Qty", "qty", True),
    ("entry_price", "Entry price", "entry_price", True),
    ("exit_price", "Exit price", "exit_price", True),
    ("pnl", "P&L", "pnl", True),
    ("ret", "Return", "ret", True),
    ("fees", "Fees", "fees", True),
    ("bars_held", "Bars", "bars_held", True),
    ("exit_reason", "Exit reason", "exit_reason", False),
)
_SORT_FIELDS = {key: field for key, _, field, _ in TRADE_COLUMNS}


def _ms(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _utc(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _iso_ms(ms: int) -> str:
    return ms_to_datetime(ms).isoformat().replace("+00:00", "Z")


# --- reads ------------------------------------------------------------------------------------


def _owned_backtest(request: HttpRequest, pk: int) -> Backtest:
    return get_object_or_404(Backtest, pk=pk, owner=request.user)


def result_source(backtest: Backtest) -> Backtest | None:
    """The backtest whose result rows hold this backtest's result: itself, or the earlier
    identical run it was answered from (``cached_from``). None while there is no result."""
    seen: set[int] = set()
    current: Backtest | None = backtest
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        if BacktestResult.objects.filter(backtest_id=current.pk).exists():
            return current
        current = current.cached_from
    return None


def _result_for(
    backtest: Backtest, *, with_curves: bool = False
) -> tuple[Backtest, BacktestResult]:
    """The backtest holding the result rows and its BacktestResult (404 while there is none).
    The curves blob is loaded only ``with_curves`` (exports); charts read its front."""
    if backtest.status != Backtest.Status.COMPLETED:
        raise Http404("This backtest has no result yet.")
    source = result_source(backtest)
    if source is None:
        raise Http404("This backtest has no stored result.")
    qs = BacktestResult.objects.all() if with_curves else BacktestResult.objects.defer("curves")
    return source, qs.get(backtest_id=source.pk)


def _marker_trades(source: Backtest, symbol: str) -> tuple[list[dict[str, Any]], int]:
    qs = BacktestTrade.objects.filter(backtest_id=source.pk, symbol=symbol)
    total = qs.count()
    if total > charts.MAX_MARKER_TRADES:
        qs = qs.order_by(Abs("pnl").desc())[: charts.MAX_MARKER_TRADES]
    rows = qs.values_list(
        "side", "entry_time", "exit_time", "entry_price", "exit_price", "pnl", "ret"
    )
    trades = [
        {
            "side": side,
            "entry_ms": _ms(entry),
            "exit_ms": _ms(exit_),
            "entry_price": entry_price,
            "exit_price": exit_price,
            "pnl": pnl,
            "ret": ret,
        }
        for side, entry, exit_, entry_price, exit_price, pnl, ret in rows
    ]
    return trades, total


def result_figures(source: Backtest, result: BacktestResult) -> list[dict[str, Any]]:
    """Every chart of a result: dicts with id, title and figure (a Plotly figure dict)."""
    arrays, meta = result_chart_arrays(result)
    symbols: list[str] = list(meta.get("symbols") or [])
    timeframes: list[str] = list(meta.get("candle_timeframes") or [])
    figures: list[dict[str, Any]] = [
        {"id": "equity", "title": "Equity", "figure": charts.equity_figure(arrays)},
        {"id": "drawdown", "title": "Drawdown", "figure": charts.drawdown_figure(arrays)},
    ]
    for i, symbol in enumerate(symbols):
        if f"chart.candles.{i}.timestamp" not in arrays:
            continue
        trades, total = _marker_trades(source, symbol)
        note = ""
        if total > len(trades):
            note = (
                f"Markers show the {len(trades):,} trades with the largest P&L of {total:,}; "
                "the trade list has them all."
            )
        figures.append(
            {
                "id": f"candles-{i}",
                "title": f"{symbol} price and trades",
                "figure": charts.candles_figure(
                    arrays,
                    i,
                    symbol=symbol,
                    timeframe=timeframes[i] if i < len(timeframes) else "",
                    trades=trades,
                    total_trades=total,
                ),
                "note": note,
            }
        )
    figures.append(
        {"id": "monthly", "title": "Monthly returns", "figure": charts.monthly_figure(arrays)}
    )
    if arrays["chart.hist.counts"].size:
        figures.append(
            {
                "id": "histogram",
                "title": "Trade returns",
                "figure": charts.histogram_figure(arrays),
            }
        )
    for fig in figures:
        fig["dom_id"] = f"chart-{fig['id']}"
        fig["data_id"] = f"chart-{fig['id']}-data"
        fig["height"] = int(fig["figure"]["layout"].get("height") or 360)
    return figures


def trade_row(t: BacktestTrade) -> dict[str, Any]:
    """A trade formatted for a table row."""
    return {
        "seq": t.seq,
        "symbol": t.symbol,
        "side": "Long" if t.side > 0 else "Short",
        "side_class": "badge-buy" if t.side > 0 else "badge-sell",
        "entry_time": _utc(t.entry_time),
        "entry_iso": t.entry_time.isoformat(),
        "exit_time": _utc(t.exit_time),
        "exit_iso": t.exit_time.isoformat(),
        "qty": f"{t.qty:,.8g}",
        "entry_price": f"{t.entry_price:,.8g}",
        "exit_price": f"{t.exit_price:,.8g}",
        "pnl": f"{t.pnl:+,.2f}",
        "ret": f"{t.ret * 100:+.2f} %",
        "tone": "pos" if t.pnl > 0 else "neg" if t.pnl < 0 else "",
        "fees": f"{t.fees:,.2f}",
        "bars_held": f"{t.bars_held:,}",
        "exit_reason": t.exit_reason.replace("_", " "),
    }


def trades_page(
    backtest: Backtest, source: Backtest, *, sort: str | None, page: str | int | None
) -> dict[str, Any]:
    """One page of the trade list sorted by ``sort`` (a column key, ``-`` for descending;
    unknown keys fall back to the trade order) with the links to other sorts and pages."""
    sort = sort or "seq"
    key = sort.lstrip("-")
    if key not in _SORT_FIELDS:
        sort, key = "seq", "seq"
    descending = sort.startswith("-")
    field = _SORT_FIELDS[key]
    order = F(field).desc() if descending else F(field).asc()
    qs = BacktestTrade.objects.filter(backtest_id=source.pk).order_by(order, "seq")
    paginator = Paginator(qs, TRADES_PER_PAGE)
    page_obj = paginator.get_page(page)
    base = reverse("backtester:backtest_trades", kwargs={"pk": backtest.pk})
    columns = []
    for ckey, label, _, numeric in TRADE_COLUMNS:
        active = ckey == key
        next_sort = (ckey if descending else f"-{ckey}") if active else ckey
        columns.append(
            {
                "key": ckey,
                "label": label,
                "num": numeric,
                "url": f"{base}?sort={next_sort}",
                "aria_sort": ("descending" if descending else "ascending") if active else "none",
                "active": active,
            }
        )
    rows = [trade_row(t) for t in page_obj.object_list]

    def link(number: int) -> str:
        return f"{base}?sort={sort}&page={number}"

    return {
        "backtest": backtest,
        "columns": columns,
        "rows": rows,
        "page": page_obj,
        "count": paginator.count,
        "sort": sort,
        "first_url": link(1),
        "prev_url": link(page_obj.previous_page_number()) if page_obj.has_previous() else "",
        "next_url": link(page_obj.next_page_number()) if page_obj.has_next() else "",
        "last_url": link(paginator.num_pages),
        "page_url": base,
    }


def _open_positions(result: BacktestResult) -> list[dict[str, Any]]:
    out = []
    for pos in result.open_positions or []:
        entry_time = pos.get("entry_time")
        unrealized = pos.get("unrealized_pnl")
        out.append(
            {
                "symbol": pos.get("symbol", ""),
                "side": str(pos.get("side", "")).title(),
                "side_class": "badge-buy" if pos.get("side") == "long" else "badge-sell",
                "qty": f"{pos['qty']:,.8g}" if pos.get("qty") is not None else "—",
                "entry_at": _utc(ms_to_datetime(entry_time)) if entry_time is not None else "—",
                "entry_price": f"{pos['entry_price']:,.8g}"
                if pos.get("entry_price") is not None
                else "—",
                "mark_price": f"{pos['mark_price']:,.8g}"
                if pos.get("mark_price") is not None
                else "—",
                "unrealized_pnl": f"{unrealized:+,.2f}" if unrealized is not None else "—",
                "tone": "pos" if (unrealized or 0) > 0 else "neg" if (unrealized or 0) < 0 else "",
            }
        )
    return out


def results_context(backtest: Backtest) -> dict[str, Any]:
    """Context for ``backtester/results/_results.html``: ``{"results": {...}}``.

    For a completed backtest with a stored result: ``available`` True, ``figures`` (id,
    title, figure dicts, every series downsampled), ``headline``, ``metric_groups``,
    ``annualization``, ``open_positions``, ``trades`` (first page, by trade order),
    ``exports`` (label, url) and ``compare_url``. Otherwise ``available`` is False and
    ``message`` says why. The caller has already checked that the user owns ``backtest``.
    """
    if backtest.status != Backtest.Status.COMPLETED:
        return {"results": {"available": False, "message": "The backtest has not completed."}}
    source = result_source(backtest)
    if source is None:
        return {
            "results": {
                "available": False,
                "message": "The result of this backtest is not stored; run it again.",
            }
        }
    result = BacktestResult.objects.defer("curves").get(backtest_id=source.pk)
    metrics = result.metrics or {}
    return {
        "results": {
            "available": True,
            "backtest": backtest,
            "result": result,
            "figures": result_figures(source, result),
            "headline": headline(metrics),
            "metric_groups": metric_groups(metrics),
            "annualization": annualization_note(metrics),
            "open_positions": _open_positions(result),
            "trades": trades_page(backtest, source, sort="seq", page=1),
            "exports": [
                (
                    label,
                    reverse("backtester:backtest_export", kwargs={"pk": backtest.pk, "fmt": fmt}),
                )
                for fmt, label in (
                    ("trades-csv", "Trades CSV"),
                    ("equity-csv", "Equity CSV"),
                    ("json", "Result JSON"),
                    ("html", "HTML report"),
                )
            ],
            "compare_url": reverse("backtester:backtest_compare") + f"?ids={backtest.pk}",
        }
    }


# --- views: trades ---------------------------------------------------------------------------


@pro_required
def backtest_trades(request: HttpRequest, pk: int) -> HttpResponse:
    """The trade list: ``?sort=<column>|-<column>&page=<n>``; ``?fragment=1`` for the bare
    table (swapped into the results section by charts.js)."""
    backtest = _owned_backtest(request, pk)
    source, _ = _result_for(backtest)
    ctx = {
        "trades": trades_page(
            backtest, source, sort=request.GET.get("sort"), page=request.GET.get("page")
        )
    }
    if request.GET.get("fragment"):
        return render(request, "backtester/results/_trades.html", ctx)
    return render(request, "backtester/results/trades.html", ctx)


# --- views: exports --------------------------------------------------------------------------


def _filename(backtest: Backtest, suffix: str) -> str:
    return f"backtest-{backtest.pk}-{suffix}"


def _csv_line(values: Sequence[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _trades_csv(source: Backtest) -> Iterator[str]:
    yield _csv_line(
        ["seq", *TRADE_FILL_COLUMNS, "fees", "pnl", "return", "bars_held", "exit_reason"]
    )
    qs = BacktestTrade.objects.filter(backtest_id=source.pk).order_by("seq")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for i, t in enumerate(qs.iterator(chunk_size=2000), 1):
        writer.writerow(
            [
                t.seq,
                t.symbol,
                "long" if t.side > 0 else "short",
                repr(t.qty),
                t.entry_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                t.exit_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                repr(t.entry_price),
                repr(t.exit_price),
                repr(t.fees),
                repr(t.pnl),
                repr(t.ret),
                t.bars_held,
                t.exit_reason,
            ]
        )
        if i % 2000 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _curve_columns(result: BacktestResult) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """Names and per-bar columns of the equity export (position: one column per symbol)."""
    curves = result_curves(result)
    meta = result_meta(result)
    symbols = list(meta.get("symbols") or [])
    names = ["equity", "cash", "benchmark", "drawdown"]
    cols = [
        curves["equity"],
        curves["cash"],
        curves["benchmark"],
        charts.drawdown(curves["equity"], float(meta.get("initial_cash") or curves["equity"][0])),
    ]
    pos = curves["position"]
    if pos.ndim == 1:
        names.append(f"position_{symbols[0]}" if symbols else "position")
        cols.append(pos)
    else:
        for j in range(pos.shape[1]):
            names.append(f"position_{symbols[j]}" if j < len(symbols) else f"position_{j}")
            cols.append(pos[:, j])
    return names, cols, curves["timestamp"]


def _num(v: float) -> str:
    return repr(v) if math.isfinite(v) else ""


def _equity_csv(result: BacktestResult) -> Iterator[str]:
    names, cols, ts = _curve_columns(result)
    yield _csv_line(["timestamp", "time", *names])
    step = 20_000
    for start in range(0, ts.shape[0], step):
        stop = min(start + step, ts.shape[0])
        stamps = ts[start:stop].tolist()
        iso = np.datetime_as_string(ts[start:stop].astype("datetime64[ms]"), unit="ms").tolist()
        parts = [[_num(v) for v in c[start:stop].tolist()] for c in cols]
        lines = [
            ",".join((str(stamps[i]), iso[i] + "Z", *(p[i] for p in parts)))
            for i in range(stop - start)
        ]
        yield "\n".join(lines) + "\n"


def _json_floats(values: Sequence[float]) -> str:
    return "[" + ",".join(repr(v) if math.isfinite(v) else "null" for v in values) + "]"


def _result_json(backtest: Backtest, source: Backtest, result: BacktestResult) -> Iterator[str]:
    """The whole result as one JSON object, streamed (curves have one value per bar)."""
    meta = result_meta(result)
    head = {
        "backtest": {
            "id": backtest.pk,
            "name": str(backtest),
            "status": backtest.status,
            "timeframe": backtest.timeframe,
            "start": _iso_ms(backtest.start_ts),
            "end": _iso_ms(backtest.end_ts),
            "symbols": list(meta.get("symbols") or []),
            "candle_count": backtest.candle_count,
            "engine_seconds": backtest.engine_seconds,
            "created_at": backtest.created_at.isoformat() if backtest.created_at else None,
            "finished_at": backtest.finished_at.isoformat() if backtest.finished_at else None,
        },
        "spec": backtest.spec,
        "param_values": backtest.param_values,
        "settings": backtest.settings,
        "metrics": result.metrics,
        "open_positions": result.open_positions,
    }
    text = json.dumps(head, allow_nan=False)
    yield text[:-1] + ',"trades":['
    first = True
    qs = BacktestTrade.objects.filter(backtest_id=source.pk).order_by("seq")
    chunk: list[str] = []
    for t in qs.iterator(chunk_size=2000):
        row = t.as_json()
        chunk.append(("" if first else ",") + json.dumps(row, allow_nan=False))
        first = False
        if len(chunk) >= 2000:
            yield "".join(chunk)
            chunk = []
    yield "".join(chunk) + '],"equity":{'
    names, cols, ts = _curve_columns(result)
    yield '"timestamp":' + json.dumps(ts.tolist())
    for name, col in zip(names, cols, strict=True):
        yield f",{json.dumps(name)}:" + _json_floats(col.tolist())
    yield "}}"


@cache
def _plotly_js() -> str:
    found = finders.find("vendor/plotly/plotly.min.js")
    if not found:
        raise RuntimeError("static/vendor/plotly/plotly.min.js is missing")
    return Path(str(found)).read_text(encoding="utf-8")


def _static_text(name: str) -> str:
    found = finders.find(name)
    if not found:
        raise RuntimeError(f"static/{name} is missing")
    return Path(str(found)).read_text(encoding="utf-8")


def _inline_script(code: str) -> str:
    # A script element ends at the first "</script" whatever the JavaScript means.
    return code.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def report_html(backtest: Backtest) -> str:
    """A self-contained HTML report: plotly.js, charts.js, the figures, metrics and trades
    inline. Opening it makes no request."""
    source, result = _result_for(backtest)
    ctx = results_context(backtest)["results"]
    trades = [
        trade_row(t)
        for t in BacktestTrade.objects.filter(backtest_id=source.pk).order_by("seq")[
            :REPORT_TRADES_MAX
        ]
    ]
    return render_to_string(
        "backtester/results/report.html",
        {
            "backtest": backtest,
            "results": ctx,
            "trades": trades,
            "trade_count": result.trade_count,
            "trades_cut": result.trade_count > len(trades),
            "generated_at": datetime.now(tz=UTC),
            "symbols": ", ".join(result_meta(result).get("symbols") or []),
            "period": f"{_utc(ms_to_datetime(backtest.start_ts))} to "
            f"{_utc(ms_to_datetime(backtest.end_ts))} UTC",
            "plotly_js": mark_safe(_inline_script(_plotly_js())),
            "charts_js": mark_safe(_inline_script(_static_text("js/charts.js"))),
        },
    )


@pro_required
def backtest_export(
    request: HttpRequest, pk: int, fmt: str
) -> HttpResponse | StreamingHttpResponse:
    """Downloads: trades-csv, equity-csv, json, html (see the module docstring)."""
    if fmt not in EXPORT_FORMATS:
        raise Http404("Unknown export format.")
    return export_response(_owned_backtest(request, pk), fmt)


def export_response(backtest: Backtest, fmt: str) -> HttpResponse | StreamingHttpResponse:
    """The download of ``backtest`` in ``fmt`` (one of EXPORT_FORMATS), for the page and the
    API alike; Http404 while it has no result. The caller has checked owner and plan."""
    if fmt not in EXPORT_FORMATS:
        raise Http404("Unknown export format.")
    source, result = _result_for(backtest, with_curves=fmt in ("equity-csv", "json"))
    response: HttpResponse | StreamingHttpResponse
    if fmt == "trades-csv":
        response = StreamingHttpResponse(
            _trades_csv(source), content_type="text/csv; charset=utf-8"
        )
        name = _filename(backtest, "trades.csv")
    elif fmt == "equity-csv":
        response = StreamingHttpResponse(
            _equity_csv(result), content_type="text/csv; charset=utf-8"
        )
        name = _filename(backtest, "equity.csv")
    elif fmt == "json":
        response = StreamingHttpResponse(
            _result_json(backtest, source, result), content_type="application/json"
        )
        name = _filename(backtest, "result.json")
    else:
        response = HttpResponse(report_html(backtest), content_type="text/html; charset=utf-8")
        name = _filename(backtest, "report.html")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    return response


# --- views: compare --------------------------------------------------------------------------


def _describe(backtest: Backtest, meta: Mapping[str, Any]) -> str:
    symbols = ", ".join(meta.get("symbols") or [])
    return f"{symbols} {backtest.timeframe}".strip()


@pro_required
def backtest_compare(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Equity curves overlaid (100 = initial capital) and metrics side by side.

    ``?ids=<pk>&ids=<pk>...`` of the user's own completed backtests (at most COMPARE_MAX); any
    other id is a 404, a non-number a 400. Without ids, a chooser lists the completed ones.
    """
    raw_ids = request.GET.getlist("ids")
    try:
        ids = list(dict.fromkeys(int(v) for v in raw_ids if v.strip()))
    except ValueError:
        return HttpResponseBadRequest("ids must be backtest numbers, e.g. ?ids=12&ids=15")
    if any(not 0 < pk < 2**63 for pk in ids):
        return HttpResponseBadRequest("ids must be backtest numbers, e.g. ?ids=12&ids=15")
    if len(ids) > COMPARE_MAX:
        return HttpResponseBadRequest(f"Compare at most {COMPARE_MAX} backtests at a time.")
    choices = (
        Backtest.objects.filter(owner=request.user, status=Backtest.Status.COMPLETED)
        .filter(Q(result__isnull=False) | Q(cached_from__isnull=False))
        .prefetch_related("series")
        .order_by("-created_at")[:100]
    )
    columns: list[dict[str, Any]] = []
    figure = None
    rows: list[dict[str, Any]] = []
    if ids:
        found = {
            b.pk: b
            for b in Backtest.objects.filter(
                pk__in=ids, owner=request.user, status=Backtest.Status.COMPLETED
            )
        }
        curves = []
        for pk in ids:
            backtest = found.get(pk)
            if backtest is None:
                raise Http404("No such backtest.")
            _, result = _result_for(backtest)
            arrays, meta = result_chart_arrays(result)
            curves.append(
                {
                    "name": f"#{backtest.pk} {backtest}",
                    "x": arrays["chart.equity.x"],
                    "y": arrays["chart.equity.y"],
                    "initial_cash": float(meta.get("initial_cash") or arrays["chart.equity.y"][0]),
                }
            )
            columns.append(
                {
                    "backtest": backtest,
                    "describe": _describe(backtest, meta),
                    "metrics": result.metrics or {},
                    "detail_url": _detail_url(backtest),
                }
            )
        figure = charts.compare_figure(curves)
        for group in metric_groups(columns[0]["metrics"]) if columns else []:
            rows.append({"group": group["label"], "header": True})
            for row in group["rows"]:
                values = []
                for col in columns:
                    raw = col["metrics"].get(row["key"])
                    values.append(
                        {
                            "value": format_metric(raw, row["fmt"], row["key"]),
                            "tone": tone(raw, row["fmt"], row["key"]),
                        }
                    )
                rows.append(
                    {"label": row["label"], "definition": row["definition"], "values": values}
                )
    return render(
        request,
        "backtester/results/compare.html",
        {
            "choices": choices,
            "selected": set(ids),
            "columns": columns,
            "figure": figure,
            "rows": rows,
            "compare_max": COMPARE_MAX,
        },
    )


def _detail_url(backtest: Backtest) -> str:
    try:
        return reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})
    except NoReverseMatch:  # the detail page belongs to the runs module
        return ""


urlpatterns = [
    path("backtests/compare/", backtest_compare, name="backtest_compare"),
    path("backtests/<int:pk>/trades/", backtest_trades, name="backtest_trades"),
    path("backtests/<int:pk>/export/<slug:fmt>/", backtest_export, name="backtest_export"),
]
