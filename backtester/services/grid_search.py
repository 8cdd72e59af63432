"""Searching grid settings in the background: the optimizer of grid bots.

``grid_search_create`` checks a request (a market the user can see, an investment, the values
to try for lower, upper, levels, spacing and trailing, the metric to rank by), saves a queued
``GridSearch`` and enqueues it through the shared run lifecycle (``config/runs``: after the
commit, claimed once, heartbeat, progress to ``run-gridsearch-<id>``, cancel, sweeper).

``grid_search_execute`` (the task's body) replays every combination with the engine's grid
simulation (``gridbot.grid_metrics``) over the market's stored candles, validated with the
market's rules exactly as a deployment is (``grid_bots.grid_settings``: tick, minimum order
value, lot), and stores the rows ranked by the chosen metric, best first; a combination the
rules refuse is kept, last, with the reason.
"""

from __future__ import annotations

import itertools
import math
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from backtester.engine.errors import ConfigError, EngineError
from backtester.engine.gridbot import MAX_LEVELS, grid_metrics
from backtester.models import GridSearch, MarketSeries
from backtester.services.grid_bots import grid_settings
from config.exceptions import ApplicationError, Conflict, NotFound
from config.runs import lifecycle
from config.selectors import first_or_raise

OBJECTIVES: dict[str, str] = {
    # metric -> "max" (higher is better) or "min"
    "total_return": "max",
    "grid_profit": "max",
    "sharpe": "max",
    "calmar": "max",
    "max_drawdown": "max",  # drawdowns are negative fractions: the shallowest is the highest
    "round_trips": "max",
}
SPACINGS = ("arithmetic", "geometric")
MAX_VALUES = 40  # values per setting
MAX_COMBINATIONS = 2000
BAR_BUDGET = 100_000_000  # combinations x candles in one search
MAX_BARS = 500_000  # the newest candles of the market, as the grid backtest page
MAX_ACTIVE = 2  # queued or running searches per user
ROW_METRICS = (
    "total_return", "grid_profit", "unrealized_pnl", "exit_pnl", "sharpe", "calmar",
    "max_drawdown", "round_trips", "final_equity", "fees_paid", "shifts", "stopped",
)  # fmt: skip
PROGRESS_SECONDS = 0.5


def _numbers(values: Any, field: str, label: str) -> list[Decimal]:
    if not isinstance(values, list | tuple) or not values:
        raise ApplicationError(f"Give at least one {label}", field=field)
    if len(values) > MAX_VALUES:
        raise ApplicationError(f"At most {MAX_VALUES} values of {label}", field=field)
    out = []
    for v in values:
        try:
            d = Decimal(str(v).strip())
        except (InvalidOperation, ValueError):
            raise ApplicationError(f"{label}: {v!r} is not a number", field=field) from None
        if not d.is_finite() or d <= 0:
            raise ApplicationError(f"{label}: every value must be a price above 0", field=field)
        out.append(d)
    return sorted(set(out))


def _levels(values: Any) -> list[int]:
    if not isinstance(values, list | tuple) or not values:
        raise ApplicationError("Give at least one number of levels", field="levels")
    if len(values) > MAX_VALUES:
        raise ApplicationError(f"At most {MAX_VALUES} values of levels", field="levels")
    out = []
    for v in values:
        try:
            n = int(str(v).strip())
        except ValueError:
            raise ApplicationError(f"levels: {v!r} is not a whole number", field="levels") from None
        if not 2 <= n <= MAX_LEVELS:
            raise ApplicationError(f"levels must be between 2 and {MAX_LEVELS:,}", field="levels")
        out.append(n)
    return sorted(set(out))


def search_space(
    *,
    lowers: Any,
    uppers: Any,
    levels: Any,
    spacings: Any = ("arithmetic",),
    trailing: Any = (False,),
) -> dict[str, list[Any]]:
    """The checked value lists (sorted, without repeats); ApplicationError naming the field."""
    space: dict[str, list[Any]] = {
        "lower": [str(x) for x in _numbers(lowers, "lowers", "lower price")],
        "upper": [str(x) for x in _numbers(uppers, "uppers", "upper price")],
        "levels": _levels(levels),
    }
    spacings = list(spacings or ())
    if not spacings or any(s not in SPACINGS for s in spacings):
        raise ApplicationError("spacing must be arithmetic and/or geometric", field="spacings")
    space["spacing"] = sorted(set(spacings))
    flags = list(trailing or ())
    if not flags or any(not isinstance(t, bool) for t in flags):
        raise ApplicationError("trailing must be true and/or false", field="trailing")
    space["trailing"] = sorted(set(flags))
    if not any(Decimal(lo) < Decimal(up) for lo in space["lower"] for up in space["upper"]):
        raise ApplicationError(
            "Every upper price is at or below every lower price: no range to search",
            field="uppers",
        )
    return space


