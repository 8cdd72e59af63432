"""Backtest tasks: thin, an id in, one service call."""

from __future__ import annotations

from celery import shared_task

from backtester.services.backtests import backtest_execute


@shared_task(name="backtester.run_backtest", ignore_result=True, acks_late=True)
def run_backtest_task(backtest_id: int) -> None:
    """Run backtest ``backtest_id``. Safe to deliver twice: only a queued backtest runs, and
    the service marks it failed (with the reason) on any error, so there is nothing to retry."""
    backtest_execute(backtest_id=backtest_id)
