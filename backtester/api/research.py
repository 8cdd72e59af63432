"""/api/v1/research/: parameter optimizations and walk-forward analyses.

    GET    research/optimizations/                          my optimizations, newest first
                                                            (paginated; ?status=)
    POST   research/optimizations/                          submit -> 202 queued; poll links.self
    GET    research/optimizations/<id>/                     status, progress, best so far, setup
    GET    research/optimizations/<id>/rows/                evaluated combinations (paginated;
                                                            ?sort= ?dir= ?qualified=)
    POST   research/optimizations/<id>/rows/<row>/backtest/ backtest one row's parameters
                                                            -> 202 queued (201: an identical
                                                            run's result was reused)
    POST   research/optimizations/<id>/cancel/              cancel a queued or running one
    GET    research/walkforwards/                           my walk-forwards, newest first
                                                            (paginated; ?status=)
    POST   research/walkforwards/                           submit -> 202 queued; poll links.self
    GET    research/walkforwards/<id>/                      status, windows (in- and out-of-
                                                            sample metrics, chosen parameters),
                                                            efficiency, parameter stability
    GET    research/walkforwards/<id>/equity/               the stitched out-of-sample equity,
                                                            downsampled (?points=)
    POST   research/walkforwards/<id>/cancel/               cancel a queued or running one

Submitting goes through the same services as the web forms (``optimization_create``,
``walkforward_create``), so every check and plan limit is the same. Input errors are 400s
naming the field; nested ones use dotted paths (``ranges.fast``, ``settings.taker_fee``).
Metrics are the engine's: fractions for returns (0.12 is 12 %); JSON has no infinity, so an
infinite metric (a profit factor without a losing trade) is the string "inf" or "-inf", and an
undefined one is null. Authentication and Pro come from the API defaults; another user's job or
row is a 404; every refusal uses the project's error format (config/api.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from django.urls import path, reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.gating import AuthenticatedRequest
from backtester.api.backtests import DateOrDateTimeField, backtest_response
from backtester.api.filters import StatusListField
from backtester.api.generic import (
    JsonListView,
    RunKind,
    cancel_view,
    detail_view,
    queue_schema,
)
from backtester.api.parsing import optional_int, optional_seed, validated, validated_query
from backtester.api.responses import BacktestSerializer
from backtester.engine.optimize import OBJECTIVES, ROW_METRICS
from backtester.models import (
    OptimizationJob,
    OptimizationRow,
    Strategy,
    WalkForwardJob,
)
from backtester.models.research import JobStatus
from backtester.selectors.backtests import series_by_ids
from backtester.selectors.research import (
    SORTABLE,
    optimization_get,
    optimization_row_get,
    optimization_rows,
    optimizations_for,
    walkforward_get,
    walkforwards_for,
)
from backtester.services.backtests import normalize_settings
from backtester.services.optimization import (
    json_number,
    optimization_cancel,
    optimization_create,
    optimization_row_backtest,
)
from backtester.services.walkforward import walkforward_cancel, walkforward_create
from config.api_schema import error_response
from config.exceptions import ApplicationError, Conflict

TAGS = ["research"]
STATUS_HELP = "queued, running, completed, failed or cancelled."
EQUITY_POINTS_DEFAULT = 1000
EQUITY_POINTS_MAX = 5000
BUSY = error_response("Too many research jobs queued or running for the plan; wait or cancel one.")
FINISHED = error_response("The job has already finished (completed, failed or cancelled).")
METRIC_HELP = 'A number; "inf"/"-inf" for an infinity; null when undefined.'

JobT = TypeVar("JobT", OptimizationJob, WalkForwardJob)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _metric(value: Any) -> float | str | None:
    """A metric for a JSON answer: finite floats as they are, "inf"/"-inf", NaN/None as null.
    Stored JSON metrics already use the strings; they pass through."""
    if value is None or value in ("inf", "-inf"):
        return value
    return json_number(value)


def _metrics(source: Mapping[str, Any]) -> dict[str, Any]:
    """The ROW_METRICS of a row-like mapping, as the API shows them (trades a whole number)."""
    out = {key: _metric(source.get(key)) for key in ROW_METRICS}
    trades = out["trades"]
    out["trades"] = int(trades) if isinstance(trades, float) else trades
    return out


# --- input ------------------------------------------------------------------------------------


class ResearchCreateSerializer(serializers.Serializer):
    strategy = serializers.IntegerField(min_value=1, help_text="Id of one of my strategies.")
    series = serializers.IntegerField(
        min_value=1, help_text="Id of a market series (GET /api/v1/market-data/series/)."
    )
    start = DateOrDateTimeField(required=False, help_text="Default: the series' first candle.")
    end = DateOrDateTimeField(
        required=False,
        help_text="A date includes that whole day. Default: the series' last candle.",
    )
    settings = serializers.DictField(
        required=False,
        default=dict,
        help_text="Engine settings as for a backtest (fractions: taker_fee 0.001 is 0.1 %).",
    )
    ranges = serializers.DictField(
        required=False,
        default=dict,
        help_text='Per parameter, the values to try: a list ([5, 10, 15]) or {"low", "high", '
        '"step"}. Parameters left out use their declared range (or stay at their value).',
    )
    method = serializers.ChoiceField(
        choices=OptimizationJob.Method.choices, default=OptimizationJob.Method.GRID
    )
    samples = optional_int("random: how many distinct combinations to draw (required there).")
    seed = optional_seed(
        "random: the same seed draws the same sample. Null: a random one (returned)."
    )
    objective = serializers.ChoiceField(
        choices=[(o.key, o.label) for o in OBJECTIVES.values()],
        default="sharpe",
        help_text="The metric ranked by; larger is better.",
    )
    constraint = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=500,
        help_text="Only combinations where this holds, e.g. fast < slow.",
    )
    min_trades = serializers.IntegerField(
        min_value=0, default=0, help_text="Runs with fewer closed trades are kept but not ranked."
    )
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=160)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("method") == OptimizationJob.Method.RANDOM and not attrs.get("samples"):
            raise serializers.ValidationError(
                {"samples": ["Say how many combinations to draw (random search)."]}
            )
        return attrs


class WalkForwardCreateSerializer(ResearchCreateSerializer):
    train = serializers.IntegerField(min_value=1, help_text="Training length, in `unit`s.")
    test = serializers.IntegerField(min_value=1, help_text="Test length, in `unit`s.")
    step = optional_int("How far each window moves on (at least `test`). Null: `test`.")
    mode = serializers.ChoiceField(
        choices=WalkForwardJob.Mode.choices, default=WalkForwardJob.Mode.ROLLING
    )
    unit = serializers.ChoiceField(
        choices=WalkForwardJob.Unit.choices, default=WalkForwardJob.Unit.BARS
    )


class JobFilter(serializers.Serializer):
    status = StatusListField(choices=list(JobStatus.values), required=False)


class RowQuery(serializers.Serializer):
    sort = serializers.CharField(
        required=False,
        max_length=80,
        help_text="objective (default), index, a metric ("
        + ", ".join(ROW_METRICS)
        + ") or param:<name>. Rows without a value come last either way.",
    )
    dir = serializers.ChoiceField(
        choices=[("desc", "desc"), ("asc", "asc")], required=False, help_text="Default desc."
    )
    qualified = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: only ranked rows; false: only rows left unranked.",
    )


class EquityQuery(serializers.Serializer):
    points = serializers.IntegerField(
        min_value=3,
        max_value=EQUITY_POINTS_MAX,
        required=False,
        default=EQUITY_POINTS_DEFAULT,
        help_text=f"How many points to return, 3 to {EQUITY_POINTS_MAX} "
        f"(default {EQUITY_POINTS_DEFAULT}); longer curves are downsampled (LTTB).",
    )


# --- output (documents the dicts built below) -------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "number", "format": "double"},
            {"type": "string", "enum": ["inf", "-inf"]},
        ],
        "description": METRIC_HELP,
    }
)
class MetricField(serializers.Field):
    """Describes a metric value; the views build the value with ``_metric``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> Any:
        return value


