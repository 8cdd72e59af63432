"""The user keys many models declare the same way (the schema they make is unchanged)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models

if TYPE_CHECKING:
    from accounts.models.users import User


def owner_field(related_name: str, **extra: Any) -> models.ForeignKey[User, User]:
    """The user a row belongs to; deleting the user deletes the row."""
    return models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name=related_name, **extra
    )


def kept_user_field(related_name: str, **extra: Any) -> models.ForeignKey[User | None, User | None]:
    """A user a record mentions; the record stays (set null) when that user is deleted."""
    return models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name=related_name,
        **extra,
    )
