"""Reads for Monte Carlo and stress runs: always through the owner, 404 for anyone else."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from backtester.models import Backtest, MonteCarloRun, StressRun


def montecarlo_runs_for(user: User, backtest: Backtest | None = None) -> QuerySet[MonteCarloRun]:
    """``user``'s Monte Carlo runs, newest first (of ``backtest`` only, when given)."""
    runs = MonteCarloRun.objects.filter(owner=user).select_related("backtest")
    return runs if backtest is None else runs.filter(backtest=backtest)


def montecarlo_get(*, user: User, pk: int) -> MonteCarloRun:
    """``user``'s Monte Carlo run ``pk``; Http404 for a missing one or someone else's."""
    run = montecarlo_runs_for(user).filter(pk=pk).first()
    if run is None:
        raise Http404("Monte Carlo run not found.")
    return run


def stress_runs_for(user: User, backtest: Backtest | None = None) -> QuerySet[StressRun]:
    """``user``'s stress runs, newest first (of ``backtest`` only, when given)."""
    runs = StressRun.objects.filter(owner=user).select_related("backtest")
    return runs if backtest is None else runs.filter(backtest=backtest)


def stress_get(*, user: User, pk: int) -> StressRun:
    """``user``'s stress run ``pk``; Http404 for a missing one or someone else's."""
    run = stress_runs_for(user).filter(pk=pk).first()
    if run is None:
        raise Http404("Stress run not found.")
    return run
