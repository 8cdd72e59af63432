"""Reads for research jobs: a user's optimizations and walk-forwards, one job (404 for anyone but
its owner), an optimization's rows in a chosen order, and the arrays its charts draw."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import F, QuerySet
from django.db.models.fields.json import KeyTransform

from accounts.models import User
from backtester.engine.optimize import ROW_METRICS
from backtester.models import OptimizationJob, OptimizationRow, WalkForwardJob
from config.selectors import first_or_404

# Columns the results table sorts by: the metrics, the objective and the combination number.
SORTABLE = ("objective", "index", *ROW_METRICS)


def optimizations_for(user: User) -> QuerySet[OptimizationJob]:
    """``user``'s optimizations, newest first."""
    return OptimizationJob.objects.filter(owner=user).select_related("series")


def walkforwards_for(user: User) -> QuerySet[WalkForwardJob]:
    """``user``'s walk-forwards, newest first (the heavy result columns left out)."""
    return (
        WalkForwardJob.objects.filter(owner=user)
        .select_related("series")
        .defer("windows", "curve", "stability")
    )


def optimization_get(*, user: User, pk: int) -> OptimizationJob:
    """``user``'s optimization ``pk``; Http404 for a missing one or someone else's."""
    return first_or_404(
        OptimizationJob.objects.filter(owner=user, pk=pk).select_related("series"),
        "Optimization not found.",
    )


def walkforward_get(*, user: User, pk: int) -> WalkForwardJob:
    """``user``'s walk-forward ``pk``; Http404 for a missing one or someone else's."""
    return first_or_404(
        WalkForwardJob.objects.filter(owner=user, pk=pk).select_related("series"),
        "Walk-forward not found.",
    )


def optimization_row_get(*, job: OptimizationJob, pk: int) -> OptimizationRow:
    """Row ``pk`` of ``job`` (whose ownership the caller checked); Http404 otherwise."""
    return first_or_404(OptimizationRow.objects.filter(job=job, pk=pk), "Row not found.")


def optimization_rows(
    job: OptimizationJob, *, sort: str = "objective", descending: bool = True
) -> QuerySet[OptimizationRow]:
    """``job``'s rows ordered by a metric, the objective, the combination number or a parameter
    (``"param:<name>"``); rows without a value sort last either way, ties by combination."""
    if sort.startswith("param:") and sort[6:] in (job.ranges or {}):
        expr: Any = KeyTransform(sort[6:], "params")
    elif sort in SORTABLE:
        expr = F(sort)
    else:
        expr = F("objective")
        descending = True
    order = expr.desc(nulls_last=True) if descending else expr.asc(nulls_last=True)
    return OptimizationRow.objects.filter(job=job).order_by(order, "index")


@dataclass(frozen=True, slots=True)
class ChartRows:
    """Every row of a job as parallel lists (the heatmap and the scatter read these)."""

    index: list[int]
    params: list[dict[str, Any]]
    values: dict[str, list[float | None]]


def optimization_chart_rows(job: OptimizationJob, metrics: Sequence[str]) -> ChartRows:
    """All of ``job``'s rows with the ``metrics`` asked for, in combination order (one query)."""
    wanted = [m for m in dict.fromkeys(metrics) if m in SORTABLE and m != "index"]
    data = OptimizationRow.objects.filter(job=job).order_by("index")
    index: list[int] = []
    params: list[dict[str, Any]] = []
    values: dict[str, list[float | None]] = {m: [] for m in wanted}
    for row in data.values_list("index", "params", *wanted):
        index.append(int(row[0]))
        params.append(row[1])
        for m, v in zip(wanted, row[2:], strict=True):
            values[m].append(None if v is None else float(v))
    return ChartRows(index, params, values)


def heatmap_matrix(
    rows: ChartRows,
    *,
    x: str,
    y: str,
    fixed: Mapping[str, Any],
    metric: str,
    x_values: Sequence[Any],
    y_values: Sequence[Any],
) -> list[list[float | None]]:
    """``metric`` over the (y, x) grid of two parameters, the others held at ``fixed``; None
    where that combination was not evaluated (constraint, sample) or has no value. Infinities
    are kept for the caller to clip."""
    xi = {v: i for i, v in enumerate(x_values)}
    yi = {v: i for i, v in enumerate(y_values)}
    grid: list[list[float | None]] = [[None] * len(x_values) for _ in y_values]
    column = rows.values[metric]
    for params, value in zip(rows.params, column, strict=True):
        if any(params.get(k) != v for k, v in fixed.items()):
            continue
        i, j = yi.get(params.get(y)), xi.get(params.get(x))
        if i is None or j is None or value is None or math.isnan(value):
            continue
        grid[i][j] = value
    return grid
