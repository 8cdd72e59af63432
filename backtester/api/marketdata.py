"""/api/v1/market-data/: the catalog, uploads and exchange downloads.

    GET    series/                 shared series and mine (paginated; ?exchange=, ?symbol=,
                                   ?timeframe=, ?source=, ?mine=)
    GET    series/<id>/            one series, with its gaps
    DELETE series/<id>/            delete one of my uploads
    POST   series/upload/          multipart: file, symbol, [timeframe, exchange, name] -> 202
                                   + the upload job (parsed in the background)
    GET    upload-jobs/<id>/       an upload's status, and its series once stored
    POST   fetch-jobs/             exchange, symbol, timeframe, since, [until] -> 202 + the job
    GET    fetch-jobs/<id>/        a download's status

Authentication and Pro come from the API defaults; another user's upload or job is a 404.
Errors use the project's format (config/api.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.gating import AuthenticatedRequest
from backtester.api.filters import SeriesFilter, filter_series
from backtester.api.parsing import validated
from backtester.api.responses import FetchJobSerializer
from backtester.forms.marketdata import fetch_job_args
from backtester.models import MarketSeries
from backtester.selectors import marketdata as md
from backtester.services.marketdata import (
    fetch_job_create,
    fetch_job_payload,
    series_delete,
    upload_job_create,
)
from config.runs import lifecycle
from exchanges.clients import SUPPORTED_EXCHANGES


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


class SeriesSerializer(serializers.ModelSerializer):
    first = serializers.SerializerMethodField()
    last = serializers.SerializerMethodField()
    mine = serializers.SerializerMethodField()

    class Meta:
        model = MarketSeries
        fields: tuple[str, ...] = (
            "id",
            "exchange",
            "symbol",
            "timeframe",
            "name",
            "source",
            "synthetic",
            "first_ts",
            "last_ts",
            "first",
            "last",
            "count",
            "extra_columns",
            "data_hash",
            "mine",
            "updated_at",
        )
        read_only_fields = fields

    def get_first(self, obj: MarketSeries) -> str | None:
        return _iso(obj.first_ts)

    def get_last(self, obj: MarketSeries) -> str | None:
        return _iso(obj.last_ts)

    def get_mine(self, obj: MarketSeries) -> bool:
        request = self.context.get("request")
        return bool(request and obj.owner_id == request.user.pk)


class GapSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    start_ts = serializers.IntegerField()
    end_ts = serializers.IntegerField()
    missing_bars = serializers.IntegerField()


class SeriesDetailSerializer(SeriesSerializer):
    """Documents SeriesDetail's answer: the series plus its gaps."""

    gaps = GapSerializer(many=True, help_text="The first 1000 gaps.")
    gap_count = serializers.IntegerField()

    class Meta(SeriesSerializer.Meta):
        fields = (*SeriesSerializer.Meta.fields, "gaps", "gap_count")
        read_only_fields = fields


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    symbol = serializers.CharField(max_length=40)
    timeframe = serializers.CharField(max_length=8, required=False, allow_blank=True)
    exchange = serializers.CharField(max_length=40, required=False, allow_blank=True)
    name = serializers.CharField(max_length=120, required=False, allow_blank=True)


class UploadJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField(
        help_text='The run\'s kind ("upload"), as in ws/runs/<kind>/<id>/.'
    )
    status = serializers.CharField(help_text="queued, running, completed, failed or cancelled")
    status_display = serializers.CharField()
    progress = serializers.FloatField(help_text="0..1")
    stage = serializers.CharField(help_text="What the worker is doing now, or the status.")
    finished = serializers.BooleanField()
    error = serializers.CharField(
        allow_blank=True, help_text="Why the file was refused (the line or row at fault)."
    )
    filename = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes received.")
    series = serializers.IntegerField(allow_null=True, help_text="The stored series, once done.")
    candle_count = serializers.IntegerField(allow_null=True)


