"""Live progress of research jobs over websockets, for their owners only.

``ws/optimizations/<id>/`` joins ``optimization-<id>`` and forwards ``optimization.progress``
(combinations done, chunks, best so far, which worker finished a chunk) and
``optimization.status``; ``ws/walkforwards/<id>/`` does the same for ``walkforward-<id>``.
Both refuse anonymous visitors (4401), users without Pro (4403) and anyone but the owner (4404),
and send the current state first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.gating import user_has_pro
from backtester.models import OptimizationJob, WalkForwardJob
from backtester.services import optimization, walkforward


def _snapshot(
    model: type[OptimizationJob] | type[WalkForwardJob],
    state: Callable[[Any], dict[str, Any]],
    kind: str,
    user: Any,
    job_id: int,
) -> tuple[int, dict[str, Any] | None]:
    """(close code or 0, the current state to send on connect)."""
    if user is None or not user.is_authenticated:
        return 4401, None
    if not user_has_pro(user):
        return 4403, None
    job = model.objects.filter(pk=job_id, owner=user).first()
    if job is None:
        return 4404, None
    return 0, {"type": f"{kind}.status", **state(job)}


class _JobConsumer(AsyncJsonWebsocketConsumer):
    model: type[OptimizationJob] | type[WalkForwardJob]
    kind = ""
    group: str | None = None

    def _state(self, job: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _group(self, job_id: int) -> str:
        raise NotImplementedError

    async def connect(self) -> None:
        job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        user = self.scope.get("user")
        snap = database_sync_to_async(_snapshot)
        code, state = await snap(self.model, self._state, self.kind, user, job_id)
        if code:
            await self.close(code=code)
            return
        self.group = self._group(job_id)
        # Join first, then read the state: nothing sent in between is lost (the page keeps
        # its counters monotonic, so a repeat does no harm).
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        _, fresh = await snap(self.model, self._state, self.kind, user, job_id)
        await self.send_json(fresh or state)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; whatever a client sends is ignored."""


class OptimizationConsumer(_JobConsumer):
    model = OptimizationJob
    kind = "optimization"

    def _state(self, job: Any) -> dict[str, Any]:
        return optimization.optimization_state(job)

    def _group(self, job_id: int) -> str:
        return optimization.group_name(job_id)

    async def optimization_progress(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def optimization_status(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


class WalkForwardConsumer(_JobConsumer):
    model = WalkForwardJob
    kind = "walkforward"

    def _state(self, job: Any) -> dict[str, Any]:
        return walkforward.walkforward_state(job)

    def _group(self, job_id: int) -> str:
        return walkforward.group_name(job_id)

    async def walkforward_progress(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def walkforward_status(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
