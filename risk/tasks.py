"""Celery tasks of the risk app: thin, an id in, one service call."""

from __future__ import annotations

from celery import shared_task

from risk.services import equity_snapshots_record_all, kill_switch_retry


@shared_task(name="risk.kill_switch_retry", ignore_result=True, acks_late=True)
def kill_switch_retry_task(run_id: int) -> None:
    """Retry the accounts a kill-switch run failed on (sent to the ``live`` queue). Safe to
    deliver twice: only a run still marked partial is retried."""
    kill_switch_retry(run_id=run_id)


@shared_task(name="risk.equity_snapshots", ignore_result=True)
def equity_snapshots_task() -> dict[str, int]:
    """The beat's equity snapshot of every linked account of a Pro owner (``live`` queue)."""
    return equity_snapshots_record_all()
