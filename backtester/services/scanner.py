"""Writes of the signal scanner: scans (on demand and on schedule) and their execution.

* ``scan_start`` snapshots a watchlist into a queued ``ScanRun`` and enqueues the task after
  commit; ``scans_due_enqueue`` (Celery beat, every minute) does the same for every watchlist
  whose schedule is due.
* ``scan_execute`` is the task's body: resolve the symbols (the top N by volume asks the
  exchange), bring each symbol's candles up to date in the candle store (the incremental fetch
  service for exchange data; stored data as is for the demo set), fit the bands of every symbol
  at once (``engine.scanner.scan``), and save one ``Alert`` row per symbol in one transaction.
  Progress goes to the run's group (the shared lifecycle) after each committed step; new
  BUY/SELL signals (absent from the watchlist's previous scan) are flagged and, if the
  watchlist asks, sent to the owner's notifications.
* Split out: watchlists and their band settings are ``services/scan_watchlists.py``; the
  candle loader is ``services/scan_loader.py``; the alert rows, notifications,
  summaries and ``alert_backtest_create`` (a backtest of the band strategy on an alert's series
  with the scan's lookback, degree and k) are ``services/scan_alerts.py``.

Only closed candles are scanned: an exchange's last candle that is still forming is left out,
so a signal never flickers with the live price and matches what a backtest would have seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from accounts.gating import require_pro, user_has_pro
from accounts.models import User
from backtester.engine.errors import EngineError
from backtester.engine.scanner import BUY, HOLD, SELL, BandSettings, scan
from backtester.models import Alert, ScanRun, Watchlist
from backtester.services.scan_alerts import (
    _alert_rows,
    _notify_new,
)
from backtester.services.scan_loader import DEMO_EXCHANGE, _Loaded, _Loader
from backtester.services.scan_watchlists import next_slot
from config.exceptions import ApplicationError, Conflict, NotFound
from config.runs import lifecycle
from config.selectors import first_or_raise

PROGRESS_INTERVAL = 0.2  # seconds between two progress messages while loading

# Progress reached when each stage starts; loading fills LOADING_SPAN symbol by symbol.
STAGES: dict[str, float] = {
    "queued": 0.0,
    "symbols": 0.02,
    "loading": 0.05,
    "scanning": 0.9,
    "saving": 0.95,
    "done": 1.0,
}
LOADING_SPAN = (0.05, 0.9)


def default_exchange() -> str:
    """Where a new watchlist looks by default: the demo data in the embedded shape (a laptop,
    often offline, with demo candles seeded), Binance where the production services run."""
    return "binance" if getattr(django_settings, "REDIS_URL", "") else DEMO_EXCHANGE


def user_message(exc: Exception) -> str | None:
    """What the owner of a failed scan reads (None: an internal error)."""
    if isinstance(exc, ApplicationError):
        return exc.message
    if isinstance(exc, EngineError):
        return str(exc)
    return None


# --- starting scans -----------------------------------------------------------------------------


def _new_scan(watchlist: Watchlist, *, trigger: str) -> ScanRun:
    return ScanRun.objects.create(
        owner_id=watchlist.owner_id,
        watchlist=watchlist,
        trigger=trigger,
        status=ScanRun.Status.QUEUED,
        stage="queued",
        name=watchlist.name,
        exchange=watchlist.exchange,
        timeframe=watchlist.timeframe,
        universe=watchlist.universe,
        symbols=list(watchlist.symbols or []),
        top_n=watchlist.top_n if watchlist.universe == Watchlist.Universe.TOP else 0,
        quote=watchlist.quote if watchlist.universe == Watchlist.Universe.TOP else "",
        symbols_total=len(watchlist.symbols or [])
        if watchlist.universe == Watchlist.Universe.SYMBOLS
        else watchlist.top_n,
        lookback=watchlist.lookback,
        degree=watchlist.degree,
        k=watchlist.k,
    )


@transaction.atomic
def scan_start(
    *, user: User, watchlist: Watchlist, trigger: str = ScanRun.Trigger.MANUAL
) -> ScanRun:
    """Queue a scan of ``user``'s ``watchlist`` and enqueue its task after commit.

    One scan per watchlist at a time: Conflict while one is queued or running (a scan whose
    worker died is failed by the lifecycle's sweeper). NotFound for another user's watchlist.
    """
    require_pro(user)
    if trigger not in ScanRun.Trigger.values:
        raise ApplicationError(f"unknown trigger {trigger!r}", field="trigger")
    locked = first_or_raise(
        Watchlist.objects.select_for_update().filter(pk=watchlist.pk, owner=user),
        NotFound("Watchlist not found."),
    )
    if ScanRun.objects.filter(watchlist=locked, status__in=ScanRun.ACTIVE).exists():
        raise Conflict(f"A scan of {locked.name} is already running; wait for it to finish.")
    run = _new_scan(locked, trigger=trigger)
    lifecycle.enqueue(run)
    return run


def scans_due_enqueue(*, now: datetime | None = None) -> list[ScanRun]:
    """Queue a scan of every watchlist whose schedule is due (Celery beat calls this).

    Each due watchlist moves on to its next slot after ``now`` (missed slots are not caught up
    one by one). A watchlist whose owner has no Pro, or whose previous scan is still running,
    is skipped for this slot. Safe to run twice at once: rows are claimed with SKIP LOCKED.
    """
    now = now or timezone.now()
    started: list[ScanRun] = []
    due_ids = list(
        Watchlist.objects.filter(schedule_minutes__gt=0, next_run_at__lte=now)
        .order_by("next_run_at")
        .values_list("pk", flat=True)
    )
    for pk in due_ids:
        with transaction.atomic():
            watchlist = (
                Watchlist.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("owner")
                .filter(pk=pk, schedule_minutes__gt=0, next_run_at__lte=now)
                .first()
            )
            if watchlist is None:
                continue
            watchlist.next_run_at = next_slot(now, watchlist.schedule_minutes)
            watchlist.save(update_fields=["next_run_at", "updated_at"])
            if not user_has_pro(watchlist.owner):
                continue
            if ScanRun.objects.filter(watchlist=watchlist, status__in=ScanRun.ACTIVE).exists():
                continue
            run = _new_scan(watchlist, trigger=ScanRun.Trigger.SCHEDULE)
            lifecycle.enqueue(run)
            started.append(run)
    return started


# --- messages ----------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def state_extra(run: ScanRun) -> dict[str, Any]:
    """A scan's own part of its state: symbols done of total, signal counts, warnings."""
    return {
        "watchlist": run.watchlist_id,
        "name": run.name,
        "symbols_total": run.symbols_total,
        "symbols_done": run.symbols_done,
        "counts": {BUY: run.buy_count, SELL: run.sell_count, HOLD: run.hold_count},
        "warnings": list(run.warnings or []),
        "trigger": run.trigger,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
    }


def scan_payload(run: ScanRun) -> dict[str, Any]:
    """The JSON shape of a scan's state: the status URL, the API and the websocket share it."""
    return lifecycle.state(run)


class _Progress:
    """Commits the scan's progress, then announces it (at most every PROGRESS_INTERVAL while
    loading; every stage change at once)."""

    def __init__(self, run: ScanRun) -> None:
        self.run = run
        self.last_sent = 0.0

    def _send(self, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(self.run, key, value)
        lifecycle.progress(
            ScanRun,
            self.run.pk,
            fraction=self.run.progress,
            stage=self.run.stage,
            fields=fields,
            extra=state_extra(self.run),
        )
        self.last_sent = time.monotonic()

    def stage(self, stage: str, *, progress: float | None = None, **extra: Any) -> None:
        self.run.stage = stage
        self.run.progress = STAGES[stage] if progress is None else progress
        self._send(**extra)

    def loaded(self, done: int, total: int) -> None:
        low, high = LOADING_SPAN
        self.run.symbols_done = done
        self.run.progress = low + (high - low) * (done / total if total else 1.0)
        if done < total and time.monotonic() - self.last_sent < PROGRESS_INTERVAL:
            return
        self._send(symbols_done=done)


# --- executing a scan (the worker's side) -------------------------------------------------------


def scan_execute(*, scan_id: int) -> ScanRun | None:
    """Run a queued scan to completion (the Celery task's body); see the module docstring.

    Idempotent: anything but a queued scan is left alone. Per-symbol problems (an unknown
    symbol, too little data, stale data) make that symbol HOLD with the reason; an exchange
    that stops answering makes the rest of the scan use stored candles (with a warning); only
    a scan that cannot start (no symbols to rank) fails. Not to be called inside a
    transaction: each progress step is committed before it is announced.
    """
    lifecycle.execute(ScanRun, scan_id, _run_scan, expected=(EngineError,))
    return ScanRun.objects.filter(pk=scan_id).first()


def _run_scan(run: ScanRun) -> Callable[[ScanRun], list[str]]:
    progress = _Progress(run)
    progress.stage("symbols")
    loader = _Loader(run)
    t0 = time.perf_counter()
    loader.connect()
    symbols = loader.symbols()
    progress.stage("loading", symbols_total=len(symbols), symbols_done=0)
    loaded: list[_Loaded] = []
    for i, symbol in enumerate(symbols, start=1):
        loaded.append(loader.load(symbol))
        progress.loaded(i, len(symbols))
    load_seconds = time.perf_counter() - t0

    progress.stage("scanning")
    t1 = time.perf_counter()
    settings = BandSettings(lookback=run.lookback, degree=run.degree, k=run.k)
    result = scan([(item.symbol, item.closes) for item in loaded], settings)
    scan_seconds = time.perf_counter() - t1

    progress.stage("saving")
    now = timezone.now()
    rows = _alert_rows(run, result, loaded, now=now)
    counts = {BUY: 0, SELL: 0, HOLD: 0}
    for row in rows:
        counts[row.signal] += 1

    def apply(locked: ScanRun) -> list[str]:
        Alert.objects.bulk_create(rows, batch_size=500)
        locked.symbols_total = len(rows)
        locked.symbols_done = len(rows)
        locked.buy_count, locked.sell_count = counts[BUY], counts[SELL]
        locked.hold_count = counts[HOLD]
        locked.warnings = loader.warnings
        locked.as_of_ts = loader.now_ms
        locked.load_seconds = round(load_seconds, 4)
        locked.scan_seconds = round(scan_seconds, 6)
        locked.finished_at = now  # the alerts' time
        if any(row.is_new for row in rows):
            transaction.on_commit(lambda: _notify_new(locked.pk))
        return [
            "symbols_total",
            "symbols_done",
            "buy_count",
            "sell_count",
            "hold_count",
            "warnings",
            "as_of_ts",
            "load_seconds",
            "scan_seconds",
            "finished_at",
        ]

    return apply
