"""/api/v1/ strategies and backtests.

    GET    strategies/                    my strategies (paginated; ?q=, ?preset=)
    POST   strategies/                    create: rules + params, or {"preset": "sma_cross"}
    GET    strategies/<id>/               one strategy
    PATCH  strategies/<id>/               change some fields (PUT: all of them)
    DELETE strategies/<id>/               delete (its backtests keep their snapshot)
    GET    backtests/                     my backtests (paginated, newest first; ?status=,
                                          ?strategy=, ?symbol=, ?timeframe=, ?created_after=,
                                          ?created_before=: backtester/api/filters.py)
    POST   backtests/                     submit -> 202 queued, or 201 completed from the cache
    GET    backtests/<id>/                status, progress, setup, links
    GET    backtests/<id>/result/         metrics, open positions, export links
    GET    backtests/<id>/exports/<fmt>/  download: trades-csv, equity-csv, json, html (the
                                          same files as the results page; API keys work)
    GET    backtests/<id>/trades/         closed trades (paginated, ?page_size= up to 1000)
    GET    backtests/<id>/equity/         equity and buy-and-hold, downsampled (?points=, <= 5000)
    POST   backtests/<id>/cancel/         cancel a queued or running backtest

Settings are the engine's (fractions: "taker_fee": 0.001 is 0.1 %). Authentication, Pro and
throttling come from the API defaults; another user's object is a 404. Every refusal uses the
project's error format with the field at fault (config/api.py); nothing is created on error.
Lists page with ?page= and ?page_size= (config/pagination.py). The answers built as dicts are
described for the schema in backtester/api/responses.py.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from django.db import transaction
from django.http.response import HttpResponseBase
from django.urls import path, reverse
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.gating import AuthenticatedRequest
from backtester.api.filters import (
    BacktestFilter,
    StrategyFilter,
    filter_backtests,
    filter_strategies,
)
from backtester.api.generic import RunKind, cancel_view, detail_view, write_schema
from backtester.api.parsing import require_fields, validated
from backtester.api.responses import BacktestResultSerializer, BacktestSerializer, EquitySerializer
from backtester.models import Backtest, BacktestResult, BacktestTrade, Strategy
from backtester.results.store import TRADE_FILL_COLUMNS
from backtester.results.views import EXPORT_FORMATS, export_response
from backtester.selectors.backtests import backtest_get, backtests_for, series_by_ids
from backtester.selectors.strategies import strategies_for, strategy_get
from backtester.services.backtests import (
    backtest_cancel,
    backtest_create,
    status_payload,
)
from backtester.services.strategies import (
    strategy_create,
    strategy_delete,
    strategy_from_preset,
    strategy_update,
)
from config.api_schema import error_response
from config.exceptions import ApplicationError, Conflict, NotFound
from config.pagination import ApiPagination

RULE_FIELDS = ("entry_long", "exit_long", "entry_short", "exit_short")
EQUITY_POINTS_DEFAULT = 1000
EQUITY_POINTS_MAX = 5000


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


# --- strategies -----------------------------------------------------------------------------


class StrategySerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Strategy
        fields = (
            "id",
            "url",
            "name",
            "description",
            "preset",
            *RULE_FIELDS,
            "params",
            "param_values",
            "created_at",
            "updated_at",
        )

    def get_url(self, obj: Strategy) -> str:
        return reverse("api_strategy_detail", kwargs={"pk": obj.pk})


class StrategyWriteSerializer(serializers.Serializer):
    """Input shape only; the service checks the rules and parameters."""

    preset = serializers.CharField(required=False, allow_blank=True, max_length=40)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    entry_long = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    exit_long = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    entry_short = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    exit_short = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    params = serializers.ListField(child=serializers.DictField(), required=False, max_length=50)
    param_values = serializers.DictField(required=False)


STRATEGY_TAG = ["strategies"]
BACKTEST_TAG = ["backtests"]
NO_RESULT = error_response("The backtest has not completed, so it has no result (yet).")


@extend_schema(tags=STRATEGY_TAG)
class StrategyListView(ListAPIView):
    request: AuthenticatedRequest

    serializer_class = StrategySerializer

    def get_queryset(self) -> Any:
        return filter_strategies(strategies_for(self.request.user), self.request)

    @extend_schema(parameters=[StrategyFilter], summary="My strategies")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @write_schema(
        StrategyWriteSerializer,
        {201: StrategySerializer},
        "Create a strategy from rules, or from a preset",
    )
    @transaction.atomic  # a preset and its parameter values are saved together or not at all
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(StrategyWriteSerializer, request.data)
        preset = data.pop("preset", "") or ""
        rules_given = any(data.get(rule) for rule in RULE_FIELDS)
        if preset and not rules_given and "params" not in data:
            strategy = strategy_from_preset(
                user=request.user, preset=preset, name=data.get("name") or None
            )
            if data.get("param_values") or data.get("description") is not None:
                strategy = strategy_update(
                    user=request.user,
                    strategy=strategy,
                    **{k: data[k] for k in ("param_values", "description") if k in data},
                )
        else:
            require_fields(data, "name")
            strategy = strategy_create(user=request.user, preset=preset, **data)
        return Response(StrategySerializer(strategy).data, status=status.HTTP_201_CREATED)


_EDIT = (StrategyWriteSerializer, StrategySerializer)  # an edit's body and answer


def _strategy_edit(request: Request) -> dict[str, Any]:
    """The fields of a PATCH or PUT: a strategy's preset is set when it is created, never after."""
    data = validated(StrategyWriteSerializer, request.data)
    data.pop("preset", None)
    return data


