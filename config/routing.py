"""Websocket routes of every app, gathered in one list."""

from __future__ import annotations

from django.urls import path

from accounts.consumers import NotificationsConsumer
from backtester.consumers import BotConsumer, GridBotConsumer
from config.runs.consumers import RunConsumer
from copytrading.consumers import LeaderConsumer, SubscriptionConsumer
from risk.consumers import RiskConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationsConsumer.as_asgi()),
    # Live progress of every kind of background run (config/runs).
    path("ws/runs/<slug:kind>/<int:pk>/", RunConsumer.as_asgi()),
    path("ws/risk/", RiskConsumer.as_asgi()),
    path("ws/bots/<int:pk>/", BotConsumer.as_asgi()),
    path("ws/grid-bots/<int:pk>/", GridBotConsumer.as_asgi()),
    path("ws/copy/subscriptions/<int:pk>/", SubscriptionConsumer.as_asgi()),
    path("ws/copy/leaders/<int:pk>/", LeaderConsumer.as_asgi()),
]
