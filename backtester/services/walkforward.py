"""Writes for walk-forward analyses: submit, cancel, and the worker's run.

``walkforward_create`` checks the request like an optimization (same ranges, method, objective,
constraint) plus the windows: training, test and step lengths in bars or days, rolling or
anchored, at least one window inside the data, the step at least the test length (each bar is
traded out of sample once). The plan's ``max_optimization_combinations`` bounds the whole job:
the search runs once per window, so windows x combinations must fit in it.

``walkforward_execute`` (the Celery task's body) claims the job, rebuilds the same combinations
from the saved ranges and seed, and runs ``engine.optimize.walk_forward``: optimize on each
training window, run the winner on the following test window only, stitch the test runs. After
each window the job row is updated and the new state goes to the run's group (the shared
lifecycle, config/runs); cancelling stops the run at its next check.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Unpack

import numpy as np
from django.db import transaction

from accounts.models import User
from backtester.engine.errors import EngineError
from backtester.engine.optimize import (
    SearchCancelled,
    WalkForwardResult,
    WindowResult,
    plan_combinations,
    search_space,
    walk_forward,
    walk_forward_windows,
)
from backtester.models import WalkForwardJob
from backtester.services.backtests import sim_config
from backtester.services.optimization import (
    ResearchArgs,
    cancel_checker,
    check_concurrency,
    job_fields,
    json_metrics,
    json_number,
    load_job_candles,
    research_request,
)
from backtester.services.strategies import spec_from_dict
from config.exceptions import ApplicationError, PlanRequired
from config.runs import lifecycle

logger = logging.getLogger(__name__)

CURVE_POINTS = 2000
MODES = ("rolling", "anchored")


def _length(value: Any, *, field: str, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApplicationError(f"{label} must be a whole number.", field=field)
    text = str(value).strip()
    if not text.isdigit():
        raise ApplicationError(f"{label} must be a whole number of 1 or more.", field=field)
    number = int(text)
    if number < 1:
        raise ApplicationError(f"{label} must be 1 or more.", field=field)
    return number


@transaction.atomic
def walkforward_create(
    *,
    train: int,
    test: int,
    step: int | None = None,
    mode: str = "rolling",
    unit: str = "bars",
    name: str = "",
    **args: Unpack[ResearchArgs],
) -> WalkForwardJob:
    """Submit a walk-forward of ``user``'s ``strategy`` on ``series`` from ``start`` to ``end``.

    Windows train on ``train`` and test on the next ``test`` ``unit``s ("bars" or "days"),
    moving on by ``step`` (default ``test``, never less); ``mode`` "rolling" keeps the training
    length, "anchored" trains from the range's start each time. The search arguments are those
    of ``optimization_create``. Raises ApplicationError naming the field, PlanRequired past the
    plan's limits, Conflict at the concurrency limit; nothing is saved on error. The job is
    saved queued and its task sent after commit.
    """
    from backtester.marketdata.store import load_timestamps

    if mode not in MODES:
        raise ApplicationError("Choose rolling or anchored windows.", field="mode")
    if unit not in ("bars", "days"):
        raise ApplicationError("Give the lengths in bars or days.", field="unit")
    train_n = _length(train, field="train", label="The training length")
    test_n = _length(test, field="test", label="The test length")
    step_n = test_n if step in (None, "") else _length(step, field="step", label="The step")
    if step_n < test_n:
        raise ApplicationError(
            f"The step ({step_n}) must be at least the test length ({test_n}), so test windows "
            "do not overlap and each bar is traded out of sample once.",
            field="step",
        )
    user = args["user"]
    probe = research_request(**args)
    stamps = load_timestamps(probe.series, start_ts=probe.start_ts, end_ts=probe.end_ts + 1)
    try:
        windows = walk_forward_windows(
            stamps, train=train_n, test=test_n, step=step_n, anchored=mode == "anchored", unit=unit
        )
    except EngineError as exc:
        raise ApplicationError(
            f"{exc}. Shorten the windows or widen the range.", field="train"
        ) from None
    limit = user.plan.max_optimization_combinations
    per_window = len(probe.plan.combinations)
    if per_window * len(windows) > limit:
        raise PlanRequired(
            f"{len(windows)} windows x {per_window:,} combinations is "
            f"{len(windows) * per_window:,} runs; the {user.plan.name} plan allows {limit:,} "
            "per job. Use fewer or longer windows, narrower ranges, or random search with fewer "
            "samples.",
            field="ranges",
        )
    fields = job_fields(user, probe, name)
    check_concurrency(user)
    job = WalkForwardJob.objects.create(
        **fields,
        status=WalkForwardJob.Status.QUEUED,
        mode=mode,
        unit=unit,
        train=train_n,
        test=test_n,
        step=step_n,
        window_count=len(windows),
        candle_count=int(stamps.shape[0]),
    )
    lifecycle.enqueue(job)
    return job


def walkforward_cancel(*, user: User, job: WalkForwardJob) -> WalkForwardJob:
    """Cancel ``user``'s queued or running walk-forward; it stops at the worker's next check
    and keeps the windows already done. Finished: Conflict; someone else's: NotFound."""
    return lifecycle.cancel(job, user=user)


