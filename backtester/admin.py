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
    BotOrder,
    CandleChunk,
    FetchJob,
    GridBot,
    GridLevel,
    GridSearch,
    LiveBot,
    MarketSeries,
    Strategy,
)
from backtester.models.live import BotEvent
from backtester.results.store import TRADE_FILL_COLUMNS
from config.admin_base import ReadOnlyModelAdmin


def _utc(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _refuse(self: Any, request: HttpRequest, obj: Any = None) -> bool:
    """A permission check that always says no (this admin only reads)."""
    return False


class ReadOnlyInline(admin.TabularInline):
    """Rows shown under their parent: every listed field read-only, none added or deleted."""

    extra = 0
    can_delete = False
    has_add_permission = _refuse

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields


class OwnedAdmin(ReadOnlyModelAdmin):
    """Rows a user owns: the list shows the owner (fetched with the rows)."""

    list_select_related = ("owner",)


# Columns of a run's detail page after its own settings.
RUN_TAIL_FIELDS = (
    *("status", "error", "task_id", "timings"),
    *("created_at", "started_at", "finished_at"),
)


@admin.register(Backtest)
class BacktestAdmin(OwnedAdmin):
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
    list_display = ("backtest_id", "seq", *TRADE_FILL_COLUMNS, "pnl", "exit_reason")
    list_filter = ("exit_reason", "side")
    search_fields = ("=backtest__id", "symbol", "backtest__owner__email")
    list_per_page = 100
    # Filtering by backtest comes from the link on the backtest's page (?backtest__id__exact=).
    show_full_result_count = False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        return lookup == "backtest__id__exact" or super().lookup_allowed(lookup, value, request)


@admin.register(Strategy)
class StrategyAdmin(OwnedAdmin):
    list_display = ("name", "owner", "preset", "created_at", "updated_at")
    list_filter = ("preset", "updated_at")
    search_fields = ("name", "owner__email", "preset")


@admin.register(MarketSeries)
class MarketSeriesAdmin(OwnedAdmin):
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
    search_fields = ("symbol", "exchange", "name", "owner__email")
    fields = (
        *("owner", "exchange", "symbol", "timeframe", "name", "source", "synthetic"),
        *("first", "last", "count", "extra_columns", "data_hash", "chunks_link"),
        *("created_at", "updated_at"),
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

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
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


# --- Scanner (issue 6): watchlists, scans and their outcomes, read-only -------------------------

from backtester.models import Alert, ScanRun, Watchlist  # noqa: E402


@admin.register(Watchlist)
class WatchlistAdmin(OwnedAdmin):
    list_display = (
        "name",
        "owner",
        "exchange",
        "timeframe",
        "universe",
        "lookback",
        "degree",
        "k",
        "schedule_minutes",
        "next_run_at",
    )
    list_filter = ("exchange", "timeframe", "universe", "schedule_minutes")
    search_fields = ("owner__email", "name", "=id")


@admin.register(ScanRun)
class ScanRunAdmin(OwnedAdmin):
    list_display = (
        "id",
        "name",
        "owner",
        "status",
        "trigger",
        "symbols_total",
        "buy_count",
        "sell_count",
        "hold_count",
        "scan_seconds",
        "created_at",
    )
    list_filter = ("status", "trigger", "exchange", "timeframe", "created_at")
    search_fields = ("owner__email", "name", "=id")
    date_hierarchy = "created_at"


@admin.register(Alert)
class AlertAdmin(OwnedAdmin):
    list_display = (
        "id",
        "symbol",
        "signal",
        "owner",
        "price",
        "lower",
        "upper",
        "potential_return",
        "zscore",
        "is_new",
        "created_at",
    )
    list_filter = ("signal", "is_alert", "is_new", "exchange", "timeframe")
    search_fields = ("owner__email", "symbol", "=scan__id")
    raw_id_fields = ("scan", "series")


# --- Monte Carlo and stress runs (issue 6) --------------------------------------------------

from backtester.models import MonteCarloRun, StressRun  # noqa: E402


@admin.register(MonteCarloRun)
class MonteCarloRunAdmin(ReadOnlyModelAdmin):
    list_display = (
        *("id", "backtest", "owner", "method", "iterations", "status", "ruin_display"),
        *("created_at", "finished_at"),
    )
    list_filter = ("status", "method", "created_at")
    list_select_related = ("backtest", "owner")
    search_fields = ("owner__email", "error")
    fields = (
        *("owner", "backtest", "method", "iterations", "block_length", "ruin_threshold", "seed"),
        *RUN_TAIL_FIELDS,
    )
    readonly_fields = fields

    @admin.display(description="P(ruin)")
    def ruin_display(self, obj: MonteCarloRun) -> str:
        return obj.ruin_display or "—"


@admin.register(StressRun)
class StressRunAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "backtest", "owner", "status", "scenarios", "created_at", "finished_at")
    list_filter = ("status", "created_at")
    list_select_related = ("backtest", "owner")
    search_fields = ("owner__email", "error")
    fields = ("owner", "backtest", "windows", "shocks", *RUN_TAIL_FIELDS)
    readonly_fields = fields

    @admin.display(description="Scenarios")
    def scenarios(self, obj: StressRun) -> str:
        return f"{len(obj.windows or [])} windows, {len(obj.shocks or [])} shocks"


# --- Optimizations and walk-forwards (issue 6) ----------------------------------------------

from backtester.models import (  # noqa: E402
    OptimizationChunk,
    OptimizationJob,
    OptimizationRow,
    WalkForwardJob,
)


@admin.register(OptimizationJob)
class OptimizationJobAdmin(OwnedAdmin):
    list_display = (
        "id",
        "__str__",
        "owner",
        "status",
        "method",
        "objective",
        "progress_display",
        "chunks_display",
        "best_objective",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "method", "objective", "created_at")
    search_fields = ("owner__email", "name", "=id")
    date_hierarchy = "created_at"
    exclude = ("spec",)

    @admin.display(description="Done")
    def progress_display(self, obj: OptimizationJob) -> str:
        return f"{obj.done:,} / {obj.combinations:,}"

    @admin.display(description="Chunks")
    def chunks_display(self, obj: OptimizationJob) -> str:
        return f"{obj.chunks_done} / {obj.chunk_count}"


@admin.register(OptimizationChunk)
class OptimizationChunkAdmin(ReadOnlyModelAdmin):
    list_display = ("job", "index", "first", "size", "worker", "pid", "seconds", "finished_at")
    list_filter = ("worker",)
    search_fields = ("=job__id", "worker")
    raw_id_fields = ("job",)


@admin.register(OptimizationRow)
class OptimizationRowAdmin(ReadOnlyModelAdmin):
    list_display = ("job", "index", "params", "objective", "total_return", "max_drawdown", "trades")
    search_fields = ("=job__id",)
    raw_id_fields = ("job",)


@admin.register(WalkForwardJob)
class WalkForwardJobAdmin(OwnedAdmin):
    list_display = (
        "id",
        "__str__",
        "owner",
        "status",
        "mode",
        "windows_display",
        "objective",
        "efficiency",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "mode", "unit", "objective", "created_at")
    search_fields = ("owner__email", "name", "=id")
    date_hierarchy = "created_at"
    exclude = ("spec", "curve")

    @admin.display(description="Windows")
    def windows_display(self, obj: WalkForwardJob) -> str:
        done = f"{obj.windows_done} / {obj.window_count}"
        return f"{done} · {obj.train}/{obj.test}/{obj.step} {obj.unit}"


class BotOrderInline(ReadOnlyInline):
    model = BotOrder
    fields = (
        *("client_order_id", "bar_ts", "action", "reason", "side", "amount"),
        *("state", "filled", "average_price", "fee", "error"),
    )
    ordering = ("-bar_ts",)


class BotAdmin(ReadOnlyModelAdmin):
    """A trading bot (live or grid): its owner, account and market; the rows under it inline."""

    list_select_related = ("owner", "account")
    search_fields = ("owner__email", "name", "symbol", "status_reason")


class BotRowAdmin(ReadOnlyModelAdmin):
    """The rows a bot keeps (orders, grid levels), each with its bot."""

    list_select_related = ("bot",)


@admin.register(LiveBot)
class LiveBotAdmin(BotAdmin):
    list_display = ("id", "name", "owner", "account", "symbol", "timeframe", "status", "cursor_ts")
    list_filter = ("status", "timeframe")
    inlines = (BotOrderInline,)


@admin.register(BotEvent)
class BotEventAdmin(ReadOnlyModelAdmin):
    """A bot's log: what it did and why (read-only, like its orders)."""

    list_display = ("at", "bot", "level", "kind", "message")
    list_filter = ("level", "kind")
    list_select_related = ("bot",)
    search_fields = ("message", "bot__name", "bot__owner__email", "=bot__id")
    date_hierarchy = "at"


@admin.register(BotOrder)
class BotOrderAdmin(BotRowAdmin):
    list_display = (
        *("client_order_id", "bot", "action", "reason", "side", "amount"),
        *("trigger_price", "fee_currency", "state"),
    )
    list_filter = ("state", "action")
    search_fields = ("client_order_id", "bot__owner__email", "error")


class GridLevelInline(ReadOnlyInline):
    model = GridLevel
    fields = (
        *("index", "price", "sell_price", "quantity", "state", "held"),
        *("client_order_id", "order_side", "order_status", "exchange_order_id"),
        *("buys", "sells", "realized_pnl", "note"),
    )
    ordering = ("index",)
    has_change_permission = _refuse


@admin.register(GridBot)
class GridBotAdmin(BotAdmin):
    """Grid bots to read (their levels inline, read-only): owners act through the site."""

    list_display = ("id", "name", "owner", "account", "symbol", "levels", "status", "grid_profit")
    list_filter = ("status", "spacing")
    inlines = (GridLevelInline,)


@admin.register(GridLevel)
class GridLevelAdmin(BotRowAdmin):
    list_display = ("bot", "index", "price", "state", "client_order_id", "order_status", "sells")
    list_filter = ("state", "order_status")
    search_fields = ("client_order_id", "bot__owner__email", "note")


@admin.register(GridSearch)
class GridSearchAdmin(ReadOnlyModelAdmin):
    """Grid searches to read (their rows are the owner's; the site runs and cancels them)."""

    list_display = ("id", "owner", "series", "objective", "combinations", "status", "created_at")
    list_filter = ("status", "objective")
    list_select_related = ("owner", "series")
    search_fields = ("owner__email", "series__symbol", "error")
