"""Research tasks: thin, ids in, one service call each.

An optimization is a chord: ``optimization_chunk_task`` per slice of the combinations (their
return values, which say where each chunk ran, are what the chord collects), then
``optimization_finalize_task``. A walk-forward is one ``walkforward_task``.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from backtester.services.optimization import optimization_finalize, optimization_run_chunk
from backtester.services.walkforward import walkforward_execute


@shared_task(bind=True, name="backtester.optimization_chunk", ignore_result=False, acks_late=True)
def optimization_chunk_task(
    self: Any, job_id: int, chunk: int, first: int, combinations: list[dict[str, Any]]
) -> dict[str, Any]:
    """Evaluate and store one chunk. Safe to deliver twice: a stored chunk is not stored again,
    and the service fails the job (with the reason) on any error, so nothing is retried."""
    return optimization_run_chunk(
        job_id=job_id,
        chunk=chunk,
        first=first,
        combinations=combinations,
        worker=str(self.request.hostname or ""),
    )


@shared_task(name="backtester.optimization_finalize", ignore_result=True, acks_late=True)
def optimization_finalize_task(results: list[dict[str, Any]], job_id: int) -> None:
    """The chord's callback: ``results`` are the chunk tasks' return values."""
    optimization_finalize(job_id=job_id, results=[r for r in results or () if r])


@shared_task(name="backtester.walkforward", ignore_result=True, acks_late=True)
def walkforward_task(job_id: int) -> None:
    """Run walk-forward ``job_id``; only a queued job runs, so a second delivery is a no-op."""
    walkforward_execute(job_id=job_id)
