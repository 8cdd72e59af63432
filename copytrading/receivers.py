"""Fills reported on any account that backs a leader start the copy path."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from exchanges.events import account_removing, account_usage, fill_observed
from exchanges.trading import Fill
from risk.signals import trading_halted

logger = logging.getLogger(__name__)


@receiver(fill_observed, dispatch_uid="copytrading.leader_fill_observed")
def leader_fill_observed(sender: Any, *, account_id: int, fill: Fill, **kwargs: Any) -> None:
    from copytrading.services.detection import leader_fill_from_event

    try:
        leader_fill_from_event(account_id=account_id, fill=fill)
    except Exception:
        # Never break the source (a paper order, a stream loop); the REST poll records the
        # fill on its next pass.
        logger.exception("recording fill %s of account %s failed", fill.fill_id, account_id)


@receiver(trading_halted, dispatch_uid="copytrading.follower_trading_halted")
def follower_trading_halted(
    sender: Any, *, user_id: int, account_id: int | None = None, reason: str = "", **kwargs: Any
) -> None:
    """A halted follower opens nothing more by copy (closes still go through)."""
    from copytrading.services.subscriptions import subscriptions_pause_for_halt

    paused = subscriptions_pause_for_halt(user_id=user_id, account_id=account_id, reason=reason)
    if paused:
        logger.info("paused %s subscription(s) of halted user %s", paused, user_id)


@receiver(account_usage, dispatch_uid="copytrading.account_usage")
def account_used_by_copying(sender: Any, *, account: Any, **kwargs: Any) -> list[str]:
    from copytrading.services.account_removal import copy_account_uses

    return copy_account_uses(account_id=account.pk)


@receiver(account_removing, dispatch_uid="copytrading.account_removing")
def account_removed_from_copying(sender: Any, *, account: Any, **kwargs: Any) -> None:
    """Retire its leaders, stop the subscriptions into it (or refuse: copies in flight)."""
    from copytrading.services.account_removal import copy_account_removing

    copy_account_removing(account_id=account.pk)
