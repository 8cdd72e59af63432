"""Celery discovers `backtester.tasks`; the task modules are imported here so it finds them."""

from __future__ import annotations

from backtester.tasks import backtests, marketdata

__all__ = ["backtests", "marketdata"]
