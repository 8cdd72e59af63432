"""Live updates of the risk dashboard: ``ws/risk/`` joins the user's own ``risk-<user id>``."""

from __future__ import annotations

from typing import Any

from config.consumers import UserGroupConsumer
from risk.services import group_name


class RiskConsumer(UserGroupConsumer):
    """Refuses anonymous visitors (4401) and non-Pro users (4403). The group is derived from
    the signed-in user, never from the URL, so a user can only ever hear their own updates."""

    def group_for_user(self, user: Any) -> str:
        return group_name(user.pk)

    async def risk_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
