"""The scanner's alerts: one row per symbol of a scan (BUY, SELL, HOLD and why), new signals
told to the owner, a scan's summary, and an alert turned into a backtest of the band preset in
one click. Split from services/scanner.py, which runs scans."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from accounts.gating import require_pro
from accounts.models import User
from accounts.notifications import notify_user
from backtester.engine.candles import timeframe_ms
from backtester.engine.errors import CandleError
from backtester.engine.scanner import BUY, HOLD, SELL, ScanResult
from backtester.models import Alert, Backtest, MarketSeries, ScanRun
from backtester.services.scan_loader import _Loaded
from config.exceptions import ApplicationError, NotFound

BAND_PRESET = "polyband_reversion"
TOP_ALERTS = 5


def _previous_signals(run: ScanRun) -> set[tuple[str, str]]:
    """(symbol, signal) of the BUY/SELL rows of the watchlist's previous completed scan."""
    if run.watchlist_id is None:
        return set()
    previous = (
        ScanRun.objects.filter(
            watchlist_id=run.watchlist_id,
            status=ScanRun.Status.COMPLETED,
            created_at__lt=run.created_at,
        )
        .exclude(pk=run.pk)
        .order_by("-created_at", "-pk")
        .first()
    )
    if previous is None:
        return set()
    return set(Alert.objects.filter(scan=previous, is_alert=True).values_list("symbol", "signal"))


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _alert_rows(
    run: ScanRun, result: ScanResult, loaded: list[_Loaded], *, now: datetime
) -> list[Alert]:
    previous = _previous_signals(run)
    rows: list[Alert] = []
    for i, item in enumerate(loaded):
        outcome = result.outcome(i)
        signal, reason = outcome.signal, outcome.reason
        if item.problem:
            signal, reason = HOLD, item.problem
        is_alert = signal != HOLD
        rows.append(
            Alert(
                scan=run,
                owner_id=run.owner_id,
                series=item.series,
                exchange=run.exchange,
                symbol=item.symbol,
                timeframe=run.timeframe,
                signal=signal,
                is_alert=is_alert,
                is_new=is_alert and (item.symbol, signal) not in previous,
                created_at=now,
                candle_ts=item.candle_ts,
                price=_finite(outcome.price),
                lower=_finite(outcome.lower),
                mid=_finite(outcome.mid),
                upper=_finite(outcome.upper),
                std=_finite(outcome.std),
                zscore=_finite(outcome.zscore),
                potential_return=_finite(outcome.potential_return) if is_alert else None,
                bars=max(item.bars, int(outcome.bars)),
                reason=reason[:300],
            )
        )
    return rows


def _notify_new(run_id: int) -> None:
    """Tell the owner about the scan's new BUY/SELL signals if the watchlist asks for it."""
    run = ScanRun.objects.select_related("watchlist").filter(pk=run_id).first()
    if run is None or run.watchlist is None or not run.watchlist.notify:
        return
    fresh = list(
        Alert.objects.filter(scan=run, is_new=True).order_by("signal", "-potential_return")[:20]
    )
    if not fresh:
        return
    notify_user(
        run.owner_id,
        kind="scanner.alerts",
        payload={
            "scan": run.pk,
            "watchlist": run.name,
            "message": f"{run.name}: {len(fresh)} new signal{'s' if len(fresh) != 1 else ''}",
            "alerts": [
                {
                    "id": a.pk,
                    "symbol": a.symbol,
                    "signal": a.signal,
                    "price": a.price,
                    "potential_return": a.potential_return,
                }
                for a in fresh
            ],
        },
    )


# --- reads shared by pages and the API ---------------------------------------------------------


def scan_summary(run: ScanRun | None, *, top: int = TOP_ALERTS) -> dict[str, Any]:
    """Counts of a completed scan and its top BUY and top SELL alerts by potential return."""
    if run is None:
        return {"scan": None, "counts": {BUY: 0, SELL: 0, HOLD: 0}, "top_buy": [], "top_sell": []}
    alerts = Alert.objects.filter(scan=run)
    return {
        "scan": run,
        "counts": {BUY: run.buy_count, SELL: run.sell_count, HOLD: run.hold_count},
        "top_buy": list(alerts.filter(signal=BUY).order_by("-potential_return", "symbol")[:top]),
        "top_sell": list(alerts.filter(signal=SELL).order_by("-potential_return", "symbol")[:top]),
    }


# --- the band strategy behind an alert, one click away ----------------------------------------


def alert_backtest_create(*, user: User, alert: Alert) -> Backtest:
    """Submit a backtest of the polyband_reversion preset on ``alert``'s series, with the
    scan's lookback (window), degree and k and ``exit_at_upper`` on (the scanner's potential
    return assumes an exit at the opposite band). It covers the stored history up to the
    alert's series' newest candle, at most the plan's candles per backtest. The preset trades
    longs only, so for a SELL alert it tests how buying the lower band has worked on that
    symbol. NotFound for another user's alert; ApplicationError when the series is gone or
    holds too few candles for the lookback.
    """
    require_pro(user)
    if alert.owner_id != user.pk:
        raise NotFound("Alert not found.")
    run = alert.scan
    series = MarketSeries.objects.filter(pk=alert.series_id).first() if alert.series_id else None
    if series is None or (series.owner_id is not None and series.owner_id != user.pk):
        raise ApplicationError(
            f"The candles of {alert.symbol} are no longer stored, so there is nothing to "
            "backtest on.",
            field="series",
        )
    if not series.count or series.first_ts is None or series.last_ts is None:
        raise ApplicationError(f"{alert.symbol} has no candles stored.", field="series")
    try:
        tf_ms = timeframe_ms(series.timeframe)
    except CandleError:
        raise ApplicationError(f"unknown timeframe {series.timeframe!r}", field="series") from None
    limit = min(int(series.count), int(user.plan.max_candles_per_backtest))
    if limit <= run.lookback + 1:
        raise ApplicationError(
            f"Only {series.count} {series.timeframe} candles of {alert.symbol} are stored; the "
            f"band strategy needs more than {run.lookback + 1} to trade. Fetch more history "
            "first.",
            field="series",
        )
    last = int(series.last_ts)
    start = max(int(series.first_ts), last - (limit - 1) * tf_ms)
    from backtester.services.backtests import backtest_create_for_preset

    return backtest_create_for_preset(
        user=user,
        preset=BAND_PRESET,
        series=[series],
        start=start,
        end=last + tf_ms - 1,
        settings={},
        param_values={
            "window": run.lookback,
            "degree": run.degree,
            "k": run.k,
            "exit_at_upper": True,
        },
        name=f"Bands {alert.symbol} {series.timeframe} · from scan #{run.pk}",
    )
