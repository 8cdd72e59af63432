"""Query-string filters of the API lists, validated like any input.

Each filter is a serializer over ``request.query_params``: a bad value is a 400 naming the
parameter, in the one error format, and unknown parameters (page, page_size, ...) are ignored.
The same serializer documents the parameters in the schema (``extend_schema(parameters=...)``).

Dates: ``YYYY-MM-DD`` is a whole UTC day (``*_before`` includes that day), or an ISO 8601
datetime (naive means UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from accounts.gating import AuthenticatedRequest
from backtester.api.parsing import validated_query
from backtester.models import Backtest, MarketSeries, Strategy


@extend_schema_field(OpenApiTypes.STR)
class MomentField(serializers.Field):
    """A day (YYYY-MM-DD) or an ISO 8601 datetime; to_internal_value keeps which it was."""

    default_error_messages = {"invalid": "Give a date (YYYY-MM-DD) or an ISO 8601 datetime."}

    def to_internal_value(self, data: Any) -> date | datetime:
        text = str(data).strip()
        day = parse_date(text) if len(text) == 10 else None
        if day is not None:
            return day
        try:
            moment = parse_datetime(text)
        except ValueError:
            moment = None
        if moment is None:
            self.fail("invalid")
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def to_representation(self, value: Any) -> Any:
        return value


class StatusListField(serializers.CharField):
    """One status or several, comma-separated: ``?status=queued,running``."""

    def __init__(self, *, choices: list[str], **kwargs: Any) -> None:
        self.allowed = choices
        kwargs.setdefault(
            "help_text", "One of " + ", ".join(choices) + "; or several, comma-separated."
        )
        super().__init__(**kwargs)

    # A CharField on the wire, a list once parsed (the stubs say a CharField gives a str).
    def to_internal_value(self, data: Any) -> list[str]:  # type: ignore[override]
        values = [v.strip() for v in str(super().to_internal_value(data)).split(",") if v.strip()]
        wrong = [v for v in values if v not in self.allowed]
        if wrong or not values:
            raise serializers.ValidationError(
                f"Unknown status {', '.join(wrong) or '(empty)'}: use {', '.join(self.allowed)}."
            )
        return values


def _start(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time.min, tzinfo=UTC)


def _end(value: date | datetime) -> datetime:
    """The first instant after the end: a day includes itself, a datetime is exclusive."""
    if isinstance(value, datetime):
        return value
    return datetime.combine(value + timedelta(days=1), time.min, tzinfo=UTC)


def _params(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    return validated_query(serializer_class, request)


def _by_params(queryset: QuerySet[Any], p: Mapping[str, Any], lookups: Mapping[str, str]) -> Any:
    """``queryset`` filtered on each parameter ``p`` has: ``lookups`` maps it to a field lookup."""
    for name, lookup in lookups.items():
        if name in p:
            queryset = queryset.filter(**{lookup: p[name]})
    return queryset


class BacktestFilter(serializers.Serializer):
    status = StatusListField(choices=list(Backtest.Status.values), required=False)
    strategy = serializers.IntegerField(
        min_value=1, required=False, help_text="Backtests of this strategy id."
    )
    symbol = serializers.CharField(
        max_length=40,
        required=False,
        help_text="Backtests that include this symbol, e.g. BTC/USDT.",
    )
    timeframe = serializers.CharField(max_length=8, required=False, help_text="e.g. 1h")
    created_after = MomentField(required=False, help_text="Created at or after (UTC).")
    created_before = MomentField(
        required=False, help_text="Created before; a date includes that whole day (UTC)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after is not None and before is not None and _start(after) >= _end(before):
            raise serializers.ValidationError(
                {"created_before": ["created_before must be later than created_after."]}
            )
        return attrs


def filter_backtests(queryset: QuerySet[Backtest], request: Request) -> QuerySet[Backtest]:
    """``queryset`` narrowed by the BacktestFilter parameters of ``request`` (400 if bad)."""
    p = _params(BacktestFilter, request)
    lookups = {"status": "status__in", "strategy": "strategy_id", "timeframe": "timeframe"}
    queryset = _by_params(queryset, p, lookups)
    if "symbol" in p:
        queryset = queryset.filter(
            pk__in=Backtest.series.through.objects.filter(
                marketseries__symbol__iexact=p["symbol"]
            ).values("backtest_id")
        )
    if "created_after" in p:
        queryset = queryset.filter(created_at__gte=_start(p["created_after"]))
    if "created_before" in p:
        queryset = queryset.filter(created_at__lt=_end(p["created_before"]))
    return queryset


class SeriesFilter(serializers.Serializer):
    exchange = serializers.CharField(max_length=40, required=False, help_text="e.g. binance")
    symbol = serializers.CharField(max_length=40, required=False, help_text="e.g. BTC/USDT")
    timeframe = serializers.CharField(max_length=8, required=False, help_text="e.g. 1h")
    # DRF's metaclass takes declared fields off the class: "source" shadows no Field.source.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=MarketSeries.Source.choices, required=False
    )
    mine = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="true: only my uploads."
    )


def filter_series(
    queryset: QuerySet[MarketSeries], request: AuthenticatedRequest
) -> QuerySet[MarketSeries]:
    """``queryset`` narrowed by the SeriesFilter parameters of ``request`` (400 if bad)."""
    p = _params(SeriesFilter, request)
    lookups = {
        "exchange": "exchange__iexact",
        "symbol": "symbol__iexact",
        "timeframe": "timeframe",
        "source": "source",
    }
    queryset = _by_params(queryset, p, lookups)
    if p.get("mine") is True:
        queryset = queryset.filter(owner=request.user)
    elif p.get("mine") is False:
        queryset = queryset.exclude(owner=request.user)
    return queryset


class StrategyFilter(serializers.Serializer):
    q = serializers.CharField(
        max_length=100, required=False, help_text="Name or description contains this."
    )
    preset = serializers.CharField(
        max_length=40, required=False, help_text="Strategies made from this preset."
    )


def filter_strategies(queryset: QuerySet[Strategy], request: Request) -> QuerySet[Strategy]:
    """``queryset`` narrowed by the StrategyFilter parameters of ``request`` (400 if bad)."""
    p = _params(StrategyFilter, request)
    if p.get("q"):
        queryset = queryset.filter(Q(name__icontains=p["q"]) | Q(description__icontains=p["q"]))
    if "preset" in p:
        queryset = queryset.filter(preset=p["preset"])
    return queryset