# --- messages -------------------------------------------------------------------------------


def state_extra(job: WalkForwardJob) -> dict[str, Any]:
    """A walk-forward's own part of its state: windows done of total, the latest window."""
    return {
        "done": job.windows_done,
        "total": job.window_count,
        "latest": job.windows[-1] if job.windows else None,
    }


def walkforward_state(job: WalkForwardJob) -> dict[str, Any]:
    """What a page shows of ``job``: status, windows done of total, the latest window."""
    return lifecycle.state(job)


# --- the worker's side ----------------------------------------------------------------------


def window_json(result: WindowResult, timestamps: np.ndarray) -> dict[str, Any]:
    """One window as stored in ``WalkForwardJob.windows``: bounds (bars and ms), winner,
    in-sample and out-of-sample metrics, equity in and out, efficiency."""
    w = result.window
    in_sample = None
    if result.in_sample is not None:
        in_sample = json_metrics(
            {k: v for k, v in result.in_sample.items() if k not in ("params", "index")}
        )
        in_sample.pop("qualified", None)
    return {
        "index": w.index,
        "train_start": w.train_start,
        "train_end": w.train_end,
        "test_start": w.test_start,
        "test_end": w.test_end,
        "train_from": int(timestamps[w.train_start]),
        "train_to": int(timestamps[w.train_end - 1]),
        "test_from": int(timestamps[w.test_start]),
        "test_to": int(timestamps[w.test_end - 1]),
        "params": result.params,
        "in_sample": in_sample,
        "out_of_sample": json_metrics(result.out_of_sample),
        "start_equity": result.start_equity,
        "end_equity": result.end_equity,
        "evaluated": result.evaluated,
        "qualified": result.qualified,
        "efficiency": json_number(result.efficiency),
    }


def _stability_json(stability: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, entry in stability.items():
        out[name] = {
            key: json_number(value)
            if isinstance(value, float) and not isinstance(value, bool)
            else value
            for key, value in entry.items()
        }
    return out


def _curve_json(result: WalkForwardResult) -> dict[str, list[Any]]:
    from backtester.results.downsample import lttb_indices

    ts, eq = result.timestamp, result.equity
    if ts.shape[0] > CURVE_POINTS:
        idx = lttb_indices(ts.astype(np.float64), eq, CURVE_POINTS)
        ts, eq = ts[idx], eq[idx]
    return {"x": [int(v) for v in ts.tolist()], "y": [float(v) for v in eq.tolist()]}


def walkforward_execute(*, job_id: int) -> None:
    """Run a queued walk-forward to completion (the Celery task's body). Idempotent: a job that
    is not queued is left alone. Engine and input errors fail it with the reason; an unexpected
    error is logged and the user sees a generic message. Must not run inside a transaction."""
    lifecycle.execute(WalkForwardJob, job_id, _run, expected=(EngineError,))


def _run(job: WalkForwardJob) -> dict[str, Any]:
    started = time.perf_counter()
    stored: list[dict[str, Any]] = []
    candles = load_job_candles(job)
    spec = spec_from_dict(job.spec)
    space = search_space(spec, job.ranges)
    plan = plan_combinations(
        spec,
        space,
        method=job.method,
        samples=job.samples,
        seed=job.seed,
        constraint=job.constraint or None,
    )
    windows = walk_forward_windows(
        candles.timestamp,
        train=job.train,
        test=job.test,
        step=job.step,
        anchored=job.mode == WalkForwardJob.Mode.ANCHORED,
        unit=job.unit,
    )

    def on_window(result: WindowResult) -> None:
        stored.append(window_json(result, candles.timestamp))
        lifecycle.progress(
            WalkForwardJob,
            job.pk,
            fraction=len(stored) / max(1, len(windows)),
            stage="windows",
            fields={"windows": stored, "windows_done": len(stored), "window_count": len(windows)},
            extra={"done": len(stored), "total": len(windows), "latest": stored[-1]},
        )

    try:
        result = walk_forward(
            candles,
            spec,
            plan.combinations,
            sim_config(job.settings),
            windows,
            objective=job.objective,
            min_trades=job.min_trades,
            on_window=on_window,
            should_stop=cancel_checker(WalkForwardJob, job.pk),
        )
    except SearchCancelled:
        raise lifecycle.Cancelled from None
    logger.info("walk-forward %s completed in %.3f s", job.pk, time.perf_counter() - started)
    return {
        "windows": stored,
        "windows_done": len(stored),
        "curve": _curve_json(result),
        "oos_metrics": json_metrics(result.metrics),
        "stability": _stability_json(result.stability),
        "in_sample_cagr": result.in_sample_cagr if math.isfinite(result.in_sample_cagr) else None,
        "efficiency": result.efficiency if math.isfinite(result.efficiency) else None,
        "timings": {**job.timings, "run": round(time.perf_counter() - started, 4)},
    }
