"""Live updates of the copy-trading dashboards: ``ws/copy/subscriptions/<id>/`` for the
follower's subscription page, ``ws/copy/leaders/<id>/`` for the leader's own page.

Only the owner may listen: anonymous visitors are refused (4401), users without Pro (4403),
and anyone else's subscription or leader (or a missing one) is 4404, the socket's 404. The
socket is one-way."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.gating import user_has_pro
from copytrading.live import leader_group, subscription_group
from copytrading.models import Leader, Subscription


class _OwnerConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    def owned(self, user: Any, pk: int) -> bool:
        raise NotImplementedError

    def group_for(self, pk: int) -> str:
        raise NotImplementedError

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await database_sync_to_async(user_has_pro)(user):
            await self.close(code=4403)
            return
        pk = int(self.scope["url_route"]["kwargs"]["pk"])
        if not await database_sync_to_async(self.owned)(user, pk):
            await self.close(code=4404)
            return
        self.group = self.group_for(pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Whatever a client sends is ignored."""

    async def copy_update(self, event: dict[str, Any]) -> None:
        await self.send_json({k: v for k, v in event.items() if k != "type"})


class SubscriptionConsumer(_OwnerConsumer):
    def owned(self, user: Any, pk: int) -> bool:
        return Subscription.objects.filter(pk=pk, follower=user).exists()

    def group_for(self, pk: int) -> str:
        return subscription_group(pk)


class LeaderConsumer(_OwnerConsumer):
    def owned(self, user: Any, pk: int) -> bool:
        return Leader.objects.filter(pk=pk, owner=user).exists()

    def group_for(self, pk: int) -> str:
        return leader_group(pk)