@extend_schema(tags=STRATEGY_TAG)
class StrategyDetailView(APIView):
    @extend_schema(responses=StrategySerializer, summary="One strategy")
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        return Response(StrategySerializer(strategy_get(user=request.user, pk=pk)).data)

    @write_schema(*_EDIT, "Change some fields of a strategy")
    def patch(self, request: AuthenticatedRequest, pk: int) -> Response:
        strategy, data = strategy_get(user=request.user, pk=pk), _strategy_edit(request)
        strategy = strategy_update(user=request.user, strategy=strategy, **data)
        return Response(StrategySerializer(strategy).data)

    @write_schema(*_EDIT, "Replace a strategy (fields left out are cleared; name is required)")
    def put(self, request: AuthenticatedRequest, pk: int) -> Response:
        strategy, data = strategy_get(user=request.user, pk=pk), _strategy_edit(request)
        require_fields(data, "name")
        # A full replacement: rules and parameters left out are cleared.
        full = {
            "description": "",
            **dict.fromkeys(RULE_FIELDS, ""),
            "params": [],
            "param_values": {},
            **data,
        }
        strategy = strategy_update(user=request.user, strategy=strategy, **full)
        return Response(StrategySerializer(strategy).data)

    @extend_schema(
        responses={204: None}, summary="Delete a strategy (its backtests keep a snapshot)"
    )
    def delete(self, request: AuthenticatedRequest, pk: int) -> Response:
        strategy_delete(user=request.user, strategy=strategy_get(user=request.user, pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- backtests ------------------------------------------------------------------------------


# Bounds of start/end moments: from the epoch to the end of year 9998 (a whole-day end adds a
# day, and Python's datetime stops at 9999-12-31).
EARLIEST_MS = 0
LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
DAY_MS = 86_400_000


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "integer",
                "format": "int64",
                "minimum": EARLIEST_MS,
                "maximum": LATEST_MS - DAY_MS,
            },
        ],
        "example": "2024-01-31",
    }
)
class DateOrDateTimeField(serializers.Field):
    """ "2024-01-31" (a whole UTC day; as an end it is included) or an ISO 8601 datetime
    (naive is UTC) or epoch milliseconds."""

    default_error_messages = {
        "invalid": "Give a date (YYYY-MM-DD), an ISO 8601 datetime or epoch milliseconds.",
        "out_of_range": "Give a moment between 1970-01-01 and 9998-12-31 (epoch milliseconds "
        f"0 to {LATEST_MS - DAY_MS}).",
    }

    def to_internal_value(self, data: Any) -> date | datetime | int:
        if isinstance(data, int) and not isinstance(data, bool):
            if not EARLIEST_MS <= data <= LATEST_MS - DAY_MS:
                self.fail("out_of_range")
            return data
        if isinstance(data, str):
            text = data.strip()
            day = parse_date(text) if len(text) == 10 else None
            if day is not None:
                return self._in_range(datetime.combine(day, datetime.min.time(), tzinfo=UTC), day)
            try:
                moment = parse_datetime(text)
            except ValueError:
                moment = None
            if moment is not None:
                aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
                return self._in_range(aware, aware)
        self.fail("invalid")
        raise AssertionError  # pragma: no cover - fail() raises

    def _in_range(self, moment: datetime, value: date | datetime) -> date | datetime:
        # A whole day as an end reaches the next midnight: keep a day's margin on both sides.
        try:
            ms = int(moment.timestamp() * 1000)
        except (OverflowError, ValueError):
            self.fail("out_of_range")
        if not EARLIEST_MS <= ms <= LATEST_MS - DAY_MS:
            self.fail("out_of_range")
        return value

    def to_representation(self, value: Any) -> Any:
        return value


