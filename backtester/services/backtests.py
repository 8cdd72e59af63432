"""Writes for backtest runs: submit, cancel, and the worker's execution of a run.

``backtest_create`` checks the whole request (strategy, data, dates, settings, plan limits)
before saving anything, snapshots the strategy and settings, and either answers from the result
cache at once (an identical request over identical data already completed) or saves the run as
queued and enqueues ``run_backtest_task`` after the transaction commits.

``backtest_execute`` is what the task calls: it claims a queued run (row lock, so a duplicate
delivery cannot run it twice), re-checks the owner's plan, loads the candles, runs the engine
(``engine.run.run``, whose stage and segment callbacks stream progress and the growing equity
curve to ``run-backtest-<id>`` after each committed state change), saves the result and marks
the run completed, failed (with the reason the user sees) or leaves it cancelled.

Claiming, progress, completion, failure, cancelling and the sweeping of runs whose worker died
are the shared lifecycle's (config/runs/lifecycle.py): a cancelled run stops at the worker's
next progress step and saves nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import numpy as np
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from accounts.gating import require_pro
from accounts.models import User
from backtester.engine.candles import Candles, timeframe_ms
from backtester.engine.errors import ConfigError, EngineError, StrategyError
from backtester.engine.language import PRESETS, RULES, strategy_warmup, validate_strategy
from backtester.engine.run import run as run_engine
from backtester.engine.simulate import SimConfig
from backtester.models import Backtest, BacktestResult, BacktestTrade, MarketSeries, Strategy
from backtester.services.strategies import rule_error, spec_from_dict, spec_to_dict, strategy_spec
from config.exceptions import ApplicationError, Conflict, NotFound, PlanRequired
from config.runs import lifecycle

logger = logging.getLogger(__name__)

# Part of the result-cache key: bump it when an engine change alters results, so earlier
# cached results are not served for the new engine.
ENGINE_VERSION = "1"
MAX_SYMBOLS = 10
LIVE_POINTS_PER_SEGMENT = 250
LIVE_TTL_SECONDS = 3600
SETTINGS_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SimConfig))
# The product's defaults for every run, whatever starts it (the web forms, the API, the CLI,
# one-click runs from scanner alerts): the engine's own, with 2 bps of adverse slippage (a
# market fill rarely gets the last price exactly). Settings a request leaves out take these.
DEFAULT_CONFIG = SimConfig(slippage_bps=2.0)
_DEFAULT_CONFIG = DEFAULT_CONFIG
_FIELD_RE = re.compile(r"^([a-z_]+)")

# Stage name → progress reached when the stage starts. Simulating fills 0.30..0.80 by segment.
STAGES: dict[str, float] = {
    "queued": 0.0,
    "loading": 0.05,
    "signals": 0.15,
    "simulating": 0.30,
    "metrics": 0.82,
    "saving": 0.90,
    "done": 1.0,
}
SIMULATING_SPAN = (0.30, 0.80)


def live_key(backtest_id: int) -> str:
    """Cache key of the running backtest's latest stage and equity points (for late joiners)."""
    return f"backtest-live-{backtest_id}"


