"""Live progress of one backtest over a websocket, for its owner only."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.gating import user_has_pro
from backtester.models import Backtest
from backtester.services.backtests import group_name, live_equity, status_payload


def _snapshot(user: Any, backtest_id: int) -> tuple[int, dict[str, Any] | None]:
    """(close code or 0, the current state to send on connect)."""
    if user is None or not user.is_authenticated:
        return 4401, None
    if not user_has_pro(user):
        return 4403, None
    backtest = Backtest.objects.filter(pk=backtest_id, owner=user).first()
    if backtest is None:
        return 4404, None
    state = {"type": "backtest.status", **status_payload(backtest)}
    if backtest.is_active:
        state["equity"] = live_equity(backtest.pk)
    return 0, state


class BacktestConsumer(AsyncJsonWebsocketConsumer):
    """``ws/backtests/<id>/``: refuses anonymous (4401), non-Pro (4403) and anyone but the
    owner (4404); joins ``backtest-<id>``, sends the current state, then forwards progress and
    status messages as they come."""

    group: str | None = None

    async def connect(self) -> None:
        backtest_id = int(self.scope["url_route"]["kwargs"]["backtest_id"])
        code, state = await database_sync_to_async(_snapshot)(self.scope.get("user"), backtest_id)
        if code:
            await self.close(code=code)
            return
        self.group = group_name(backtest_id)
        # Join first, then read the state: nothing is lost between the two. Messages queued
        # meanwhile arrive after the snapshot and may repeat part of it; the page keeps
        # progress monotonic and appends only equity points newer than its last one.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        _, fresh = await database_sync_to_async(_snapshot)(self.scope.get("user"), backtest_id)
        await self.send_json(fresh or state)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; whatever a client sends is ignored."""

    async def backtest_progress(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def backtest_status(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
