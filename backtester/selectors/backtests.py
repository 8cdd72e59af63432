"""Reads for backtest runs: a user's backtests, status counts, and whether workers answer."""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Q, QuerySet

from accounts.models import User
from backtester.models import Backtest, MarketSeries
from config.selectors import first_or_404

logger = logging.getLogger(__name__)

WORKERS_CACHE_KEY = "backtester-workers-alive"
WORKERS_CACHE_SECONDS = 5
WORKERS_PING_TIMEOUT = 0.5


def backtests_for(user: User) -> QuerySet[Backtest]:
    """``user``'s backtests, newest first, with the result row joined (for key metrics)."""
    return (
        Backtest.objects.filter(owner=user)
        .select_related("result", "strategy")
        .defer("result__curves")
    )


def backtest_get(*, user: User, pk: int) -> Backtest:
    """``user``'s backtest ``pk``; Http404 for a missing one or someone else's."""
    return first_or_404(
        Backtest.objects.filter(owner=user, pk=pk).select_related("strategy", "cached_from"),
        "Backtest not found.",
    )


def series_for(user: User) -> QuerySet[MarketSeries]:
    """Market series ``user`` may backtest: their own uploads and the shared data."""
    return MarketSeries.objects.filter(Q(owner=user) | Q(owner__isnull=True)).filter(count__gt=0)


def series_by_ids(user: User, ids: list[int]) -> list[MarketSeries]:
    """The visible series among ``ids``, in the order given (unknown or foreign ids dropped)."""
    found = {s.pk: s for s in series_for(user).filter(pk__in=ids)}
    return [found[i] for i in ids if i in found]


def backtest_symbols(backtest: Backtest) -> list[str]:
    """Symbols of a backtest in series order (names of deleted series are gone: '?')."""
    names = dict(
        MarketSeries.objects.filter(pk__in=backtest.series_order).values_list("pk", "symbol")
    )
    return [names.get(pk, "?") for pk in backtest.series_order]


def status_counts(user: User) -> dict[str, int]:
    """How many of ``user``'s backtests are in each status (every status present, 0 if none)."""
    rows = Backtest.objects.filter(owner=user).values("status").annotate(n=Count("id"))
    counts = dict.fromkeys(Backtest.Status.values, 0)
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def workers_alive() -> dict[str, Any]:
    """Whether any Celery worker answers a ping (cached a few seconds; the ping waits at most
    WORKERS_PING_TIMEOUT). ``{"alive": bool | None, "count": int, "names": [...]}``; alive is
    None when the broker could not be asked at all."""
    cached = cache.get(WORKERS_CACHE_KEY)
    if cached is not None:
        return cached
    from config.celery import app

    try:
        replies = app.control.inspect(timeout=WORKERS_PING_TIMEOUT).ping() or {}
        state: dict[str, Any] = {
            "alive": bool(replies),
            "count": len(replies),
            "names": sorted(replies),
        }
    except Exception:
        logger.warning("worker ping failed", exc_info=True)
        state = {"alive": None, "count": 0, "names": []}
    cache.set(WORKERS_CACHE_KEY, state, WORKERS_CACHE_SECONDS)
    return state
