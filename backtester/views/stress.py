"""Stress-test pages: the form on a backtest (crisis windows, windows of one's own, a gap and a
volatility spike), my stress runs, a run's table of outcomes, and its status JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_http_methods

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.engine.stress import NAMED_WINDOWS
from backtester.forms.stress import StressForm
from backtester.models import Backtest, StressRun
from backtester.results.metric_table import sign_tone, signed_pct
from backtester.selectors.backtests import backtest_get, backtest_symbols
from backtester.selectors.montecarlo import stress_get, stress_runs_for
from backtester.services.montecarlo import status_payload
from backtester.services.stress import (
    fmt_day,
    fmt_ms,
    stress_create,
    window_coverage,
)
from backtester.views.common import backtest_run_form_page

PAGE_SIZE = 25
STATUS_LABELS = {
    "ok": ("Ran", "ok"),
    "partial": ("Partial data", "warn"),
    "no_data": ("No data", "muted"),
    "error": ("Could not run", "bad"),
}


def _local(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


# Service field → form field, for errors the service finds.
_ERROR_FIELDS = {
    "windows": "windows",
    "custom_windows": "custom_label_1",
    "gap_at": "gap_at",
    "gap_change": "gap_change",
    "vol_spike_at": "vol_at",
    "vol_spike_bars": "vol_bars",
    "vol_spike_factor": "vol_factor",
}


def table_rows(run: StressRun) -> list[dict[str, Any]]:
    """The result rows ready for the table: formatted numbers, status badges, deltas."""
    out = []
    for row in (run.results or {}).get("rows", []):
        outcome = row.get("outcome") or {}
        delta = row.get("delta") or {}
        label, badge = STATUS_LABELS.get(row.get("status", ""), ("?", "muted"))
        cells: dict[str, Any] = {
            "kind": row.get("kind"),
            "key": row.get("key", ""),
            "label": row.get("label", ""),
            "status": row.get("status"),
            "status_label": label,
            "badge": badge,
            "message": row.get("message", ""),
            "span": f"{fmt_day(row.get('start_ms'))} → {fmt_day((row.get('end_ms') or 1) - 1)}",
            "data": ", ".join(d["label"] for d in row.get("data", [])),
            "has_outcome": bool(outcome),
            "description": getattr(NAMED_WINDOWS.get(row.get("key") or ""), "description", ""),
        }
        if outcome:
            worst = outcome.get("worst_trade")
            cells.update(
                {
                    "bars": outcome.get("bars"),
                    "ran": f"{fmt_ms(outcome.get('start_ts'))} → {fmt_ms(outcome.get('end_ts'))}",
                    "return": signed_pct(outcome.get("total_return")),
                    "return_tone": sign_tone(outcome.get("total_return")),
                    "drawdown": signed_pct(outcome.get("max_drawdown")),
                    "trades": outcome.get("trades"),
                    "open_at_end": outcome.get("open_at_end"),
                    "worst": signed_pct(worst),
                    "worst_tone": sign_tone(worst),
                    "market": signed_pct(outcome.get("market_return")),
                    "market_tone": sign_tone(outcome.get("market_return")),
                    "market_drawdown": signed_pct(outcome.get("market_max_drawdown")),
                    "warmup": (row.get("warmup") or {}).get("used"),
                }
            )
        if delta:
            cells.update(
                {
                    "d_return": signed_pct(delta.get("total_return"), unit="pp"),
                    "d_return_tone": sign_tone(delta.get("total_return")),
                    "d_drawdown": signed_pct(delta.get("max_drawdown"), unit="pp"),
                    "d_drawdown_tone": sign_tone(delta.get("max_drawdown")),
                    "d_worst": signed_pct(delta.get("worst_trade"), unit="pp"),
                    "d_trades": f"{delta.get('trades', 0):+d}",
                }
            )
        out.append(cells)
    return out


def _stress_initial(backtest: Backtest) -> dict[str, Any]:
    """Every named window, and the shocks placed at a half and a third of the backtest."""
    span = backtest.end_ts - backtest.start_ts
    return {
        "windows": list(NAMED_WINDOWS),
        "gap_at": _local(backtest.start_ts + span // 2),
        "vol_at": _local(backtest.start_ts + span // 3),
    }


@pro_required
@require_http_methods(["GET", "POST"])
def stress_create_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    backtest = backtest_get(user=request.user, pk=pk)
    return backtest_run_form_page(
        request,
        backtest,
        StressForm,
        initial=lambda: _stress_initial(backtest),
        create=lambda form: stress_create(
            user=request.user, backtest=backtest, **form.service_args()
        ),
        detail="backtester:stress_detail",
        template="backtester/stress/create.html",
        runs=stress_runs_for,
        context=lambda: {
            "coverage": window_coverage(user=request.user, backtest=backtest),
            "start": fmt_ms(backtest.start_ts),
            "end": fmt_ms(backtest.end_ts),
        },
        error_field=lambda field: _ERROR_FIELDS.get(field or ""),
    )


@pro_required
def stress_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    page = Paginator(stress_runs_for(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "backtester/stress/list.html", {"page": page})


@pro_required
def stress_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    run = stress_get(user=request.user, pk=pk)
    results = run.results or {}
    rows = table_rows(run) if run.status == StressRun.Status.COMPLETED else []
    return render(
        request,
        "backtester/stress/detail.html",
        {
            "run": run,
            "backtest": run.backtest,
            "symbols": backtest_symbols(run.backtest),
            "state": status_payload(run),
            "window_rows": [r for r in rows if r["kind"] == "window"],
            "shock_rows": [r for r in rows if r["kind"] != "window"],
            "warmup_bars": results.get("warmup_bars"),
        },
    )


def hub_context(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    """The research hub's stress-test section (see views/research.py HUB_SECTIONS)."""
    return {"stress_recent": list(stress_runs_for(request.user)[:5])}


urlpatterns = [
    path("stress/", stress_list, name="stress_list"),
    path("stress/<int:pk>/", stress_detail, name="stress_detail"),
    path("backtests/<int:pk>/stress/", stress_create_view, name="stress_create"),
]
