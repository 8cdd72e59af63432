"""Stress runs of a finished backtest's strategy: crisis windows and shocked data.

``stress_create`` checks the request and saves a queued StressRun whose task is sent after
commit; ``stress_execute`` (the task's body) computes one row per scenario:

* a window (named crisis or the user's own span): the strategy, with the backtest's
  parameters and settings, run over whatever data covers the window — the backtest's own
  series first, else another series of the same symbol and timeframe the user can see — with
  up to the strategy's warm-up of bars before the window taken from that data. A window no
  data covers is a ``no_data`` row naming each series' range; a window the data covers only
  in part is ``partial`` and says which part. The row carries the market's own move (buy and
  hold) over the same bars for comparison.
* the unstressed run over the backtest's own range (the ``baseline`` row, present whenever
  shocks are asked for) and one row per shock — a gap or a volatility spike applied to every
  market of the backtest — with the difference from the baseline.

A problem in one row (no data, markets that do not line up) is reported in that row and the
others still run. Errors that spoil the whole run (the strategy no longer compiles, a series
was deleted) fail it with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from django.db import transaction

from accounts.gating import require_pro
from accounts.models import User
from backtester.engine import stress as engine
from backtester.engine.candles import Candles, timeframe_ms
from backtester.engine.errors import EngineError
from backtester.engine.language import strategy_warmup
from backtester.models import Backtest, MarketSeries, StressRun
from backtester.results.store import finite_or_none
from backtester.services.backtests import fmt_day, series_label, sim_config, to_ms
from backtester.services.montecarlo import (
    check_capacity,
    completed_backtest,
    execute,
    step,
)
from backtester.services.strategies import spec_from_dict
from config.exceptions import ApplicationError
from config.runs import lifecycle

logger = logging.getLogger(__name__)

MAX_CUSTOM_WINDOWS = 5
MAX_SHOCKS = 4
MAX_LABEL = 60
GAP_RANGE = (-0.95, 1.0)
FACTOR_RANGE = (0.05, 20.0)
MAX_SPIKE_BARS = 10_000
SHOCK_KINDS = ("gap", "vol_spike")
OUTCOME_DELTAS = ("total_return", "max_drawdown", "worst_trade")


def fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "?"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- submit ---------------------------------------------------------------------------------


def _bound(value: Any, field: str, *, end: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, datetime | date | int):
        raise ApplicationError("Give a date, a datetime or epoch milliseconds.", field=field)
    try:
        return to_ms(value, end=end)
    except (TypeError, ValueError, OverflowError):
        raise ApplicationError(
            "Give a date, a datetime or epoch milliseconds.", field=field
        ) from None


def _number(value: Any, field: str, label: str) -> float:
    number = finite_or_none(value) if not isinstance(value, bool) else None
    if number is None:
        raise ApplicationError(f"{label} must be a number.", field=field)
    return number


def _check_windows(
    keys: Sequence[str], custom: Sequence[Mapping[str, Any]], max_bars: int, tf_ms: int
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for key in keys:
        window = engine.NAMED_WINDOWS.get(str(key))
        if window is None:
            names = ", ".join(engine.NAMED_WINDOWS)
            raise ApplicationError(f"Unknown window {key!r}; choose from {names}.", field="windows")
        if window.key in seen:
            continue
        seen.add(window.key)
        out.append(
            {
                "key": window.key,
                "label": window.label,
                "start_ms": window.start_ms,
                "end_ms": window.end_ms,
            }
        )
    if len(custom) > MAX_CUSTOM_WINDOWS:
        raise ApplicationError(
            f"Add at most {MAX_CUSTOM_WINDOWS} windows of your own.", field="custom_windows"
        )
    for i, item in enumerate(custom, start=1):
        if not isinstance(item, Mapping):
            raise ApplicationError("Each window needs a start and an end.", field="custom_windows")
        label = str(item.get("label") or "").strip() or f"Window {i}"
        if len(label) > MAX_LABEL:
            raise ApplicationError(
                f"A window's name is at most {MAX_LABEL} characters.", field="custom_windows"
            )
        if item.get("start") is None or item.get("end") is None:
            raise ApplicationError(
                f"{label}: give both a start and an end.", field="custom_windows"
            )
        start = _bound(item["start"], "custom_windows")
        # An end given as a date includes that day; the stored end is exclusive.
        end = _bound(item["end"], "custom_windows", end=True) + (
            1 if isinstance(item["end"], date) and not isinstance(item["end"], datetime) else 0
        )
        if end <= start:
            raise ApplicationError(
                f"{label}: the end must be after the start.", field="custom_windows"
            )
        bars = (end - start) // tf_ms
        if bars > max_bars:
            raise ApplicationError(
                f"{label} spans about {bars:,} bars; your plan runs at most {max_bars:,} per "
                "market. Shorten it.",
                field="custom_windows",
            )
        out.append({"key": "", "label": label, "start_ms": start, "end_ms": end})
    return out


# (range, the one value inside it that changes nothing, the message when outside either).
_GAP_LIMITS = (GAP_RANGE, 0.0, "The gap must be from {low:.0%} to +{high:.0%}, and not 0.")
_FACTOR_LIMITS = (
    FACTOR_RANGE,
    1.0,
    "The factor must be from {low:g} to {high:g}, and not 1 (no change).",
)


def _in_range(
    raw: Any, field: str, label: str, limits: tuple[tuple[float, float], float, str]
) -> float:
    """The number given for ``field`` when inside its range and not its no-op value; else the
    limits' message (with ``{low}`` and ``{high}`` filled in) as an error on ``field``."""
    value = _number(raw, field, label)
    (low, high), excluded, message = limits
    if not low <= value <= high or value == excluded:
        raise ApplicationError(message.format(low=low, high=high), field=field)
    return value


