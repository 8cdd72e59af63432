"""Research pages: the hub, parameter optimization and walk-forward analysis.

* ``research_hub`` lists my optimizations and walk-forwards (other research tools add their
  own section through ``HUB_SECTIONS``) with buttons to start each tool.
* ``optimization_create`` / ``walkforward_create``: the backtest form's settings (same fields,
  same checks) plus a range per parameter (the declared range by default), the search method,
  samples and seed, the objective, a constraint and a minimum number of trades.
* ``optimization_detail``: live progress and best-so-far while the chunks run; then the best
  parameters, a heatmap over two chosen parameters (the others held at chosen values), return
  against drawdown, and the sortable table, where one click turns a row into a backtest.
* ``walkforward_detail``: live window count; then the stitched out-of-sample equity, in-sample
  against out-of-sample per window, the parameters chosen per window and the walk-forward
  efficiency.
* ``*_status``: the JSON a detail page polls when its websocket cannot connect.

Every view is ``pro_required``; another user's job is a 404.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.module_loading import import_string
from django.views.decorators.http import require_http_methods, require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.engine.optimize import OBJECTIVES, ROW_METRICS
from backtester.forms.backtests import BacktestForm, series_options
from backtester.forms.research import OptimizationForm, ResearchForm, WalkForwardForm
from backtester.models import OptimizationJob, WalkForwardJob
from backtester.results import research_charts as rc
from backtester.selectors.backtests import series_for
from backtester.selectors.research import (
    SORTABLE,
    optimization_get,
    optimization_row_get,
    optimization_rows,
    optimizations_for,
    walkforward_get,
    walkforwards_for,
)
from backtester.selectors.strategies import strategies_for
from backtester.services.backtests import (
    default_market,
    default_range,
    default_strategy_choice,
    fmt_day,
)
from backtester.services.optimization import (
    optimization_cancel,
    optimization_create,
    optimization_row_backtest,
    optimization_state,
)
from backtester.services.strategies import strategy_ensure_preset
from backtester.services.walkforward import (
    walkforward_cancel,
    walkforward_create,
    walkforward_state,
)
from backtester.views.common import run_cancel_view
from config.exceptions import ApplicationError

ROWS_PER_PAGE = 50
# Other research tools add a section to the hub: a dotted path to a function
# ``(request) -> dict`` whose keys join the hub template's context (the template shows them in
# its ``research_more`` block). A module that is not there yet is skipped.
HUB_SECTIONS: tuple[str, ...] = (
    "backtester.views.montecarlo.hub_context",
    "backtester.views.stress.hub_context",
)
METRIC_LABELS: dict[str, str] = {
    "objective": "Objective",
    "total_return": "Return",
    "cagr": "CAGR",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "calmar": "Calmar",
    "max_drawdown": "Max DD",
    "return_over_drawdown": "Return / DD",
    "profit_factor": "Profit factor",
    "win_rate": "Win rate",
    "trades": "Trades",
    "exposure": "Exposure",
    "annual_volatility": "Volatility",
    "fees_paid": "Fees",
    "final_equity": "Final equity",
}
OOS_LABELS = {"cagr": "CAGR", "max_drawdown": "max drawdown"}
PCT_METRICS = frozenset(
    {"total_return", "cagr", "max_drawdown", "win_rate", "exposure", "annual_volatility"}
)
MONEY_METRICS = frozenset({"fees_paid", "final_equity"})
# Sizes rather than gains or losses: no sign, no colour.
UNSIGNED_METRICS = frozenset(
    {"trades", "fees_paid", "final_equity", "exposure", "win_rate", "annual_volatility"}
)
# Ratios that are good above 1 and bad below it (a profit factor of 0.8 loses money).
PIVOT_ONE_METRICS = frozenset({"profit_factor", "payoff_ratio"})
# The results table's metric columns: the row metrics, in their order, but these.
NOT_IN_TABLE = frozenset({"cagr", "exposure", "annual_volatility", "fees_paid", "final_equity"})
TABLE_METRICS = tuple(m for m in ROW_METRICS if m not in NOT_IN_TABLE)


# --- formatting -----------------------------------------------------------------------------


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _number(value: Any) -> float | None:
    """A stored metric as a float: "inf"/"-inf" strings (JSON columns) become infinities."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"inf": math.inf, "-inf": -math.inf}.get(value)
    return float(value)


