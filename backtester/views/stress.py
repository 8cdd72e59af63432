"""Stress-test pages: the form on a backtest (crisis windows, windows of one's own, a gap and a
volatility spike), my stress runs, a run's table of outcomes, and its status JSON."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.engine.stress import NAMED_WINDOWS
from backtester.models import Backtest, StressRun
from backtester.selectors.backtests import backtest_get, backtest_symbols
from backtester.selectors.montecarlo import stress_get, stress_runs_for
from backtester.services.montecarlo import status_payload
from backtester.services.stress import (
    FACTOR_RANGE,
    GAP_RANGE,
    MAX_SPIKE_BARS,
    fmt_day,
    fmt_ms,
    stress_create,
    window_coverage,
)
from config.exceptions import ApplicationError

PAGE_SIZE = 25
CUSTOM_ROWS = 3
STATUS_LABELS = {
    "ok": ("Ran", "ok"),
    "partial": ("Partial data", "warn"),
    "no_data": ("No data", "muted"),
    "error": ("Could not run", "bad"),
}
DATETIME_INPUT = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _local(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


class StressForm(forms.Form):
    """Windows to replay and shocks to apply, in a trader's units (percent, bars, UTC times)."""

    windows = forms.MultipleChoiceField(
        label="Crisis windows",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[(w.key, w.label) for w in NAMED_WINDOWS.values()],
    )
    gap_enabled = forms.BooleanField(label="Add a price gap", required=False)
    gap_change = forms.FloatField(
        label="Gap (%)",
        required=False,
        initial=-20,
        min_value=GAP_RANGE[0] * 100,
        max_value=GAP_RANGE[1] * 100,
        help_text="Every price from that bar on moves by this much (-20 = a 20 % drop).",
        widget=forms.NumberInput(attrs={"step": "any"}),
    )
    gap_at = forms.DateTimeField(
        label="Gap at (UTC)",
        required=False,
        widget=DATETIME_INPUT,
        help_text="The first bar at or after this time opens gapped.",
    )
    vol_enabled = forms.BooleanField(label="Add a volatility spike", required=False)
    vol_factor = forms.FloatField(
        label="Volatility factor",
        required=False,
        initial=3,
        min_value=FACTOR_RANGE[0],
        max_value=FACTOR_RANGE[1],
        help_text="Each bar's moves are multiplied by this in log terms (3 = three times as wild).",
        widget=forms.NumberInput(attrs={"step": "any"}),
    )
    vol_bars = forms.IntegerField(
        label="For (bars)", required=False, initial=24, min_value=1, max_value=MAX_SPIKE_BARS
    )
    vol_at = forms.DateTimeField(label="From (UTC)", required=False, widget=DATETIME_INPUT)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for i in range(1, CUSTOM_ROWS + 1):
            self.fields[f"custom_label_{i}"] = forms.CharField(
                label="Name", required=False, max_length=60
            )
            self.fields[f"custom_start_{i}"] = forms.DateField(
                label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
            )
            self.fields[f"custom_end_{i}"] = forms.DateField(
                label="To (inclusive)",
                required=False,
                widget=forms.DateInput(attrs={"type": "date"}),
            )

    def custom_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "label": self[f"custom_label_{i}"],
                "start": self[f"custom_start_{i}"],
                "end": self[f"custom_end_{i}"],
            }
            for i in range(1, CUSTOM_ROWS + 1)
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for i in range(1, CUSTOM_ROWS + 1):
            start, end = data.get(f"custom_start_{i}"), data.get(f"custom_end_{i}")
            if (start is None) != (end is None):
                self.add_error(
                    f"custom_end_{i}" if end is None else f"custom_start_{i}",
                    "Give both dates of the window.",
                )
            elif start and end and end < start:
                self.add_error(f"custom_end_{i}", "The end must be on or after the start.")
        if data.get("gap_enabled"):
            for name in ("gap_change", "gap_at"):
                if data.get(name) is None and name not in self.errors:
                    self.add_error(name, "Needed for the gap.")
        if data.get("vol_enabled"):
            for name in ("vol_factor", "vol_bars", "vol_at"):
                if data.get(name) is None and name not in self.errors:
                    self.add_error(name, "Needed for the spike.")
        return data

    def service_args(self) -> dict[str, Any]:
        data = self.cleaned_data
        custom = []
        for i in range(1, CUSTOM_ROWS + 1):
            if data.get(f"custom_start_{i}") and data.get(f"custom_end_{i}"):
                custom.append(
                    {
                        "label": data.get(f"custom_label_{i}") or "",
                        "start": data[f"custom_start_{i}"],
                        "end": data[f"custom_end_{i}"],
                    }
                )
        shocks: list[dict[str, Any]] = []
        if data.get("gap_enabled"):
            shocks.append(
                {
                    "kind": "gap",
                    "at": _utc(data["gap_at"]),
                    "change": float(data["gap_change"]) / 100.0,
                }
            )
        if data.get("vol_enabled"):
            shocks.append(
                {
                    "kind": "vol_spike",
                    "at": _utc(data["vol_at"]),
                    "bars": int(data["vol_bars"]),
                    "factor": float(data["vol_factor"]),
                }
            )
        return {
            "windows": list(data.get("windows") or []),
            "custom_windows": custom,
            "shocks": shocks,
        }


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


