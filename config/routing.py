"""Websocket routes of every app, gathered in one list."""

from __future__ import annotations

from django.urls import path

from accounts.consumers import NotificationsConsumer
from backtester.consumers.backtests import BacktestConsumer
from backtester.consumers.marketdata import FetchProgressConsumer
from backtester.consumers.research import OptimizationConsumer, WalkForwardConsumer
from backtester.consumers.scanner import ScanConsumer
from risk.consumers import RiskConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationsConsumer.as_asgi()),
    path("ws/fetch/<int:job_id>/", FetchProgressConsumer.as_asgi()),
    path("ws/backtests/<int:backtest_id>/", BacktestConsumer.as_asgi()),
    path("ws/optimizations/<int:job_id>/", OptimizationConsumer.as_asgi()),
    path("ws/walkforwards/<int:job_id>/", WalkForwardConsumer.as_asgi()),
    path("ws/scans/<int:scan_id>/", ScanConsumer.as_asgi()),
    path("ws/risk/", RiskConsumer.as_asgi()),
]
