"""Live updates of a bot's page: ``ws/bots/<id>/`` joins ``bot-<id>`` for the bot's owner."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer


def bot_access(user: Any, pk: int) -> int:
    """0 when ``user`` may follow bot ``pk``; else the close code: 4401 not signed in, 4403
    no Pro, 4404 no such bot or another user's (the same answer as for a missing one)."""
    from accounts.gating import user_has_pro
    from backtester.models import LiveBot

    if user is None or not user.is_authenticated:
        return 4401
    if not user_has_pro(user):
        return 4403
    if not LiveBot.objects.filter(pk=pk, owner=user).exists():
        return 4404
    return 0


class BotConsumer(AsyncJsonWebsocketConsumer):
    """Checks access, then forwards the bot's ``bot.update`` messages (status, step, order,
    event; see ``backtester.services.live_bots._publish``). One-way: what a client sends is
    ignored."""

    group: str | None = None

    async def connect(self) -> None:
        from backtester.services.live_bots import bot_group

        pk = int(self.scope["url_route"]["kwargs"]["pk"])
        code = await database_sync_to_async(bot_access)(self.scope.get("user"), pk)
        if code:
            await self.close(code=code)
            return
        self.group = bot_group(pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "bot.update", "kind": "hello", "bot": pk})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way."""

    async def bot_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


def grid_bot_access(user: Any, pk: int) -> int:
    """As ``bot_access``, for grid bot ``pk``."""
    from accounts.gating import user_has_pro
    from backtester.models import GridBot

    if user is None or not user.is_authenticated:
        return 4401
    if not user_has_pro(user):
        return 4403
    if not GridBot.objects.filter(pk=pk, owner=user).exists():
        return 4404
    return 0


def _grid_snapshot(pk: int) -> dict[str, Any]:
    from backtester.models import GridBot
    from backtester.services.grid_bots import grid_bot_snapshot, grid_mark

    bot = GridBot.objects.get(pk=pk)
    return grid_bot_snapshot(bot, grid_mark(bot))


class GridBotConsumer(AsyncJsonWebsocketConsumer):
    """``ws/grid-bots/<id>/``: checks access, joins ``grid-bot-<id>`` and forwards the bot's
    ``grid.update`` snapshots (``backtester.services.grid_bots.grid_bot_publish``). One-way."""

    group: str | None = None

    async def connect(self) -> None:
        from backtester.services.grid_bots import grid_bot_group

        pk = int(self.scope["url_route"]["kwargs"]["pk"])
        code = await database_sync_to_async(grid_bot_access)(self.scope.get("user"), pk)
        if code:
            await self.close(code=code)
            return
        self.group = grid_bot_group(pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # The current state first: whatever changed between the page's render and now.
        snapshot = await database_sync_to_async(_grid_snapshot)(pk)
        await self.send_json({"type": "grid.update", "kind": "state", **snapshot})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way."""

    async def grid_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
