"""The operators' view of the backtester: runs with their status, strategies, market data,
downloads, candle chunks and trades. Everything is read-only: users' work changes through the
app's services, never by hand. Binary columns (candle chunks, result curves) are never loaded
or shown; their size is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.db.models.functions import Length
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from backtester.models import (
    Backtest,
    BacktestResult,
    BacktestTrade,
    CandleChunk,
    FetchJob,
    MarketSeries,
    Strategy,
)


def _utc(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Lists, filters and detail pages to read; no add, change or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Backtest)
class BacktestAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "__str__",
        "owner",
        "status",
        "progress_pct",
        "timeframe",
        "candle_count",
        "engine_seconds",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "timeframe", "created_at")
    list_select_related = ("owner",)
    search_fields = ("owner__email", "name", "=id")
    date_hierarchy = "created_at"
    fields = (
        "owner",
        "name",
        "status",
        "progress",
        "error",
        "strategy",
        "cached_from",
        "series_list",
        "timeframe",
        "period",
        "spec",
        "param_values",
        "settings",
        "candle_count",
        "engine_seconds",
        "timings",
        "task_id",
        "created_at",
        "started_at",
        "finished_at",
        "result_summary",
        "trades_link",
    )
    readonly_fields = fields

    @admin.display(description="Progress")
    def progress_pct(self, obj: Backtest) -> str:
        return f"{obj.progress * 100:.0f} %"

    @admin.display(description="Markets")
    def series_list(self, obj: Backtest) -> str:
        rows = MarketSeries.objects.filter(pk__in=obj.series_order).values_list("pk", "symbol")
        names = dict(rows)
        return ", ".join(f"{names.get(pk, '?')} (#{pk})" for pk in obj.series_order) or "—"

    @admin.display(description="Period")
    def period(self, obj: Backtest) -> str:
        return f"{_utc(obj.start_ts)} to {_utc(obj.end_ts)}"

    @admin.display(description="Result")
    def result_summary(self, obj: Backtest) -> Any:
        result = (
            BacktestResult.objects.defer("curves")
            .filter(backtest_id=obj.pk)
            .values("metrics", "trade_count")
            .first()
        )
        if result is None:
            return "—"
        metrics = result["metrics"] or {}
        keys = ("total_return", "cagr", "sharpe", "max_drawdown", "win_rate")
        shown = ", ".join(f"{k}={metrics.get(k)!r}" for k in keys if k in metrics)
        return f"{result['trade_count']} trades; {shown}"

    @admin.display(description="Trades")
    def trades_link(self, obj: Backtest) -> Any:
        url = reverse("admin:backtester_backtesttrade_changelist")
        url += f"?backtest__id__exact={obj.pk}"
        return format_html('<a href="{}">Trades of this backtest</a>', url)


@admin.register(BacktestTrade)
class BacktestTradeAdmin(ReadOnlyModelAdmin):
    list_display = (
        "backtest_id",
        "seq",
        "symbol",
        "side",
        "qty",
        "entry_time",
        "exit_time",
        "entry_price",
        "exit_price",
        "pnl",
        "exit_reason",
    )
    list_filter = ("exit_reason", "side")
    search_fields = ("=backtest__id", "symbol", "backtest__owner__email")
    list_per_page = 100
    # Filtering by backtest comes from the link on the backtest's page (?backtest__id__exact=).
    show_full_result_count = False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup == "backtest__id__exact" or super().lookup_allowed(lookup, value, request)


@admin.register(Strategy)
class StrategyAdmin(ReadOnlyModelAdmin):
    list_display = ("name", "owner", "preset", "created_at", "updated_at")
    list_filter = ("preset", "updated_at")
    list_select_related = ("owner",)
    search_fields = ("name", "owner__email", "preset")


@admin.register(MarketSeries)
class MarketSeriesAdmin(ReadOnlyModelAdmin):
    list_display = (
        "__str__",
        "owner",
        "source",
        "synthetic",
        "count",
        "first",
        "last",
        "updated_at",
    )
    list_filter = ("source", "synthetic", "exchange", "timeframe")
    list_select_related = ("owner",)
    search_fields = ("symbol", "exchange", "name", "owner__email")
    fields = (
        "owner",
        "exchange",
        "symbol",
        "timeframe",
        "name",
        "source",
        "synthetic",
        "first",
        "last",
        "count",
        "extra_columns",
        "data_hash",
        "chunks_link",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    @admin.display(description="First candle", ordering="first_ts")
    def first(self, obj: MarketSeries) -> str:
        return _utc(obj.first_ts)

    @admin.display(description="Last candle", ordering="last_ts")
    def last(self, obj: MarketSeries) -> str:
        return _utc(obj.last_ts)

    @admin.display(description="Chunks")
    def chunks_link(self, obj: MarketSeries) -> Any:
        url = reverse("admin:backtester_candlechunk_changelist") + f"?series__id__exact={obj.pk}"
        return format_html('<a href="{}">Stored chunks</a>', url)


@admin.register(FetchJob)
class FetchJobAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "series",
        "owner",
        "status",
        "progress_pct",
        "candles_fetched",
        "requests_made",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "series__exchange", "created_at")
    list_select_related = ("series", "owner")
    search_fields = ("series__symbol", "owner__email", "error")

    @admin.display(description="Progress")
    def progress_pct(self, obj: FetchJob) -> str:
        return f"{obj.progress * 100:.0f} %"


@admin.register(CandleChunk)
class CandleChunkAdmin(ReadOnlyModelAdmin):
    """The compressed columns are never read here: the queryset defers them, the page shows
    their size in bytes."""

    list_display = ("series", "start", "end", "count", "codec", "size")
    list_filter = ("codec",)
    list_select_related = ("series",)
    search_fields = ("series__symbol", "series__exchange")
    fields = ("series", "start", "end", "count", "codec", "size")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[CandleChunk]:
        return super().get_queryset(request).defer("data").annotate(data_bytes=Length("data"))

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup == "series__id__exact" or super().lookup_allowed(lookup, value, request)

    @admin.display(description="First candle", ordering="start_ts")
    def start(self, obj: CandleChunk) -> str:
        return _utc(obj.start_ts)

    @admin.display(description="Last candle", ordering="end_ts")
    def end(self, obj: CandleChunk) -> str:
        return _utc(obj.end_ts)

    @admin.display(description="Bytes", ordering="data_bytes")
    def size(self, obj: CandleChunk) -> str:
        return f"{getattr(obj, 'data_bytes', 0) or 0:,}"
