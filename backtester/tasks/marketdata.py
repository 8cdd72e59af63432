"""Celery tasks that download candles: thin, a job id in, one service call."""

from __future__ import annotations

from celery import shared_task

from backtester.services.marketdata import fetch_job_execute, upload_job_execute


@shared_task(name="backtester.fetch_candles", ignore_result=True, acks_late=True)
def fetch_job_run(job_id: int) -> None:
    """Run fetch job ``job_id``. Safe to deliver twice: only a queued or running job runs, a
    re-run continues from the last stored candle, and failures are recorded on the job."""
    fetch_job_execute(job_id=job_id)


@shared_task(name="backtester.parse_upload", ignore_result=True, acks_late=True)
def upload_parse_task(job_id: int) -> None:
    """Parse and store upload ``job_id``. Safe to deliver twice: only a queued upload runs."""
    upload_job_execute(job_id=job_id)
