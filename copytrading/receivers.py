"""Fills reported on any account that backs a leader start the copy path."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
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


# --- live dashboards (copytrading/live.py): after commit, ids and states only ---------------


def _publish_saved(model: str, name: str, publisher: str) -> Any:
    """A post_save receiver for ``model`` calling ``copytrading.live.<publisher>``."""

    def saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        from copytrading import live

        try:
            getattr(live, publisher)(instance, created=created)
        except Exception:  # a page update must never fail the copy path
            logger.exception("live update of %s %s failed", name, instance.pk)

    post_save.connect(saved, sender=model, dispatch_uid=f"copytrading.live_{name}", weak=False)
    return saved


copy_order_saved = _publish_saved("copytrading.CopyOrder", "order", "publish_copy_order")
copy_decision_saved = _publish_saved("copytrading.CopyDecision", "decision", "publish_decision")
copy_adjustment_saved = _publish_saved(
    "copytrading.CopyAdjustment", "adjustment", "publish_adjustment"
)
leader_fill_saved = _publish_saved("copytrading.LeaderFill", "fill", "publish_leader_fill")


@receiver(post_save, sender="copytrading.Leader", dispatch_uid="copytrading.leader_equity_start")
def leader_published(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """The equity curve starts at publication: store the account's equity read then as the
    first snapshot (the risk app's 5-minute snapshots of the account follow)."""
    if not created or instance.account_id is None or instance.equity_at is None:
        return
    from risk.services import equity_snapshot_record

    leader = instance
    transaction.on_commit(
        lambda: equity_snapshot_record(
            user=leader.owner, account=leader.account, equity=leader.equity, at=leader.equity_at
        ),
        robust=True,  # a failed snapshot must not fail the publication
    )
