"""Live bot tasks, on the live-trading queue (``CELERY_LIVE_QUEUE``): thin, an id in."""

from __future__ import annotations

import time

from celery import shared_task

from backtester.services.live_bots import bot_step, running_bot_ids


@shared_task(name="backtester.live_bot_step", ignore_result=True, acks_late=True)
def live_bot_step_task(bot_id: int) -> int:
    """Process the bot's newly closed candles. Safe to deliver twice (the cursor and the stored
    orders make a second run a no-op) and safe to kill (the next run reconciles)."""
    return bot_step(bot_id=bot_id, now_ms=int(time.time() * 1000))


@shared_task(name="backtester.live_bots_due", ignore_result=True)
def live_bots_due_task() -> int:
    """Queue one step per running bot (beat runs this every LIVE_BOTS_TICK_SECONDS)."""
    ids = running_bot_ids()
    for bot_id in ids:
        live_bot_step_task.delay(bot_id)
    return len(ids)
