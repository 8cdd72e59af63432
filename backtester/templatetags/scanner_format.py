"""Number formats of the scanner pages: prices to six significant digits, signed percentages,
z-scores. ``None`` (a number that does not exist, such as HOLD's potential return) shows as a
dash."""

from __future__ import annotations

import math
from typing import Any

from django import template

register = template.Library()
DASH = "—"


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@register.filter
def price(value: Any) -> str:
    """64000.123 -> "64,000.12"; 0.0000123456 -> "0.0000123456" (six significant digits,
    at least two decimals)."""
    number = _number(value)
    if number is None:
        return DASH
    if number == 0:
        return "0"
    decimals = max(2, min(12, 5 - math.floor(math.log10(abs(number)))))
    return f"{number:,.{decimals}f}"


@register.filter
def signed_pct(value: Any) -> str:
    """A fraction as a signed percentage: 0.0345 -> "+3.45 %"."""
    number = _number(value)
    return DASH if number is None else f"{number * 100:+.2f} %"


@register.filter
def zscore(value: Any) -> str:
    number = _number(value)
    return DASH if number is None else f"{number:+.2f}"