class BacktestCreateSerializer(serializers.Serializer):
    strategy = serializers.IntegerField(min_value=1)
    series = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=1, max_length=50
    )
    timeframe = serializers.CharField(required=False, allow_blank=True, max_length=8)
    start = DateOrDateTimeField()
    end = DateOrDateTimeField()
    settings = serializers.DictField(required=False, default=dict)
    param_values = serializers.DictField(required=False, default=dict)
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=160)


def _links(request: Request, backtest: Backtest) -> dict[str, str]:
    def api(name: str) -> str:
        return request.build_absolute_uri(reverse(f"api_{name}", kwargs={"pk": backtest.pk}))

    return {
        "self": api("backtest_detail"),
        "result": api("backtest_result"),
        "trades": api("backtest_trades"),
        "equity": api("backtest_equity"),
        "cancel": api("backtest_cancel"),
        "page": request.build_absolute_uri(
            reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})
        ),
        "websocket": backtest.socket_path,
    }


def backtest_json(request: Request, backtest: Backtest, symbols: list[str]) -> dict[str, Any]:
    state = status_payload(backtest)
    return {
        "id": backtest.pk,
        "name": str(backtest),
        "status": backtest.status,
        "progress": state["progress"],
        "stage": state["stage"],
        "error": backtest.error,
        "strategy": backtest.strategy_id,
        "strategy_name": backtest.spec.get("name", ""),
        "series": list(backtest.series_order),
        "symbols": symbols,
        "timeframe": backtest.timeframe,
        "start": _iso(backtest.start_ts),
        "end": _iso(backtest.end_ts),
        "param_values": backtest.param_values,
        "settings": backtest.settings,
        "cached_from": backtest.cached_from_id,
        "candle_count": backtest.candle_count,
        "engine_seconds": backtest.engine_seconds,
        "timings": backtest.timings,
        "created_at": backtest.created_at,
        "started_at": backtest.started_at,
        "finished_at": backtest.finished_at,
        "links": _links(request, backtest),
    }


def _symbols(backtests: list[Backtest]) -> dict[int, list[str]]:
    from backtester.models import MarketSeries

    ids = {pk for b in backtests for pk in b.series_order}
    names = dict(MarketSeries.objects.filter(pk__in=ids).values_list("pk", "symbol"))
    return {b.pk: [names.get(pk, "?") for pk in b.series_order] for b in backtests}


def backtest_one_json(request: Request, backtest: Backtest) -> dict[str, Any]:
    """``backtest_json`` of one backtest, its symbols looked up."""
    return backtest_json(request, backtest, _symbols([backtest])[backtest.pk])


