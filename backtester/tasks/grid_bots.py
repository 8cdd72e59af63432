"""Grid bot tasks, thin, an id in: the bots' steps on the live-trading queue
(``CELERY_LIVE_QUEUE``), grid searches where research runs (the shared run lifecycle)."""

from __future__ import annotations

from celery import shared_task

from backtester.services.grid_bots import grid_bots_due_ids, grid_step
from backtester.services.grid_search import grid_search_execute


@shared_task(name="backtester.grid_bot_step", ignore_result=True, acks_late=True)
def grid_bot_step_task(bot_id: int) -> int:
    """Reconcile the bot's levels and place what is missing. Safe to deliver twice (the
    advisory lock and the stored client order ids make a second run find nothing to send)
    and safe to kill (the next run looks every stored order up before acting)."""
    return grid_step(bot_id=bot_id)


@shared_task(name="backtester.grid_bots_due", ignore_result=True)
def grid_bots_due_task() -> int:
    """Queue one step per grid bot with work (beat runs this every GRID_BOTS_TICK_SECONDS)."""
    ids = grid_bots_due_ids()
    for bot_id in ids:
        grid_bot_step_task.delay(bot_id)
    return len(ids)


@shared_task(name="backtester.search_grids", ignore_result=True, acks_late=True)
def grid_search_task(search_id: int) -> None:
    """Run grid search ``search_id``; only a queued one runs, so a second delivery is a no-op."""
    grid_search_execute(search_id=search_id)
