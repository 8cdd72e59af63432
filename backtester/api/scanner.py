"""/api/v1/scanner/: watchlists, scans and their alerts.

    GET    scanner/watchlists/                 my watchlists (paginated)
    POST   scanner/watchlists/                 create -> 201
    GET    scanner/watchlists/<id>/            one watchlist
    PATCH  scanner/watchlists/<id>/            change some fields (PUT: every field)
    DELETE scanner/watchlists/<id>/            delete (its scans and alerts stay)
    POST   scanner/watchlists/<id>/scan/       run a scan now -> 202 + the scan
    GET    scanner/scans/                      my scans, newest first (?watchlist=, ?status=)
    GET    scanner/scans/<id>/                 a scan's status, progress and counts
    GET    scanner/alerts/                     outcomes (?signal=BUY,SELL ?symbol= ?since= ?until=
                                               ?scan= ?watchlist=), newest first, paginated
    GET    scanner/alerts/summary/             the last completed scan: counts, top BUY, top SELL
    GET    scanner/alerts/top-buy/             the last completed scan's BUYs by potential return
    GET    scanner/alerts/top-sell/            the same for SELLs
    GET    scanner/alerts/<id>/                one outcome
    POST   scanner/alerts/<id>/backtest/       backtest the band strategy on it -> 202 (201 cached)

Signals: BUY when the last closed candle's close is below the lower polynomial-regression band,
SELL above the upper, HOLD otherwise (with the reason). Potential return is the move to the
opposite band as a fraction of the price, in the trade's direction. Authentication and Pro come
from the API defaults; another user's object is a 404; errors use the project's format.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.urls import path, reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.gating import AuthenticatedRequest
from backtester.api.backtests import backtest_response
from backtester.api.filters import MomentField, StatusListField
from backtester.api.generic import JsonListView, RunKind, detail_view, write_schema
from backtester.api.parsing import require_fields, validated, validated_query
from backtester.api.responses import BacktestSerializer
from backtester.engine.scanner import BUY, HOLD, SELL
from backtester.models import Alert, ScanRun, Watchlist
from backtester.selectors.scanner import (
    alert_get,
    alerts_for,
    last_completed_scan,
    scan_get,
    scans_for,
    watchlist_get,
    watchlists_for,
)
from backtester.services.scan_alerts import alert_backtest_create, scan_summary
from backtester.services.scan_watchlists import (
    EXCHANGE_CHOICES,
    watchlist_create,
    watchlist_delete,
    watchlist_update,
)
from backtester.services.scanner import scan_payload, scan_start
from config.exceptions import ApplicationError

TAG = ["scanner"]
TOP_DEFAULT = 10
TOP_MAX = 100
WATCHLIST_FIELDS = (
    "name",
    "exchange",
    "timeframe",
    "universe",
    "symbols",
    "top_n",
    "quote",
    "lookback",
    "degree",
    "k",
    "schedule_minutes",
    "notify",
)


# --- shapes ----------------------------------------------------------------------------------


class WatchlistSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    scan_url = serializers.SerializerMethodField()

    class Meta:
        model = Watchlist
        fields = ("id", "url", "scan_url", *WATCHLIST_FIELDS, "next_run_at", "created_at",
                  "updated_at")  # fmt: skip
        read_only_fields = fields

    def get_url(self, obj: Watchlist) -> str:
        return reverse("api_scanner_watchlist_detail", kwargs={"pk": obj.pk})

    def get_scan_url(self, obj: Watchlist) -> str:
        return reverse("api_scanner_scan_start", kwargs={"pk": obj.pk})


class WatchlistWriteSerializer(serializers.Serializer):
    """Input shape only; the service checks the values (and the symbols with the exchange)."""

    name = serializers.CharField(max_length=80, required=False)
    exchange = serializers.ChoiceField(choices=[e for e, _ in EXCHANGE_CHOICES], required=False)
    timeframe = serializers.CharField(max_length=8, required=False)
    universe = serializers.ChoiceField(choices=Watchlist.Universe.values, required=False)
    symbols = serializers.ListField(
        child=serializers.CharField(max_length=40), required=False, max_length=500
    )
    top_n = serializers.IntegerField(required=False)
    quote = serializers.CharField(max_length=10, required=False)
    lookback = serializers.IntegerField(required=False)
    degree = serializers.IntegerField(required=False)
    k = serializers.FloatField(required=False)
    schedule_minutes = serializers.ChoiceField(
        choices=[m for m, _ in Watchlist.SCHEDULES], required=False
    )
    notify = serializers.BooleanField(required=False)


class CountsSerializer(serializers.Serializer):
    BUY = serializers.IntegerField()
    SELL = serializers.IntegerField()
    HOLD = serializers.IntegerField()


class ScanSerializer(serializers.Serializer):
    """Documents ``scan_payload`` plus the snapshot of the watchlist's settings."""

    id = serializers.IntegerField()
    kind = serializers.CharField(help_text='The run\'s kind ("scan"), as in ws/runs/<kind>/<id>/.')
    watchlist = serializers.IntegerField(allow_null=True)
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=ScanRun.Status.choices)
    status_display = serializers.CharField()
    stage = serializers.CharField()
    progress = serializers.FloatField(help_text="0..1")
    symbols_total = serializers.IntegerField()
    symbols_done = serializers.IntegerField()
    counts = CountsSerializer()
    warnings = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(allow_blank=True)
    finished = serializers.BooleanField()
    trigger = serializers.ChoiceField(choices=ScanRun.Trigger.choices)
    created_at = serializers.CharField(allow_null=True)
    started_at = serializers.CharField(allow_null=True)
    finished_at = serializers.CharField(allow_null=True)
    exchange = serializers.CharField()
    timeframe = serializers.CharField()
    lookback = serializers.IntegerField()
    degree = serializers.IntegerField()
    k = serializers.FloatField()
    url = serializers.CharField()
    alerts_url = serializers.CharField()
    websocket = serializers.CharField(help_text="Path of the live progress websocket.")


