"""Field factories for the timestamps many models declare the same way (and the Meta index and
unique constraint many declare alike), so each model states only what is its own. Each returns
exactly what used to be written out (the schema does not change). The owner and
exchange-account keys are in ``accounts.fields`` and ``exchanges.fields``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models


def created_field(*, index: bool = False) -> models.DateTimeField[Any, datetime]:
    """When the row was written (set once)."""
    if index:
        return models.DateTimeField(auto_now_add=True, db_index=True)
    return models.DateTimeField(auto_now_add=True)


def updated_field() -> models.DateTimeField[Any, datetime]:
    """When the row was last saved."""
    return models.DateTimeField(auto_now=True)


def optional_time() -> models.DateTimeField[Any, datetime | None]:
    """A moment that may not have happened yet."""
    return models.DateTimeField(null=True, blank=True)


def owner_status_index(name: str) -> list[models.Index]:
    """The index a model's owner lists its rows by state through: (owner, status), ``name``."""
    return [models.Index(fields=["owner", "status"], name=name)]


def unique_constraint(name: str, *fields: str) -> list[models.BaseConstraint]:
    """The one unique constraint of a model's rows: no two share ``fields`` (``name``)."""
    return [models.UniqueConstraint(fields=list(fields), name=name)]
