"""Send a message to a Channels group from synchronous code (services, tasks, commands)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, message)


def group_send(group: str, message: dict[str, Any]) -> bool:
    """Deliver ``message`` to ``group``; never raises (pages fall back to polling).

    async_to_sync refuses to run on a thread whose event loop is running (a sync helper
    called from async code, or a library such as Playwright holding the main thread's loop),
    so in that case the send happens on a short-lived worker thread.
    """
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            _send(group, message)
        else:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(_send, group, message).result(timeout=10)
    except Exception:  # a dead channel layer must not fail the work that reports on it
        logger.warning("could not send a message to group %s", group, exc_info=True)
        return False
    return True