def scan_json(run: ScanRun) -> dict[str, Any]:
    return {
        **scan_payload(run),
        "exchange": run.exchange,
        "timeframe": run.timeframe,
        "lookback": run.lookback,
        "degree": run.degree,
        "k": run.k,
        "url": reverse("api_scanner_scan_detail", kwargs={"pk": run.pk}),
        "alerts_url": reverse("api_scanner_alerts") + f"?scan={run.pk}&signal=BUY,SELL,HOLD",
        "websocket": run.socket_path,
    }


class AlertSerializer(serializers.ModelSerializer):
    scan = serializers.IntegerField(source="scan_id")
    series = serializers.IntegerField(source="series_id", allow_null=True)
    url = serializers.SerializerMethodField()
    backtest_url = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        fields = (
            "id",
            "url",
            "scan",
            "series",
            "exchange",
            "symbol",
            "timeframe",
            "signal",
            "is_alert",
            "is_new",
            "created_at",
            "candle_ts",
            "price",
            "lower",
            "mid",
            "upper",
            "std",
            "zscore",
            "potential_return",
            "bars",
            "reason",
            "backtest_url",
        )
        read_only_fields = fields

    def get_url(self, obj: Alert) -> str:
        return reverse("api_scanner_alert_detail", kwargs={"pk": obj.pk})

    def get_backtest_url(self, obj: Alert) -> str:
        return reverse("api_scanner_alert_backtest", kwargs={"pk": obj.pk})


class SummarySerializer(serializers.Serializer):
    scan = ScanSerializer(allow_null=True, help_text="The last completed scan (null if none).")
    counts = CountsSerializer()
    top_buy = AlertSerializer(many=True)
    top_sell = AlertSerializer(many=True)


# --- filters ---------------------------------------------------------------------------------


class ScanFilter(serializers.Serializer):
    watchlist = serializers.IntegerField(min_value=1, required=False)
    status = StatusListField(choices=list(ScanRun.Status.values), required=False)


class SignalListField(serializers.CharField):
    """One signal or several, comma-separated: ``?signal=BUY,SELL``."""

    # A CharField on the wire, a list once parsed (the stubs say a CharField gives a str).
    def to_internal_value(self, data: Any) -> list[str]:  # type: ignore[override]
        values = [v.strip().upper() for v in str(super().to_internal_value(data)).split(",")]
        values = [v for v in values if v]
        wrong = [v for v in values if v not in (BUY, SELL, HOLD)]
        if wrong or not values:
            raise serializers.ValidationError(
                f"Unknown signal {', '.join(wrong) or '(empty)'}: use BUY, SELL, HOLD."
            )
        return values


class AlertFilter(serializers.Serializer):
    signal = SignalListField(
        required=False, help_text="BUY, SELL, HOLD or several comma-separated; default BUY,SELL."
    )
    symbol = serializers.CharField(
        max_length=40, required=False, help_text="BTC/USDT, or BTC for every BTC market."
    )
    since = MomentField(required=False, help_text="Created at or after (UTC).")
    until = MomentField(
        required=False, help_text="Created before; a date includes that whole day (UTC)."
    )
    scan = serializers.IntegerField(min_value=1, required=False)
    watchlist = serializers.IntegerField(min_value=1, required=False)


class TopFilter(serializers.Serializer):
    watchlist = serializers.IntegerField(
        min_value=1, required=False, help_text="The last scan of this watchlist (default: any)."
    )
    n = serializers.IntegerField(min_value=1, max_value=TOP_MAX, required=False)


