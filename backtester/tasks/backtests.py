"""Celery tasks that run backtests."""
