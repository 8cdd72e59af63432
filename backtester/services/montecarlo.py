"""Monte Carlo runs of a finished backtest: submit, and the worker's execution.

``montecarlo_create`` checks the request (the owner's completed backtest, a method its data
supports, 1,000 to 100,000 iterations, a ruin threshold, a seed), saves the run as queued and
enqueues ``run_montecarlo_task`` after the transaction commits. ``montecarlo_execute`` is what
the task calls: it claims the queued run under a row lock (a duplicate delivery finds nothing
to do), re-checks the owner's plan, reads the backtest's trades or equity curve, runs
``engine.montecarlo`` and stores a compact result (percentile bands at about a hundred points,
histogram bins, summaries), or marks the run failed with the reason.

What is resampled:
* shuffle / bootstrap: each closed trade's P&L over the realized equity before it
  (``trade_equity_returns``), so compounding the original order gives the realized equity
  (capital + the closed trades' P&L). A position still open at the end is not a trade and is
  left out; the result says so.
* block: the per-bar returns of the saved equity curve (mark to market at each close).

Claiming, progress, failure and completion are the shared lifecycle's (config/runs); the
``execute`` helper here is shared with services/stress.py.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from django.db import models, transaction

from accounts.gating import require_pro
from accounts.models import User
from backtester.engine import montecarlo as mc
from backtester.engine.candles import bars_per_year, timeframe_ms
from backtester.engine.errors import EngineError
from backtester.models import Backtest, BacktestResult, BacktestTrade, MonteCarloRun
from backtester.results.charts import num_list
from backtester.results.store import finite_or_none
from config.exceptions import ApplicationError, Conflict, NotFound
from config.runs import lifecycle
from config.selectors import first_or_raise

logger = logging.getLogger(__name__)

MIN_ITERATIONS = 1_000
MAX_ITERATIONS = mc.MAX_ITERATIONS
DEFAULT_ITERATIONS = 10_000
DEFAULT_RUIN_THRESHOLD = 0.5
MIN_TRADES = 2
MIN_BARS = 10
# Queued or running Monte Carlo runs per user (and, separately, stress runs): each is short,
# so a few at once is plenty and keeps one user from filling the queue.
MAX_ACTIVE_RUNS = 3
RunModel = TypeVar("RunModel", bound=models.Model)


# --- shared by the Monte Carlo and stress services -------------------------------------------


def completed_backtest(*, user: User, backtest: Backtest) -> tuple[Backtest, BacktestResult]:
    """``user``'s completed ``backtest`` (fresh from the database) and its result. NotFound for
    someone else's, Conflict when it has no result."""
    if backtest is None or backtest.owner_id != user.pk:
        raise NotFound("Backtest not found.", field="backtest")
    fresh = first_or_raise(
        Backtest.objects.filter(pk=backtest.pk, owner=user),
        NotFound("Backtest not found.", field="backtest"),
    )
    result = BacktestResult.objects.filter(backtest=fresh).defer("curves").first()
    if fresh.status != Backtest.Status.COMPLETED or result is None:
        raise Conflict(
            f"This backtest is {fresh.get_status_display().lower()}; only a completed backtest "
            "can be tested.",
            field="backtest",
        )
    return fresh, result


def check_capacity(*, user: User, model: type[Any], noun: str) -> None:
    """Lock the user's row (one submit at a time) and raise Conflict when MAX_ACTIVE_RUNS are
    already queued or running (runs whose worker died are failed by the sweeper)."""
    User.objects.select_for_update().filter(pk=user.pk).first()
    active = model.objects.filter(owner=user, status__in=model.ACTIVE).count()
    if active >= MAX_ACTIVE_RUNS:
        raise Conflict(
            f"You already have {active} {noun} queued or running, the most that run at once. "
            "Wait for one to finish."
        )


def execute(
    model: type[Any], pk: int, body: Callable[[Any, dict[str, float]], dict[str, Any]]
) -> None:
    """Run ``pk`` through the shared lifecycle: ``body(run, timings)`` computes its results,
    which are stored with the timings when it completes; errors fail it with their message."""

    def run_body(run: Any) -> dict[str, Any]:
        timings: dict[str, float] = dict(run.timings)
        started = time.perf_counter()
        try:
            results = body(run, timings)
        finally:
            timings["total"] = time.perf_counter() - started
            model.objects.filter(pk=pk).update(timings=rounded(timings))
        return {"results": results, "timings": rounded(timings)}

    lifecycle.execute(model, pk, run_body, expected=(EngineError,))


