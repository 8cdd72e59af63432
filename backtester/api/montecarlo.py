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

from collections.abc import Callable
from typing import Any

from django.urls import path, reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.gating import AuthenticatedRequest
from backtester.api.backtests import DateOrDateTimeField
from backtester.api.generic import JsonListView, RunKind, detail_view, queue_schema
from backtester.api.parsing import optional_int, optional_seed, validated
from backtester.engine.montecarlo import MAX_ITERATIONS
from backtester.engine.stress import NAMED_WINDOWS
from backtester.models import Backtest, MonteCarloRun, StressRun
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
    block_length = optional_int(
        "Bars per block (block method). Null: the cube root of the bar count."
    )
    ruin_threshold = serializers.FloatField(
        min_value=0.0001,
        max_value=1.0,
        default=0.5,
        help_text="Drawdown fraction that counts as ruin (0.5 = 50 %).",
    )
    seed = optional_seed("Null: a random seed (returned, so the run can be repeated).")


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


class _RunStateSerializer(serializers.Serializer):
    # Where a run stands; the run serializers list these after their settings. No docstring:
    # the schema would take it as their description.

    status = serializers.CharField(help_text=STATUS_HELP)
    error = serializers.CharField(allow_blank=True)
    timings = serializers.DictField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class _MonteCarloSettingsSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    backtest = serializers.IntegerField()
    method = serializers.ChoiceField(choices=MonteCarloRun.Method.choices)
    iterations = serializers.IntegerField()
    block_length = serializers.IntegerField(allow_null=True)
    ruin_threshold = serializers.FloatField()
    seed = serializers.IntegerField()


class MonteCarloRunSerializer(_MonteCarloSettingsSerializer, _RunStateSerializer):
    results = serializers.DictField(
        allow_null=True,
        help_text="Once completed: fan (x, levels, bands p5..p95 and the original path, in "
        "money), histograms (edges, counts) of final_return and max_drawdown, summaries "
        "(mean, std, median, p5, p95, ci_low, ci_high, original) per statistic, ruin "
        "(threshold, probability, paths) and source. Null before.",
    )
    links = RunLinksSerializer()


class _StressSettingsSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    backtest = serializers.IntegerField()
    windows = serializers.ListField(child=serializers.DictField())
    shocks = serializers.ListField(child=serializers.DictField())


class StressRunSerializer(_StressSettingsSerializer, _RunStateSerializer):
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


class _BacktestRunsView(JsonListView):
    # A completed backtest's runs of one kind (newest first), and queueing a new one (no
    # docstring: the schema would take it as the subclasses' description).

    runs_for: Callable[[Any, Backtest], Any]

    def get_queryset(self) -> Any:
        return self.runs_for(self.request.user, self._backtest(int(self.kwargs["pk"])))

    def _backtest(self, pk: int) -> Backtest:
        return backtest_get(user=self.request.user, pk=pk)

    def _queued(self, request: Request, run: Any) -> Response:
        return Response(self.row_json(request, run), status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=TAGS)
class BacktestMonteCarloView(_BacktestRunsView):
    serializer_class = MonteCarloRunSerializer  # documents montecarlo_json's shape
    runs_for = staticmethod(montecarlo_runs_for)
    row_json = staticmethod(montecarlo_json)

    @extend_schema(summary="A backtest's Monte Carlo runs, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.json_page(request)

    @queue_schema(
        MonteCarloCreateSerializer,
        MonteCarloRunSerializer,
        NO_RESULT,
        "Queue a Monte Carlo run of a completed backtest",
    )
    def post(self, request: AuthenticatedRequest, pk: int) -> Response:
        backtest = self._backtest(pk)
        data = validated(MonteCarloCreateSerializer, request.data)
        run = montecarlo_create(user=request.user, backtest=backtest, **data)
        return self._queued(request, run)


MonteCarloDetailView = detail_view(
    RunKind(TAGS, montecarlo_get, montecarlo_json),
    MonteCarloRunSerializer,
    "A Monte Carlo run: status, settings, results once completed",
)


@extend_schema(tags=TAGS)
class BacktestStressView(_BacktestRunsView):
    serializer_class = StressRunSerializer  # documents stress_json's shape
    runs_for = staticmethod(stress_runs_for)
    row_json = staticmethod(stress_json)

    @extend_schema(summary="A backtest's stress runs, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.json_page(request)

    @queue_schema(
        StressCreateSerializer,
        StressRunSerializer,
        NO_RESULT,
        "Queue a stress run (crisis windows and shocks) of a completed backtest",
    )
    def post(self, request: AuthenticatedRequest, pk: int) -> Response:
        backtest = self._backtest(pk)
        data = validated(StressCreateSerializer, request.data)
        shocks = [{k: v for k, v in s.items() if v is not None} for s in data["shocks"]]
        run = stress_create(
            user=request.user,
            backtest=backtest,
            windows=data["windows"],
            custom_windows=data["custom_windows"],
            shocks=shocks,
        )
        return self._queued(request, run)


StressDetailView = detail_view(
    RunKind(TAGS, stress_get, stress_json),
    StressRunSerializer,
    "A stress run: status, scenarios, one row per scenario once completed",
)


_BACKTEST = "backtests/<int:pk>/"
urlpatterns = [
    path(
        f"{_BACKTEST}montecarlo/", BacktestMonteCarloView.as_view(), name="api_backtest_montecarlo"
    ),
    path("montecarlo/<int:pk>/", MonteCarloDetailView.as_view(), name="api_montecarlo_detail"),
    path(f"{_BACKTEST}stress/", BacktestStressView.as_view(), name="api_backtest_stress"),
    path("stress/<int:pk>/", StressDetailView.as_view(), name="api_stress_detail"),
]
