"""Writes for parameter optimizations: submit, cancel, the workers' chunks and the final step,
and turning a result row into a backtest.

``optimization_create`` checks the whole request (strategy, market, dates, settings, ranges,
search method, objective, constraint, plan limits) with the same checks a backtest gets, draws
the combinations once (``engine.optimize.plan_combinations``: seeded, so a random search is
reproducible), saves the job as queued and, after the transaction commits, sends a Celery chord:
one chunk task per slice of the combinations, then ``optimization_finalize``. Any number of
workers share the chunks, so adding workers shortens the run.

``optimization_run_chunk`` (one chunk task) loads the candles once, evaluates its combinations
with the engine exactly as ``run_backtest`` would, and in one transaction stores its rows and
its completion record and moves the job's progress and best-so-far on; the new state goes to
the run's group once committed (the shared lifecycle, config/runs). ``optimization_finalize``
(the chord's callback) marks the job completed when every chunk is stored.

Cancelling flips the status at once; chunks that have not started skip their work and a running
chunk stops at its next check (about every half second). Whatever was stored stays visible.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NotRequired, TypedDict, Unpack

from django.conf import settings as django_settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.gating import UPGRADE_MESSAGE, require_pro
from accounts.models import User
from backtester.engine.candles import Candles
from backtester.engine.errors import EngineError, StrategyError
from backtester.engine.language import ParamValue, StrategySpec
from backtester.engine.optimize import (
    METHODS,
    OBJECTIVES,
    ROW_METRICS,
    CombinationPlan,
    SearchCancelled,
    SearchSpace,
    best_row,
    evaluate_combinations,
    is_better,
    plan_combinations,
    search_space,
)
from backtester.models import (
    Backtest,
    MarketSeries,
    OptimizationChunk,
    OptimizationJob,
    OptimizationRow,
    Strategy,
    WalkForwardJob,
)
from backtester.services.backtests import (
    _bars_in_range,
    _check_market,
    _check_strategy,
    _common_columns,
    _fmt_ms,
    backtest_create,
    normalize_settings,
    series_label,
    sim_config,
)
from backtester.services.strategies import spec_from_dict, spec_to_dict, strategy_spec
from config.exceptions import ApplicationError, Conflict, NotFound, PlanRequired
from config.kwargs import only_known
from config.runs import lifecycle

logger = logging.getLogger(__name__)

# Chunks per job: enough that two to a few workers share the work evenly and the page sees
# progress often, few enough that per-chunk costs (loading candles, a transaction) stay small.
TARGET_CHUNKS = 24
MIN_CHUNK = 20
MAX_CHUNK = 500
# A grid is enumerated (to apply its constraint) when submitted; past this multiple of the
# plan's limit that would take too long for a web request.
LATTICE_FACTOR = 10
# A running chunk asks whether its job was cancelled at most this often.
CANCEL_CHECK_SECONDS = 0.5


# --- the request shared by optimizations and walk-forwards ---------------------------------


@dataclass(frozen=True, slots=True)
class ResearchRequest:
    """A checked research request: everything a job row and its workers need."""

    strategy: Strategy
    spec: StrategySpec
    spec_dict: dict[str, Any]
    series: MarketSeries
    timeframe: str
    tf_ms: int
    start_ts: int
    end_ts: int
    bars: int
    settings: dict[str, Any]
    space: SearchSpace
    plan: CombinationPlan
    method: str
    samples: int | None
    seed: int
    objective: str
    constraint: str
    min_trades: int

    @property
    def ranges_json(self) -> dict[str, list[ParamValue]]:
        return {name: list(values) for name, values in self.space.axes}


def _whole_number(value: Any, *, field: str, label: str, low: int = 0) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    if number is None:
        raise ApplicationError(f"{label} must be a whole number.", field=field)
    if number < low:
        raise ApplicationError(f"{label} must be at least {low}.", field=field)
    return number


def _range_error(exc: StrategyError) -> ApplicationError:
    return ApplicationError(
        exc.message if exc.field is None else f"{exc.field}: {exc.message}",
        field="ranges",
        extra={"param": exc.field},
    )


class ResearchArgs(TypedDict):
    """What an optimization or a walk-forward is asked to search: ``user``'s ``strategy`` on
    ``series`` from ``start`` to ``end`` with the backtest ``settings``, and how (the optional
    keys; their defaults are in ``research_request``)."""

    user: User
    strategy: Strategy
    series: MarketSeries
    start: datetime | date | int
    end: datetime | date | int
    settings: Mapping[str, Any]
    ranges: NotRequired[Mapping[str, Any] | None]
    method: NotRequired[str]
    samples: NotRequired[int | None]
    seed: NotRequired[int | None]
    objective: NotRequired[str]
    constraint: NotRequired[str]
    min_trades: NotRequired[int]


def research_request(
    *, budget: Callable[[int], int] | None = None, **args: Unpack[ResearchArgs]
) -> ResearchRequest:
    """Check a research request as ``backtest_create`` checks a backtest, plus the search:
    ranges inside the declared ones, a known method and objective, a valid constraint, and the
    number of combinations within the plan (``budget`` turns the plan's limit into the most
    combinations this kind of job may evaluate). Raises ApplicationError naming the field at
    fault, PlanRequired past a plan limit; nothing is saved."""
    only_known(args, ResearchArgs, where="research_request")
    user, strategy, series = args["user"], args["strategy"], args["series"]
    method, objective = args.get("method", "grid"), args.get("objective", "sharpe")
    samples, seed = args.get("samples"), args.get("seed")
    require_pro(user)
    if series is None:
        raise ApplicationError("Choose a market.", field="series")
    rows, tf, tf_ms, start_ts, end_ts, estimates = _check_market(
        user, [series], None, args["start"], args["end"]
    )
    normalized = normalize_settings(args["settings"])
    columns = _common_columns(rows)
    spec_dict, _, spec = _check_strategy(user, strategy, None, columns)
    bars = _bars_in_range(estimates, tf)
    plan_row = user.plan
    if bars > plan_row.max_candles_per_backtest:
        raise PlanRequired(
            f"This range covers about {bars:,} candles; the {plan_row.name} plan allows "
            f"{plan_row.max_candles_per_backtest:,} per run. Shorten the range or use a coarser "
            "timeframe."
        )
    if objective not in OBJECTIVES:
        raise ApplicationError(
            f"Unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}.",
            field="objective",
        )
    if method not in METHODS:
        raise ApplicationError("Choose grid or random search.", field="method")
    trades_floor = _whole_number(
        args.get("min_trades", 0), field="min_trades", label="The minimum trades"
    )
    limit = plan_row.max_optimization_combinations
    allowed = budget(limit) if budget is not None else limit
    if allowed < 1:
        raise PlanRequired(
            f"The {plan_row.name} plan does not include parameter optimization. {UPGRADE_MESSAGE}"
        )
    wanted: int | None = None
    if method == "random":
        wanted = _whole_number(samples, field="samples", label="The number of samples", low=1)
        if wanted > allowed:
            raise PlanRequired(
                f"{wanted:,} samples is more than the {plan_row.name} plan's "
                f"{allowed:,} combinations per run; ask for fewer.",
                field="samples",
            )
    chosen_seed = (
        secrets.randbelow(2**31)
        if seed is None or seed == ""
        else _whole_number(seed, field="seed", label="The seed")
    )
    if chosen_seed >= 2**63:
        raise ApplicationError("The seed is too large.", field="seed")
    try:
        space = search_space(spec, args.get("ranges") or {})
    except StrategyError as exc:
        raise _range_error(exc) from None
    if method == "grid" and space.size > allowed * LATTICE_FACTOR:
        raise PlanRequired(
            f"The ranges span {space.size:,} combinations; the {plan_row.name} plan evaluates "
            f"at most {allowed:,} per run. Narrow the ranges, use larger steps, or sample "
            "them with random search.",
            field="ranges",
        )
    text = (args.get("constraint", "") or "").strip()
    try:
        plan = plan_combinations(
            spec, space, method=method, samples=wanted, seed=chosen_seed, constraint=text or None
        )
    except StrategyError as exc:
        if exc.field == "constraint":
            where = "" if exc.col is None else f" (column {exc.col + 1})"
            raise ApplicationError(f"{exc.message}{where}", field="constraint") from None
        raise _range_error(exc) from None
    except EngineError as exc:
        raise ApplicationError(str(exc), field="ranges") from None
    if not plan.combinations:
        raise ApplicationError(
            "No combination of these ranges satisfies the constraint.", field="constraint"
        )
    if len(plan.combinations) > allowed:
        raise PlanRequired(
            f"These ranges make {len(plan.combinations):,} combinations; the {plan_row.name} "
            f"plan evaluates at most {allowed:,} per run. Narrow the ranges, use larger steps, "
            "or sample them with random search.",
            field="ranges",
        )
    return ResearchRequest(
        strategy=strategy,
        spec=spec,
        spec_dict=spec_dict,
        series=rows[0],
        timeframe=tf,
        tf_ms=tf_ms,
        start_ts=start_ts,
        end_ts=end_ts,
        bars=bars,
        settings=normalized,
        space=space,
        plan=plan,
        method=method,
        samples=wanted,
        seed=chosen_seed,
        objective=objective,
        constraint=text,
        min_trades=trades_floor,
    )


def check_concurrency(user: User) -> None:
    """Conflict when ``user`` already has as many research jobs queued or running as the
    plan runs at once (the backtest concurrency limit). Locks the user row, so two tabs
    cannot both slip under it; call inside the submitting transaction."""
    User.objects.select_for_update().filter(pk=user.pk).first()
    plan = user.plan
    active = (
        OptimizationJob.objects.filter(owner=user, status__in=OptimizationJob.ACTIVE).count()
        + WalkForwardJob.objects.filter(owner=user, status__in=WalkForwardJob.ACTIVE).count()
    )
    if active >= plan.max_concurrent_backtests:
        raise Conflict(
            f"You already have {active} research job(s) queued or running, the most the "
            f"{plan.name} plan runs at once. Wait for one to finish or cancel one."
        )


def job_fields(user: User, request: ResearchRequest, name: str) -> dict[str, Any]:
    """The ResearchJob columns of a checked request."""
    clean = (name or "").strip()
    if len(clean) > 160:
        raise ApplicationError("The name is longer than 160 characters.", field="name")
    default = f"{request.strategy.name} · {request.series.symbol} {request.timeframe}"
    return {
        "owner": user,
        "strategy": request.strategy,
        "series": request.series,
        "name": clean or default[:160],
        "timeframe": request.timeframe,
        "start_ts": request.start_ts,
        "end_ts": request.end_ts,
        "spec": request.spec_dict,
        "settings": request.settings,
        "ranges": request.ranges_json,
        "method": request.method,
        "samples": request.samples,
        "seed": request.seed,
        "objective": request.objective,
        "constraint": request.constraint,
        "min_trades": request.min_trades,
        "combinations": len(request.plan.combinations),
    }


def json_number(value: Any) -> float | str | None:
    """A metric for a JSON column: finite floats as they are, infinities as "inf"/"-inf"
    (JSON has no infinity, and a profit factor with no loss is one), NaN as None."""
    number = float(value)
    if math.isfinite(number):
        return number
    if math.isnan(number):
        return None
    return "inf" if number > 0 else "-inf"


def json_metrics(metrics: Mapping[str, Any]) -> dict[str, float | str | None]:
    return {key: json_number(value) for key, value in metrics.items()}


def load_job_candles(job: OptimizationJob | WalkForwardJob) -> Candles:
    """The job's candles (one query); ApplicationError when the market is gone or empty."""
    from backtester.marketdata.store import load_candles

    series = MarketSeries.objects.filter(pk=job.series_id).first() if job.series_id else None
    if series is None:
        raise ApplicationError("The market this job uses was deleted.")
    candles = load_candles(series, start_ts=job.start_ts, end_ts=job.end_ts + 1)
    if len(candles) < 2:
        raise ApplicationError(
            f"{series_label(series)} has fewer than two candles between "
            f"{_fmt_ms(job.start_ts)} and {_fmt_ms(job.end_ts)}."
        )
    return candles