def _check_shocks(shocks: Sequence[Mapping[str, Any]], backtest: Backtest) -> list[dict[str, Any]]:
    if len(shocks) > MAX_SHOCKS:
        raise ApplicationError(f"Add at most {MAX_SHOCKS} shocks.", field="shocks")
    out: list[dict[str, Any]] = []
    span = f"{fmt_ms(backtest.start_ts)} to {fmt_ms(backtest.end_ts)}"
    for item in shocks:
        if not isinstance(item, Mapping) or item.get("kind") not in SHOCK_KINDS:
            raise ApplicationError("A shock is a gap or a volatility spike.", field="shocks")
        kind = str(item["kind"])
        field = "gap" if kind == "gap" else "vol_spike"
        if item.get("at") is None:
            raise ApplicationError("Say when the shock happens.", field=f"{field}_at")
        at = _bound(item["at"], f"{field}_at")
        if kind == "gap":
            if not backtest.start_ts < at <= backtest.end_ts:
                raise ApplicationError(
                    f"The gap must come after the backtest's first bar and by its end ({span}).",
                    field="gap_at",
                )
            change = _in_range(item.get("change"), "gap_change", "The gap", _GAP_LIMITS)
            out.append({"kind": "gap", "at_ms": at, "change": change})
        else:
            if not backtest.start_ts <= at <= backtest.end_ts:
                raise ApplicationError(
                    f"The spike must start inside the backtest's range ({span}).",
                    field="vol_spike_at",
                )
            factor = _in_range(item.get("factor"), "vol_spike_factor", "The factor", _FACTOR_LIMITS)
            bars = item.get("bars")
            if (
                isinstance(bars, bool)
                or not isinstance(bars, int)
                or not 1 <= bars <= MAX_SPIKE_BARS
            ):
                raise ApplicationError(
                    f"The spike lasts 1 to {MAX_SPIKE_BARS:,} bars.", field="vol_spike_bars"
                )
            out.append({"kind": "vol_spike", "at_ms": at, "bars": bars, "factor": factor})
    return out


