"""Push a message to every open browser tab of one user, over the Channels layer."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


def notify_user(user_id: int, *, kind: str, payload: dict[str, Any]) -> None:
    """Send now. Callers inside a transaction wrap this in transaction.on_commit."""
    layer = get_channel_layer()
    if layer is None:
        return
    async_to_sync(layer.group_send)(
        user_group(user_id), {"type": "notify", "kind": kind, "payload": payload}
    )