def _pct(value: Any) -> str:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return f"{value * 100:+.2f} %"


def _pp(value: Any) -> str:
    """A difference of two fractions in percentage points."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return f"{value * 100:+.2f} pp"


def _tone(value: Any) -> str:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return "muted"
    return "pos" if value > 0 else "neg" if value < 0 else ""


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
                    "return": _pct(outcome.get("total_return")),
                    "return_tone": _tone(outcome.get("total_return")),
                    "drawdown": _pct(outcome.get("max_drawdown")),
                    "trades": outcome.get("trades"),
                    "open_at_end": outcome.get("open_at_end"),
                    "worst": _pct(worst),
                    "worst_tone": _tone(worst),
                    "market": _pct(outcome.get("market_return")),
                    "market_tone": _tone(outcome.get("market_return")),
                    "market_drawdown": _pct(outcome.get("market_max_drawdown")),
                    "warmup": (row.get("warmup") or {}).get("used"),
                }
            )
        if delta:
            cells.update(
                {
                    "d_return": _pp(delta.get("total_return")),
                    "d_return_tone": _tone(delta.get("total_return")),
                    "d_drawdown": _pp(delta.get("max_drawdown")),
                    "d_drawdown_tone": _tone(delta.get("max_drawdown")),
                    "d_worst": _pp(delta.get("worst_trade")),
                    "d_trades": f"{delta.get('trades', 0):+d}",
                }
            )
        out.append(cells)
    return out


@pro_required
@require_http_methods(["GET", "POST"])
def stress_create_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    backtest = backtest_get(user=request.user, pk=pk)
    status = 200
    if request.method == "POST":
        form = StressForm(request.POST)
        if form.is_valid():
            try:
                run = stress_create(user=request.user, backtest=backtest, **form.service_args())
            except ApplicationError as exc:
                name = _ERROR_FIELDS.get(exc.field or "")
                form.add_error(name if name in form.fields else None, exc.message)
            else:
                return redirect("backtester:stress_detail", pk=run.pk)
        status = 400
    else:
        span = backtest.end_ts - backtest.start_ts
        form = StressForm(
            initial={
                "windows": list(NAMED_WINDOWS),
                "gap_at": _local(backtest.start_ts + span // 2),
                "vol_at": _local(backtest.start_ts + span // 3),
            }
        )
    return render(
        request,
        "backtester/stress/create.html",
        {
            "backtest": backtest,
            "symbols": backtest_symbols(backtest),
            "form": form,
            "completed": backtest.status == Backtest.Status.COMPLETED,
            "coverage": window_coverage(user=request.user, backtest=backtest),
            "start": fmt_ms(backtest.start_ts),
            "end": fmt_ms(backtest.end_ts),
            "runs": list(stress_runs_for(request.user, backtest)[:20]),
        },
        status=status,
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
