"""Pages of the backtester app. Each views module owns a list of patterns, joined here."""

from __future__ import annotations

app_name = "backtester"

urlpatterns: list = []

from backtester.results import views as _results  # noqa: E402

urlpatterns += _results.urlpatterns

from backtester.views import marketdata as _md  # noqa: E402

urlpatterns += _md.urlpatterns

from backtester.views import backtests as _runs  # noqa: E402
from backtester.views import strategies as _strategies  # noqa: E402

urlpatterns += _strategies.urlpatterns + _runs.urlpatterns

from backtester.views import scanner as _scanner  # noqa: E402

urlpatterns += _scanner.urlpatterns

from backtester.views import research as _research  # noqa: E402

urlpatterns += _research.urlpatterns

from backtester.views import montecarlo as _montecarlo  # noqa: E402
from backtester.views import stress as _stress  # noqa: E402

urlpatterns += _montecarlo.urlpatterns + _stress.urlpatterns

from backtester.views import samples as _samples  # noqa: E402

urlpatterns += _samples.urlpatterns

from backtester.views import live_bots as _live_bots  # noqa: E402

urlpatterns += _live_bots.urlpatterns

from backtester.views import grid_bots as _grid_bots  # noqa: E402

urlpatterns += _grid_bots.urlpatterns