def backtest_response(request: Request, backtest: Backtest) -> Response:
    """The answer to a submitted backtest: 201 when an identical run's result was reused (it is
    already completed), else 202 (queued)."""
    code = (
        status.HTTP_201_CREATED
        if backtest.status == Backtest.Status.COMPLETED
        else status.HTTP_202_ACCEPTED
    )
    return Response(backtest_one_json(request, backtest), status=code)


@extend_schema(tags=BACKTEST_TAG)
class BacktestListView(ListAPIView):
    request: AuthenticatedRequest

    serializer_class = BacktestSerializer  # documents backtest_json's shape

    def get_queryset(self) -> Any:
        return filter_backtests(backtests_for(self.request.user), self.request)

    @extend_schema(parameters=[BacktestFilter], summary="My backtests, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        symbols = _symbols(page)
        return self.get_paginated_response([backtest_json(request, b, symbols[b.pk]) for b in page])

    @extend_schema(
        request=BacktestCreateSerializer,
        responses={
            201: OpenApiResponse(
                BacktestSerializer, description="An identical run's result was reused."
            ),
            202: OpenApiResponse(BacktestSerializer, description="Queued; poll `links.self`."),
        },
        summary="Submit a backtest",
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(BacktestCreateSerializer, request.data)
        strategy = strategy_get(user=request.user, pk=data["strategy"])
        rows = series_by_ids(request.user, data["series"])
        if len(rows) != len(set(data["series"])):
            raise ApplicationError("Market data not found.", field="series")
        backtest = backtest_create(
            user=request.user,
            strategy=strategy,
            series=rows,
            start=data["start"],
            end=data["end"],
            settings=data["settings"],
            param_values=data["param_values"],
            name=data["name"],
            timeframe=data.get("timeframe") or None,
        )
        return backtest_response(request, backtest)


BACKTEST = RunKind(BACKTEST_TAG, backtest_get, backtest_one_json, noun="backtest")
BacktestDetailView = detail_view(BACKTEST, BacktestSerializer, "A backtest's status and setup")


def _result(request: AuthenticatedRequest, pk: int) -> tuple[Backtest, BacktestResult]:
    backtest = backtest_get(user=request.user, pk=pk)
    result = BacktestResult.objects.filter(backtest=backtest).first()
    if backtest.status != Backtest.Status.COMPLETED or result is None:
        raise Conflict(
            f"This backtest is {backtest.get_status_display().lower()}; it has no result."
        )
    return backtest, result


@extend_schema(tags=BACKTEST_TAG)
class BacktestResultView(APIView):
    @extend_schema(
        responses={200: BacktestResultSerializer, 409: NO_RESULT}, summary="Metrics of a backtest"
    )
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        backtest, result = _result(request, pk)
        # API routes, so a personal API key opens them as it opened this answer.
        exports = {
            fmt: request.build_absolute_uri(
                reverse("api_backtest_export", kwargs={"pk": backtest.pk, "fmt": fmt})
            )
            for fmt in EXPORT_FORMATS
        }
        return Response(
            {
                "id": backtest.pk,
                "metrics": result.metrics,
                "trade_count": result.trade_count,
                "open_positions": result.open_positions,
                "engine_seconds": backtest.engine_seconds,
                "links": {**_links(request, backtest), "exports": exports},
            }
        )


@extend_schema(tags=BACKTEST_TAG)
class BacktestExportView(APIView):
    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The file sets its own type; errors stay JSON whatever the Accept header asks for.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "fmt", str, OpenApiParameter.PATH, enum=list(EXPORT_FORMATS), description="format"
            )
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, "application/json"): OpenApiTypes.BINARY,
            (200, "text/html"): OpenApiTypes.BINARY,
        },
        summary="Download a backtest's trades, equity, result JSON or HTML report",
    )
    def get(self, request: AuthenticatedRequest, pk: int, fmt: str) -> HttpResponseBase:
        backtest = backtest_get(user=request.user, pk=pk)
        if fmt not in EXPORT_FORMATS:
            raise NotFound(f"Unknown export format; use one of {', '.join(EXPORT_FORMATS)}.")
        if backtest.status != Backtest.Status.COMPLETED:
            raise Conflict(
                f"This backtest is {backtest.get_status_display().lower()}; it has no result."
            )
        return export_response(backtest, fmt)


