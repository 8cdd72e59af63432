"""Live updates of the risk dashboard: ``ws/risk/`` joins the user's own ``risk-<user id>``."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.gating import user_has_pro
from risk.services import group_name


class RiskConsumer(AsyncJsonWebsocketConsumer):
    """Refuses anonymous visitors (4401) and non-Pro users (4403). The group is derived from
    the signed-in user, never from the URL, so a user can only ever hear their own updates."""

    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await database_sync_to_async(user_has_pro)(user):
            await self.close(code=4403)
            return
        self.group = group_name(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; whatever a client sends is ignored."""

    async def risk_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
