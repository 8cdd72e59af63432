"""Models of the accounts app, one module per topic."""

from __future__ import annotations

from accounts.models.apikeys import ApiKey
from accounts.models.audit import AuditLog
from accounts.models.billing import WebhookEvent
from accounts.models.users import Plan, Subscription, User, UserManager

__all__ = ["ApiKey", "AuditLog", "Plan", "Subscription", "User", "UserManager", "WebhookEvent"]
