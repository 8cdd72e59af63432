"""Reads for Monte Carlo and stress runs: always through the owner, 404 for anyone else."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from backtester.models import Backtest, MonteCarloRun, StressRun

R = TypeVar("R", MonteCarloRun, StressRun)


def _owned_runs(model: type[R], user: User, backtest: Backtest | None) -> QuerySet[R]:
    """``user``'s runs of ``model``, newest first (of ``backtest`` only, when given)."""
    runs = model.objects.filter(owner=user).select_related("backtest")
    return runs if backtest is None else runs.filter(backtest=backtest)


def _owned_run(runs: QuerySet[R], pk: int, missing: str) -> R:
    """Run ``pk`` among ``runs``; Http404 with ``missing`` when it is not there."""
    run = runs.filter(pk=pk).first()
    if run is None:
        raise Http404(missing)
    return run


def montecarlo_runs_for(user: User, backtest: Backtest | None = None) -> QuerySet[MonteCarloRun]:
    """``user``'s Monte Carlo runs, newest first (of ``backtest`` only, when given)."""
    return _owned_runs(MonteCarloRun, user, backtest)


def montecarlo_get(*, user: User, pk: int) -> MonteCarloRun:
    """``user``'s Monte Carlo run ``pk``; Http404 for a missing one or someone else's."""
    return _owned_run(montecarlo_runs_for(user), pk, "Monte Carlo run not found.")


def stress_runs_for(user: User, backtest: Backtest | None = None) -> QuerySet[StressRun]:
    """``user``'s stress runs, newest first (of ``backtest`` only, when given)."""
    return _owned_runs(StressRun, user, backtest)


def stress_get(*, user: User, pk: int) -> StressRun:
    """``user``'s stress run ``pk``; Http404 for a missing one or someone else's."""
    return _owned_run(stress_runs_for(user), pk, "Stress run not found.")
