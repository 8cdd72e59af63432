"""Long-running watchers of leaders' fills: one websocket stream (ccxt.pro, REST poll as the
fallback) per live leader, many leaders per process, the leaders sharded over processes.

``python manage.py watch_leaders --shard I --shards N`` runs the leaders whose id is I modulo
N; every ``rescan`` seconds it starts streams for leaders published since and stops those
retired, paused or deleted. A stream reports each fill through ``exchanges.events`` (the
same path as the REST poll and the paper exchange), so the fill is stored once whichever
source sees it first, and the fan-out runs on the live Celery queue. The beat's REST poll
stays on as the safety net for a watcher that is down. Paper leaders need no watcher: the
paper exchange reports their fills as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from copytrading.models import Leader
from exchanges.models import ExchangeAccount

logger = logging.getLogger(__name__)


def leaders_for_shard(shard: int, shards: int) -> dict[int, int]:
    """{leader id: fill cursor} of the live leaders on keyed accounts in this shard."""
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not one of 0..{shards - 1}")
    rows = (
        Leader.objects.filter(status=Leader.Status.ACTIVE, account__isnull=False)
        .exclude(account__kind=ExchangeAccount.Kind.PAPER)
        .values_list("pk", "fill_cursor_ms")
    )
    return {pk: cursor for pk, cursor in rows if pk % shards == shard}


def _stream_for(leader_id: int, since_ms: int) -> Any:
    from exchanges.adapters import fill_stream_for

    leader = Leader.objects.select_related("account").get(pk=leader_id)
    if leader.account is None:  # deleted since the rescan listed it (the leader is retired)
        raise LookupError(f"leader {leader_id} has no exchange account any more")
    return fill_stream_for(leader.account, since_ms=since_ms)


@dataclass
class Watchers:
    shard: int = 0
    shards: int = 1
    rescan_seconds: float = 30.0
    stream_for: Callable[[int, int], Any] = _stream_for
    running: dict[int, tuple[asyncio.Event, asyncio.Task[None], Any]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: keep one stream per leader of the shard."""
        try:
            while not stop.is_set():
                await self.rescan()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.rescan_seconds)
        finally:
            for leader_id in list(self.running):
                await self._stop(leader_id)

    async def rescan(self) -> None:
        wanted = await sync_to_async(leaders_for_shard, thread_sensitive=False)(
            self.shard, self.shards
        )
        for leader_id in [i for i in self.running if i not in wanted]:
            logger.info("leader %s no longer live: stopping its stream", leader_id)
            await self._stop(leader_id)
        for leader_id, cursor in wanted.items():
            current = self.running.get(leader_id)
            if current is not None and not current[1].done():
                continue
            try:
                stream = await sync_to_async(self.stream_for, thread_sensitive=False)(
                    leader_id, cursor
                )
            except Exception as exc:  # a key that no longer decrypts, a deleted account
                logger.warning("leader %s cannot be watched: %s", leader_id, exc)
                continue
            event = asyncio.Event()
            task = asyncio.ensure_future(self._guarded(leader_id, stream, event))
            self.running[leader_id] = (event, task, stream)
            logger.info("watching leader %s from %s", leader_id, cursor)

    async def _guarded(self, leader_id: int, stream: Any, event: asyncio.Event) -> None:
        try:
            await stream.run(event)
        except Exception:  # restarted on the next rescan
            logger.exception("stream of leader %s stopped", leader_id)

    async def _stop(self, leader_id: int) -> None:
        event, task, _stream = self.running.pop(leader_id)
        event.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=15)
