"""Celery tasks that download candles."""
