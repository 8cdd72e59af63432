"""Celery tasks of linked accounts: thin, id in, one service call. They run on the live queue
(``CELERY_LIVE_QUEUE``), never behind backtests."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from exchanges.services import account_check_scheduled, accounts_test_all


@shared_task(name="exchanges.check_account")
def check_account(account_id: int, trigger: str = "web") -> str:
    """Connection test of one account ("gone" if deleted, "plan_required" if its owner lost
    Pro); returns the resulting status."""
    return account_check_scheduled(account_id=account_id, trigger=trigger)


@shared_task(name="exchanges.check_all_accounts")
def check_all_accounts() -> dict[str, Any]:
    """The daily connection test of every API-key and OAuth account."""
    return accounts_test_all(trigger="daily")