def _utc_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def to_ms(value: datetime | date | int, *, end: bool = False) -> int:
    """Epoch ms of a start/end bound. A bare date means the start of that UTC day, or for an
    end its last millisecond (so the end day is included); naive datetimes are read as UTC."""
    if isinstance(value, bool):
        raise TypeError("a date bound cannot be a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return _utc_ms(aware)
    day = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if end:
        return _utc_ms(day + timedelta(days=1)) - 1
    return _utc_ms(day)


def series_label(series: MarketSeries) -> str:
    """How a series is named in messages: "BTC/USDT 1h (binance)"."""
    return f"{series.name or series.symbol} {series.timeframe} ({series.exchange})"


# --- settings -------------------------------------------------------------------------------


def _setting_error(exc: ConfigError) -> ApplicationError:
    message = str(exc)
    match = _FIELD_RE.match(message)
    field = match.group(1) if match and match.group(1) in SETTINGS_FIELDS else None
    return ApplicationError(message, field=field)


def normalize_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every SimConfig field, ``settings`` over the defaults, each as its field's type (so
    10000 and 10000.0 give the same snapshot and cache key). Raises ApplicationError naming
    the setting for unknown names or values the engine refuses."""
    unknown = sorted(set(settings) - set(SETTINGS_FIELDS))
    if unknown:
        raise ApplicationError(f"unknown setting {unknown[0]!r}", field=unknown[0])
    capital = settings.get("initial_cash", _DEFAULT_CONFIG.initial_cash)
    if (
        isinstance(capital, int | float)
        and not isinstance(capital, bool)
        and (not math.isfinite(capital) or capital <= 0)
    ):
        raise ApplicationError("The starting capital must be more than 0.", field="initial_cash")
    try:
        config = dataclasses.replace(DEFAULT_CONFIG, **dict(settings))
    except ConfigError as exc:
        raise _setting_error(exc) from None
    except TypeError as exc:
        raise ApplicationError(f"invalid settings: {exc}") from None
    out: dict[str, Any] = {}
    for name in SETTINGS_FIELDS:
        value = getattr(config, name)
        default = getattr(_DEFAULT_CONFIG, name)
        if isinstance(default, bool):
            out[name] = bool(value)
        elif isinstance(default, int):
            out[name] = int(value)
        elif isinstance(default, float):
            out[name] = float(value)
        else:
            out[name] = str(value)
    return out


def default_settings() -> dict[str, Any]:
    """Every setting at the product's default (what a request that says nothing gets)."""
    return normalize_settings({})


def sim_config(settings: Mapping[str, Any]) -> SimConfig:
    """The engine configuration of a settings snapshot."""
    try:
        return SimConfig(**dict(settings))
    except (ConfigError, TypeError) as exc:
        raise ApplicationError(f"invalid settings: {exc}") from None


# --- defaults for the forms ------------------------------------------------------------------


def fmt_day(ms: int | None) -> str:
    """The UTC day of epoch ms as YYYY-MM-DD ("?" when unknown)."""
    if ms is None:
        return "?"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def timeframe_sort_key(tf: str) -> int:
    """Timeframes in the order of their length (unknown ones first)."""
    try:
        return timeframe_ms(tf)
    except EngineError:
        return 0


def default_range(rows: Sequence[MarketSeries]) -> tuple[int, int] | None:
    """The span every chosen market covers (epoch ms, end inclusive), for blank dates; None
    when a market has no candles or an unknown timeframe."""
    dated = [s for s in rows if s.first_ts is not None and s.last_ts is not None]
    if not rows or len(dated) != len(rows):
        return None
    try:
        tf = timeframe_ms(rows[0].timeframe)
    except EngineError:
        return None
    # `dated` holds only series with both ends (mypy cannot narrow the list's items).
    return (
        max(cast(int, s.first_ts) for s in dated),
        min(cast(int, s.last_ts) + tf - 1 for s in dated),
    )


def default_strategy_choice(
    strategies: Sequence[Strategy], *, strategy_id: str | None, preset: str | None
) -> str:
    """The run form's strategy choice: the asked-for strategy of mine or preset, else my first
    strategy, else the SMA-cross preset ("s:<id>" or "preset:<name>")."""
    if strategy_id and any(str(s.pk) == strategy_id for s in strategies):
        return f"s:{strategy_id}"
    if preset in PRESETS:
        return f"preset:{preset}"
    if strategies:
        return f"s:{strategies[0].pk}"
    return "preset:sma_cross"


def default_markets(
    series: Sequence[MarketSeries], *, timeframe: str | None, series_ids: Sequence[str]
) -> tuple[str, list[str]]:
    """The backtest form's timeframe and markets: the asked-for ones, else 1h (or the shortest
    timeframe there is) and its BTC market (or its first)."""
    frames = {s.timeframe for s in series}
    if timeframe not in frames:
        shortest = next(iter(sorted(frames, key=timeframe_sort_key)), "")
        timeframe = "1h" if "1h" in frames else shortest
    ids = [v for v in series_ids if v.isdigit()]
    if not ids:
        same_tf = [s for s in series if s.timeframe == timeframe]
        btc = [s for s in same_tf if s.symbol.startswith("BTC/")]
        ids = [str(s.pk) for s in (btc or same_tf)[:1]]
    return str(timeframe), ids


