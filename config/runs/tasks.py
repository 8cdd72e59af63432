"""The sweeper, run by Celery beat every RUN_SWEEP_SECONDS."""

from __future__ import annotations

from celery import shared_task

from config.runs.lifecycle import sweep


@shared_task(name="runs.sweep", ignore_result=True)
def runs_sweep_task() -> int:
    """Fail the running runs whose worker stopped beating; returns how many."""
    return len(sweep())
