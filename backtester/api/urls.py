"""/api/v1/ routes of the backtester app. Each api module owns a list of patterns."""

from __future__ import annotations

urlpatterns: list = []
