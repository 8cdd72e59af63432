"""/api/v1/ routes of the backtester app. Each api module owns a list of patterns."""

from __future__ import annotations

urlpatterns: list = []

from backtester.api import marketdata as _md  # noqa: E402

urlpatterns += _md.urlpatterns

from backtester.api import backtests as _runs  # noqa: E402

urlpatterns += _runs.urlpatterns
