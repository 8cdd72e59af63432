"""Billing's periodic task: thin, it calls one service."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="accounts.billing.resync_ended_periods", ignore_result=True)
def resync_ended_periods_task() -> dict[str, int]:
    """Re-read from Stripe every subscription whose paid period has ended (run by beat)."""
    from accounts.billing.sync import subscriptions_resync_ended

    return subscriptions_resync_ended()