class RowMetricsSerializer(serializers.Serializer):
    total_return = MetricField()
    cagr = MetricField()
    sharpe = MetricField()
    sortino = MetricField()
    calmar = MetricField()
    max_drawdown = MetricField()
    return_over_drawdown = MetricField()
    profit_factor = MetricField()
    win_rate = MetricField()
    trades = serializers.IntegerField(allow_null=True)
    exposure = MetricField()
    annual_volatility = MetricField()
    fees_paid = MetricField()
    final_equity = MetricField()


class InSampleMetricsSerializer(RowMetricsSerializer):
    objective = MetricField(help_text="The objective's value of the winner on the training part.")


class BestSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Combination index (0-based).")
    params = serializers.DictField()
    objective = MetricField()
    metrics = RowMetricsSerializer()


class OptimizationLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    rows = serializers.URLField()
    cancel = serializers.URLField()
    page = serializers.URLField(help_text="The job's page in the web app.")
    websocket = serializers.CharField(help_text="Path of the live progress websocket.")


class _JobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=JobStatus.choices, help_text=STATUS_HELP)
    progress = serializers.FloatField(help_text="0..1")
    error = serializers.CharField(allow_blank=True)
    strategy = serializers.IntegerField(
        allow_null=True, help_text="The strategy's id (null once it is deleted)."
    )
    strategy_name = serializers.CharField(allow_blank=True)
    series = serializers.IntegerField(allow_null=True, help_text="Null once it is deleted.")
    symbol = serializers.CharField(allow_null=True)
    timeframe = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(help_text="The last instant included.")
    settings = serializers.DictField(help_text="Engine settings; fees are fractions.")
    ranges = serializers.DictField(
        child=serializers.ListField(), help_text="Each parameter's candidate values."
    )
    method = serializers.ChoiceField(choices=OptimizationJob.Method.choices)
    samples = serializers.IntegerField(allow_null=True)
    seed = serializers.IntegerField()
    objective = serializers.CharField()
    constraint = serializers.CharField(allow_blank=True)
    min_trades = serializers.IntegerField()
    combinations = serializers.IntegerField(help_text="Combinations evaluated per search.")
    candle_count = serializers.IntegerField()
    timings = serializers.DictField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class OptimizationSerializer(_JobSerializer):
    done = serializers.IntegerField(help_text="Combinations evaluated so far.")
    qualified = serializers.IntegerField(help_text="Of those, how many are ranked.")
    chunks = serializers.IntegerField()
    chunks_done = serializers.IntegerField()
    space_size = serializers.IntegerField(help_text="Points in the whole grid of the ranges.")
    best = BestSerializer(
        allow_null=True, help_text="The best ranked row so far (null until there is one)."
    )
    links = OptimizationLinksSerializer()


class OptimizationRowSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The row's id, for rows/<id>/backtest/.")
    index = serializers.IntegerField(help_text="Combination index (0-based).")
    params = serializers.DictField()
    objective = MetricField(help_text="Null when the row is not ranked.")
    qualified = serializers.BooleanField(
        help_text="False: fewer trades than min_trades, or the objective is undefined."
    )
    metrics = RowMetricsSerializer()
    backtest = serializers.URLField(help_text="POST here to backtest these parameters.")


class WalkForwardLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    equity = serializers.URLField()
    cancel = serializers.URLField()
    page = serializers.URLField(help_text="The job's page in the web app.")
    websocket = serializers.CharField(help_text="Path of the live progress websocket.")


class WalkForwardSummarySerializer(_JobSerializer):
    mode = serializers.ChoiceField(choices=WalkForwardJob.Mode.choices)
    unit = serializers.ChoiceField(choices=WalkForwardJob.Unit.choices)
    train = serializers.IntegerField()
    test = serializers.IntegerField()
    step = serializers.IntegerField()
    window_count = serializers.IntegerField()
    windows_done = serializers.IntegerField()
    efficiency = serializers.FloatField(
        allow_null=True,
        help_text="Walk-forward efficiency: out-of-sample CAGR over the mean in-sample CAGR.",
    )
    in_sample_cagr = serializers.FloatField(
        allow_null=True, help_text="Mean CAGR of the winners on their training windows."
    )
    oos_metrics = serializers.DictField(
        help_text="Every engine metric of the stitched out-of-sample run (empty until "
        "completed); " + METRIC_HELP
    )
    links = WalkForwardLinksSerializer()


class WindowSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    train_start = serializers.IntegerField(help_text="First training bar (index in the range).")
    train_end = serializers.IntegerField(help_text="Bar after the last training bar.")
    test_start = serializers.IntegerField()
    test_end = serializers.IntegerField()
    train_from = serializers.IntegerField(help_text="Epoch ms of the first training bar.")
    train_to = serializers.IntegerField(help_text="Epoch ms of the last training bar.")
    test_from = serializers.IntegerField()
    test_to = serializers.IntegerField()
    params = serializers.DictField(
        allow_null=True,
        help_text="The parameters chosen on the training part; null if none qualified (the "
        "test part is then sat out in cash).",
    )
    in_sample = InSampleMetricsSerializer(allow_null=True)
    out_of_sample = RowMetricsSerializer()
    start_equity = serializers.FloatField()
    end_equity = serializers.FloatField()
    evaluated = serializers.IntegerField()
    qualified = serializers.IntegerField()
    efficiency = MetricField(help_text="This window's out-of-sample over in-sample CAGR.")


class WalkForwardSerializer(WalkForwardSummarySerializer):
    windows = WindowSerializer(many=True, help_text="The windows done so far, in order.")
    stability = serializers.DictField(
        child=serializers.DictField(),
        help_text="Per parameter, how steady the chosen values were: values, distinct, mode, "
        "mode_share, and for numbers mean and cv.",
    )


class WalkForwardEquitySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    bars = serializers.IntegerField(help_text="Out-of-sample bars in the stitched curve.")
    points = serializers.IntegerField(help_text="Points returned (downsampled with LTTB).")
    timestamp = serializers.ListField(
        child=serializers.IntegerField(), help_text="Epoch milliseconds."
    )
    equity = serializers.ListField(child=serializers.FloatField())


# --- answers ------------------------------------------------------------------------------------


