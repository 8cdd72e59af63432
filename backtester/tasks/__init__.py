"""Celery discovers `backtester.tasks`; the task modules are imported here so it finds them."""

from __future__ import annotations

from backtester.tasks import backtests, marketdata
from backtester.tasks import grid_bots as grid_bots
from backtester.tasks import live_bots as live_bots
from backtester.tasks import montecarlo as montecarlo
from backtester.tasks import research as research
from backtester.tasks import scanner as scanner

__all__ = ["backtests", "marketdata"]
