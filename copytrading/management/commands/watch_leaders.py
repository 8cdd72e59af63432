"""Watch the live leaders of one shard for fills (see ``copytrading.watchers``)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from copytrading.watchers import Watchers


class Command(BaseCommand):
    help = "Stream the fills of live leaders (those whose id is SHARD modulo SHARDS)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--shard", type=int, default=0)
        parser.add_argument("--shards", type=int, default=1)
        parser.add_argument("--rescan", type=float, default=30.0, help="seconds between rescans")

    def handle(self, *args: Any, shard: int, shards: int, rescan: float, **options: Any) -> None:
        if shards < 1 or not 0 <= shard < shards:
            raise CommandError(f"--shard must be one of 0..{shards - 1}")
        if rescan <= 0:
            raise CommandError("--rescan must be above 0")
        watchers = Watchers(shard=shard, shards=shards, rescan_seconds=rescan)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            self.stdout.write(f"watching leaders of shard {shard}/{shards}", ending="\n")
            self.stdout.flush()
            await watchers.run(stop)

        asyncio.run(main())
