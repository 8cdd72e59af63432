"""Pages of the backtester app. Each views module owns a list of patterns, joined here."""

from __future__ import annotations

app_name = "backtester"

urlpatterns: list = []
