"""Live updates of a bot's page: ``ws/bots/<id>/`` joins ``bot-<id>`` and ``ws/grid-bots/<id>/``
joins ``grid-bot-<id>``, for the bot's owner (Pro). A visitor not signed in is refused with
4401, one without Pro with 4403, and another user's bot or a missing one with 4404 (the same
answer for both)."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.apps import apps

from config.consumers import UserGroupConsumer


class _BotPageConsumer(UserGroupConsumer):
    """Joins the group of the bot named in the URL when the signed-in user owns it, then
    greets the page (``greet``). One-way: what a client sends is ignored."""

    model_name = ""  # a backtester model with an ``owner``

    def group_for(self, pk: int) -> str:
        raise NotImplementedError

    async def greet(self, pk: int) -> None:
        raise NotImplementedError

    def _pk(self) -> int:
        return int(self.scope["url_route"]["kwargs"]["pk"])

    def group_for_user(self, user: Any) -> str | None:
        pk = self._pk()
        owned = apps.get_model("backtester", self.model_name).objects.filter(pk=pk, owner=user)
        return self.group_for(pk) if owned.exists() else None

    async def connect(self) -> None:
        await super().connect()
        if self.group:
            await self.greet(self._pk())


class BotConsumer(_BotPageConsumer):
    """Forwards the bot's ``bot.update`` messages (status, step, order, event; see
    ``backtester.services.live_bots._publish``)."""

    model_name = "LiveBot"

    def group_for(self, pk: int) -> str:
        from backtester.services.live_bots import bot_group

        return bot_group(pk)

    async def greet(self, pk: int) -> None:
        await self.send_json({"type": "bot.update", "kind": "hello", "bot": pk})

    async def bot_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


def _grid_snapshot(pk: int) -> dict[str, Any]:
    from backtester.models import GridBot
    from backtester.services.grid_bots import grid_bot_snapshot, grid_mark

    bot = GridBot.objects.get(pk=pk)
    return grid_bot_snapshot(bot, grid_mark(bot))


class GridBotConsumer(_BotPageConsumer):
    """Forwards the grid bot's ``grid.update`` snapshots
    (``backtester.services.grid_bots.grid_bot_publish``), the current one first."""

    model_name = "GridBot"

    def group_for(self, pk: int) -> str:
        from backtester.services.grid_bots import grid_bot_group

        return grid_bot_group(pk)

    async def greet(self, pk: int) -> None:
        # The current state first: whatever changed between the page's render and now.
        snapshot = await database_sync_to_async(_grid_snapshot)(pk)
        await self.send_json({"type": "grid.update", "kind": "state", **snapshot})

    async def grid_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
