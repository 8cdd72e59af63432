"""Live bots (strategy and grid) react to the rest of the product: a halted owner's bots pause,
and deleting an exchange account stops the bots on it (or is refused while one is mid-order)."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from exchanges.events import account_removing, account_usage
from risk.signals import trading_halted

logger = logging.getLogger(__name__)


@receiver(trading_halted, dispatch_uid="backtester.bots_trading_halted")
def bots_trading_halted(
    sender: Any, *, user_id: int, account_id: int | None = None, reason: str = "", **kwargs: Any
) -> None:
    from backtester.services.grid_bots import grid_bots_pause_for_halt
    from backtester.services.live_bots import bots_pause_for_halt

    paused = bots_pause_for_halt(user_id=user_id, account_id=account_id, reason=reason)
    paused += grid_bots_pause_for_halt(user_id=user_id, account_id=account_id, reason=reason)
    if paused:
        logger.info("paused %s bot(s) of halted user %s", paused, user_id)


@receiver(account_usage, dispatch_uid="backtester.bots_account_usage")
def account_used_by_bots(sender: Any, *, account: Any, **kwargs: Any) -> list[str]:
    from backtester.services.grid_bots import grid_bot_account_uses
    from backtester.services.live_bots import bot_account_uses

    return bot_account_uses(account_id=account.pk) + grid_bot_account_uses(account_id=account.pk)


@receiver(account_removing, dispatch_uid="backtester.bots_account_removing")
def account_removed_from_bots(sender: Any, *, account: Any, **kwargs: Any) -> None:
    from backtester.services.grid_bots import grid_bots_account_removing
    from backtester.services.live_bots import bots_account_removing

    bots_account_removing(account_id=account.pk)
    grid_bots_account_removing(account_id=account.pk)
