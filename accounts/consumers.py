"""Websocket consumer for per-user notifications (background job results, alerts)."""

from __future__ import annotations

from typing import Any

from accounts.notifications import user_group
from config.consumers import UserGroupConsumer


class NotificationsConsumer(UserGroupConsumer):
    """Joins the user's own group; anonymous visitors are refused (any plan may listen)."""

    needs_pro = False

    def group_for_user(self, user: Any) -> str:
        return user_group(user.pk)

    async def notify(self, event: dict[str, Any]) -> None:
        await self.send_json({"kind": event["kind"], "payload": event["payload"]})