@transaction.atomic
def stress_create(
    *,
    user: User,
    backtest: Backtest,
    windows: Sequence[str] = (),
    custom_windows: Sequence[Mapping[str, Any]] = (),
    shocks: Sequence[Mapping[str, Any]] = (),
) -> StressRun:
    """Queue a stress run of ``user``'s completed ``backtest``.

    ``windows`` are keys of ``engine.stress.NAMED_WINDOWS``; ``custom_windows`` are
    ``{"label", "start", "end"}`` (dates, datetimes or epoch ms; an end given as a date
    includes that day); ``shocks`` are ``{"kind": "gap", "at", "change"}`` (change a fraction,
    -0.95 to 1) and ``{"kind": "vol_spike", "at", "bars", "factor"}`` inside the backtest's
    range. At least one window or shock. Raises ApplicationError naming the field, NotFound,
    Conflict (no result, concurrency limit) or PlanRequired; nothing is saved on error.
    """
    require_pro(user)
    backtest, _ = completed_backtest(user=user, backtest=backtest)
    try:
        tf_ms = timeframe_ms(backtest.timeframe)
    except EngineError:
        raise ApplicationError("The backtest's timeframe is unknown.", field="backtest") from None
    symbols = max(1, len(backtest.series_order or []))
    max_bars = max(1, int(user.plan.max_candles_per_backtest) // symbols)
    checked_windows = _check_windows(list(windows), list(custom_windows), max_bars, tf_ms)
    checked_shocks = _check_shocks(list(shocks), backtest)
    if not checked_windows and not checked_shocks:
        raise ApplicationError("Choose at least one window or shock.", field="windows")
    check_capacity(user=user, model=StressRun, noun="stress tests")
    run = StressRun.objects.create(
        owner=user, backtest=backtest, windows=checked_windows, shocks=checked_shocks
    )
    lifecycle.enqueue(run)
    return run


# --- execute --------------------------------------------------------------------------------


def _outcome_json(outcome: engine.Outcome) -> dict[str, Any]:
    return {
        k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in outcome.as_dict().items()
    }


def _series_json(series: MarketSeries, own: bool) -> dict[str, Any]:
    return {
        "series_id": series.pk,
        "label": series_label(series),
        "symbol": series.symbol,
        "first_ts": series.first_ts,
        "last_ts": series.last_ts,
        "own": own,
    }


def _overlap(series: MarketSeries, start: int, end: int, tf_ms: int) -> int:
    if not series.count or series.first_ts is None or series.last_ts is None:
        return 0
    return max(0, min(end, int(series.last_ts) + tf_ms) - max(start, int(series.first_ts)))


def _candidates(user: User, series: MarketSeries) -> list[MarketSeries]:
    """``series`` first, then other series of the same symbol and timeframe ``user`` sees."""
    from backtester.selectors.backtests import series_for

    others = (
        series_for(user)
        .filter(symbol=series.symbol, timeframe=series.timeframe)
        .exclude(pk=series.pk)
        .order_by("pk")
    )
    return [series, *others]


def _take(candles: Candles, keep: np.ndarray) -> Candles:
    return Candles(
        timestamp=candles.timestamp[keep],
        open=candles.open[keep],
        high=candles.high[keep],
        low=candles.low[keep],
        close=candles.close[keep],
        volume=candles.volume[keep],
        extra={k: v[keep] for k, v in candles.extra.items()},
        symbol=candles.symbol,
        timeframe=candles.timeframe,
    )


def _common_bars(candles_list: list[Candles]) -> list[Candles]:
    """The markets on the bars they all have (a portfolio needs the same bars)."""
    if len(candles_list) == 1:
        return candles_list
    common = candles_list[0].timestamp
    for c in candles_list[1:]:
        common = np.intersect1d(common, c.timestamp, assume_unique=True)
    return [_take(c, np.isin(c.timestamp, common)) for c in candles_list]


class _Context:
    """What every row of one stress run shares."""

    def __init__(self, run: StressRun) -> None:
        from backtester.services.backtests import _common_columns

        self.run = run
        self.user = User.objects.get(pk=run.owner_id)
        self.backtest = Backtest.objects.get(pk=run.backtest_id)
        bt = self.backtest
        rows = {s.pk: s for s in MarketSeries.objects.filter(pk__in=bt.series_order)}
        self.series: list[MarketSeries] = []
        for pk in bt.series_order:
            if pk not in rows:
                raise ApplicationError("A market this backtest uses was deleted.")
            self.series.append(rows[pk])
        self.spec = spec_from_dict(bt.spec)
        self.params = self.spec.resolve_params(bt.param_values)
        self.config = sim_config(bt.settings)
        self.tf_ms = timeframe_ms(bt.timeframe)
        self.warmup = strategy_warmup(self.spec, self.params, columns=_common_columns(self.series))


def _window_row(ctx: _Context, window: Mapping[str, Any]) -> dict[str, Any]:
    from backtester.marketdata.store import load_candles

    start, end = int(window["start_ms"]), int(window["end_ms"])
    row: dict[str, Any] = {
        "kind": "window",
        "key": window.get("key", ""),
        "label": window["label"],
        "start_ms": start,
        "end_ms": end,
        "status": "ok",
        "message": "",
        "data": [],
        "warmup": {"wanted": ctx.warmup, "used": 0},
        "outcome": None,
    }
    span = f"{fmt_day(start)} to {fmt_day(end - 1)}"
    chosen: list[MarketSeries] = []
    for series in ctx.series:
        candidates = _candidates(ctx.user, series)
        best = max(
            candidates, key=lambda s: (_overlap(s, start, end, ctx.tf_ms), s.pk == series.pk)
        )
        if _overlap(best, start, end, ctx.tf_ms) == 0:
            ranges = "; ".join(
                f"{series_label(s)} covers {fmt_day(s.first_ts)} to {fmt_day(s.last_ts)}"
                for s in candidates[:3]
            )
            row.update(
                status="no_data",
                message=f"No {series.timeframe} data for {series.symbol} covers {span}: {ranges}.",
                data=[_series_json(s, s.pk == series.pk) for s in candidates[:3]],
            )
            return row
        chosen.append(best)
    row["data"] = [
        _series_json(s, s.pk == own.pk) for s, own in zip(chosen, ctx.series, strict=True)
    ]
    loaded = [load_candles(s, start_ts=start - ctx.warmup * ctx.tf_ms, end_ts=end) for s in chosen]
    candles_list = _common_bars(loaded)
    where = engine.window_slice(candles_list[0].timestamp, start, end, ctx.warmup)
    if where.bars == 0:
        row.update(
            status="no_data",
            message=f"The data has no {ctx.backtest.timeframe} bar between {span}"
            + (" that every market shares." if len(chosen) > 1 else "."),
        )
        return row
    candles_list = [c.slice(where.lo, where.stop) for c in candles_list]
    row["warmup"]["used"] = where.warmup_used
    outcome = engine.run_span(
        ctx.spec, ctx.params, ctx.config, candles_list, first=where.warmup_used
    )
    row["outcome"] = _outcome_json(outcome)
    notes: list[str] = []
    if outcome.start_ts > start + ctx.tf_ms or outcome.end_ts + 2 * ctx.tf_ms <= end:
        row["status"] = "partial"
        notes.append(
            f"The data covers only {fmt_ms(outcome.start_ts)} to {fmt_ms(outcome.end_ts)} of "
            "this window."
        )
    if where.warmup_used < ctx.warmup:
        notes.append(
            f"Only {where.warmup_used} of the {ctx.warmup} warm-up bars the strategy needs lie "
            "before the window, so its first signals may come late."
        )
    if any(s.pk != own.pk for s, own in zip(chosen, ctx.series, strict=True)):
        notes.append(
            "Run on " + ", ".join(series_label(s) for s in chosen) + " (the backtest's own data "
            "does not cover this window)."
        )
    row["message"] = " ".join(notes)
    return row


def _shock_label(shock: Mapping[str, Any]) -> str:
    when = fmt_ms(int(shock["at_ms"]))
    if shock["kind"] == "gap":
        return f"Gap {float(shock['change']) * 100:+.1f} % at {when}"
    return f"Volatility x{float(shock['factor']):g} for {int(shock['bars'])} bars from {when}"


def _shocked(candles: Candles, shock: Mapping[str, Any]) -> Candles:
    index = int(np.searchsorted(candles.timestamp, int(shock["at_ms"]), side="left"))
    if shock["kind"] == "gap":
        return engine.apply_gap(candles, index=index, change=float(shock["change"]))
    return engine.apply_vol_spike(
        candles, start=index, bars=int(shock["bars"]), factor=float(shock["factor"])
    )


def _delta(stressed: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in OUTCOME_DELTAS:
        a, b = stressed.get(key), base.get(key)
        out[key] = None if a is None or b is None else a - b
    out["trades"] = int(stressed["trades"]) - int(base["trades"])
    return out


def _shock_rows(ctx: _Context) -> list[dict[str, Any]]:
    from backtester.marketdata.store import load_candles

    bt = ctx.backtest
    # The backtest's own bars (its end is the last millisecond included; the store's is not).
    candles_list = _common_bars(
        [load_candles(s, start_ts=bt.start_ts, end_ts=bt.end_ts + 1) for s in ctx.series]
    )
    if len(candles_list[0]) < 2:
        raise ApplicationError("The backtest's data is gone from the store.")
    base = _outcome_json(engine.run_span(ctx.spec, ctx.params, ctx.config, candles_list))
    rows: list[dict[str, Any]] = [
        {
            "kind": "baseline",
            "label": "Unstressed (the backtest's range)",
            "status": "ok",
            "message": "",
            "start_ms": bt.start_ts,
            "end_ms": bt.end_ts + 1,
            "outcome": base,
        }
    ]
    for shock in ctx.run.shocks:
        row: dict[str, Any] = {
            "kind": shock["kind"],
            "label": _shock_label(shock),
            "status": "ok",
            "message": "",
            "shock": dict(shock),
            "start_ms": bt.start_ts,
            "end_ms": bt.end_ts + 1,
            "outcome": None,
            "delta": None,
        }
        try:
            shocked = [_shocked(c, shock) for c in candles_list]
            outcome = _outcome_json(engine.run_span(ctx.spec, ctx.params, ctx.config, shocked))
        except EngineError as exc:
            row.update(status="error", message=str(exc))
        else:
            row.update(outcome=outcome, delta=_delta(outcome, base))
        rows.append(row)
    return rows


def _compute(run: StressRun, timings: dict[str, float]) -> dict[str, Any]:
    step(run, 0.05, "loading")
    t0 = time.perf_counter()
    ctx = _Context(run)
    rows: list[dict[str, Any]] = []
    total = len(run.windows) + (1 if run.shocks else 0)
    for done, window in enumerate(run.windows):
        step(run, 0.1 + 0.85 * done / total, "windows")
        try:
            rows.append(_window_row(ctx, window))
        except EngineError as exc:
            rows.append(
                {
                    "kind": "window",
                    "key": window.get("key", ""),
                    "label": window["label"],
                    "start_ms": window["start_ms"],
                    "end_ms": window["end_ms"],
                    "status": "error",
                    "message": str(exc),
                    "data": [],
                    "warmup": {"wanted": ctx.warmup, "used": 0},
                    "outcome": None,
                }
            )
    timings["windows"] = time.perf_counter() - t0
    if run.shocks:
        step(run, 0.1 + 0.85 * len(run.windows) / total, "shocks")
        t0 = time.perf_counter()
        rows.extend(_shock_rows(ctx))
        timings["shocks"] = time.perf_counter() - t0
    return {
        "rows": rows,
        "warmup_bars": ctx.warmup,
        "timeframe": ctx.backtest.timeframe,
        "symbols": [s.symbol for s in ctx.series],
        "initial_cash": float(ctx.config.initial_cash),
    }


def stress_execute(*, run_id: int) -> None:
    """Run a queued stress run to completion (the Celery task's body). Idempotent: a run that
    is not queued is left alone; errors mark it failed with the reason."""
    execute(StressRun, run_id, _compute)


def window_coverage(*, user: User, backtest: Backtest) -> list[dict[str, Any]]:
    """For the form: each named window and whether some data the backtest could use covers it
    (from the catalog; no candles are read)."""
    try:
        tf_ms = timeframe_ms(backtest.timeframe)
    except EngineError:
        return []
    series = list(MarketSeries.objects.filter(pk__in=backtest.series_order or []))
    out = []
    for window in engine.NAMED_WINDOWS.values():
        covered = bool(series) and all(
            any(
                _overlap(c, window.start_ms, window.end_ms, tf_ms) > 0 for c in _candidates(user, s)
            )
            for s in series
        )
        out.append(
            {
                "key": window.key,
                "label": window.label,
                "description": window.description,
                "start": fmt_day(window.start_ms),
                "end": fmt_day(window.end_ms - 1),
                "covered": covered,
            }
        )
    return out