def _job_common(job: OptimizationJob | WalkForwardJob) -> dict[str, Any]:
    series = job.series if job.series_id else None
    return {
        "id": job.pk,
        "name": str(job),
        "status": job.status,
        "progress": round(job.progress, 4),
        "error": job.error,
        "strategy": job.strategy_id,
        "strategy_name": (job.spec or {}).get("name", ""),
        "series": job.series_id,
        "symbol": series.symbol if series is not None else None,
        "timeframe": job.timeframe,
        "start": _iso(job.start_ts),
        "end": _iso(job.end_ts),
        "settings": job.settings,
        "ranges": job.ranges,
        "method": job.method,
        "samples": job.samples,
        "seed": job.seed,
        "objective": job.objective,
        "constraint": job.constraint,
        "min_trades": job.min_trades,
        "combinations": job.combinations,
        "candle_count": job.candle_count,
        "timings": job.timings,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def _url(request: Request, name: str, **kwargs: int) -> str:
    return request.build_absolute_uri(reverse(name, kwargs=kwargs))


def optimization_json(request: Request, job: OptimizationJob) -> dict[str, Any]:
    best = None
    if job.best_index is not None:
        best = {
            "index": job.best_index,
            "params": job.best_params or {},
            "objective": _metric(job.best_objective),
            "metrics": _metrics(job.best_metrics or {}),
        }
    return {
        **_job_common(job),
        "done": job.done,
        "qualified": job.qualified,
        "chunks": job.chunk_count,
        "chunks_done": job.chunks_done,
        "space_size": job.space_size,
        "best": best,
        "links": {
            "self": _url(request, "api_optimization_detail", pk=job.pk),
            "rows": _url(request, "api_optimization_rows", pk=job.pk),
            "cancel": _url(request, "api_optimization_cancel", pk=job.pk),
            "page": _url(request, "backtester:optimization_detail", pk=job.pk),
            "websocket": job.socket_path,
        },
    }


def row_json(request: Request, job: OptimizationJob, row: OptimizationRow) -> dict[str, Any]:
    return {
        "id": row.pk,
        "index": row.index,
        "params": row.params,
        "objective": _metric(row.objective),
        "qualified": row.qualified,
        "metrics": _metrics({key: getattr(row, key) for key in ROW_METRICS}),
        "backtest": _url(request, "api_optimization_row_backtest", pk=job.pk, row=row.pk),
    }


def walkforward_summary_json(request: Request, job: WalkForwardJob) -> dict[str, Any]:
    """A walk-forward without its windows and stability (the list's rows defer them)."""
    return {
        **_job_common(job),
        "mode": job.mode,
        "unit": job.unit,
        "train": job.train,
        "test": job.test,
        "step": job.step,
        "window_count": job.window_count,
        "windows_done": job.windows_done,
        "efficiency": job.efficiency,
        "in_sample_cagr": job.in_sample_cagr,
        "oos_metrics": {k: _metric(v) for k, v in (job.oos_metrics or {}).items()},
        "links": {
            "self": _url(request, "api_walkforward_detail", pk=job.pk),
            "equity": _url(request, "api_walkforward_equity", pk=job.pk),
            "cancel": _url(request, "api_walkforward_cancel", pk=job.pk),
            "page": _url(request, "backtester:walkforward_detail", pk=job.pk),
            "websocket": job.socket_path,
        },
    }


def _window_json(window: Mapping[str, Any]) -> dict[str, Any]:
    in_sample = window.get("in_sample")
    return {
        **{
            key: window[key]
            for key in (
                "index",
                "train_start",
                "train_end",
                "test_start",
                "test_end",
                "train_from",
                "train_to",
                "test_from",
                "test_to",
                "start_equity",
                "end_equity",
                "evaluated",
                "qualified",
            )
        },
        "params": window.get("params"),
        "in_sample": None
        if in_sample is None
        else {**_metrics(in_sample), "objective": _metric(in_sample.get("objective"))},
        "out_of_sample": _metrics(window.get("out_of_sample") or {}),
        "efficiency": _metric(window.get("efficiency")),
    }


def walkforward_json(request: Request, job: WalkForwardJob) -> dict[str, Any]:
    return {
        **walkforward_summary_json(request, job),
        "windows": [_window_json(w) for w in job.windows or ()],
        "stability": job.stability or {},
    }


# --- submitting -------------------------------------------------------------------------------


def _submit(
    request: AuthenticatedRequest,
    create: Callable[..., JobT],
    data: dict[str, Any],
    **extra: Any,
) -> JobT:
    """Look up the strategy and the market, then call the form's service; its errors keep
    their class and get a field path the request can be matched against."""
    user = request.user
    strategy = Strategy.objects.filter(owner=user, pk=data["strategy"]).first()
    if strategy is None:
        raise ApplicationError("Strategy not found.", field="strategy")
    found = series_by_ids(user, [data["series"]])
    if not found:
        raise ApplicationError("Market data not found.", field="series")
    series = found[0]
    # series_by_ids gives only series with candles (count > 0), whose ends are set.
    assert series.first_ts is not None
    assert series.last_ts is not None
    try:
        normalize_settings(data["settings"])
    except ApplicationError as exc:
        field = f"settings.{exc.field}" if exc.field else "settings"
        raise type(exc)(exc.message, field=field, extra=exc.extra) from None
    random = data["method"] == OptimizationJob.Method.RANDOM
    try:
        return create(
            user=user,
            strategy=strategy,
            series=series,
            start=data.get("start", int(series.first_ts)),
            end=data.get("end", int(series.last_ts)),
            settings=data["settings"],
            ranges=data["ranges"],
            method=data["method"],
            samples=data["samples"] if random else None,
            seed=data["seed"],
            objective=data["objective"],
            constraint=data["constraint"],
            min_trades=data["min_trades"],
            name=data["name"],
            **extra,
        )
    except ApplicationError as exc:
        param = exc.extra.get("param") if isinstance(exc.extra, dict) else None
        if exc.field == "ranges" and param:
            raise type(exc)(exc.message, field=f"ranges.{param}", extra=exc.extra) from None
        raise


# --- views ------------------------------------------------------------------------------------

OPTIMIZATION = RunKind(TAGS, optimization_get, optimization_json)
WALKFORWARD = RunKind(TAGS, walkforward_get, walkforward_json)


class _JobListView(JsonListView):
    # My jobs of one kind, newest first, optionally only some statuses (?status=); no
    # docstring, which the schema would take as the subclasses' description.

    jobs_for: Callable[[Any], Any]

    def get_queryset(self) -> Any:
        p = validated_query(JobFilter, self.request)
        jobs = self.jobs_for(self.request.user)
        if "status" in p:
            jobs = jobs.filter(status__in=p["status"])
        return jobs


def _queued(body: dict[str, Any]) -> Response:
    return Response(body, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=TAGS)
class OptimizationListView(_JobListView):
    serializer_class = OptimizationSerializer  # documents optimization_json's shape
    jobs_for = staticmethod(optimizations_for)
    row_json = staticmethod(optimization_json)

    @extend_schema(parameters=[JobFilter], summary="My optimizations, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.json_page(request)

    @queue_schema(
        ResearchCreateSerializer,
        OptimizationSerializer,
        BUSY,
        "Submit a parameter optimization (grid or random search)",
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(ResearchCreateSerializer, request.data)
        return _queued(optimization_json(request, _submit(request, optimization_create, data)))


OptimizationDetailView = detail_view(
    OPTIMIZATION,
    OptimizationSerializer,
    "An optimization: status, progress, the best row so far, its setup",
)


@extend_schema(tags=TAGS)
class OptimizationRowsView(JsonListView):
    serializer_class = OptimizationRowSerializer  # documents row_json's shape

    def get_queryset(self) -> Any:
        job = optimization_get(user=self.request.user, pk=int(self.kwargs["pk"]))
        self.job = job
        p = validated_query(RowQuery, self.request)
        sort = p.get("sort", "objective")
        if sort not in SORTABLE and not (
            sort.startswith("param:") and sort[6:] in (job.ranges or {})
        ):
            choices = ", ".join([*SORTABLE, *(f"param:{n}" for n in job.ranges or {})])
            raise ApplicationError(f"Unknown sort {sort!r}: use one of {choices}.", field="sort")
        rows = optimization_rows(job, sort=sort, descending=p.get("dir", "desc") == "desc")
        if p.get("qualified") is not None:
            rows = rows.filter(qualified=p["qualified"])
        return rows

    def row_json(self, request: Request, obj: Any) -> dict[str, Any]:
        return row_json(request, self.job, obj)

    @extend_schema(
        parameters=[RowQuery],
        summary="An optimization's evaluated combinations, best first by default",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.json_page(request)


@extend_schema(tags=TAGS)
class OptimizationRowBacktestView(APIView):
    @extend_schema(
        request=None,
        responses={
            201: OpenApiResponse(BacktestSerializer, description="An identical run was reused."),
            202: OpenApiResponse(BacktestSerializer, description="Queued; poll links.self."),
            409: error_response("Too many backtests queued or running for the plan."),
        },
        summary="Backtest one row's parameters with the optimization's market and settings",
    )
    def post(self, request: AuthenticatedRequest, pk: int, row: int) -> Response:
        job = optimization_get(user=request.user, pk=pk)
        found = optimization_row_get(job=job, pk=row)
        backtest = optimization_row_backtest(user=request.user, job=job, row=found)
        return backtest_response(request, backtest)


OptimizationCancelView = cancel_view(
    OPTIMIZATION,
    optimization_cancel,
    {200: OptimizationSerializer, 409: FINISHED},
    "Cancel a queued or running optimization (rows already stored stay)",
)


@extend_schema(tags=TAGS)
class WalkForwardListView(_JobListView):
    serializer_class = WalkForwardSummarySerializer  # documents walkforward_summary_json
    jobs_for = staticmethod(walkforwards_for)
    row_json = staticmethod(walkforward_summary_json)

    @extend_schema(
        parameters=[JobFilter],
        summary="My walk-forwards, newest first (without windows: see each one's detail)",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.json_page(request)

    @queue_schema(
        WalkForwardCreateSerializer, WalkForwardSerializer, BUSY, "Submit a walk-forward analysis"
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(WalkForwardCreateSerializer, request.data)
        windows = {key: data[key] for key in ("train", "test", "step", "mode", "unit")}
        job = _submit(request, walkforward_create, data, **windows)
        return _queued(walkforward_json(request, job))


WalkForwardDetailView = detail_view(
    WALKFORWARD,
    WalkForwardSerializer,
    "A walk-forward: status, windows with in- and out-of-sample metrics, the chosen parameters, "
    "efficiency",
)


@extend_schema(tags=TAGS)
class WalkForwardEquityView(APIView):
    @extend_schema(
        parameters=[EquityQuery],
        responses={
            200: WalkForwardEquitySerializer,
            409: error_response("The walk-forward has not completed, so there is no curve yet."),
        },
        summary="The stitched out-of-sample equity of a completed walk-forward",
    )
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        from backtester.results.downsample import lttb_indices

        job = walkforward_get(user=request.user, pk=pk)
        p = validated_query(EquityQuery, request)
        curve = job.curve or {}
        if job.status != WalkForwardJob.Status.COMPLETED or not curve.get("x"):
            raise Conflict(
                f"This walk-forward is {job.get_status_display().lower()}; its stitched "
                "out-of-sample equity exists once it has completed."
            )
        ts = np.asarray(curve["x"], dtype=np.int64)
        equity = np.asarray(curve["y"], dtype=np.float64)
        points = p["points"]
        idx = (
            lttb_indices(ts.astype(np.float64), equity, points)
            if ts.shape[0] > points
            else np.arange(ts.shape[0])
        )
        bars = sum(int(w["test_end"]) - int(w["test_start"]) for w in job.windows or ())
        return Response(
            {
                "id": job.pk,
                "bars": bars,
                "points": int(idx.shape[0]),
                "timestamp": ts[idx].tolist(),
                "equity": equity[idx].tolist(),
            }
        )


WalkForwardCancelView = cancel_view(
    WALKFORWARD,
    walkforward_cancel,
    {200: WalkForwardSerializer, 409: FINISHED},
    "Cancel a queued or running walk-forward (windows already done stay)",
)


_OPT = "research/optimizations/"
_WF = "research/walkforwards/"
urlpatterns = [
    path(_OPT, OptimizationListView.as_view(), name="api_optimization_list"),
    path(f"{_OPT}<int:pk>/", OptimizationDetailView.as_view(), name="api_optimization_detail"),
    path(f"{_OPT}<int:pk>/rows/", OptimizationRowsView.as_view(), name="api_optimization_rows"),
    path(
        f"{_OPT}<int:pk>/rows/<int:row>/backtest/",
        OptimizationRowBacktestView.as_view(),
        name="api_optimization_row_backtest",
    ),
    path(
        f"{_OPT}<int:pk>/cancel/", OptimizationCancelView.as_view(), name="api_optimization_cancel"
    ),
    path(_WF, WalkForwardListView.as_view(), name="api_walkforward_list"),
    path(f"{_WF}<int:pk>/", WalkForwardDetailView.as_view(), name="api_walkforward_detail"),
    path(f"{_WF}<int:pk>/equity/", WalkForwardEquityView.as_view(), name="api_walkforward_equity"),
    path(f"{_WF}<int:pk>/cancel/", WalkForwardCancelView.as_view(), name="api_walkforward_cancel"),
]