def step(run: Any, fraction: float, stage: str) -> None:
    """Announce that ``run`` reached ``stage`` (raises lifecycle.Cancelled once it stopped)."""
    lifecycle.progress(type(run), run.pk, fraction=fraction, stage=stage)


def rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in timings.items()}


def state_extra(run: Any) -> dict[str, Any]:
    """Nothing beyond the lifecycle's fields: the page reloads to draw the results."""
    return {}


def status_payload(run: Any) -> dict[str, Any]:
    """What a page polls: status, its label, the error, and whether it has finished."""
    return lifecycle.state(run)


def backtest_bars(backtest: Backtest) -> int:
    """Bars per market of a completed backtest."""
    symbols = max(1, len(backtest.series_order or []))
    return int(backtest.candle_count // symbols)


# --- submit ---------------------------------------------------------------------------------


def _whole(value: Any, field: str, label: str) -> int:
    if isinstance(value, bool):
        raise ApplicationError(f"{label} must be a whole number.", field=field)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise ApplicationError(f"{label} must be a whole number.", field=field) from None
    return int(value)


@transaction.atomic
def montecarlo_create(
    *,
    user: User,
    backtest: Backtest,
    method: str,
    iterations: int = DEFAULT_ITERATIONS,
    block_length: int | None = None,
    ruin_threshold: float = DEFAULT_RUIN_THRESHOLD,
    seed: int | None = None,
) -> MonteCarloRun:
    """Queue a Monte Carlo run of ``user``'s completed ``backtest``.

    ``method`` is shuffle, bootstrap (trades) or block (bar returns); ``iterations`` 1,000 to
    100,000; ``block_length`` bars per block for the block method (None: the cube root of the
    bar count; ignored by the trade methods); ``ruin_threshold`` the drawdown fraction that
    counts as ruin, above 0 and at most 1; ``seed`` 0 to 2**63-1 (None: a random one, stored).
    Raises ApplicationError naming the field, NotFound for someone else's backtest, Conflict
    for one without a result or at the concurrency limit, PlanRequired without Pro; nothing is
    saved on error. The task is sent after commit.
    """
    require_pro(user)
    backtest, result = completed_backtest(user=user, backtest=backtest)
    if method not in MonteCarloRun.Method.values:
        raise ApplicationError("Choose shuffle, bootstrap or block as the method.", field="method")
    iterations = _whole(iterations, "iterations", "The number of iterations")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ApplicationError(
            f"Run {MIN_ITERATIONS:,} to {MAX_ITERATIONS:,} iterations.", field="iterations"
        )
    threshold = finite_or_none(ruin_threshold)
    if threshold is None or not 0.0 < threshold <= 1.0:
        raise ApplicationError(
            "The ruin threshold is a drawdown above 0 % and at most 100 %.",
            field="ruin_threshold",
        )
    if seed is None:
        seed = secrets.randbelow(2**62)
    seed = _whole(seed, "seed", "The seed")
    if not 0 <= seed < 2**63:
        raise ApplicationError("The seed must be from 0 to 2**63 - 1.", field="seed")
    bars = backtest_bars(backtest)
    if method == MonteCarloRun.Method.BLOCK:
        if bars < MIN_BARS:
            raise ApplicationError(
                f"This backtest has {bars} bars; the block bootstrap needs at least {MIN_BARS}.",
                field="method",
            )
        if block_length is not None:
            block_length = _whole(block_length, "block_length", "The block length")
            if not 1 <= block_length <= bars:
                raise ApplicationError(
                    f"The block length must be 1 to {bars:,} bars (the backtest's length).",
                    field="block_length",
                )
        else:
            block_length = mc.default_block_length(bars)
    else:
        block_length = None
        if result.trade_count < MIN_TRADES:
            raise ApplicationError(
                f"This backtest closed {result.trade_count} trade"
                f"{'' if result.trade_count == 1 else 's'}; reordering or resampling trades "
                f"needs at least {MIN_TRADES}. Use the block bootstrap of bar returns instead.",
                field="method",
            )
    check_capacity(user=user, model=MonteCarloRun, noun="Monte Carlo runs")
    run = MonteCarloRun.objects.create(
        owner=user,
        backtest=backtest,
        method=method,
        iterations=iterations,
        block_length=block_length,
        ruin_threshold=threshold,
        seed=seed,
    )
    lifecycle.enqueue(run)
    return run


# --- execute --------------------------------------------------------------------------------


def _source(run: MonteCarloRun, backtest: Backtest) -> tuple[np.ndarray, dict[str, Any]]:
    """The returns to resample and what the page says about them."""
    initial = float((backtest.settings or {}).get("initial_cash") or 0.0)
    if not initial > 0.0:
        raise ApplicationError("The backtest's starting capital is missing.")
    result = BacktestResult.objects.filter(backtest=backtest).first()
    if result is None:
        raise ApplicationError("The backtest's result was deleted.")
    info: dict[str, Any] = {
        "initial_capital": initial,
        "open_positions": len(result.open_positions or []),
        "backtest_return": finite_or_none((result.metrics or {}).get("total_return")),
        "backtest_max_drawdown": finite_or_none((result.metrics or {}).get("max_drawdown")),
    }
    if run.method == MonteCarloRun.Method.BLOCK:
        from backtester.results.store import result_curves

        curves = result_curves(result)
        equity = np.asarray(curves["equity"], dtype=np.float64)
        info["bars"] = int(equity.shape[0])
        return mc.bar_returns(equity, initial), info
    pnl = np.fromiter(
        BacktestTrade.objects.filter(backtest=backtest)
        .order_by("seq")
        .values_list("pnl", flat=True),
        dtype=np.float64,
    )
    if pnl.shape[0] < MIN_TRADES:
        raise ApplicationError(f"The backtest has fewer than {MIN_TRADES} closed trades.")
    info["trades"] = int(pnl.shape[0])
    info["realized_return"] = float(pnl.sum() / initial)
    return mc.trade_equity_returns(pnl, initial), info


def _summary_json(summary: mc.Summary) -> dict[str, float | None]:
    return {k: finite_or_none(v) for k, v in summary.as_dict().items()}


def _histogram_json(values: np.ndarray) -> dict[str, list[Any]]:
    edges, counts = mc.histogram(values)
    return {"edges": num_list(edges), "counts": counts.tolist()}


def results_json(result: mc.MonteCarloResult, info: dict[str, Any]) -> dict[str, Any]:
    """The compact, JSON-ready record of an engine result: bands in money at the sampled
    steps, histogram bins, summaries (non-finite numbers as null), P(ruin)."""
    capital = float(info["initial_capital"])
    unit = "bar" if result.config.method == "block" else "trade"
    x = result.fan_x
    if unit == "bar":
        # Steps are groups of bars_per_step bars; the last group may be shorter.
        x = np.minimum(x * result.bars_per_step, int(info.get("bars", x[-1])))
    return {
        "method": result.config.method,
        "iterations": result.iterations,
        "seed": result.config.seed,
        "unit": unit,
        "steps": result.steps,
        "bars_per_step": result.bars_per_step,
        "block_steps": result.block_steps,
        "block_bars": (
            None if result.block_steps is None else result.block_steps * result.bars_per_step
        ),
        "ci_level": result.config.ci_level,
        "fan": {
            "x": [int(v) for v in x.tolist()],
            "levels": list(result.fan_levels),
            "bands": {
                f"p{int(level)}": num_list(result.fan[i] * capital)
                for i, level in enumerate(result.fan_levels)
            },
            "original": num_list(result.original * capital),
        },
        "histograms": {
            "final_return": _histogram_json(result.final_return),
            "max_drawdown": _histogram_json(result.max_drawdown),
        },
        "summaries": {k: _summary_json(v) for k, v in result.summaries().items()},
        "ruin": {
            "threshold": result.config.ruin_threshold,
            "probability": result.probability_of_ruin,
            "paths": result.ruined,
        },
        "source": info,
    }


def _compute(run: MonteCarloRun, timings: dict[str, float]) -> dict[str, Any]:
    step(run, 0.05, "loading")
    backtest = Backtest.objects.get(pk=run.backtest_id)
    t0 = time.perf_counter()
    returns, info = _source(run, backtest)
    timings["load"] = time.perf_counter() - t0
    try:
        per_year = bars_per_year(timeframe_ms(backtest.timeframe))
    except EngineError:
        per_year = None
    bars = int(info.get("bars") or backtest_bars(backtest))
    years = bars / per_year if per_year and bars > 0 else None
    config = mc.MonteCarloConfig(
        method=run.method,
        iterations=run.iterations,
        seed=int(run.seed),
        block_length=run.block_length,
        ruin_threshold=run.ruin_threshold,
        years=years,
        periods_per_year=per_year,
    )
    step(run, 0.2, "simulating")
    t0 = time.perf_counter()
    result = mc.run_monte_carlo(returns, config)
    timings["simulate"] = time.perf_counter() - t0
    info["years"] = years
    step(run, 0.9, "saving")
    return results_json(result, info)


def montecarlo_execute(*, run_id: int) -> None:
    """Run a queued Monte Carlo run to completion (the Celery task's body). Idempotent: a run
    that is not queued is left alone; errors mark it failed with the reason."""
    execute(MonteCarloRun, run_id, _compute)
