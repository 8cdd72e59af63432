"""Live bot tasks, on the live-trading queue (``CELERY_LIVE_QUEUE``): thin, an id in."""

from __future__ import annotations

import time

from celery import shared_task

from backtester.services.live_bots import bot_step


@shared_task(name="backtester.live_bot_step", ignore_result=True, acks_late=True)
def live_bot_step_task(bot_id: int) -> int:
    """Process the bot's newly closed candles. Safe to deliver twice (the cursor and the stored
    orders make a second run a no-op) and safe to kill (the next run reconciles)."""
    return bot_step(bot_id=bot_id, now_ms=int(time.time() * 1000))


@shared_task(name="backtester.live_bots_due", ignore_result=True)
def live_bots_due_task() -> int:
    """Queue one step per running bot (beat runs this every LIVE_BOTS_TICK_SECONDS); bots on
    an exchange-fed series step after their series is refreshed (one feed task per series)."""
    from backtester.models import MarketSeries
    from backtester.services.live_feed import bots_by_series, fed_series

    groups = bots_by_series()
    fed = {s.pk for s in MarketSeries.objects.filter(pk__in=list(groups)) if fed_series(s)}
    count = 0
    for series_id, bot_ids in groups.items():
        count += len(bot_ids)
        if series_id in fed:
            live_series_feed_task.delay(series_id, bot_ids)
            continue
        for bot_id in bot_ids:
            live_bot_step_task.delay(bot_id)
    return count


@shared_task(name="backtester.live_series_feed", ignore_result=True, acks_late=True)
def live_series_feed_task(series_id: int, bot_ids: list[int]) -> int:
    """Store the series' newly closed candles from its exchange, then step its bots."""
    from backtester.services.live_feed import series_feed

    added = series_feed(series_id=series_id)
    for bot_id in bot_ids:
        live_bot_step_task.delay(bot_id)
    return added
