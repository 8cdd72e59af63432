"""Operators' view of the risk app. Profiles are editable (support may need to loosen a limit
at a user's request, through the same validation); states, transitions, denials, snapshots and
kill-switch runs are records and stay read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms import ModelForm

from config.admin_base import ReadOnlyModelAdmin as ReadOnlyAdmin
from risk import rules
from risk.models import (
    DeniedOrder,
    EquitySnapshot,
    KillSwitchRun,
    ManualClose,
    RiskProfile,
    StateTransition,
    TradingState,
)


class RiskProfileAdminForm(ModelForm):
    class Meta:
        model = RiskProfile
        fields = ("owner", "account", *RiskProfile.LIMIT_FIELDS)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        errors = rules.validate_limits(
            {k: v for k, v in data.items() if k in RiskProfile.LIMIT_FIELDS}
        )
        if errors:
            raise ValidationError(errors)
        return data


@admin.register(RiskProfile)
class RiskProfileAdmin(admin.ModelAdmin):
    form = RiskProfileAdminForm
    list_display = ("owner", "account", "sizing", "risk_per_trade", "max_heat", "drawdown_limit",
                    "daily_loss_limit", "updated_at")  # fmt: skip
    list_select_related = ("owner", "account")
    search_fields = ("owner__email",)
    raw_id_fields = ("owner", "account")


@admin.register(TradingState)
class TradingStateAdmin(ReadOnlyAdmin):
    list_display = ("owner", "account", "state", "code", "reason", "latched_until", "changed_at")
    list_filter = ("state", "code")
    list_select_related = ("owner", "account")
    search_fields = ("owner__email",)


@admin.register(StateTransition)
class StateTransitionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "owner", "from_state", "to_state", "code", "actor", "reason")
    list_filter = ("to_state", "code")
    list_select_related = ("owner",)
    search_fields = ("owner__email", "actor")


@admin.register(DeniedOrder)
class DeniedOrderAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "owner", "account", "source", "side", "symbol", "code", "reason")
    list_filter = ("code", "source")
    list_select_related = ("owner", "account")
    search_fields = ("owner__email", "symbol")


@admin.register(EquitySnapshot)
class EquitySnapshotAdmin(ReadOnlyAdmin):
    list_display = ("at", "owner", "account", "equity")
    list_select_related = ("owner", "account")
    search_fields = ("owner__email",)


@admin.register(KillSwitchRun)
class KillSwitchRunAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "owner", "status", "close_positions", "attempts", "finished_at")
    list_filter = ("status",)
    list_select_related = ("owner",)
    search_fields = ("owner__email",)


@admin.register(ManualClose)
class ManualCloseAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "owner", "account", "symbol", "side", "amount", "status", "code")
    list_filter = ("status",)
    list_select_related = ("owner", "account")
    search_fields = ("owner__email", "symbol", "client_order_id")