def _moment_bounds(data: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """[since, until) from MomentField values: a bare day as ``until`` includes that day."""

    def start(value: date | datetime) -> datetime:
        return value if isinstance(value, datetime) else datetime.combine(value, time.min, UTC)

    since = start(data["since"]) if "since" in data else None
    until = None
    if "until" in data:
        value = data["until"]
        until = value if isinstance(value, datetime) else start(value + timedelta(days=1))
    if since is not None and until is not None and until <= since:
        raise ApplicationError("until must be later than since.", field="until")
    return since, until


WATCHLIST_REQUIRED = ("name", "exchange", "timeframe")


_EDIT = (WatchlistWriteSerializer, WatchlistSerializer)  # an edit's body and answer


def _watchlist_input(request: Request) -> dict[str, Any]:
    return validated(WatchlistWriteSerializer, request.data)


# --- watchlists ------------------------------------------------------------------------------


@extend_schema(tags=TAG)
class WatchlistListView(ListAPIView):
    request: AuthenticatedRequest

    serializer_class = WatchlistSerializer

    def get_queryset(self) -> Any:
        return watchlists_for(self.request.user)

    @extend_schema(summary="My watchlists")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @write_schema(WatchlistWriteSerializer, {201: WatchlistSerializer}, "Create a watchlist")
    def post(self, request: AuthenticatedRequest) -> Response:
        data = _watchlist_input(request)
        require_fields(data, *WATCHLIST_REQUIRED)
        watchlist = watchlist_create(user=request.user, **data)
        return Response(WatchlistSerializer(watchlist).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=TAG)
class WatchlistDetailView(APIView):
    @extend_schema(responses=WatchlistSerializer, summary="One watchlist")
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        return Response(WatchlistSerializer(watchlist_get(user=request.user, pk=pk)).data)

    @write_schema(*_EDIT, "Change some fields of a watchlist")
    def patch(self, request: AuthenticatedRequest, pk: int) -> Response:
        watchlist, data = watchlist_get(user=request.user, pk=pk), _watchlist_input(request)
        watchlist = watchlist_update(user=request.user, watchlist=watchlist, **data)
        return Response(WatchlistSerializer(watchlist).data)

    @write_schema(*_EDIT, "Replace a watchlist (fields left out take their defaults)")
    def put(self, request: AuthenticatedRequest, pk: int) -> Response:
        watchlist, data = watchlist_get(user=request.user, pk=pk), _watchlist_input(request)
        require_fields(data, *WATCHLIST_REQUIRED)
        full = {
            "universe": Watchlist.Universe.SYMBOLS,
            "symbols": [],
            "top_n": 20,
            "quote": "USDT",
            "lookback": 100,
            "degree": 2,
            "k": 2.0,
            "schedule_minutes": 0,
            "notify": False,
            **data,
        }
        watchlist = watchlist_update(user=request.user, watchlist=watchlist, **full)
        return Response(WatchlistSerializer(watchlist).data)

    @extend_schema(responses={204: None}, summary="Delete a watchlist (its scans stay)")
    def delete(self, request: AuthenticatedRequest, pk: int) -> Response:
        watchlist_delete(user=request.user, watchlist=watchlist_get(user=request.user, pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=TAG)
class ScanStartView(APIView):
    @extend_schema(
        request=None,
        responses={202: OpenApiResponse(ScanSerializer, description="Queued; poll `url`.")},
        summary="Scan a watchlist now",
    )
    def post(self, request: AuthenticatedRequest, pk: int) -> Response:
        watchlist = watchlist_get(user=request.user, pk=pk)
        run = scan_start(user=request.user, watchlist=watchlist, trigger=ScanRun.Trigger.API)
        return Response(scan_json(run), status=status.HTTP_202_ACCEPTED)


# --- scans -----------------------------------------------------------------------------------


@extend_schema(tags=TAG)
class ScanListView(JsonListView):
    serializer_class = ScanSerializer

    def get_queryset(self) -> Any:
        p = validated_query(ScanFilter, self.request)
        scans = scans_for(self.request.user)
        if "watchlist" in p:
            scans = scans.filter(watchlist_id=p["watchlist"])
        if "status" in p:
            scans = scans.filter(status__in=p["status"])
        return scans

    def row_json(self, request: Request, obj: Any) -> dict[str, Any]:
        return scan_json(obj)

    @extend_schema(parameters=[ScanFilter], summary="My scans, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.json_page(request)


ScanDetailView = detail_view(
    RunKind(TAG, scan_get, lambda request, run: scan_json(run)),
    ScanSerializer,
    "A scan's status, progress and counts",
)


# --- alerts ----------------------------------------------------------------------------------


@extend_schema(tags=TAG)
class AlertListView(ListAPIView):
    request: AuthenticatedRequest

    serializer_class = AlertSerializer

    def get_queryset(self) -> Any:
        p = validated_query(AlertFilter, self.request)
        since, until = _moment_bounds(p)
        user = self.request.user
        return alerts_for(
            user,
            signals=p.get("signal") or [BUY, SELL],
            symbol=p.get("symbol", ""),
            since=since,
            until=until,
            scan=scan_get(user=user, pk=p["scan"]) if "scan" in p else None,
            watchlist=watchlist_get(user=user, pk=p["watchlist"]) if "watchlist" in p else None,
        )

    @extend_schema(parameters=[AlertFilter], summary="Scan outcomes, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


def _last_scan(request: AuthenticatedRequest, watchlist_id: int | None) -> ScanRun | None:
    watchlist = (
        watchlist_get(user=request.user, pk=watchlist_id) if watchlist_id is not None else None
    )
    return last_completed_scan(request.user, watchlist=watchlist)


@extend_schema(tags=TAG)
class AlertSummaryView(APIView):
    @extend_schema(
        parameters=[TopFilter],
        responses=SummarySerializer,
        summary="The last completed scan: counts, top BUY and top SELL by potential return",
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        p = validated_query(TopFilter, request)
        summary = scan_summary(_last_scan(request, p.get("watchlist")), top=p.get("n", 5))
        return Response(
            {
                "scan": scan_json(summary["scan"]) if summary["scan"] is not None else None,
                "counts": summary["counts"],
                "top_buy": AlertSerializer(summary["top_buy"], many=True).data,
                "top_sell": AlertSerializer(summary["top_sell"], many=True).data,
            }
        )


def _top_view(signal: str) -> type[APIView]:
    """The view of the last completed scan's ``signal`` alerts, largest potential return first."""

    @extend_schema(tags=TAG)
    class TopView(APIView):
        @extend_schema(
            parameters=[TopFilter],
            responses=AlertSerializer(many=True),
            summary=f"The last completed scan's {signal} signals, largest potential return first",
        )
        def get(self, request: AuthenticatedRequest) -> Response:
            p = validated_query(TopFilter, request)
            run = _last_scan(request, p.get("watchlist"))
            if run is None:
                return Response([])
            alerts = Alert.objects.filter(scan=run, signal=signal).order_by(
                "-potential_return", "symbol"
            )[: p.get("n", TOP_DEFAULT)]
            return Response(AlertSerializer(alerts, many=True).data)

    return TopView


TopBuyView = _top_view(BUY)
TopSellView = _top_view(SELL)


@extend_schema(tags=TAG)
class AlertDetailView(APIView):
    @extend_schema(responses=AlertSerializer, summary="One scan outcome")
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        return Response(AlertSerializer(alert_get(user=request.user, pk=pk)).data)


@extend_schema(tags=TAG)
class AlertBacktestView(APIView):
    @extend_schema(
        request=None,
        responses={
            201: OpenApiResponse(BacktestSerializer, description="An identical run was reused."),
            202: OpenApiResponse(BacktestSerializer, description="Queued; poll `links.self`."),
        },
        summary="Backtest the band strategy on an alert's symbol with the scan's settings",
    )
    def post(self, request: AuthenticatedRequest, pk: int) -> Response:
        alert = alert_get(user=request.user, pk=pk)
        return backtest_response(request, alert_backtest_create(user=request.user, alert=alert))


_WATCHLIST = "scanner/watchlists/<int:pk>/"
_ALERT = "scanner/alerts/<int:pk>/"
urlpatterns = [
    path("scanner/watchlists/", WatchlistListView.as_view(), name="api_scanner_watchlists"),
    path(_WATCHLIST, WatchlistDetailView.as_view(), name="api_scanner_watchlist_detail"),
    path(f"{_WATCHLIST}scan/", ScanStartView.as_view(), name="api_scanner_scan_start"),
    path("scanner/scans/", ScanListView.as_view(), name="api_scanner_scans"),
    path("scanner/scans/<int:pk>/", ScanDetailView.as_view(), name="api_scanner_scan_detail"),
    path("scanner/alerts/", AlertListView.as_view(), name="api_scanner_alerts"),
    path("scanner/alerts/summary/", AlertSummaryView.as_view(), name="api_scanner_alert_summary"),
    path("scanner/alerts/top-buy/", TopBuyView.as_view(), name="api_scanner_top_buy"),
    path("scanner/alerts/top-sell/", TopSellView.as_view(), name="api_scanner_top_sell"),
    path(_ALERT, AlertDetailView.as_view(), name="api_scanner_alert_detail"),
    path(f"{_ALERT}backtest/", AlertBacktestView.as_view(), name="api_scanner_alert_backtest"),
]
