"""The optional exchange-account key many models declare the same way (the schema it makes is
unchanged)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from exchanges.models import ExchangeAccount

ACCOUNT_MODEL = "exchanges.ExchangeAccount"


def account_field(
    related_name: str, *, keep: bool = False, **extra: Any
) -> models.ForeignKey[ExchangeAccount | None, ExchangeAccount | None]:
    """An optional linked exchange account: deleted with it, or kept (set null) when ``keep``."""
    on_delete = models.SET_NULL if keep else models.CASCADE
    return models.ForeignKey(
        ACCOUNT_MODEL,
        on_delete=on_delete,
        null=True,
        blank=True,
        related_name=related_name,
        **extra,
    )
