"""Personal API keys: a user's credentials for /api/v1/, stored only as a hash.

A key reads ``qf_<prefix>_<secret>``. The prefix (public, unique) finds the row; the whole key
is checked against ``secret_hash`` (SHA-256 of the key) in constant time. The key itself is
shown once, when it is made, and never again: nothing here can give it back.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from accounts.fields import owner_field
from config.modelfields import created_field, optional_time


class ApiKey(models.Model):
    user = owner_field("api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = created_field()
    last_used_at = optional_time()
    revoked_at = optional_time()

    class Meta:
        ordering = ("-created_at",)
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["user", "revoked_at"])]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (qf_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def masked(self) -> str:
        """What the list shows: the prefix, with the secret part elided."""
        return f"qf_{self.prefix}_…"