def default_market(series: Sequence[MarketSeries], *, series_id: str | None) -> str | None:
    """The research forms' one market: the asked-for one, else the hourly BTC market (or the
    first hourly one, or the first)."""
    if series_id in {str(s.pk) for s in series}:
        return series_id
    hourly = [s for s in series if s.timeframe == "1h"]
    btc = [s for s in hourly if s.symbol.startswith("BTC/")]
    pick = (btc or hourly or list(series))[:1]
    return str(pick[0].pk) if pick else None


# --- cache key ------------------------------------------------------------------------------


def result_cache_key(
    *,
    spec: Mapping[str, Any],
    param_values: Mapping[str, Any],
    settings: Mapping[str, Any],
    series: Sequence[MarketSeries],
    start_ts: int,
    end_ts: int,
) -> str:
    """sha256 over what decides a result: the rules, the parameter values, the settings, the
    series (ids in order, each with its data hash) and the range. The strategy's name,
    description and parameter ranges do not change a result and are left out."""
    payload = {
        "engine": ENGINE_VERSION,
        "rules": {rule: spec.get(rule, "") for rule in RULES},
        "params": dict(sorted(param_values.items())),
        "settings": dict(sorted(settings.items())),
        "series": [[s.pk, s.data_hash] for s in series],
        "timeframe": series[0].timeframe if series else "",
        "start": start_ts,
        "end": end_ts,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --- submit ---------------------------------------------------------------------------------


def _check_series(
    user: User, series: Sequence[MarketSeries], timeframe: str | None
) -> tuple[list[MarketSeries], str, int]:
    if not series:
        raise ApplicationError("Choose at least one market.", field="series")
    if len(series) > MAX_SYMBOLS:
        raise ApplicationError(
            f"A backtest takes at most {MAX_SYMBOLS} markets; you chose {len(series)}.",
            field="series",
        )
    ids = [s.pk for s in series]
    if len(set(ids)) != len(ids):
        raise ApplicationError("The same market is listed twice.", field="series")
    # Re-read: the caller's objects may be stale, and ownership is checked on fresh rows.
    fresh = {s.pk: s for s in MarketSeries.objects.filter(pk__in=ids)}
    out: list[MarketSeries] = []
    for pk in ids:
        row = fresh.get(pk)
        if row is None or (row.owner_id is not None and row.owner_id != user.pk):
            raise ApplicationError("Market data not found.", field="series")
        out.append(row)
    frames = sorted({s.timeframe for s in out})
    if len(frames) > 1:
        raise ApplicationError(
            "The markets must share one timeframe; you mixed " + ", ".join(frames) + ".",
            field="series",
        )
    tf = frames[0]
    if timeframe and timeframe != tf:
        names = ", ".join(s.name or s.symbol for s in out)
        raise ApplicationError(
            f"{names} {'is' if len(out) == 1 else 'are'} {tf} data, not {timeframe}. Choose "
            f"{timeframe} markets, or fetch or upload {timeframe} candles first.",
            field="timeframe",
        )
    try:
        tf_ms = timeframe_ms(tf)
    except EngineError:
        raise ApplicationError(f"unknown timeframe {tf!r}", field="series") from None
    for s in out:
        if not s.count or s.first_ts is None or s.last_ts is None:
            raise ApplicationError(
                f"{series_label(s)} has no candles yet; fetch or upload some first.",
                field="series",
            )
    return out, tf, tf_ms


def _check_range(
    series: Sequence[MarketSeries], start_ts: int, end_ts: int, tf_ms: int
) -> dict[int, int]:
    """Raise ApplicationError unless [start, end] lies inside every series' data; returns the
    estimated bar count per series (the exact count is known once the candles are loaded)."""
    if end_ts <= start_ts:
        raise ApplicationError("The end must be after the start.", field="end")
    estimates: dict[int, int] = {}
    for s in series:
        first, last = int(s.first_ts or 0), int(s.last_ts or 0)
        covered_until = last + tf_ms - 1  # the last candle covers its whole bar
        span = f"{series_label(s)} covers {_fmt_ms(first)} to {_fmt_ms(last)}"
        if start_ts < first:
            raise ApplicationError(
                f"The start {_fmt_ms(start_ts)} is before the data: {span}.", field="start"
            )
        if start_ts > last:
            raise ApplicationError(
                f"The start {_fmt_ms(start_ts)} is after the data: {span}.", field="start"
            )
        if end_ts > covered_until:
            raise ApplicationError(
                f"The end {_fmt_ms(end_ts)} is after the data: {span}.", field="end"
            )
        slots = (min(end_ts, last) - max(start_ts, first)) // tf_ms + 1
        estimates[s.pk] = int(max(0, min(int(s.count), slots)))
    return estimates


def _check_market(
    user: User,
    series: Sequence[MarketSeries],
    timeframe: str | None,
    start: datetime | date | int,
    end: datetime | date | int,
) -> tuple[list[MarketSeries], str, int, int, int, dict[int, int]]:
    """The checked series and range: (series, timeframe, its ms, start ms, end ms, candles in
    the range per series). ApplicationError names the field at fault."""
    rows, tf, tf_ms = _check_series(user, series, timeframe)
    try:
        start_ts, end_ts = to_ms(start), to_ms(end, end=True)
    except (TypeError, ValueError, OverflowError):
        raise ApplicationError("Give the start and end as dates.", field="start") from None
    return rows, tf, tf_ms, start_ts, end_ts, _check_range(rows, start_ts, end_ts, tf_ms)


def _bars_in_range(estimates: Mapping[int, int], tf: str) -> int:
    """The fewest candles any series has in the range; at least 2 or ApplicationError."""
    bars = min(estimates.values())
    if bars < 2:
        raise ApplicationError(
            f"The range holds no more than {bars} {tf} candle(s); widen it.", field="end"
        )
    return bars


def _common_columns(series: Sequence[MarketSeries]) -> tuple[str, ...]:
    sets = [set(s.extra_columns or ()) for s in series]
    return tuple(sorted(set.intersection(*sets))) if sets else ()


def _check_strategy(
    user: User,
    strategy: Strategy,
    param_values: Mapping[str, Any] | None,
    columns: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    if strategy is None or strategy.owner_id != user.pk:
        raise NotFound("Strategy not found.", field="strategy")
    spec = strategy_spec(strategy)
    try:
        validate_strategy(spec, columns=columns)
    except StrategyError as exc:
        if exc.field in RULES:
            err = rule_error(exc, field=exc.field)
            raise ApplicationError(
                f"The strategy's {exc.field.replace('_', ' ')} rule does not fit this data: "
                f"{err.message}",
                field="strategy",
                extra=err.extra,
            ) from None
        raise ApplicationError(
            f"The strategy is not valid: {exc.message}", field="strategy"
        ) from None
    if not any(spec.rules[r] for r in ("entry_long", "entry_short")):
        raise ApplicationError(
            "The strategy has no entry rule, so it would never trade.", field="strategy"
        )
    stored = {k: v for k, v in (strategy.param_values or {}).items() if k in spec.defaults()}
    try:
        values = spec.resolve_params({**stored, **dict(param_values or {})})
    except StrategyError as exc:
        raise ApplicationError(
            exc.message, field="param_values", extra={"param": exc.field}
        ) from None
    return spec_to_dict(spec), values, spec


def _default_name(strategy: Strategy, series: Sequence[MarketSeries], tf: str) -> str:
    symbols = ", ".join(s.symbol for s in series)
    return f"{strategy.name} · {symbols} {tf}"[:160]


def _copy_result(source: Backtest, target: Backtest) -> None:
    """Give ``target`` a copy of ``source``'s result row and trade rows (one INSERT..SELECT)."""
    result = source.result
    BacktestResult.objects.create(
        backtest=target,
        metrics=result.metrics,
        open_positions=result.open_positions,
        curves=result.curves,
        curves_codec=result.curves_codec,
        trade_count=result.trade_count,
    )
    meta = BacktestTrade._meta
    columns = [
        cast(str, f.column)  # concrete fields always have a column
        for f in meta.concrete_fields
        if f.name not in ("id", "backtest")  # the primary key and the link are set anew
    ]
    backtest_col = meta.get_field("backtest").column
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    table = connection.ops.quote_name(meta.db_table)
    bt_col = connection.ops.quote_name(backtest_col)
    seq = connection.ops.quote_name(cast(str, meta.get_field("seq").column))
    # Table and column names come from the model's meta, never from input.
    sql = (
        f"INSERT INTO {table} ({bt_col}, {quoted}) "  # noqa: S608
        f"SELECT %s, {quoted} FROM {table} WHERE {bt_col} = %s ORDER BY {seq}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [target.pk, source.pk])


@transaction.atomic
def backtest_create(
    *,
    user: User,
    strategy: Strategy,
    series: Sequence[MarketSeries],
    start: datetime | date | int,
    end: datetime | date | int,
    settings: Mapping[str, Any],
    param_values: Mapping[str, Any] | None = None,
    name: str = "",
    timeframe: str | None = None,
) -> Backtest:
    """Submit a backtest of ``user``'s ``strategy`` over ``series`` from ``start`` to ``end``.

    ``settings`` are SimConfig fields (fractions: 0.001 = 0.1 %); ``param_values`` override the
    strategy's values; ``timeframe``, when given, must be the series' timeframe; a bare date
    ``end`` includes that whole day. Everything is checked first (ApplicationError with the
    field at fault, PlanRequired past the plan's limits, Conflict at the concurrency limit) and
    nothing is saved on error. An identical completed request over unchanged data is answered
    at once: the new backtest is completed, ``cached_from`` names the source and the result is
    copied. Otherwise the backtest is saved queued and the task is sent after commit.
    """
    require_pro(user)
    clean_name = (name or "").strip()
    if len(clean_name) > 160:
        raise ApplicationError("The name is longer than 160 characters.", field="name")
    rows, tf, _, start_ts, end_ts, estimates = _check_market(user, series, timeframe, start, end)
    normalized = normalize_settings(settings)
    spec_dict, values, spec = _check_strategy(user, strategy, param_values, _common_columns(rows))

    bars = _bars_in_range(estimates, tf)
    warmup = strategy_warmup(spec, values, columns=_common_columns(rows))
    if warmup >= bars:
        raise ApplicationError(
            f"The strategy needs {warmup} {tf} bars of history before its rules can fire, but "
            f"the range holds about {bars}. Widen the range or shorten the look-back periods.",
            field="start",
        )
    plan = user.plan
    total = sum(estimates.values())
    if total > plan.max_candles_per_backtest:
        raise PlanRequired(
            f"This backtest covers about {total:,} candles; the {plan.name} plan allows "
            f"{plan.max_candles_per_backtest:,} per backtest. Shorten the range, use fewer "
            "markets or a coarser timeframe."
        )

    key = result_cache_key(
        spec=spec_dict,
        param_values=values,
        settings=normalized,
        series=rows,
        start_ts=start_ts,
        end_ts=end_ts,
    )
    common = {
        "owner": user,
        "strategy": strategy,
        "name": clean_name or _default_name(strategy, rows, tf),
        "series_order": [s.pk for s in rows],
        "timeframe": tf,
        "start_ts": start_ts,
        "end_ts": end_ts,
        "spec": spec_dict,
        "param_values": values,
        "settings": normalized,
        "cache_key": key,
    }
    source = (
        Backtest.objects.filter(
            owner=user, cache_key=key, status=Backtest.Status.COMPLETED, result__isnull=False
        )
        .select_related("result")
        .order_by("-finished_at")
        .first()
    )
    if source is not None:
        now = timezone.now()
        backtest = Backtest.objects.create(
            **common,
            status=Backtest.Status.COMPLETED,
            progress=1.0,
            cached_from=source,
            candle_count=source.candle_count,
            engine_seconds=source.engine_seconds,
            timings={"cached": True},
            started_at=now,
            finished_at=now,
        )
        backtest.series.set(rows)
        _copy_result(source, backtest)
        return backtest

    # One submit at a time per user, so two tabs cannot both slip under the concurrency limit.
    User.objects.select_for_update().filter(pk=user.pk).first()
    active = Backtest.objects.filter(owner=user, status__in=Backtest.ACTIVE).count()
    if active >= plan.max_concurrent_backtests:
        raise Conflict(
            f"You already have {active} backtest(s) queued or running, the most the "
            f"{plan.name} plan runs at once. Wait for one to finish or cancel one."
        )
    backtest = Backtest.objects.create(**common, status=Backtest.Status.QUEUED, progress=0.0)
    backtest.series.set(rows)
    lifecycle.enqueue(backtest)
    return backtest


@transaction.atomic
def backtest_create_for_preset(*, user: User, preset: str, **kwargs: Any) -> Backtest:
    """``backtest_create`` with ``user``'s untouched copy of preset ``preset`` as the strategy
    (created on first use). One transaction: when the backtest is refused, no strategy copy
    is left behind either."""
    from backtester.services.strategies import strategy_ensure_preset

    strategy = strategy_ensure_preset(user=user, preset=preset)
    return backtest_create(user=user, strategy=strategy, **kwargs)


# --- cancel ---------------------------------------------------------------------------------


def backtest_cancel(*, user: User, backtest: Backtest) -> Backtest:
    """Cancel ``user``'s queued or running backtest; it is cancelled as soon as this returns.

    A queued one never starts; a running one stops at the worker's next checkpoint and saves
    nothing. Cancelling a finished backtest is refused (Conflict); someone else's is NotFound.
    """
    return lifecycle.cancel(backtest, user=user)


# --- messages -------------------------------------------------------------------------------


def status_payload(backtest: Backtest) -> dict[str, Any]:
    """The state a page shows for ``backtest``: status, progress, stage, error, timings."""
    return lifecycle.state(backtest)


def state_extra(backtest: Backtest) -> dict[str, Any]:
    """A backtest's own part of its state (the registry's ``state``): engine time, candles,
    whether it came from the result cache, and while it runs the equity streamed so far."""
    out: dict[str, Any] = {
        "engine_seconds": backtest.engine_seconds,
        "candle_count": backtest.candle_count,
        "cached": backtest.cached_from_id is not None,
    }
    if backtest.is_active:
        out["equity"] = live_equity(backtest.pk)
    return out


def live_equity(backtest_id: int) -> dict[str, list[Any]]:
    """The equity points streamed so far for a running backtest (empty when none)."""
    live = cache.get(live_key(backtest_id)) or {}
    return {"x": list(live.get("x", [])), "y": list(live.get("y", []))}


class _Progress:
    """Progress of one running backtest: each step is committed, then announced (the growing
    equity curve rides along, and is kept in the cache for pages that join late)."""

    def __init__(self, backtest_id: int) -> None:
        self.backtest_id = backtest_id
        self.x: list[int] = []
        self.y: list[float] = []

    def update(
        self,
        stage: str,
        progress: float,
        *,
        equity: tuple[list[int], list[float]] | None = None,
    ) -> None:
        piece = {"x": [], "y": []} if equity is None else {"x": equity[0], "y": equity[1]}
        if equity is not None:
            self.x.extend(equity[0])
            self.y.extend(equity[1])
            cache.set(live_key(self.backtest_id), {"x": self.x, "y": self.y}, LIVE_TTL_SECONDS)
        lifecycle.progress(
            Backtest, self.backtest_id, fraction=progress, stage=stage, extra={"equity": piece}
        )

    def stage_start(self, stage: str) -> None:
        self.update(stage, STAGES[stage])

    def segment(self, ts: np.ndarray, equity: np.ndarray, fraction: float) -> None:
        from backtester.results.downsample import lttb_indices

        if ts.shape[0] > LIVE_POINTS_PER_SEGMENT:
            idx = lttb_indices(ts.astype(np.float64), equity, LIVE_POINTS_PER_SEGMENT)
            ts, equity = ts[idx], equity[idx]
        low, high = SIMULATING_SPAN
        self.update(
            "simulating",
            low + (high - low) * fraction,
            equity=([int(v) for v in ts.tolist()], [float(v) for v in equity.tolist()]),
        )


# --- execute (the worker's side) ------------------------------------------------------------


def _load(backtest: Backtest) -> tuple[list[Candles], list[str]]:
    from backtester.marketdata.store import load_candles

    rows = {s.pk: s for s in MarketSeries.objects.filter(pk__in=backtest.series_order)}
    candles_list: list[Candles] = []
    labels: list[str] = []
    for pk in backtest.series_order:
        series = rows.get(pk)
        if series is None:
            raise ApplicationError("A market this backtest uses was deleted.")
        # Backtest.end_ts is the last millisecond included; the store's end is exclusive.
        candles = load_candles(series, start_ts=backtest.start_ts, end_ts=backtest.end_ts + 1)
        if len(candles) == 0:
            raise ApplicationError(
                f"{series_label(series)} has no candles between {_fmt_ms(backtest.start_ts)} "
                f"and {_fmt_ms(backtest.end_ts)}."
            )
        candles_list.append(candles)
        labels.append(series.name or series.symbol)
    return candles_list, labels


def user_message(exc: Exception) -> str | None:
    """What a user reads for an error of a run that executes a strategy (None: internal)."""
    if isinstance(exc, ApplicationError):
        return exc.message
    if isinstance(exc, StrategyError):
        where = "" if exc.col is None else f" (column {exc.col + 1})"
        prefix = f"{exc.field}: " if exc.field else ""
        return f"Strategy error: {prefix}{exc.message}{where}"
    if isinstance(exc, ConfigError):
        return f"Settings error: {exc}"
    if isinstance(exc, EngineError):
        return str(exc)
    return None


def backtest_execute(*, backtest_id: int) -> None:
    """Run a queued backtest to completion (the Celery task's body).

    Idempotent: a backtest that is not queued (running elsewhere, finished, cancelled) is left
    alone. Engine and input errors mark it failed with the reason; an unexpected error is
    logged with its traceback and the user sees a generic message with the exception type.
    Must not be called inside a transaction: each progress step is committed before it is
    announced.
    """
    backtest = lifecycle.claim(Backtest, backtest_id)
    if backtest is None:
        return
    progress = _Progress(backtest_id)
    timings: dict[str, float] = dict(backtest.timings)
    started = time.perf_counter()
    try:
        with lifecycle.keepalive(Backtest, backtest_id):
            progress.stage_start("loading")
            t0 = time.perf_counter()
            candles_list, labels = _load(backtest)
            timings["load"] = time.perf_counter() - t0
            run = run_engine(
                spec_from_dict(backtest.spec),
                candles_list,
                backtest.param_values,
                sim_config(backtest.settings),
                labels=labels,
                on_stage=progress.stage_start,
                on_segment=progress.segment,
                segments=None,  # a few growing prefixes, by the bar count
            )
            timings.update(run.stage_seconds)
            progress.stage_start("saving")
            _save(backtest_id, run, candles_list, run.engine_seconds, timings, started)
    except lifecycle.Cancelled:
        logger.info("backtest %s was cancelled while running", backtest_id)
        return
    except Exception as exc:
        if not isinstance(exc, ApplicationError | EngineError):
            logger.exception("backtest %s failed on an unexpected error", backtest_id)
        timings["total"] = time.perf_counter() - started
        lifecycle.fail(
            Backtest,
            backtest_id,
            lifecycle.describe(Backtest, exc),
            fields={"timings": _rounded(timings)},
        )
        return
    finally:
        cache.delete(live_key(backtest_id))
    logger.info("backtest %s completed in %.3f s", backtest_id, time.perf_counter() - started)


def _rounded(timings: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in timings.items()}


def _save(
    backtest_id: int,
    run: Any,
    candles_list: list[Candles],
    engine_seconds: float,
    timings: dict[str, float],
    run_started: float,
) -> None:
    from backtester.results.store import result_save

    save_started = time.perf_counter()

    def apply(backtest: Backtest) -> list[str]:
        result_save(
            backtest=backtest,
            run=run,
            candles=candles_list[0] if len(candles_list) == 1 else candles_list,
        )
        timings["save"] = time.perf_counter() - save_started
        timings["total"] = time.perf_counter() - run_started
        backtest.engine_seconds = engine_seconds
        backtest.candle_count = sum(len(c) for c in candles_list)
        backtest.timings = _rounded(timings)
        return ["engine_seconds", "candle_count", "timings"]

    if not lifecycle.complete(Backtest, backtest_id, apply=apply):
        raise lifecycle.Cancelled
