"""Live progress of one scan over a websocket, for its owner on Pro only."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.gating import user_has_pro
from backtester.models import ScanRun
from backtester.services.scanner import scan_group, scan_payload


def _snapshot(user: Any, scan_id: int) -> tuple[int, dict[str, Any] | None]:
    """(close code or 0, the scan's current state)."""
    if user is None or not user.is_authenticated:
        return 4401, None
    if not user_has_pro(user):
        return 4403, None
    run = ScanRun.objects.filter(pk=scan_id, owner=user).first()
    if run is None:
        return 4404, None
    kind = "scan.progress" if run.is_active else "scan.status"
    return 0, {"type": kind, **scan_payload(run)}


class ScanConsumer(AsyncJsonWebsocketConsumer):
    """``ws/scans/<id>/``: refuses anonymous (4401), non-Pro (4403) and anyone but the owner
    (4404); joins ``scan-<id>``, sends the current state, then forwards progress messages."""

    group: str | None = None

    async def connect(self) -> None:
        scan_id = int(self.scope["url_route"]["kwargs"]["scan_id"])
        user = self.scope.get("user")
        code, _ = await database_sync_to_async(_snapshot)(user, scan_id)
        if code:
            await self.close(code=code)
            return
        self.group = scan_group(scan_id)
        # Join, then read: a message sent in between arrives after the snapshot, never lost.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        _, state = await database_sync_to_async(_snapshot)(user, scan_id)
        if state is not None:
            await self.send_json(state)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; whatever a client sends is ignored."""

    async def scan_progress(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def scan_status(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
