"""Read helpers shared by the apps' selectors and services."""

from __future__ import annotations

from typing import TypeVar

from django.db import models
from django.db.models import QuerySet
from django.http import Http404

M = TypeVar("M", bound=models.Model)


def first_or_raise(rows: QuerySet[M], error: Exception) -> M:
    """The first of ``rows`` (one row, usually the owner's own ``pk``); raises ``error`` when
    there is none."""
    row = rows.first()
    if row is None:
        raise error
    return row


def first_or_404(rows: QuerySet[M], missing: str) -> M:
    """The first of ``rows``; Http404 saying ``missing`` when there is none."""
    return first_or_raise(rows, Http404(missing))
