"""The accounts app's write path: users, plans, subscriptions and trials (``users``) and
personal API keys (``apikeys``)."""

from __future__ import annotations

from accounts.services.users import (
    account_delete,
    audit_record,
    demo_user_ensure,
    plans_ensure,
    site_sync,
    subscription_grant,
    subscription_revoke_manual,
    trial_start,
)

__all__ = [
    "account_delete",
    "audit_record",
    "demo_user_ensure",
    "plans_ensure",
    "site_sync",
    "subscription_grant",
    "subscription_revoke_manual",
    "trial_start",
]
