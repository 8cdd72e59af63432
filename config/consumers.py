"""The websocket consumers the apps' live pages share: one-way, joined to one group; the
user-group kind names its group from the signed-in user (never from the URL alone), so a user
only hears their own updates."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.gating import user_has_pro


class OneWayConsumer(AsyncJsonWebsocketConsumer):
    """Joins one group (``join``) and leaves it on disconnect; whatever a client sends is
    ignored."""

    group: str | None = None

    async def join(self, group: str) -> None:
        self.group = group
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; whatever a client sends is ignored."""


class UserGroupConsumer(OneWayConsumer):
    """Refuses anonymous visitors (4401), users without Pro when ``needs_pro`` (4403), and a
    user ``group_for_user`` finds nothing for (4404); otherwise joins that group."""

    needs_pro = True

    def group_for_user(self, user: Any) -> str | None:
        """The group to join (called in a worker thread: it may read the database)."""
        raise NotImplementedError

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if self.needs_pro and not await database_sync_to_async(user_has_pro)(user):
            await self.close(code=4403)
            return
        group = await database_sync_to_async(self.group_for_user)(user)
        if group is None:
            await self.close(code=4404)
            return
        await self.join(group)
