"""Operators' view of copy trading: leaders, subscriptions, copies and decisions, filterable by
state and skip reason. Copies and decisions are the audit trail: read-only here. None of these
rows hold secrets (accounts show by their label; keys live in the exchanges app's vault)."""

from __future__ import annotations

from django.contrib import admin

from config.admin_base import ReadOnlyModelAdmin as ReadOnlyAdmin
from copytrading.models import (
    CopyAdjustment,
    CopyDecision,
    CopyOrder,
    Leader,
    LeaderFill,
    Subscription,
)


@admin.register(Leader)
class LeaderAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "account", "status", "published_at", "polled_at")
    list_filter = ("status",)
    search_fields = ("name", "owner__email")
    raw_id_fields = ("owner", "account")
    readonly_fields = ("fill_cursor_ms", "polled_at", "poll_error", "equity", "equity_at")


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("pk", "follower", "leader", "account", "sizing_mode", "status", "created_at")
    list_filter = (
        "status",
        "sizing_mode",
        "drift_status",
        ("decisions__reason", admin.AllValuesFieldListFilter),
    )
    search_fields = ("follower__email", "leader__name")
    raw_id_fields = ("follower", "leader", "account")


@admin.register(LeaderFill)
class LeaderFillAdmin(ReadOnlyAdmin):
    list_display = ("leader", "fill_id", "symbol", "side", "amount", "price", "exchange_time")
    list_filter = ("source", "side")
    search_fields = ("fill_id", "symbol")


@admin.register(CopyOrder)
class CopyOrderAdmin(ReadOnlyAdmin):
    list_display = (
        "client_order_id",
        "subscription",
        "symbol",
        "side",
        "amount",
        "filled_amount",
        "state",
        "slippage_bps",
        "planned_at",
    )
    list_filter = (
        "state",
        ("decisions__reason", admin.AllValuesFieldListFilter),
        "closing",
        "side",
    )
    search_fields = ("client_order_id", "exchange_order_id", "symbol")
    list_select_related = ("subscription",)
    date_hierarchy = "planned_at"


@admin.register(CopyDecision)
class CopyDecisionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "subscription", "leader_fill", "outcome", "reason")
    list_filter = ("outcome", "reason", "subscription__status")
    list_select_related = ("subscription", "leader_fill")
    date_hierarchy = "created_at"
    search_fields = ("reason", "detail")


@admin.register(CopyAdjustment)
class CopyAdjustmentAdmin(ReadOnlyAdmin):
    """Joins, stop closes, copies' own stop-loss / take-profit and drift repairs (read-only)."""

    list_display = ("pk", "subscription", "kind", "symbol", "side", "amount", "state", "created_at")
    list_filter = ("kind", "state")
    list_select_related = ("subscription",)
    search_fields = ("client_order_id", "subscription__follower__email", "reason")
