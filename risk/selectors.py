"""Reads of the risk app: profiles, states, history, denials, equity reference points."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, overload

import numpy as np
import numpy.typing as npt
from django.db.models import Max, Q, QuerySet

from config.exceptions import NotFound
from exchanges.models import ExchangeAccount
from risk.models import (
    DeniedOrder,
    EquitySnapshot,
    KillSwitchRun,
    RiskProfile,
    StateTransition,
    TradingState,
)

FloatArray = npt.NDArray[np.float64]
STATE_RANK = {
    TradingState.State.ACTIVE: 0,
    TradingState.State.REDUCING: 1,
    TradingState.State.HALTED: 2,
}


@overload
def account_get(user: Any, account_id: int) -> ExchangeAccount: ...
@overload
def account_get(user: Any, account_id: int | None) -> ExchangeAccount | None: ...
def account_get(user: Any, account_id: int | None) -> ExchangeAccount | None:
    """The user's account ``account_id`` (None for None); another user's → NotFound."""
    if account_id is None:
        return None
    account = ExchangeAccount.objects.filter(pk=account_id, owner=user).first()
    if account is None:
        raise NotFound("No such exchange account.")
    return account


def accounts_for(user: Any) -> QuerySet[ExchangeAccount]:
    return ExchangeAccount.objects.filter(owner=user).order_by("label", "pk")


def profile_stored(user: Any, account: ExchangeAccount | None = None) -> RiskProfile | None:
    """The stored profile of exactly this scope (the user's default when ``account`` is None)."""
    return RiskProfile.objects.filter(owner=user, account=account).first()


def profile_for(user: Any, account: ExchangeAccount | None = None) -> RiskProfile:
    """The limits that apply: the account's override, else the user's default, else the
    product's defaults (an unsaved profile)."""
    if account is not None:
        found = profile_stored(user, account)
        if found is not None:
            return found
    found = profile_stored(user, None)
    return found if found is not None else RiskProfile(owner=user, account=None)


def profile_overrides(user: Any) -> QuerySet[RiskProfile]:
    return RiskProfile.objects.filter(owner=user, account__isnull=False).select_related("account")


def trading_state_get(user: Any, pk: int) -> TradingState:
    """The user's state row ``pk``; another user's → NotFound (a 404)."""
    state = TradingState.objects.filter(pk=pk, owner=user).select_related("account").first()
    if state is None:
        raise NotFound("No such trading state.")
    return state


def trading_states_for(user: Any) -> QuerySet[TradingState]:
    return (
        TradingState.objects.filter(owner=user)
        .select_related("account")
        .order_by("account__label", "pk")
    )


def effective_state(user: Any, account: ExchangeAccount | None) -> TradingState | None:
    """The strictest latched row among the user's own state and the account's (None when
    neither exists: active)."""
    rows = list(
        TradingState.objects.filter(owner=user).filter(
            Q(account=None) | Q(account=account) if account is not None else Q(account=None)
        )
    )
    if not rows:
        return None
    return max(rows, key=lambda r: (STATE_RANK[TradingState.State(r.state)], r.pk))


def transitions_for(user: Any, limit: int = 50) -> QuerySet[StateTransition]:
    return StateTransition.objects.filter(owner=user).select_related("state__account")[:limit]


def denials_for(user: Any, *, limit: int | None = 50) -> QuerySet[DeniedOrder]:
    qs = DeniedOrder.objects.filter(owner=user).select_related("account")
    return qs[:limit] if limit is not None else qs


def kill_switch_runs_for(user: Any, limit: int = 10) -> QuerySet[KillSwitchRun]:
    return KillSwitchRun.objects.filter(owner=user)[:limit]


def kill_switch_run_get(user: Any, pk: int) -> KillSwitchRun:
    run = KillSwitchRun.objects.filter(owner=user, pk=pk).first()
    if run is None:
        raise NotFound("No such kill-switch run.")
    return run


def _snapshots(user: Any, account: ExchangeAccount | None) -> QuerySet[EquitySnapshot]:
    return EquitySnapshot.objects.filter(owner=user, account=account)


def equity_peak(user: Any, account: ExchangeAccount | None) -> Decimal | None:
    """The highest recorded equity of the scope (None without snapshots)."""
    value = _snapshots(user, account).aggregate(peak=Max("equity"))["peak"]
    return Decimal(value) if value is not None else None


def equity_at_start(user: Any, account: ExchangeAccount | None, start: datetime) -> Decimal | None:
    """Equity when a period began: the last snapshot before ``start``, else the first one
    inside the period (None without either)."""
    qs = _snapshots(user, account)
    before = qs.filter(at__lt=start).order_by("-at", "-pk").first()
    if before is not None:
        return before.equity
    inside = qs.filter(at__gte=start).order_by("at", "pk").first()
    return inside.equity if inside is not None else None


def equity_curve(
    user: Any, account: ExchangeAccount | None, *, limit: int = 5000
) -> list[tuple[datetime, Decimal]]:
    """The latest ``limit`` snapshots, oldest first."""
    rows = list(
        _snapshots(user, account).order_by("-at", "-pk").values_list("at", "equity")[:limit]
    )
    rows.reverse()
    return rows


# --- the pre-trade check's reads for many (user, account) pairs at once -------------------------

Pair = tuple[int, int]
PairReads = tuple[TradingState | None, Decimal | None, dict[str, Decimal | None]]


def profiles_for_many(pairs: Iterable[Pair]) -> dict[Pair, RiskProfile]:
    """``profile_for`` of each (user id, account id) in one query; a pair with neither an
    override nor a stored default is left out (the product's defaults apply)."""
    pairs = list(pairs)
    users = {u for u, _a in pairs}
    accounts = {a for _u, a in pairs}
    rows = RiskProfile.objects.filter(owner_id__in=users).filter(
        Q(account__isnull=True) | Q(account_id__in=accounts)
    )
    stored = {(p.owner_id, p.account_id): p for p in rows.order_by("-pk")}
    out = {}
    for u, a in pairs:
        found = stored.get((u, a)) or stored.get((u, None))
        if found is not None:
            out[(u, a)] = found
    return out


def risk_reads_many(pairs: Iterable[Pair], starts: dict[str, datetime]) -> dict[Pair, PairReads]:
    """For each (user id, account id): ``effective_state``, ``equity_peak`` and
    ``equity_at_start`` at each of ``starts`` (name → time), in a few queries (on
    PostgreSQL; elsewhere one pair at a time through those selectors)."""
    from django.db import connection

    pairs = list(pairs)
    if connection.vendor != "postgresql":
        return _risk_reads_each(pairs, starts)
    users = {u for u, _a in pairs}
    accounts = {a for _u, a in pairs}
    states: dict[int, list[TradingState]] = {}
    for row in TradingState.objects.filter(owner_id__in=users).filter(
        Q(account__isnull=True) | Q(account_id__in=accounts)
    ):
        states.setdefault(row.owner_id, []).append(row)
    snaps = EquitySnapshot.objects.filter(owner_id__in=users, account_id__in=accounts)
    # The peak and, for each start, the last snapshot before it and the first one from it on,
    # per (user, account): one statement (a UNION ALL of the grouped and DISTINCT ON reads).
    parts: list[tuple[str, QuerySet[Any]]] = [
        ("peak", snaps.values("owner_id", "account_id").annotate(value=Max("equity")).order_by())
    ]
    for name, start in starts.items():
        parts.append((f"after:{name}", _first_per_scope(snaps.filter(at__gte=start), ("at", "pk"))))
        parts.append(
            (f"before:{name}", _first_per_scope(snaps.filter(at__lt=start), ("-at", "-pk")))
        )
    by_tag: dict[str, dict[Pair, Decimal]] = {tag: {} for tag, _qs in parts}
    for tag, u, a, value in _union_all(parts):
        by_tag[tag][(u, a)] = value
    peaks = by_tag["peak"]
    at_start: dict[str, dict[Pair, Decimal]] = {}
    for name in starts:
        # the last one before the period wins over the first one inside it
        at_start[name] = {**by_tag[f"after:{name}"], **by_tag[f"before:{name}"]}
    out: dict[Pair, PairReads] = {}
    for u, a in pairs:
        rows = [r for r in states.get(u, []) if r.account_id is None or r.account_id == a]
        latched = (
            max(rows, key=lambda r: (STATE_RANK[TradingState.State(r.state)], r.pk))
            if rows
            else None
        )
        peak = peaks.get((u, a))
        out[(u, a)] = (
            latched,
            Decimal(peak) if peak is not None else None,
            {name: found.get((u, a)) for name, found in at_start.items()},
        )
    return out


def _first_per_scope(qs: QuerySet[EquitySnapshot], order: tuple[str, str]) -> QuerySet[Any]:
    """The first row of each (owner, account) in ``order``: owner, account, equity."""
    return (
        qs.order_by("owner_id", "account_id", *order)
        .distinct("owner_id", "account_id")
        .values("owner_id", "account_id", "equity")
    )


def _union_all(parts: list[tuple[str, QuerySet[Any]]]) -> list[tuple[str, int, int, Any]]:
    """Rows ``(tag, owner id, account id, value)`` of every ``(tag, values queryset)`` (its
    three columns in that order), read in one statement: each part keeps its own ordering and
    DISTINCT ON, which Django's ``union()`` cannot express."""
    from django.db import connection

    sqls, params = [], []
    for tag, qs in parts:
        sql, part_params = qs.query.sql_with_params()
        sqls.append(f"SELECT CAST(%s AS text), part.* FROM ({sql}) AS part")  # noqa: S608 - Django's own SQL
        params.extend([tag, *part_params])
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(sqls), params)
        return list(cursor.fetchall())


