"""Reads for Monte Carlo and stress runs: always through the owner, 404 for anyone else."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import QuerySet

from accounts.models import User
from backtester.models import Backtest, MonteCarloRun, StressRun
from config.selectors import first_or_404

R = TypeVar("R", MonteCarloRun, StressRun)


def _owned_runs(model: type[R], user: User, backtest: Backtest | None) -> QuerySet[R]:
    """``user``'s runs of ``model``, newest first (of ``backtest`` only, when given)."""
    runs = model.objects.filter(owner=user).select_related("backtest")
    return runs if backtest is None else runs.filter(backtest=backtest)


def montecarlo_runs_for(user: User, backtest: Backtest | None = None) -> QuerySet[MonteCarloRun]:
    """``user``'s Monte Carlo runs, newest first (of ``backtest`` only, when given)."""
    return _owned_runs(MonteCarloRun, user, backtest)


def montecarlo_get(*, user: User, pk: int) -> MonteCarloRun:
    """``user``'s Monte Carlo run ``pk``; Http404 for a missing one or someone else's."""
    return first_or_404(montecarlo_runs_for(user).filter(pk=pk), "Monte Carlo run not found.")


def stress_runs_for(user: User, backtest: Backtest | None = None) -> QuerySet[StressRun]:
    """``user``'s stress runs, newest first (of ``backtest`` only, when given)."""
    return _owned_runs(StressRun, user, backtest)


def stress_get(*, user: User, pk: int) -> StressRun:
    """``user``'s stress run ``pk``; Http404 for a missing one or someone else's."""
    return first_or_404(stress_runs_for(user).filter(pk=pk), "Stress run not found.")
