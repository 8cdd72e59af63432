"""Background tasks of the accounts app: thin, id in, service call out."""

from __future__ import annotations

import os
import socket
import time

from celery import shared_task

from accounts.notifications import notify_user


@shared_task(name="accounts.worker_selftest", ignore_result=False)
def worker_selftest(user_id: int, sent_at: float) -> dict[str, object]:
    """Answer a user's "test background jobs" request through the websocket layer."""
    payload = {
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "round_trip_ms": round((time.time() - sent_at) * 1000, 1),
    }
    notify_user(user_id, kind="worker_selftest", payload=payload)
    return payload
