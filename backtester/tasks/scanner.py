"""Scanner tasks: thin, an id in (or nothing, for the schedule), one service call."""

from __future__ import annotations

from celery import shared_task

from backtester.services.scanner import scan_execute, scans_due_enqueue


@shared_task(name="backtester.scan_run", ignore_result=True, acks_late=True)
def scan_run_task(scan_id: int) -> None:
    """Run scan ``scan_id``. Safe to deliver twice: only a queued scan runs, and the service
    records any failure on the scan, so there is nothing to retry."""
    scan_execute(scan_id=scan_id)


@shared_task(name="backtester.scans_due", ignore_result=True)
def scans_due_task() -> int:
    """Queue the scans whose schedule is due (Celery beat runs this every minute). Returns how
    many were queued."""
    return len(scans_due_enqueue())