def cancel_checker(
    model: type[OptimizationJob] | type[WalkForwardJob], job_id: int
) -> Callable[[], bool]:
    """A ``should_stop`` for the engine: True once the job left queued/running (cancelled or
    failed elsewhere). Asks the database at most every CANCEL_CHECK_SECONDS."""
    last = time.monotonic()

    def should_stop() -> bool:
        nonlocal last
        now = time.monotonic()
        if now - last < CANCEL_CHECK_SECONDS:
            return False
        last = now
        return not model.objects.filter(pk=job_id, status__in=model.ACTIVE).exists()

    return should_stop


# --- submit ---------------------------------------------------------------------------------


def chunk_bounds(total: int) -> list[tuple[int, int]]:
    """(first, size) of each chunk of ``total`` combinations, in order."""
    size = min(MAX_CHUNK, max(MIN_CHUNK, math.ceil(total / TARGET_CHUNKS)))
    return [(first, min(size, total - first)) for first in range(0, total, size)]


@transaction.atomic
def optimization_create(*, name: str = "", **args: Unpack[ResearchArgs]) -> OptimizationJob:
    """Submit an optimization of ``user``'s ``strategy`` on ``series`` from ``start`` to ``end``.

    ``ranges`` maps parameter names to a list of values or ``{"low", "high", "step"}`` (the
    declared range by default; values must stay inside it). ``method`` "grid" evaluates every
    combination passing ``constraint`` (e.g. "fast < slow"), "random" draws ``samples`` of them
    with ``seed`` (a random seed is chosen and saved when None). Runs with fewer than
    ``min_trades`` trades are not ranked. Everything is checked first (ApplicationError naming
    the field, PlanRequired past ``max_optimization_combinations`` or the candle limit,
    Conflict at the concurrency limit); the job is saved queued and the chord is sent after
    commit.
    """
    user = args["user"]
    request = research_request(**args)
    fields = job_fields(user, request, name)
    check_concurrency(user)
    combos = [dict(c) for c in request.plan.combinations]
    bounds = chunk_bounds(len(combos))
    job = OptimizationJob.objects.create(
        **fields,
        status=OptimizationJob.Status.QUEUED,
        chunk_count=len(bounds),
        space_size=request.plan.space_size,
        candle_count=request.bars,
    )
    lifecycle.enqueue(job, send=lambda app: _send_chord(app, job.pk, combos, bounds))
    return job


