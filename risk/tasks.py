"""Celery tasks of the risk app: thin, an id in, one service call."""

from __future__ import annotations

from celery import shared_task

from risk.services import kill_switch_retry


@shared_task(name="risk.kill_switch_retry", ignore_result=True, acks_late=True)
def kill_switch_retry_task(run_id: int) -> None:
    """Retry the accounts a kill-switch run failed on (sent to the ``live`` queue). Safe to
    deliver twice: only a run still marked partial is retried."""
    kill_switch_retry(run_id=run_id)