def fmt_metric(key: str, value: Any) -> tuple[str, str]:
    """(text, css class) of one metric: percentages signed, ratios to 2 decimals, infinities
    as ∞, undefined as an em dash."""
    number = _number(value)
    if number is None or math.isnan(number):
        return "—", "muted"
    pivot = 1.0 if key in PIVOT_ONE_METRICS else 0.0
    css = "pos" if number > pivot else "neg" if number < pivot else ""
    if key in UNSIGNED_METRICS:
        css = ""
    if math.isinf(number):
        return ("∞" if number > 0 else "-∞"), css
    if key in PCT_METRICS:
        if key in UNSIGNED_METRICS:
            return f"{number * 100:.2f} %", css
        return f"{number * 100:+.2f} %", css
    if key == "trades":
        return f"{int(number):,}", css
    if key in MONEY_METRICS:
        return f"{number:,.2f}", css
    return f"{number:.3f}", css


def _params_text(params: Mapping[str, Any] | None) -> str:
    if not params:
        return "—"
    return ", ".join(f"{k}={_value_text(v)}" for k, v in params.items())


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- hub ------------------------------------------------------------------------------------


# The columns of the hub's job lists after Name, Market and Range, each kind its own.
OPTIMIZATION_HEADS = (
    *("Search", "Combinations:num", "Rank by", "Status"),
    *("Best:num", "Best parameters"),
)
WALKFORWARD_HEADS = ("Windows", "Rank by", "Status", "Out-of-sample return:num", "Efficiency:num")


def _job_row(job: OptimizationJob | WalkForwardJob) -> dict[str, Any]:
    return {
        "job": job,
        "market": f"{job.series.symbol} {job.timeframe}" if job.series else "(deleted)",
        "start": fmt_day(job.start_ts),
        "end": fmt_day(job.end_ts),
        "objective": OBJECTIVES[job.objective].label if job.objective in OBJECTIVES else "",
    }


def _hub_sections(request: HttpRequest) -> dict[str, Any]:
    """Context of the other research tools' hub sections (Monte Carlo, stress windows)."""
    context: dict[str, Any] = {}
    for dotted in HUB_SECTIONS:
        provider: Callable[[HttpRequest], Mapping[str, Any]] = import_string(dotted)
        context.update(provider(request))
    return context


@pro_required
def research_hub(request: AuthenticatedHttpRequest) -> HttpResponse:
    optimizations = [_job_row(j) for j in optimizations_for(request.user)[:50]]
    walkforwards = [_job_row(j) for j in walkforwards_for(request.user)[:50]]
    for row in optimizations:
        job = row["job"]
        row["best"] = fmt_metric(job.objective, job.best_objective)
        row["best_params"] = _params_text(job.best_params)
    for row in walkforwards:
        job = row["job"]
        row["efficiency"] = fmt_metric("ratio", job.efficiency)
        row["oos_return"] = fmt_metric("total_return", (job.oos_metrics or {}).get("total_return"))
    context = {
        "optimizations": optimizations,
        "walkforwards": walkforwards,
        "optimization_heads": OPTIMIZATION_HEADS,
        "walkforward_heads": WALKFORWARD_HEADS,
        **_hub_sections(request),
    }
    return render(request, "backtester/research/hub.html", context)


# --- create ---------------------------------------------------------------------------------


