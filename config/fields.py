"""Keyword bundles spread into model, form and serializer fields, typed so that mypy can check
``models.DecimalField(**MONEY)`` against the field's signature (a plain dict cannot be)."""

from __future__ import annotations

from typing import TypedDict


class DecimalDigits(TypedDict):
    """``max_digits`` and ``decimal_places`` of a DecimalField."""

    max_digits: int
    decimal_places: int