def task_options() -> dict[str, Any]:
    """Celery options of research tasks: ``settings.RESEARCH_TASK_QUEUE`` (optional, e.g. to
    give research its own workers) names their queue; unset, they use the default queue."""
    queue = getattr(django_settings, "RESEARCH_TASK_QUEUE", "") or ""
    return {"queue": queue} if queue else {}


def _send_chord(
    app: Any, job_id: int, combos: list[dict[str, Any]], bounds: list[tuple[int, int]]
) -> str:
    """The chord: one chunk task per slice, then the callback (tasks named, not imported)."""
    from celery import chord

    options = task_options()
    header = [
        app.signature(
            "backtester.optimization_chunk",
            args=(job_id, index, first, combos[first : first + size]),
            **options,
        )
        for index, (first, size) in enumerate(bounds)
    ]
    callback = app.signature("backtester.optimization_finalize", args=(job_id,), **options)
    return str(chord(header)(callback).id or "")


# --- cancel ---------------------------------------------------------------------------------


def optimization_cancel(*, user: User, job: OptimizationJob) -> OptimizationJob:
    """Cancel ``user``'s queued or running optimization; cancelled when this returns. Chunks
    not started skip their work, a running one stops at its next check; rows already stored
    stay. A finished job is refused (Conflict); someone else's is NotFound."""
    return lifecycle.cancel(job, user=user)