def combinations(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every (lower, upper, levels, spacing, trailing) with lower below upper, in a fixed
    order."""
    out = []
    for lo, up, n, sp, tr in itertools.product(
        space["lower"], space["upper"], space["levels"], space["spacing"], space["trailing"]
    ):
        if Decimal(lo) < Decimal(up):
            out.append({"lower": lo, "upper": up, "levels": n, "spacing": sp, "trailing": tr})
    return out


@transaction.atomic
def grid_search_create(
    *,
    user: Any,
    series: MarketSeries,
    investment: Any,
    lowers: Any,
    uppers: Any,
    levels: Any,
    spacings: Any = ("arithmetic",),
    trailing: Any = (False,),
    objective: str = "total_return",
) -> GridSearch:
    """A queued search of ``user`` over the grid settings given, on ``series`` (one they can
    see, with candles), ranked by ``objective``. Bad input: ApplicationError naming the field,
    nothing saved. Pro only; at most MAX_ACTIVE searches queued or running per user."""
    from accounts.gating import require_pro
    from backtester.selectors.marketdata import series_visible_to

    require_pro(user)
    if not series_visible_to(user).filter(pk=series.pk).exists():
        raise NotFound("No such market", field="series")
    if not series.count:
        raise ApplicationError("This market has no candles", field="series")
    try:
        inv = Decimal(str(investment))
    except (InvalidOperation, ValueError):
        raise ApplicationError("The investment must be a number", field="investment") from None
    if not inv.is_finite() or inv <= 0:
        raise ApplicationError("The investment must be above 0", field="investment")
    if objective not in OBJECTIVES:
        raise ApplicationError(
            f"objective must be one of {', '.join(OBJECTIVES)}", field="objective"
        )
    space = search_space(
        lowers=lowers, uppers=uppers, levels=levels, spacings=spacings, trailing=trailing
    )
    count = len(combinations(space))
    if count > MAX_COMBINATIONS:
        raise ApplicationError(
            f"{count:,} combinations: at most {MAX_COMBINATIONS:,} per search", field="levels"
        )
    bars = min(int(series.count), MAX_BARS)
    if count * bars > BAR_BUDGET:
        raise ApplicationError(
            f"{count:,} combinations over {bars:,} candles is too much for one search (at most "
            f"{BAR_BUDGET:,} candle replays): search fewer combinations",
            field="levels",
        )
    active = GridSearch.objects.filter(owner=user, status__in=GridSearch.ACTIVE).count()
    if active >= MAX_ACTIVE:
        raise Conflict(
            f"{active} grid searches are already queued or running: wait for one to finish"
        )
    search = GridSearch.objects.create(
        owner=user, series=series, investment=inv, space=space, objective=objective,
        combinations=count, bars=bars,
    )  # fmt: skip
    lifecycle.enqueue(search)
    return search


def grid_search_cancel(*, user: Any, search: GridSearch) -> GridSearch:
    """Cancel ``user``'s queued or running search (the worker stops at its next progress)."""
    return lifecycle.cancel(search, user=user)


def grid_search_get(*, user: Any, pk: int) -> GridSearch:
    """``user``'s search ``pk``; NotFound for a missing one or someone else's."""
    return first_or_raise(
        GridSearch.objects.filter(owner=user, pk=pk).select_related("series"),
        NotFound("Grid search not found."),
    )


def grid_searches_for(*, user: Any) -> Any:
    return GridSearch.objects.filter(owner=user).select_related("series").order_by("-created_at")


def state_extra(search: GridSearch) -> dict[str, Any]:
    """What the page's live progress shows besides the bar."""
    return {"evaluated": search.evaluated, "combinations": search.combinations}


def describe(exc: Exception) -> str | None:
    return str(exc) if isinstance(exc, EngineError) else None


# --- the worker --------------------------------------------------------------------------------


def grid_search_execute(*, search_id: int) -> None:
    """Run search ``search_id`` (a second delivery, or a cancelled search, does nothing)."""
    lifecycle.execute(GridSearch, search_id, _run, expected=(EngineError,))


def evaluate(candles: Any, market: Any, investment: Decimal, combo: dict[str, Any]) -> dict:
    """One row: the combination, then its metrics (``grid_metrics`` with the settings the
    market's rules allow), or its ``error``."""
    row: dict[str, Any] = {**combo, "error": ""}
    try:
        settings = grid_settings(
            lower=combo["lower"], upper=combo["upper"], levels=combo["levels"],
            investment=investment, spacing=combo["spacing"], trailing=combo["trailing"],
            market=market,
        )  # fmt: skip
        metrics = grid_metrics(
            candles,
            {
                "lower": settings.lower, "upper": settings.upper, "levels": settings.levels,
                "investment": settings.investment, "spacing": settings.spacing,
                "maker_fee": settings.maker_fee, "taker_fee": settings.taker_fee,
                "tick": settings.tick, "min_notional": settings.min_notional,
                "trailing": settings.trailing,
            },
        )  # fmt: skip
    except ApplicationError as exc:
        row["error"] = exc.message
    except ConfigError as exc:
        row["error"] = str(exc)
    else:
        for key in ROW_METRICS:
            value = float(metrics[key])
            row[key] = value if math.isfinite(value) else None
    return row


def rank(rows: list[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """Best ``objective`` first; refused combinations and missing values last."""
    sign = -1.0 if OBJECTIVES[objective] == "max" else 1.0

    def key(row: dict[str, Any]) -> tuple[int, float]:
        value = row.get(objective)
        if row["error"] or value is None:
            return (1, 0.0)
        return (0, sign * float(value))

    return sorted(rows, key=key)


def _run(search: GridSearch) -> dict[str, Any]:
    from backtester.marketdata.store import load_candles
    from exchanges.paper import market_rules

    series = search.series
    candles = load_candles(series)
    if len(candles) > MAX_BARS:
        candles = candles.slice(len(candles) - MAX_BARS, len(candles))
    if len(candles) == 0:
        raise ApplicationError("This market has no candles")
    market = market_rules(series.symbol)
    combos = combinations(search.space)
    rows = []
    last = time.monotonic()
    lifecycle.progress(GridSearch, search.pk, fraction=0.0, stage="searching")
    for k, combo in enumerate(combos, start=1):
        rows.append(evaluate(candles, market, search.investment, combo))
        if time.monotonic() - last >= PROGRESS_SECONDS or k == len(combos):
            last = time.monotonic()
            lifecycle.progress(
                GridSearch, search.pk, fraction=k / len(combos), stage="searching",
                extra={"evaluated": k, "combinations": len(combos)}, fields={"evaluated": k},
            )  # fmt: skip
    return {
        "rows": rank(rows, search.objective),
        "evaluated": len(combos),
        "bars": len(candles),
        "market": {
            "tick": str(market.price_tick), "min_notional": str(market.min_notional),
            "maker_fee": str(market.maker_fee), "taker_fee": str(market.taker_fee),
            "amount_step": str(market.amount_step),
        },
    }  # fmt: skip


# --- the page's chart ----------------------------------------------------------------------------


def grid_search_heatmap(search: GridSearch) -> dict[str, Any]:
    """A Plotly heatmap of the ranking metric: one row per price range (lower-upper), one
    column per level count; each cell the best row of that range and count (over spacing and
    trailing). Refused combinations are blank."""
    objective = search.objective
    better = max if OBJECTIVES[objective] == "max" else min
    ranges = sorted(
        {(row["lower"], row["upper"]) for row in search.rows},
        key=lambda r: (Decimal(r[0]), Decimal(r[1])),
    )
    counts = sorted({int(row["levels"]) for row in search.rows})
    best: dict[tuple[str, str, int], float] = {}
    for row in search.rows:
        value = row.get(objective)
        if row["error"] or value is None:
            continue
        key = (row["lower"], row["upper"], int(row["levels"]))
        best[key] = better(best[key], value) if key in best else value
    scale = 100.0 if objective in ("total_return", "max_drawdown") else 1.0
    z = [
        [None if (lo, up, n) not in best else round(best[(lo, up, n)] * scale, 6) for n in counts]
        for lo, up in ranges
    ]
    label = objective.replace("_", " ") + (" (%)" if scale != 1.0 else "")
    return {
        "data": [
            {
                "type": "heatmap",
                "x": [str(n) for n in counts],
                "y": [f"{lo} to {up}" for lo, up in ranges],
                "z": z,
                "colorscale": "RdYlGn",
                "colorbar": {"title": {"text": label}},
                "hovertemplate": "levels %{x}<br>range %{y}<br>" + label + " %{z}<extra></extra>",
                "meta": {"role": "grid-search-heatmap"},
            }
        ],
        "layout": {
            "title": {"text": f"Best {label} by range and levels"},
            "xaxis": {"title": {"text": "levels"}, "type": "category"},
            "yaxis": {"title": {"text": "range (lower to upper)"}, "type": "category"},
            "margin": {"l": 110, "r": 16, "t": 40, "b": 48},
        },
    }
