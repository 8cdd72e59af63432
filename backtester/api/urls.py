"""/api/v1/ routes of the backtester app. Each api module owns a list of patterns."""

from __future__ import annotations

urlpatterns: list = []

from backtester.api import marketdata as _md  # noqa: E402

urlpatterns += _md.urlpatterns

from backtester.api import backtests as _runs  # noqa: E402

urlpatterns += _runs.urlpatterns

from backtester.api import scanner as _scanner  # noqa: E402

urlpatterns += _scanner.urlpatterns

from backtester.api import montecarlo as _montecarlo  # noqa: E402

urlpatterns += _montecarlo.urlpatterns

from backtester.api import research as _research  # noqa: E402

urlpatterns += _research.urlpatterns

from backtester.api import bots as _bots  # noqa: E402

urlpatterns += _bots.urlpatterns

from backtester.api import grid_bots as _grid_bots  # noqa: E402

urlpatterns += _grid_bots.urlpatterns