def _risk_reads_each(pairs: list[Pair], starts: dict[str, datetime]) -> dict[Pair, PairReads]:
    from django.contrib.auth import get_user_model

    users = get_user_model().objects.in_bulk({u for u, _a in pairs})
    accounts = ExchangeAccount.objects.in_bulk({a for _u, a in pairs})
    out: dict[Pair, PairReads] = {}
    for u, a in pairs:
        user, account = users[u], accounts[a]
        out[(u, a)] = (
            effective_state(user, account),
            equity_peak(user, account),
            {name: equity_at_start(user, account, at) for name, at in starts.items()},
        )
    return out


def symbol_returns(user: Any, symbols: Iterable[str], *, lookback: int) -> dict[str, FloatArray]:
    """Simple close-to-close returns (the latest ``lookback``) of each symbol from the candle
    store, preferring hourly series; symbols without stored candles are left out."""
    from backtester.engine.candles import timeframe_ms
    from backtester.marketdata.store import load_candles
    from backtester.selectors.marketdata import series_visible_to

    out: dict[str, FloatArray] = {}
    wanted = sorted(set(symbols))
    if lookback < 2 or not wanted:
        return out
    rows = series_visible_to(user).filter(symbol__in=wanted, count__gt=lookback)
    best: dict[str, Any] = {}
    for s in rows.order_by("pk"):
        current = best.get(s.symbol)
        if current is None or (s.timeframe == "1h" and current.timeframe != "1h"):
            best[s.symbol] = s
    for symbol, series in best.items():
        start = int(series.last_ts) - (lookback + 1) * timeframe_ms(series.timeframe)
        close = load_candles(series, start_ts=start).close
        if close.shape[0] >= 3:
            out[symbol] = (close[1:] / close[:-1] - 1.0)[-lookback:]
    return out


