"""/api/v1/ Monte Carlo and stress runs of a completed backtest.

    GET    backtests/<id>/montecarlo/     the backtest's Monte Carlo runs (paginated, newest first)
    POST   backtests/<id>/montecarlo/     queue a run -> 202; poll links.self
    GET    montecarlo/<id>/               status, settings, and the results once completed
    GET    backtests/<id>/stress/         the backtest's stress runs (paginated, newest first)
    POST   backtests/<id>/stress/         queue a run -> 202; poll links.self
    GET    stress/<id>/                   status, scenarios, and one row per scenario once completed

Fractions as in the engine: ``ruin_threshold`` 0.5 is a 50 % drawdown, a gap ``change`` of -0.2
is -20 %. Authentication and Pro come from the API defaults; another user's backtest or run is a
404; refusals use the project's error format with the field at fault, and create nothing.
"""

from __future__ import annotations

from typing import Any

from django.urls import path, reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.gating import AuthenticatedRequest
from backtester.api.backtests import DateOrDateTimeField
from backtester.api.parsing import validated
from backtester.engine.montecarlo import MAX_ITERATIONS
from backtester.engine.stress import NAMED_WINDOWS
from backtester.models import MonteCarloRun, StressRun
from backtester.models.montecarlo import ResearchStatus
from backtester.selectors.backtests import backtest_get
from backtester.selectors.montecarlo import (
    montecarlo_get,
    montecarlo_runs_for,
    stress_get,
    stress_runs_for,
)
from backtester.services.montecarlo import DEFAULT_ITERATIONS, MIN_ITERATIONS, montecarlo_create
from backtester.services.stress import MAX_CUSTOM_WINDOWS, MAX_SHOCKS, stress_create
from config.api_schema import error_response

TAGS = ["research"]
STATUS_HELP = "queued, running, completed or failed."
NO_RESULT = error_response("The backtest has not completed, or the concurrency limit is reached.")


# --- input ----------------------------------------------------------------------------------


class MonteCarloCreateSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=MonteCarloRun.Method.choices)
    iterations = serializers.IntegerField(
        min_value=MIN_ITERATIONS, max_value=MAX_ITERATIONS, default=DEFAULT_ITERATIONS
    )
    block_length = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        default=None,
        help_text="Bars per block (block method). Null: the cube root of the bar count.",
    )
    ruin_threshold = serializers.FloatField(
        min_value=0.0001,
        max_value=1.0,
        default=0.5,
        help_text="Drawdown fraction that counts as ruin (0.5 = 50 %).",
    )
    seed = serializers.IntegerField(
        min_value=0,
        max_value=2**63 - 1,
        required=False,
        allow_null=True,
        default=None,
        help_text="Null: a random seed (returned, so the run can be repeated).",
    )


class CustomWindowSerializer(serializers.Serializer):
    # DRF's metaclass takes declared fields off the class: "label" shadows no Field.label.
    label = serializers.CharField(  # type: ignore[assignment]
        required=False, allow_blank=True, default="", max_length=60
    )
    start = DateOrDateTimeField()
    end = DateOrDateTimeField(help_text="A date includes that whole day.")


class ShockSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[("gap", "gap"), ("vol_spike", "vol_spike")])
    at = DateOrDateTimeField(help_text="The first bar at or after this time is shocked.")
    change = serializers.FloatField(
        required=False, help_text="gap: the price change as a fraction (-0.2 = -20 %)."
    )
    bars = serializers.IntegerField(required=False, help_text="vol_spike: how many bars.")
    factor = serializers.FloatField(
        required=False, help_text="vol_spike: the multiplier of each bar's log moves."
    )


class StressCreateSerializer(serializers.Serializer):
    windows = serializers.ListField(
        child=serializers.ChoiceField(choices=list(NAMED_WINDOWS)),
        required=False,
        default=list,
        help_text="Named crisis windows: " + ", ".join(NAMED_WINDOWS) + ".",
    )
    custom_windows = serializers.ListField(
        child=CustomWindowSerializer(),
        required=False,
        default=list,
        max_length=MAX_CUSTOM_WINDOWS,
    )
    shocks = serializers.ListField(
        child=ShockSerializer(), required=False, default=list, max_length=MAX_SHOCKS
    )


# --- output (documents the dicts below) -----------------------------------------------------


class RunLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    page = serializers.URLField(help_text="The run's page in the web app.")
    backtest = serializers.URLField()


class MonteCarloRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    backtest = serializers.IntegerField()
    method = serializers.ChoiceField(choices=MonteCarloRun.Method.choices)
    iterations = serializers.IntegerField()
    block_length = serializers.IntegerField(allow_null=True)
    ruin_threshold = serializers.FloatField()
    seed = serializers.IntegerField()
    status = serializers.CharField(help_text=STATUS_HELP)
    error = serializers.CharField(allow_blank=True)
    timings = serializers.DictField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    results = serializers.DictField(
        allow_null=True,
        help_text="Once completed: fan (x, levels, bands p5..p95 and the original path, in "
        "money), histograms (edges, counts) of final_return and max_drawdown, summaries "
        "(mean, std, median, p5, p95, ci_low, ci_high, original) per statistic, ruin "
        "(threshold, probability, paths) and source. Null before.",
    )
    links = RunLinksSerializer()


class StressRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    backtest = serializers.IntegerField()
    windows = serializers.ListField(child=serializers.DictField())
    shocks = serializers.ListField(child=serializers.DictField())
    status = serializers.CharField(help_text=STATUS_HELP)
    error = serializers.CharField(allow_blank=True)
    timings = serializers.DictField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    results = serializers.DictField(
        allow_null=True,
        help_text="Once completed: rows (kind window | baseline | gap | vol_spike; status ok | "
        "partial | no_data | error; message; outcome with total_return, max_drawdown, trades, "
        "worst_trade, market_return...; delta against the baseline for shocks). Null before.",
    )
    links = RunLinksSerializer()


def _links(request: Request, name: str, page: str, run: Any) -> dict[str, str]:
    return {
        "self": request.build_absolute_uri(reverse(name, kwargs={"pk": run.pk})),
        "page": request.build_absolute_uri(reverse(page, kwargs={"pk": run.pk})),
        "backtest": request.build_absolute_uri(
            reverse("api_backtest_detail", kwargs={"pk": run.backtest_id})
        ),
    }


def _common(run: Any) -> dict[str, Any]:
    return {
        "status": run.status,
        "error": run.error,
        "timings": run.timings,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "results": run.results if run.status == ResearchStatus.COMPLETED else None,
    }


def montecarlo_json(request: Request, run: MonteCarloRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "backtest": run.backtest_id,
        "method": run.method,
        "iterations": run.iterations,
        "block_length": run.block_length,
        "ruin_threshold": run.ruin_threshold,
        "seed": run.seed,
        **_common(run),
        "links": _links(request, "api_montecarlo_detail", "backtester:montecarlo_detail", run),
    }


def stress_json(request: Request, run: StressRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "backtest": run.backtest_id,
        "windows": run.windows,
        "shocks": run.shocks,
        **_common(run),
        "links": _links(request, "api_stress_detail", "backtester:stress_detail", run),
    }


# --- views ----------------------------------------------------------------------------------


@extend_schema(tags=TAGS)
class BacktestMonteCarloView(ListAPIView):
    request: AuthenticatedRequest

    serializer_class = MonteCarloRunSerializer  # documents montecarlo_json's shape

    def get_queryset(self) -> Any:
        backtest = backtest_get(user=self.request.user, pk=int(self.kwargs["pk"]))
        return montecarlo_runs_for(self.request.user, backtest)

    @extend_schema(summary="A backtest's Monte Carlo runs, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        return self.get_paginated_response([montecarlo_json(request, run) for run in page])

    @extend_schema(
        request=MonteCarloCreateSerializer,
        responses={
            202: OpenApiResponse(MonteCarloRunSerializer, description="Queued; poll links.self."),
            409: NO_RESULT,
        },
        summary="Queue a Monte Carlo run of a completed backtest",
    )
    def post(self, request: AuthenticatedRequest, pk: int) -> Response:
        backtest = backtest_get(user=request.user, pk=pk)
        data = validated(MonteCarloCreateSerializer, request.data)
        run = montecarlo_create(user=request.user, backtest=backtest, **data)
        return Response(montecarlo_json(request, run), status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=TAGS)
class MonteCarloDetailView(APIView):
    @extend_schema(
        responses=MonteCarloRunSerializer,
        summary="A Monte Carlo run: status, settings, results once completed",
    )
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        return Response(montecarlo_json(request, montecarlo_get(user=request.user, pk=pk)))


@extend_schema(tags=TAGS)
class BacktestStressView(ListAPIView):
    request: AuthenticatedRequest

    serializer_class = StressRunSerializer  # documents stress_json's shape

    def get_queryset(self) -> Any:
        backtest = backtest_get(user=self.request.user, pk=int(self.kwargs["pk"]))
        return stress_runs_for(self.request.user, backtest)

    @extend_schema(summary="A backtest's stress runs, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        return self.get_paginated_response([stress_json(request, run) for run in page])

    @extend_schema(
        request=StressCreateSerializer,
        responses={
            202: OpenApiResponse(StressRunSerializer, description="Queued; poll links.self."),
            409: NO_RESULT,
        },
        summary="Queue a stress run (crisis windows and shocks) of a completed backtest",
    )
    def post(self, request: AuthenticatedRequest, pk: int) -> Response:
        backtest = backtest_get(user=request.user, pk=pk)
        data = validated(StressCreateSerializer, request.data)
        shocks = [{k: v for k, v in s.items() if v is not None} for s in data["shocks"]]
        run = stress_create(
            user=request.user,
            backtest=backtest,
            windows=data["windows"],
            custom_windows=data["custom_windows"],
            shocks=shocks,
        )
        return Response(stress_json(request, run), status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=TAGS)
class StressDetailView(APIView):
    @extend_schema(
        responses=StressRunSerializer,
        summary="A stress run: status, scenarios, one row per scenario once completed",
    )
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        return Response(stress_json(request, stress_get(user=request.user, pk=pk)))


urlpatterns = [
    path(
        "backtests/<int:pk>/montecarlo/",
        BacktestMonteCarloView.as_view(),
        name="api_backtest_montecarlo",
    ),
    path("montecarlo/<int:pk>/", MonteCarloDetailView.as_view(), name="api_montecarlo_detail"),
    path("backtests/<int:pk>/stress/", BacktestStressView.as_view(), name="api_backtest_stress"),
    path("stress/<int:pk>/", StressDetailView.as_view(), name="api_stress_detail"),
]
