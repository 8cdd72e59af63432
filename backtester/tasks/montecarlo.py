"""Monte Carlo and stress-test tasks: thin, a run id in, one service call."""

from __future__ import annotations

from celery import shared_task

from backtester.services.montecarlo import montecarlo_execute
from backtester.services.stress import stress_execute


@shared_task(name="backtester.run_montecarlo", ignore_result=True, acks_late=True)
def run_montecarlo_task(run_id: int) -> None:
    """Run Monte Carlo run ``run_id``. Safe to deliver twice: only a queued run runs, and the
    service marks it failed (with the reason) on any error, so there is nothing to retry."""
    montecarlo_execute(run_id=run_id)


@shared_task(name="backtester.run_stress", ignore_result=True, acks_late=True)
def run_stress_task(run_id: int) -> None:
    """Run stress run ``run_id``; safe to deliver twice, as ``run_montecarlo_task``."""
    stress_execute(run_id=run_id)
