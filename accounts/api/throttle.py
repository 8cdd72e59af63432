"""API throttling per user and per plan; anonymous callers per client IP.

Rates come from settings.API_THROTTLE_RATES by plan code ({"anon", "free", "pro"}; a plan with
no rate of its own gets Free's), read on every request so operators' changes and tests' overrides
apply at once. Counting is a fixed window that opens at the caller's first request: one atomic
counter in the default cache (Redis in production, shared by every process), so concurrent
requests cannot slip past the limit the way a read-modify-write history would let them, and a
refused request is not counted. The 429 carries Retry-After: the seconds until the window
closes. If the cache cannot be reached, requests are served (with a warning in the log) rather
than all refused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)
PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """ "60/min" -> (60, 60): requests allowed per period, and the period in seconds."""
    try:
        count, period = rate.split("/")
        return int(count), PERIODS[period.strip()[0]]
    except (ValueError, KeyError, IndexError):
        raise ImproperlyConfigured(
            f"API throttle rate {rate!r} is not 'number/period' (period s, min, hour or day)"
        ) from None


def rate_for(user: Any) -> str | None:
    """The rate that applies to ``user`` (None: not throttled)."""
    rates: Mapping[str, str | None] = settings.API_THROTTLE_RATES
    if user is None or not user.is_authenticated:
        return rates.get("anon")
    code = user.plan.code
    return rates[code] if code in rates else rates.get("free")


class PlanRateThrottle(BaseThrottle):
    """DRF throttle: the signed-in user's plan rate, or the anonymous rate per client IP."""

    key_prefix = "api-throttle"

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        user = getattr(request, "user", None)
        rate = rate_for(user)
        if rate is None:
            return True
        limit, period = parse_rate(rate)
        if user is not None and user.is_authenticated:
            ident = f"user:{user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        try:
            return self._count(f"{self.key_prefix}:{ident}:{period}", limit, period)
        except Exception:
            # The counter store is down (/health/ says so): serve rather than fail every call.
            logger.warning("API throttle cache unavailable; request let through", exc_info=True)
            return True

    def _count(self, base: str, limit: int, period: int) -> bool:
        now = time.time()
        start = cache.get(base)
        if start is None or start + period <= now:
            # Open a window; if another request opened one first, count in that one.
            cache.add(base, now, timeout=period)
            start = cache.get(base, now)
        counter = f"{base}:{start!r}"
        cache.add(counter, 0, timeout=period + 1)
        try:
            used = cache.incr(counter)
        except ValueError:  # the window expired between the two calls: this is its first
            cache.set(counter, 1, timeout=period + 1)
            used = 1
        if used <= limit:
            return True
        # A refused request is not spent: give its count back (if the plan grows mid-window,
        # the new allowance counts only what was served).
        with contextlib.suppress(ValueError):  # the window has just expired: nothing to return
            cache.decr(counter)
        self.retry_after = max(start + period - now, 1.0)
        return False

    def wait(self) -> float | None:
        return None if self.retry_after is None else float(math.ceil(self.retry_after))