def _initial_from_optimization(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    """``?from_optimization=<id>``: a walk-forward (or a new search) set up like one of the
    user's optimizations: its strategy, market, dates, settings (fees, slippage, stops, sizing),
    search method, objective, constraint and minimum trades."""
    raw = request.GET.get("from_optimization") or ""
    if not raw.isdigit() or len(raw) > 18:
        return {}
    try:
        job = optimization_get(user=request.user, pk=int(raw))
    except Http404:
        return {}
    out: dict[str, Any] = BacktestForm.initial_from_settings(job.settings)
    if job.strategy_id:
        out["strategy"] = f"s:{job.strategy_id}"
    if job.series_id:
        out["series"] = str(job.series_id)
    out.update(start=fmt_day(job.start_ts), end=fmt_day(job.end_ts))
    search = ("method", "samples", "seed", "objective", "constraint", "min_trades")
    out.update({name: getattr(job, name) for name in search})
    return out


def _submit(
    request: AuthenticatedHttpRequest,
    form: ResearchForm,
    create: Callable[..., OptimizationJob | WalkForwardJob],
    extra: dict[str, Any],
) -> OptimizationJob | WalkForwardJob | None:
    """Call the service with the form's values; errors land on the form (None returned)."""
    data = form.cleaned_data
    series = next((s for s in form.series_rows if str(s.pk) == data["series"]), None)
    if series is None:
        form.add_error("series", "Market data not found.")
        return None
    blank = default_range([series])
    start: Any = data["start"] or (blank[0] if blank else 0)
    end: Any = data["end"] or (blank[1] if blank else 0)
    choice = data["strategy"]
    try:
        strategy = (
            strategy_ensure_preset(user=request.user, preset=choice.split(":", 1)[1])
            if choice.startswith("preset:")
            else form.strategy_objects[choice]
        )
        return create(
            user=request.user,
            strategy=strategy,
            series=series,
            start=start,
            end=end,
            settings=form.settings(),
            ranges=form.ranges(),
            method=data["method"],
            samples=data.get("samples") if data["method"] == "random" else None,
            seed=data.get("seed"),
            objective=data["objective"],
            constraint=data.get("constraint") or "",
            min_trades=data["min_trades"],
            name=data.get("name") or "",
            **extra,
        )
    except ApplicationError as exc:
        form.show_error(exc)
        return None


def _form_page(
    request: AuthenticatedHttpRequest,
    form_class: type[ResearchForm],
    template: str,
    create: Callable[..., OptimizationJob | WalkForwardJob],
    detail: str,
    extra: Callable[[dict[str, Any]], dict[str, Any]],
) -> HttpResponse:
    strategies = list(strategies_for(request.user))
    series = list(series_for(request.user))
    if request.method == "POST":
        form = form_class(request.POST, strategies=strategies, series=series)
        if form.is_valid():
            job = _submit(request, form, create, extra(form.cleaned_data))
            if job is not None:
                return redirect(detail, pk=job.pk)
        status = 400
        chosen = [request.POST.get("series", "")]
    else:
        initial = {
            "strategy": default_strategy_choice(
                strategies,
                strategy_id=request.GET.get("strategy"),
                preset=request.GET.get("preset"),
            ),
            "series": default_market(series, series_id=request.GET.get("series")),
            **_initial_from_optimization(request),
        }
        form = form_class(initial=initial, strategies=strategies, series=series)
        chosen = [initial["series"] or ""]
        status = 200
    groups = [
        {
            **g,
            "rows": [
                {**row, "fields": {part: form[name] for part, name in row["names"].items()}}
                for row in g["rows"]
            ],
        }
        for g in form.range_groups
    ]
    return render(
        request,
        template,
        {
            "form": form,
            "range_groups": groups,
            "selected_strategy": form["strategy"].value(),
            "series_options": series_options(form, chosen),
            "has_series": bool(series),
            "objectives": list(OBJECTIVES.values()),
            "limit": request.user.plan.max_optimization_combinations,
        },
        status=status,
    )


@pro_required
@require_http_methods(["GET", "POST"])
def optimization_create_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _form_page(
        request,
        OptimizationForm,
        "backtester/research/optimization_form.html",
        optimization_create,
        "backtester:optimization_detail",
        lambda data: {},
    )


@pro_required
@require_http_methods(["GET", "POST"])
def walkforward_create_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _form_page(
        request,
        WalkForwardForm,
        "backtester/research/walkforward_form.html",
        walkforward_create,
        "backtester:walkforward_detail",
        lambda data: {
            "train": data["train"],
            "test": data["test"],
            "step": data.get("step"),
            "mode": data["mode"],
            "unit": data["unit"],
        },
    )


# --- optimization results -------------------------------------------------------------------


def _sort_links(request: HttpRequest, sort: str, descending: bool) -> dict[str, dict[str, str]]:
    """For each sortable column: the URL that sorts by it (toggling when already sorted) and
    the aria-sort state."""
    links: dict[str, dict[str, str]] = {}
    query = request.GET.copy()
    query.pop("page", None)
    for key in SORTABLE:
        query["sort"] = key
        query["dir"] = "asc" if (key == sort and descending) else "desc"
        state = ("descending" if descending else "ascending") if key == sort else "none"
        links[key] = {"url": "?" + query.urlencode() + "#results", "state": state}
    return links


def _table(request: HttpRequest, job: OptimizationJob) -> dict[str, Any]:
    sort = request.GET.get("sort", "objective")
    descending = request.GET.get("dir", "desc") != "asc"
    if not (sort in SORTABLE or (sort.startswith("param:") and sort[6:] in job.ranges)):
        sort = "objective"
    page = Paginator(optimization_rows(job, sort=sort, descending=descending), ROWS_PER_PAGE)
    current = page.get_page(request.GET.get("page"))
    names = list(job.ranges)
    query = request.GET.copy()
    param_links = []
    for name in names:
        key = f"param:{name}"
        query["sort"] = key
        query["dir"] = "asc" if (key == sort and descending) else "desc"
        query.pop("page", None)
        param_links.append(
            {
                "name": name,
                "url": "?" + query.urlencode() + "#results",
                "state": ("descending" if descending else "ascending") if key == sort else "none",
            }
        )
    rows = []
    for row in current.object_list:
        rows.append(
            {
                "row": row,
                "number": row.index + 1,
                "params": [_value_text(row.params.get(n)) for n in names],
                "objective": fmt_metric(job.objective, row.objective),
                "metrics": [
                    fmt_metric(m, getattr(row, m)) for m in TABLE_METRICS if m != job.objective
                ],
                "backtest_url": reverse(
                    "backtester:optimization_backtest", kwargs={"pk": job.pk, "row": row.pk}
                ),
            }
        )
    page_query = request.GET.copy()
    page_query.pop("page", None)
    links = _sort_links(request, sort, descending)
    return {
        "page": current,
        "page_query": page_query.urlencode(),
        "rows": rows,
        "param_links": param_links,
        # The objective has its own column; its metric column would repeat it.
        "metric_columns": [
            {"key": m, "label": METRIC_LABELS[m], **links[m]}
            for m in TABLE_METRICS
            if m != job.objective
        ],
        "sort_links": links,
        "sort": sort,
    }


def _results(request: HttpRequest, job: OptimizationJob) -> dict[str, Any]:
    heat = rc.heatmap_choice(job, request.GET)
    chart_rows = rc.load_chart_rows(job, heat["metric"])
    metrics = [
        (METRIC_LABELS[m], *fmt_metric(m, (job.best_metrics or {}).get(m)))
        for m in ROW_METRICS
        if m in METRIC_LABELS
    ]
    half = (len(metrics) + 1) // 2
    best = {
        "columns": [metrics[:half], metrics[half:]],
        "params": job.best_params,
        "params_text": _params_text(job.best_params),
        "objective": fmt_metric(job.objective, job.best_objective),
        "metrics": metrics,
        "row_pk": (
            job.rows.filter(index=job.best_index).values_list("pk", flat=True).first()
            if job.best_index is not None
            else None
        ),
    }
    return {
        "best": best,
        "heatmap": {**heat, "figure": rc.heatmap_figure(job, chart_rows, heat)},
        "scatter": rc.scatter_figure(job, chart_rows),
        "table": _table(request, job),
        "metric_choices": [
            ("objective", "Objective"),
            *[(m, METRIC_LABELS[m]) for m in ROW_METRICS],
        ],
    }


@pro_required
def optimization_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    job = optimization_get(user=request.user, pk=pk)
    context = _job_context(job, optimization_state(job))
    if job.done:
        context.update(_results(request, job))
    return render(request, "backtester/research/optimization_detail.html", context)


optimization_cancel_view = run_cancel_view(
    optimization_get, optimization_cancel, optimization_state, label="Optimization"
)


@pro_required
@require_POST
def optimization_backtest_view(
    request: AuthenticatedHttpRequest, pk: int, row: int
) -> HttpResponse:
    job = optimization_get(user=request.user, pk=pk)
    found = optimization_row_get(job=job, pk=row)
    try:
        backtest = optimization_row_backtest(user=request.user, job=job, row=found)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("backtester:optimization_detail", pk=job.pk)
    if backtest.cached_from_id:
        messages.info(
            request, "An identical backtest over the same data already ran: here is its result."
        )
    return redirect("backtester:backtest_detail", pk=backtest.pk)


# --- walk-forward results -------------------------------------------------------------------


def _same_market_query(job: OptimizationJob | WalkForwardJob) -> str:
    """The query that opens a research form on this job's strategy and market."""
    strategy = [f"strategy={job.strategy_id}"] if job.strategy_id else []
    return "&".join([*strategy, f"series={job.series_id}"])


def _job_context(job: OptimizationJob | WalkForwardJob, state: dict[str, Any]) -> dict[str, Any]:
    """What both research pages show of a job: its state for the live script and its setup."""
    ranges = job.ranges.items()
    return {
        "job": job,
        "same_market": _same_market_query(job),
        "state": {"type": "run.status", **state},
        "objective": OBJECTIVES.get(job.objective),
        "start": fmt_day(job.start_ts),
        "end": fmt_day(job.end_ts),
        "ranges": [(name, ", ".join(_value_text(v) for v in values)) for name, values in ranges],
        "percent": {k: (job.settings.get(k) or 0) * 100 for k in ("taker_fee", "maker_fee")},
    }


def _window_rows(job: WalkForwardJob) -> list[dict[str, Any]]:
    rows = []
    for w in job.windows or ():
        is_m = w.get("in_sample") or {}
        oos = w.get("out_of_sample") or {}
        rows.append(
            {
                "number": int(w["index"]) + 1,
                "train": f"{_when(w['train_from'])} → {_when(w['train_to'])}",
                "test": f"{_when(w['test_from'])} → {_when(w['test_to'])}",
                "train_bars": w["train_end"] - w["train_start"],
                "test_bars": w["test_end"] - w["test_start"],
                "params": _params_text(w.get("params")),
                "no_winner": w.get("params") is None,
                "is_objective": fmt_metric(job.objective, is_m.get(job.objective)),
                "is_cagr": fmt_metric("cagr", is_m.get("cagr")),
                "is_return": fmt_metric("total_return", is_m.get("total_return")),
                "oos_objective": fmt_metric(job.objective, oos.get(job.objective)),
                "oos_cagr": fmt_metric("cagr", oos.get("cagr")),
                "oos_return": fmt_metric("total_return", oos.get("total_return")),
                "oos_drawdown": fmt_metric("max_drawdown", oos.get("max_drawdown")),
                "oos_trades": fmt_metric("trades", oos.get("trades")),
                "efficiency": fmt_metric("ratio", w.get("efficiency")),
                "qualified": w.get("qualified"),
                "evaluated": w.get("evaluated"),
            }
        )
    return rows


def _stability_rows(job: WalkForwardJob) -> list[dict[str, Any]]:
    rows = []
    for name, entry in (job.stability or {}).items():
        share = _number(entry.get("mode_share"))
        rows.append(
            {
                "name": name,
                "values": ", ".join("—" if v is None else _value_text(v) for v in entry["values"]),
                "distinct": entry.get("distinct"),
                "mode": "—" if entry.get("mode") is None else _value_text(entry["mode"]),
                "mode_share": "—" if share is None or math.isnan(share) else f"{share * 100:.0f} %",
                "mean": fmt_metric("ratio", entry.get("mean"))
                if "mean" in entry
                else ("—", "muted"),
                "cv": fmt_metric("ratio", entry.get("cv")) if "cv" in entry else ("—", "muted"),
            }
        )
    return rows


@pro_required
def walkforward_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    job = walkforward_get(user=request.user, pk=pk)
    oos = job.oos_metrics or {}
    context = _job_context(job, walkforward_state(job))
    context |= {
        "windows": _window_rows(job),
        "stability": _stability_rows(job),
        "efficiency": fmt_metric("ratio", job.efficiency),
        "in_sample_cagr": fmt_metric("cagr", job.in_sample_cagr),
        "oos": [
            (
                f"Out-of-sample {OOS_LABELS.get(m, METRIC_LABELS[m].lower())}",
                *fmt_metric(m, oos.get(m)),
            )
            for m in (
                "total_return",
                "cagr",
                "sharpe",
                "sortino",
                "max_drawdown",
                "profit_factor",
                "win_rate",
                "trades",
            )
        ],
    }
    if job.windows:
        context["figures"] = [
            {**f, "data_id": f"{f['id']}-data"} for f in rc.walkforward_figures(job)
        ]
    return render(request, "backtester/research/walkforward_detail.html", context)


walkforward_cancel_view = run_cancel_view(
    walkforward_get, walkforward_cancel, walkforward_state, label="Walk-forward"
)


_OPT = "research/optimizations/<int:pk>/"
_WF = "research/walkforwards/<int:pk>/"
urlpatterns = [
    path("research/", research_hub, name="research"),
    path("research/optimizations/new/", optimization_create_view, name="optimization_create"),
    path(_OPT, optimization_detail, name="optimization_detail"),
    path(f"{_OPT}cancel/", optimization_cancel_view, name="optimization_cancel"),
    path(
        f"{_OPT}rows/<int:row>/backtest/", optimization_backtest_view, name="optimization_backtest"
    ),
    path("research/walkforwards/new/", walkforward_create_view, name="walkforward_create"),
    path(_WF, walkforward_detail, name="walkforward_detail"),
    path(f"{_WF}cancel/", walkforward_cancel_view, name="walkforward_cancel"),
]