class FetchRequestSerializer(serializers.Serializer):
    exchange = serializers.ChoiceField(choices=[e for e, _ in SUPPORTED_EXCHANGES])
    symbol = serializers.CharField(max_length=40)
    timeframe = serializers.CharField(max_length=8)
    since = serializers.DateField(help_text="First day, UTC (YYYY-MM-DD)")
    until = serializers.DateField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since: date = attrs["since"]
        until: date | None = attrs.get("until")
        if until is not None and until <= since:
            raise serializers.ValidationError(
                {"until": "The end date must be after the start date."}
            )
        return attrs


TAG = ["market data"]


@extend_schema(tags=TAG)
class SeriesList(ListAPIView):
    request: AuthenticatedRequest

    serializer_class = SeriesSerializer

    def get_queryset(self) -> Any:
        return filter_series(md.series_catalog(self.request.user), self.request)

    @extend_schema(parameters=[SeriesFilter], summary="Market data I can backtest on")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


@extend_schema(tags=TAG)
class SeriesDetail(APIView):
    @extend_schema(responses=SeriesDetailSerializer, summary="One series, with its gaps")
    def get(self, request: Request, pk: int) -> Response:
        series = md.series_for_user(user=request.user, pk=pk)
        body = SeriesSerializer(series, context={"request": request}).data
        gaps = md.series_gaps(series)
        body["gaps"] = [
            {
                "start": _iso(g.start_ms),
                "end": _iso(g.end_ms),
                "start_ts": g.start_ms,
                "end_ts": g.end_ms,
                "missing_bars": g.missing_bars,
            }
            for g in gaps[:1000]
        ]
        body["gap_count"] = len(gaps)
        return Response(body)

    @extend_schema(responses={204: None}, summary="Delete one of my uploads")
    def delete(self, request: Request, pk: int) -> Response:
        series_delete(owner=request.user, series_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=TAG)
class SeriesUpload(APIView):
    parser_classes = (MultiPartParser, FormParser)

    @extend_schema(
        request={"multipart/form-data": UploadSerializer},
        responses={202: UploadJobSerializer},
        summary="Upload candles (CSV, Parquet or JSON); parsed in the background",
    )
    def post(self, request: Request) -> Response:
        data = validated(UploadSerializer, request.data)
        job = upload_job_create(
            owner=request.user,
            file=data["file"],
            filename=data["file"].name,
            symbol=data["symbol"],
            timeframe=data.get("timeframe") or "",
            exchange=data.get("exchange") or "upload",
            name=data.get("name") or "",
        )
        return Response(lifecycle.state(job), status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=TAG)
class UploadJobDetail(APIView):
    @extend_schema(responses=UploadJobSerializer, summary="An upload's status")
    def get(self, request: Request, pk: int) -> Response:
        job = md.upload_job_for_user(user=request.user, pk=pk)
        return Response(lifecycle.state(job))


@extend_schema(tags=TAG)
class FetchJobCreate(APIView):
    @extend_schema(
        request=FetchRequestSerializer,
        responses={202: FetchJobSerializer},
        summary="Download candles from an exchange (in the background)",
    )
    def post(self, request: Request) -> Response:
        data = validated(FetchRequestSerializer, request.data)
        job = fetch_job_create(owner=request.user, **fetch_job_args(data))
        return Response(fetch_job_payload(job), status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=TAG)
class FetchJobDetail(APIView):
    @extend_schema(responses=FetchJobSerializer, summary="A download's status")
    def get(self, request: Request, pk: int) -> Response:
        job = md.fetch_job_for_user(user=request.user, pk=pk)
        return Response(fetch_job_payload(job))


_UPLOAD_JOB = "market-data/upload-jobs/<int:pk>/"
urlpatterns = [
    path("market-data/series/", SeriesList.as_view(), name="api_md_series_list"),
    path("market-data/series/upload/", SeriesUpload.as_view(), name="api_md_series_upload"),
    path("market-data/series/<int:pk>/", SeriesDetail.as_view(), name="api_md_series_detail"),
    path(_UPLOAD_JOB, UploadJobDetail.as_view(), name="api_md_upload_job_detail"),
    path("market-data/fetch-jobs/", FetchJobCreate.as_view(), name="api_md_fetch_create"),
    path("market-data/fetch-jobs/<int:pk>/", FetchJobDetail.as_view(), name="api_md_fetch_detail"),
]
