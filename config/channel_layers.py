"""A Channels layer kept in a SQLite file, for the embedded shape only.

Channels' in-memory layer cannot carry a message from the Celery worker process to the daphne
process, and the embedded shape has no Redis. This layer stores messages and group
memberships in one SQLite file (WAL mode) that both processes open; receivers poll it. It is
meant for one machine and a handful of users: production uses channels_redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    body TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS message_channel ON message (channel, id);
CREATE TABLE IF NOT EXISTS membership (
    grp TEXT NOT NULL,
    channel TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (grp, channel)
);
"""


class SQLiteChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(
        self,
        path: str,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 1000,
        poll_interval: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, **kwargs)
        self.path = path
        self.group_expiry = group_expiry
        self.poll_interval = poll_interval
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # --- synchronous primitives, run in a thread -------------------------------------------
    def _send(self, channel: str, message: dict[str, Any]) -> None:
        now = time.time()
        db = self._connect()
        try:
            db.execute("DELETE FROM message WHERE expires < ?", (now,))
            (count,) = db.execute(
                "SELECT COUNT(*) FROM message WHERE channel = ?", (channel,)
            ).fetchone()
            if count >= self.get_capacity(channel):
                raise ChannelFull(channel)
            db.execute(
                "INSERT INTO message (channel, body, expires) VALUES (?, ?, ?)",
                (channel, json.dumps(message), now + self.expiry),
            )
        finally:
            db.close()

    def _pop(self, channel: str) -> dict[str, Any] | None:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT id, body FROM message WHERE channel = ? AND expires >= ? "
                "ORDER BY id LIMIT 1",
                (channel, time.time()),
            ).fetchone()
            if row is not None:
                db.execute("DELETE FROM message WHERE id = ?", (row[0],))
            db.execute("COMMIT")
        finally:
            db.close()
        return None if row is None else json.loads(row[1])

    def _group_channels(self, group: str) -> list[str]:
        db = self._connect()
        try:
            rows = db.execute(
                "SELECT channel FROM membership WHERE grp = ? AND expires >= ?",
                (group, time.time()),
            ).fetchall()
        finally:
            db.close()
        return [r[0] for r in rows]

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        db = self._connect()
        try:
            db.execute(sql, params)
        finally:
            db.close()

    # --- channel layer API ------------------------------------------------------------------
    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        await asyncio.to_thread(self._send, channel, message)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        while True:
            message = await asyncio.to_thread(self._pop, channel)
            if message is not None:
                return message
            await asyncio.sleep(self.poll_interval)

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.sqlite!{uuid.uuid4().hex}"

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await asyncio.to_thread(
            self._execute,
            "INSERT OR REPLACE INTO membership (grp, channel, expires) VALUES (?, ?, ?)",
            (group, channel, time.time() + self.group_expiry),
        )

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        await asyncio.to_thread(
            self._execute, "DELETE FROM membership WHERE grp = ? AND channel = ?", (group, channel)
        )

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.require_valid_group_name(group)
        for channel in await asyncio.to_thread(self._group_channels, group):
            # A slow consumer loses messages rather than blocking the sender.
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)

    async def flush(self) -> None:
        db = self._connect()
        try:
            db.execute("DELETE FROM message")
            db.execute("DELETE FROM membership")
        finally:
            db.close()