class TradePagination(ApiPagination):
    page_size = 100
    max_page_size = 1000


class TradeSerializer(serializers.ModelSerializer):
    side = serializers.SerializerMethodField()

    class Meta:
        model = BacktestTrade
        fields = ("seq", *TRADE_FILL_COLUMNS, "fees", "pnl", "ret", "bars_held", "exit_reason")

    def get_side(self, obj: BacktestTrade) -> str:
        return "long" if obj.side > 0 else "short"


@extend_schema(tags=BACKTEST_TAG)
class BacktestTradesView(ListAPIView):
    request: AuthenticatedRequest

    serializer_class = TradeSerializer
    pagination_class = TradePagination

    @extend_schema(
        responses={200: TradeSerializer(many=True), 409: NO_RESULT},
        summary="Closed trades of a backtest, in order",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        backtest, _ = _result(self.request, int(self.kwargs["pk"]))
        return BacktestTrade.objects.filter(backtest=backtest).order_by("seq")


@extend_schema(tags=BACKTEST_TAG)
class BacktestEquityView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "points",
                OpenApiTypes.INT,
                description=f"How many points to return, 3 to {EQUITY_POINTS_MAX} "
                f"(default {EQUITY_POINTS_DEFAULT}); longer curves are downsampled.",
            )
        ],
        responses={200: EquitySerializer, 409: NO_RESULT},
        summary="Equity and buy-and-hold curves",
    )
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        from backtester.results.downsample import lttb_indices
        from backtester.results.store import result_curves

        backtest, result = _result(request, pk)
        raw = request.query_params.get("points", str(EQUITY_POINTS_DEFAULT))
        if not raw.isdigit() or not 3 <= int(raw) <= EQUITY_POINTS_MAX:
            raise ApplicationError(
                f"points must be a whole number from 3 to {EQUITY_POINTS_MAX}", field="points"
            )
        curves = result_curves(result)
        ts = curves["timestamp"]
        equity = curves["equity"]
        idx = (
            lttb_indices(ts.astype(np.float64), equity, int(raw))
            if ts.shape[0] > int(raw)
            else np.arange(ts.shape[0])
        )
        benchmark = curves.get("benchmark")
        return Response(
            {
                "id": backtest.pk,
                "bars": int(ts.shape[0]),
                "points": int(idx.shape[0]),
                "timestamp": ts[idx].tolist(),
                "equity": equity[idx].tolist(),
                "benchmark": None if benchmark is None else _finite(benchmark[idx]),
            }
        )


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values.tolist()]


BacktestCancelView = cancel_view(
    BACKTEST,
    backtest_cancel,
    {200: BacktestSerializer, 409: error_response("The backtest has already finished.")},
    "Cancel a queued or running backtest",
)


_ONE = "backtests/<int:pk>/"
urlpatterns = [
    path("strategies/", StrategyListView.as_view(), name="api_strategy_list"),
    path("strategies/<int:pk>/", StrategyDetailView.as_view(), name="api_strategy_detail"),
    path("backtests/", BacktestListView.as_view(), name="api_backtest_list"),
    path("backtests/<int:pk>/", BacktestDetailView.as_view(), name="api_backtest_detail"),
    path("backtests/<int:pk>/result/", BacktestResultView.as_view(), name="api_backtest_result"),
    path(f"{_ONE}exports/<slug:fmt>/", BacktestExportView.as_view(), name="api_backtest_export"),
    path("backtests/<int:pk>/trades/", BacktestTradesView.as_view(), name="api_backtest_trades"),
    path("backtests/<int:pk>/equity/", BacktestEquityView.as_view(), name="api_backtest_equity"),
    path("backtests/<int:pk>/cancel/", BacktestCancelView.as_view(), name="api_backtest_cancel"),
]
