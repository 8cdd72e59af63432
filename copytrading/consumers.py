"""Live updates of the copy-trading dashboards: ``ws/copy/subscriptions/<id>/`` for the
follower's subscription page, ``ws/copy/leaders/<id>/`` for the leader's own page.

Only the owner may listen: anonymous visitors are refused (4401), users without Pro (4403),
and anyone else's subscription or leader (or a missing one) is 4404, the socket's 404. The
socket is one-way."""

from __future__ import annotations

from typing import Any

from config.consumers import UserGroupConsumer
from copytrading.live import leader_group, subscription_group
from copytrading.models import Leader, Subscription


class _OwnerConsumer(UserGroupConsumer):
    def owned(self, user: Any, pk: int) -> bool:
        raise NotImplementedError

    def group_for(self, pk: int) -> str:
        raise NotImplementedError

    def group_for_user(self, user: Any) -> str | None:
        """The page's group when ``user`` owns the row named in the URL."""
        pk = int(self.scope["url_route"]["kwargs"]["pk"])
        return self.group_for(pk) if self.owned(user, pk) else None

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
