"""Push a message to every open browser tab of one user, over the Channels layer."""

from __future__ import annotations

from typing import Any

from config.realtime import group_send


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


def notify_user(user_id: int, *, kind: str, payload: dict[str, Any]) -> None:
    """Send now. Callers inside a transaction wrap this in transaction.on_commit."""
    group_send(user_group(user_id), {"type": "notify", "kind": kind, "payload": payload})
