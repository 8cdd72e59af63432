"""The operators' audit log: who changed what about which user, and when.

Rows are written by services only (never by hand in the admin) and are never edited. Links to
users are kept weak (SET_NULL) so deleting an operator or a customer does not delete the record
of what happened; the operator's email is copied at the time so "who" survives.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from accounts.fields import kept_user_field
from config.modelfields import created_field


class AuditLog(models.Model):
    class Action(models.TextChoices):
        PRO_GRANTED = "pro_granted", "Pro granted by an operator"
        PRO_REVOKED = "pro_revoked", "Pro revoked by an operator"
        ACCOUNT_DELETED = "account_deleted", "Account deleted by its owner"

    actor = kept_user_field(
        "+", help_text="Who did it (empty once that account is gone; see actor email)."
    )
    actor_email = models.EmailField(blank=True)
    action = models.CharField(max_length=40, choices=Action.choices)
    target_user = kept_user_field("audit_entries")
    detail = models.JSONField(default=dict, blank=True)
    created_at = created_field(index=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["action", "created_at"])]

    def __str__(self) -> str:
        who = self.actor_email or "system"
        return f"{self.created_at:%Y-%m-%d %H:%M} {who}: {self.get_action_display()}"