def _default_adapter_for(account: ExchangeAccount) -> Any:
    from exchanges.adapters import adapter_for  # the ccxt/paper adapters, loaded when needed

    return adapter_for(account)


def dashboard_data(
    user: Any, *, adapter_for: Any = None, now: datetime | None = None
) -> dict[str, Any]:
    """What the risk dashboard shows: states, the equity curve, exposure and heat per symbol
    (positions read through each account's adapter), the correlation matrix of the open
    positions, today's P&L against the daily limit, transitions and denials."""
    from django.utils import timezone

    from risk import rules

    now = now or timezone.now()
    get_adapter = adapter_for or _default_adapter_for
    profile = profile_for(user, None)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    unpriced: list[dict[str, Any]] = []
    total_equity = 0.0
    for account in accounts_for(user):
        try:
            adapter = get_adapter(account)
            positions = [p for p in adapter.positions() if p.amount != 0]
            balances = adapter.balances()
        except Exception as exc:
            problems.append(f"{account.label}: the account could not be read ({exc}).")
            continue
        account_value = 0.0
        quote = "USDT"
        if balances:
            quote = next((q for q in ("USDT", "USD", "USDC", "EUR") if q in balances), quote)
            account_value = float(balances[quote].total) if quote in balances else 0.0
        for p in positions:
            try:
                mark = float(adapter.last_price(p.symbol))
            except Exception:
                problems.append(f"{account.label}: no price for {p.symbol}.")
                unpriced.append(
                    {"account": account.label, "account_id": account.pk, "symbol": p.symbol,
                     "amount": p.amount, "mark": None, "value": None}
                )  # fmt: skip
                continue
            # The exchange reports no stop for a position: the whole value is at risk.
            heat = rules.position_heat(float(p.amount), mark, float("nan"))
            rows.append(
                {
                    "account": account.label,
                    "account_id": account.pk,
                    "symbol": p.symbol,
                    "amount": p.amount,
                    "mark": mark,
                    "value": float(p.amount) * mark,
                    "heat_money": heat,
                }
            )
            if p.symbol.endswith("/" + quote):
                account_value += float(p.amount) * mark
        total_equity += account_value
    snapshot_equity = None
    curve = equity_curve(user, None)
    if curve:
        snapshot_equity = float(curve[-1][1])
    equity = total_equity if rows or total_equity > 0 else (snapshot_equity or 0.0)
    by_symbol: dict[str, dict[str, Any]] = {}
    for r in rows:
        agg = by_symbol.setdefault(r["symbol"], {"symbol": r["symbol"], "value": 0.0, "heat": 0.0})
        agg["value"] += r["value"]
        agg["heat"] += r["heat_money"]
    exposure = [
        {
            "symbol": s,
            "exposure": abs(a["value"]) / equity if equity > 0 else None,
            "heat": a["heat"] / equity if equity > 0 else None,
        }
        for s, a in sorted(by_symbol.items())
    ]
    symbols = sorted(by_symbol)
    corr = np.full((len(symbols), len(symbols)), np.nan)
    lookback = profile.correlation_lookback or 48
    if len(symbols) >= 2:
        returns = symbol_returns(user, symbols, lookback=lookback)
        for i, a in enumerate(symbols):
            for j, b in enumerate(symbols):
                if a in returns and b in returns:
                    corr[i, j] = rules.correlations(returns[a], returns[b][None, :], lookback)[0]
    day_start = equity_at_start(user, None, _utc_midnight(now))
    today_pnl = (equity - float(day_start)) if day_start is not None and equity else None
    return {
        "profile": profile,
        "states": list(trading_states_for(user)),
        "effective": effective_state(user, None),
        "curve": curve,
        "positions": rows,
        "unpriced_positions": unpriced,
        "exposure": exposure,
        "total_heat": sum(a["heat"] for a in by_symbol.values()) / equity if equity > 0 else None,
        "symbols": symbols,
        "correlation": corr,
        "equity": equity,
        "day_start_equity": float(day_start) if day_start is not None else None,
        "today_pnl": today_pnl,
        "daily_limit_money": (
            float(day_start) * profile.daily_loss_limit if day_start is not None else None
        ),
        "problems": problems,
        "transitions": list(transitions_for(user)),
        "denials": list(denials_for(user)),
        "kill_switch_runs": list(kill_switch_runs_for(user, 5)),
    }


def _utc_midnight(now: datetime) -> datetime:
    from datetime import UTC

    d = now.astimezone(UTC)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)
