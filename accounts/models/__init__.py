"""Models of the accounts app, one module per topic."""

from __future__ import annotations

from accounts.models.users import Plan, Subscription, User, UserManager

__all__ = ["Plan", "Subscription", "User", "UserManager"]
