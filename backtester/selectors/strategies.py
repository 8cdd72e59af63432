"""Reads for strategies: a user's own strategies, nobody else's."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from accounts.models import User
from backtester.models import Strategy
from config.selectors import first_or_404


def strategies_for(user: User) -> QuerySet[Strategy]:
    """``user``'s strategies, most recently edited first, with their backtest counts."""
    return (
        Strategy.objects.filter(owner=user)
        .annotate(backtest_count=Count("backtests"))
        .order_by("-updated_at", "-pk")
    )


def strategy_get(*, user: User, pk: int) -> Strategy:
    """``user``'s strategy ``pk``; Http404 for a missing one or someone else's."""
    return first_or_404(Strategy.objects.filter(owner=user, pk=pk), "Strategy not found.")
