"""Admin: linked accounts (owner, exchange, status, permissions) and their audit trail, read
only. ``AccountSecret`` is deliberately not registered: no admin page shows a secret, even
encrypted."""

from __future__ import annotations

from django.contrib import admin

# Read only: deleting goes through exchanges.services (audit row, live work stopped), not here.
from config.admin_base import ReadOnlyModelAdmin as ReadOnly
from exchanges.models import AccountEvent, ExchangeAccount


@admin.register(ExchangeAccount)
class ExchangeAccountAdmin(ReadOnly):
    list_display = ("label", "owner", "exchange", "kind", "status", "can_trade", "can_withdraw",
                    "checked_at")  # fmt: skip
    list_filter = ("exchange", "kind", "status", "can_trade")
    search_fields = ("label", "owner__email", "exchange")
    list_select_related = ("owner",)
    fields = ("owner", "kind", "exchange", "label", "sandbox", "status", "status_message",
              "can_trade", "can_withdraw", "permissions", "balances", "checked_at", "key_last4",
              "paper_quote", "paper_starting_balance", "created_at", "updated_at")  # fmt: skip
    readonly_fields = fields


@admin.register(AccountEvent)
class AccountEventAdmin(ReadOnly):
    list_display = ("created_at", "owner", "account_label", "exchange", "action", "ok", "trigger")
    list_filter = ("action", "ok", "exchange", "trigger")
    search_fields = ("account_label", "owner__email", "message")
    list_select_related = ("owner",)
    readonly_fields = ("owner", "account", "account_label", "exchange", "action", "ok", "trigger",
                       "message", "detail", "created_at")  # fmt: skip
    fields = readonly_fields
