"""The one websocket consumer for run progress: ``ws/runs/<kind>/<id>/``."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from config.consumers import OneWayConsumer
from config.runs import lifecycle, registry


def snapshot(user: Any, kind: str, pk: int) -> tuple[int, dict[str, Any] | None]:
    """(close code or 0, the run's current state): 4401 not signed in, 4403 the kind needs
    Pro and the user has not got it, 4404 no such kind or not the user's run."""
    from accounts.gating import user_has_pro

    if user is None or not user.is_authenticated:
        return 4401, None
    entry = registry.get(kind)
    if entry is None:
        return 4404, None
    if entry.requires_pro and not user_has_pro(user):
        return 4403, None
    run = entry.model_class()._default_manager.filter(pk=pk, owner=user).first()
    if run is None:
        return 4404, None
    return 0, {"type": "run.status", **lifecycle.state(run)}


class RunConsumer(OneWayConsumer):
    """Checks access, joins ``run-<kind>-<id>``, sends the current state, then forwards the
    run's ``run.progress`` and ``run.status`` messages. One-way: what a client sends is
    ignored."""

    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        kind, pk = str(kwargs["kind"]), int(kwargs["pk"])
        user = self.scope.get("user")
        code, state = await database_sync_to_async(snapshot)(user, kind, pk)
        if code:
            await self.close(code=code)
            return
        # Join first, then read the state again: nothing sent in between is lost (pages keep
        # progress monotonic, so a repeat does no harm).
        await self.join(lifecycle.group_name(kind, pk))
        _, fresh = await database_sync_to_async(snapshot)(user, kind, pk)
        await self.send_json(fresh or state)

    async def run_progress(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def run_status(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