# --- messages -------------------------------------------------------------------------------


def _best(job: OptimizationJob) -> dict[str, Any] | None:
    if job.best_index is None:
        return None
    return {
        "index": job.best_index,
        "params": job.best_params,
        "objective": json_number(job.best_objective) if job.best_objective is not None else None,
        "metrics": job.best_metrics,
    }


def state_extra(job: OptimizationJob) -> dict[str, Any]:
    """An optimization's own part of its state: combinations done of total, chunks, best."""
    return {
        "done": job.done,
        "total": job.combinations,
        "chunks_done": job.chunks_done,
        "chunks": job.chunk_count,
        "objective": job.objective,
        "best": _best(job),
    }


def optimization_state(job: OptimizationJob) -> dict[str, Any]:
    """What a page shows of ``job``: status, combinations done of total, chunks, best so far."""
    return lifecycle.state(job)


# --- the workers' side ----------------------------------------------------------------------


def _db_float(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def _row_model(job_id: int, row: Mapping[str, Any]) -> OptimizationRow:
    metrics = {key: _db_float(row[key]) for key in ROW_METRICS if key != "trades"}
    return OptimizationRow(
        job_id=job_id,
        index=int(row["index"]),
        params=dict(row["params"]),
        objective=_db_float(row["objective"]),
        qualified=bool(row["qualified"]),
        trades=int(row["trades"]),
        **metrics,
    )


def _incumbent(job: OptimizationJob) -> dict[str, Any] | None:
    if job.best_index is None or job.best_objective is None:
        return None
    return {"index": job.best_index, "objective": job.best_objective}


def _store_chunk(
    job_id: int,
    chunk: int,
    first: int,
    rows: list[dict[str, Any]],
    *,
    worker: str,
    seconds: float,
) -> bool:
    """Store one chunk's rows and completion record and move the job on; False when the job is
    no longer running or the chunk was already stored (a second delivery)."""
    with transaction.atomic():
        job = OptimizationJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != OptimizationJob.Status.RUNNING:
            return False
        if OptimizationChunk.objects.filter(job_id=job_id, index=chunk).exists():
            return False
        OptimizationChunk.objects.create(
            job_id=job_id,
            index=chunk,
            first=first,
            size=len(rows),
            worker=worker[:200],
            pid=os.getpid(),
            seconds=round(seconds, 4),
        )
        OptimizationRow.objects.bulk_create([_row_model(job_id, r) for r in rows])
        job.done = F("done") + len(rows)
        job.chunks_done = F("chunks_done") + 1
        job.qualified = F("qualified") + sum(1 for r in rows if r["qualified"])
        job.heartbeat_at = timezone.now()
        fields = ["done", "chunks_done", "qualified", "heartbeat_at"]
        best = best_row(rows)
        if best is not None and is_better(best, _incumbent(job)):
            job.best_index = int(best["index"])
            job.best_objective = float(best["objective"])
            job.best_params = dict(best["params"])
            job.best_metrics = json_metrics({k: best[k] for k in ROW_METRICS})
            fields += ["best_index", "best_objective", "best_params", "best_metrics"]
        job.save(update_fields=fields)
        job.refresh_from_db(fields=["done", "chunks_done", "qualified"])
        job.progress = min(1.0, job.done / job.combinations) if job.combinations else 0.0
        job.stage = "chunks"
        job.save(update_fields=["progress", "stage"])
        message = {"worker": worker, **lifecycle.state(job)}
        transaction.on_commit(lambda: lifecycle.send_progress(OptimizationJob, job_id, message))
    return True


def optimization_run_chunk(
    *,
    job_id: int,
    chunk: int,
    first: int,
    combinations: Sequence[Mapping[str, Any]],
    worker: str = "",
) -> dict[str, Any]:
    """Evaluate one chunk of a job's combinations and store the rows (a chunk task's body).

    Returns where it ran and what it did: ``{"chunk", "first", "size", "worker", "host",
    "pid", "rows", "seconds", "stored"}`` plus ``skipped`` (the job was not running: cancelled,
    failed or finished) or ``error``. Engine and input errors fail the whole job with the
    reason; nothing is retried. Must not run inside a transaction.
    """
    started = time.perf_counter()
    info: dict[str, Any] = {
        "chunk": chunk,
        "first": first,
        "size": len(combinations),
        "worker": worker,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rows": 0,
        "stored": False,
    }
    # The first chunk to run moves the job to running; the others join it.
    job = lifecycle.claim(OptimizationJob, job_id, resume=True)
    if job is None:
        return {**info, "skipped": True}
    try:
        with lifecycle.keepalive(OptimizationJob, job_id):
            candles = load_job_candles(job)
            rows = evaluate_combinations(
                candles,
                spec_from_dict(job.spec),
                combinations,
                sim_config(job.settings),
                objective=job.objective,
                min_trades=job.min_trades,
                start_index=first,
                should_stop=cancel_checker(OptimizationJob, job_id),
            )
    except SearchCancelled:
        return {**info, "skipped": True}
    except Exception as exc:
        if not isinstance(exc, ApplicationError | EngineError):
            logger.exception("optimization %s chunk %s failed unexpectedly", job_id, chunk)
        message = lifecycle.describe(OptimizationJob, exc)
        lifecycle.fail(OptimizationJob, job_id, message)
        return {**info, "error": message}
    seconds = time.perf_counter() - started
    try:
        stored = _store_chunk(job_id, chunk, first, rows, worker=worker, seconds=seconds)
    except Exception as exc:
        # A chunk task must return, or the chord never calls its callback and the job would
        # stay "running": the job fails instead, with the reason logged.
        logger.exception("optimization %s chunk %s could not be stored", job_id, chunk)
        message = lifecycle.describe(OptimizationJob, exc)
        lifecycle.fail(OptimizationJob, job_id, message)
        return {**info, "error": message}
    logger.info(
        "optimization %s chunk %s: %s combinations in %.3f s", job_id, chunk, len(rows), seconds
    )
    return {**info, "rows": len(rows), "seconds": round(seconds, 4), "stored": stored}


def optimization_finalize(*, job_id: int, results: Sequence[Mapping[str, Any]] = ()) -> None:
    """The chord's callback, run once every chunk task has returned: mark a running job
    completed when every chunk is stored (failed when some chunk's work is missing). A job that
    is no longer running (cancelled, failed) keeps its status; either way ``timings`` records
    that the chunks are over: ``chunks_over``, the workers that reported, and how many chunks
    were skipped."""
    with transaction.atomic():
        job = OptimizationJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return
        reports = [r for r in results if r]
        timings = dict(job.timings)
        timings["chunks_over"] = True
        timings["workers"] = sorted({str(r.get("worker") or "") for r in reports} - {""})
        timings["chunk_seconds"] = round(sum(float(r.get("seconds") or 0.0) for r in reports), 4)
        timings["chunks_skipped"] = sum(1 for r in reports if r.get("skipped"))
        if job.status == OptimizationJob.Status.RUNNING and job.started_at is not None:
            timings["run"] = round((timezone.now() - job.started_at).total_seconds(), 4)
        job.timings = timings
        job.save(update_fields=["timings"])
        running = job.status == OptimizationJob.Status.RUNNING
        stored = OptimizationChunk.objects.filter(job_id=job_id).count()
        expected = job.chunk_count
    if not running:
        return
    if stored < expected:
        lifecycle.fail(
            OptimizationJob,
            job_id,
            f"Only {stored} of {expected} chunks finished; the rest were lost. "
            "Run the optimization again.",
        )
    else:
        lifecycle.complete(OptimizationJob, job_id)


# --- from a row to a backtest ---------------------------------------------------------------


def _same_rules(snapshot: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    rules = ("entry_long", "exit_long", "entry_short", "exit_short")
    if any((snapshot.get(r) or "") != (current.get(r) or "") for r in rules):
        return False
    names = [(p["name"], p["kind"]) for p in snapshot.get("params") or ()]
    return names == [(p["name"], p["kind"]) for p in current.get("params") or ()]


def optimization_row_backtest(
    *, user: User, job: OptimizationJob, row: OptimizationRow
) -> Backtest:
    """Submit a backtest of ``row``'s parameters with ``job``'s strategy, market, range and
    settings (through ``backtest_create``, so every backtest rule and limit applies).

    Refused when the strategy or market was deleted, or when the strategy's rules changed since
    the optimization ran (the same numbers would then mean something else).
    """
    if job.owner_id != user.pk or row.job_id != job.pk:
        raise NotFound("Optimization not found.")
    strategy = (
        Strategy.objects.filter(pk=job.strategy_id, owner=user).first()
        if job.strategy_id is not None
        else None
    )
    if strategy is None:
        raise ApplicationError(
            "The strategy of this optimization was deleted, so there is nothing to backtest."
        )
    if not _same_rules(job.spec, spec_to_dict(strategy_spec(strategy))):
        raise ApplicationError(
            f"{strategy.name} was edited after this optimization ran: its rules or parameters "
            "differ now, so these values would not mean the same thing. Run a new "
            "optimization."
        )
    series = MarketSeries.objects.filter(pk=job.series_id).first() if job.series_id else None
    if series is None:
        raise ApplicationError("The market of this optimization was deleted.")
    return backtest_create(
        user=user,
        strategy=strategy,
        series=[series],
        start=job.start_ts,
        end=job.end_ts,
        settings=job.settings,
        param_values=row.params,
        name=f"{job} · combination #{row.index + 1}"[:160],
        timeframe=job.timeframe,
    )
