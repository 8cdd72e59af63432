"""Websocket consumer streaming a candle download's progress to its owner."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.gating import user_has_pro
from backtester.models import FetchJob
from backtester.services.marketdata import fetch_group, fetch_job_payload


class FetchProgressConsumer(AsyncJsonWebsocketConsumer):
    """``ws/fetch/<job_id>/``: the job's owner on Pro joins ``fetch-<id>``; anyone else is
    refused (4401 not signed in, 4403 no Pro, 4404 not their job). On joining it sends the
    job's current state, so a page opened mid-download starts from the right place."""

    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await database_sync_to_async(user_has_pro)(user):
            await self.close(code=4403)
            return
        job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        snapshot = await database_sync_to_async(_snapshot)(job_id, user.pk)
        if snapshot is None:
            await self.close(code=4404)
            return
        self.group = fetch_group(job_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        final = snapshot["status"] not in (FetchJob.Status.QUEUED, FetchJob.Status.RUNNING)
        await self.send_json({"kind": "done" if final else "progress", "payload": snapshot})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def fetch_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"kind": event["kind"], "payload": event["payload"]})


def _snapshot(job_id: int, user_id: int) -> dict[str, Any] | None:
    job = FetchJob.objects.select_related("series").filter(pk=job_id, owner_id=user_id).first()
    return None if job is None else fetch_job_payload(job)
