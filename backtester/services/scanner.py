"""Writes of the signal scanner: watchlists, scans (on demand and on schedule), their alerts,
and the one-click backtest of the band strategy behind an alert.

* ``watchlist_create/update/delete`` validate everything first (ApplicationError naming the
  field) and save nothing on error. The band settings must lie in the ranges of the
  ``polyband_reversion`` preset, so every alert can be backtested with the same numbers.
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
* Split out: the candle loader is ``services/scan_loader.py``; the alert rows, notifications,
  summaries and ``alert_backtest_create`` (a backtest of the band strategy on an alert's series
  with the scan's lookback, degree and k) are ``services/scan_alerts.py``.

Only closed candles are scanned: an exchange's last candle that is still forming is left out,
so a signal never flickers with the live price and matches what a backtest would have seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.gating import require_pro, user_has_pro
from accounts.models import User
from backtester.engine.errors import EngineError
from backtester.engine.language import PRESETS
from backtester.engine.scanner import BUY, HOLD, SELL, BandSettings, scan
from backtester.models import Alert, MarketSeries, ScanRun, Watchlist
from backtester.services.marketdata import normalise_symbol, normalise_timeframe
from backtester.services.scan_alerts import (
    BAND_PRESET,
    _alert_rows,
    _notify_new,
)
from backtester.services.scan_loader import DEMO_EXCHANGE, _Loaded, _Loader
from config.exceptions import ApplicationError, Conflict, NotFound, PlanRequired
from config.runs import lifecycle
from exchanges.clients import (
    SUPPORTED_EXCHANGES,
    ExchangeClient,
    ExchangeUnavailable,
    exchange_label,
    make_client,
)

logger = logging.getLogger(__name__)

EXCHANGE_CHOICES: tuple[tuple[str, str], ...] = (
    (DEMO_EXCHANGE, "Demo data (synthetic)"),
    *SUPPORTED_EXCHANGES,
)
MAX_WATCHLISTS = 20
MAX_SYMBOLS = 100
# A scheduled scan runs this long after its slot, so candles closing on the slot are in.
SCHEDULE_DELAY = timedelta(minutes=1)
PROGRESS_INTERVAL = 0.2  # seconds between two progress messages while loading
_MARKETS_TTL = 3600
QUICK_CHECK_MS = 3000  # how long saving a watchlist waits for the exchange's market list
_SYMBOL_SPLIT = re.compile(r"[\s,;]+")

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


# --- band settings: the preset's ranges ------------------------------------------------------


@dataclass(frozen=True)
class BandLimits:
    """Allowed band settings (from the polyband_reversion preset's declared ranges)."""

    lookback: tuple[int, int]
    degree: tuple[int, int]
    k: tuple[float, float]


def band_limits() -> BandLimits:
    params = {p.name: p for p in PRESETS[BAND_PRESET].params}
    window, degree, k = params["window"], params["degree"], params["k"]
    return BandLimits(
        lookback=(int(window.low or 2), int(window.high or 1000)),
        degree=(int(degree.low or 0), int(degree.high or 3)),
        k=(float(k.low or 0.1), float(k.high or 10.0)),
    )


def _whole(value: Any, *, name: str, label: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ApplicationError(f"The {label} must be a whole number.", field=name)
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ApplicationError(f"The {label} must be a whole number.", field=name) from None
    if not math.isfinite(number) or number != int(number):
        raise ApplicationError(f"The {label} must be a whole number.", field=name)
    if not low <= int(number) <= high:
        raise ApplicationError(f"The {label} must be between {low} and {high}.", field=name)
    return int(number)


def _real(value: Any, *, name: str, label: str, low: float, high: float) -> float:
    if isinstance(value, bool):
        raise ApplicationError(f"The {label} must be a number.", field=name)
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ApplicationError(f"The {label} must be a number.", field=name) from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ApplicationError(f"The {label} must be between {low:g} and {high:g}.", field=name)
    return number


def clean_band_settings(*, lookback: Any, degree: Any, k: Any) -> BandSettings:
    """The band settings, checked against the preset's ranges (ApplicationError on the field)."""
    limits = band_limits()
    lb = _whole(
        lookback, name="lookback", label="lookback", low=limits.lookback[0], high=limits.lookback[1]
    )
    dg = _whole(degree, name="degree", label="degree", low=limits.degree[0], high=limits.degree[1])
    kk = _real(k, name="k", label="band width k", low=limits.k[0], high=limits.k[1])
    return BandSettings(lookback=lb, degree=dg, k=kk)


# --- watchlists -------------------------------------------------------------------------------


def _split_symbols(symbols: str | Iterable[str] | None) -> list[str]:
    if symbols is None:
        return []
    parts = _SYMBOL_SPLIT.split(symbols) if isinstance(symbols, str) else list(symbols)
    out: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ApplicationError("Symbols are text, like BTC/USDT.", field="symbols")
        text = part.strip()
        if text:
            out.append(text)
    return out


def _clean_exchange(exchange: Any) -> str:
    value = str(exchange or "").strip().lower()
    if value not in dict(EXCHANGE_CHOICES):
        names = ", ".join(label for _, label in SUPPORTED_EXCHANGES)
        raise ApplicationError(
            f"Choose the demo data or one of these exchanges: {names}.", field="exchange"
        )
    return value


def _exchange_symbols(client: ExchangeClient) -> set[str]:
    """The exchange's symbols, cached an hour per exchange and endpoint."""
    api = json.dumps(client.exchange.urls.get("api"), sort_keys=True, default=str)
    key = "scan:markets:" + hashlib.sha256(f"{client.exchange_id}|{api}".encode()).hexdigest()
    symbols = cache.get(key)
    if symbols is None:
        symbols = sorted(client.load_markets())
        cache.set(key, symbols, _MARKETS_TTL)
    return set(symbols)


def _check_symbols(*, user: User, exchange: str, timeframe: str, symbols: list[str]) -> None:
    """Every symbol must exist where the watchlist looks: the exchange's markets, or the demo
    set's stored series at that timeframe."""
    if exchange == DEMO_EXCHANGE:
        known = set(
            MarketSeries.objects.filter(
                Q(owner=user) | Q(owner__isnull=True), exchange=DEMO_EXCHANGE, timeframe=timeframe
            ).values_list("symbol", flat=True)
        )
        missing = [s for s in symbols if s not in known]
        if missing:
            offered = ", ".join(sorted(known)) or "none"
            raise ApplicationError(
                f"The demo data has no {timeframe} candles for {', '.join(missing)} "
                f"(it has: {offered}).",
                field="symbols",
            )
        return
    # One quick look (cached an hour): an exchange that cannot be reached does not hold the
    # form; the scan, in the background, reports unknown symbols and the network plainly.
    client = make_client(exchange, max_attempts=1, timeout_ms=QUICK_CHECK_MS)
    client.check_timeframe(timeframe)
    try:
        listed = _exchange_symbols(client)
    except ExchangeUnavailable:
        logger.info("watchlist symbols not checked now: %s is unreachable", exchange)
        return
    missing = [s for s in symbols if s not in listed]
    if missing:
        raise ApplicationError(
            f"{exchange_label(exchange)} has no market {', '.join(missing)}.", field="symbols"
        )


def _next_slot(now: datetime, minutes: int) -> datetime | None:
    """The next UTC boundary of ``minutes`` after ``now`` (plus SCHEDULE_DELAY), None if off."""
    if minutes <= 0:
        return None
    step = minutes * 60
    epoch = int(now.timestamp())
    slot = (epoch // step + 1) * step
    return datetime.fromtimestamp(slot, tz=UTC) + SCHEDULE_DELAY


@dataclass
class _WatchlistFields:
    name: str
    exchange: str
    timeframe: str
    universe: str
    symbols: list[str] = field(default_factory=list)
    top_n: int = 20
    quote: str = "USDT"
    bands: BandSettings = field(default_factory=BandSettings)
    schedule_minutes: int = 0
    notify: bool = False


def _validated(
    *,
    user: User,
    instance: Watchlist | None,
    name: Any,
    exchange: Any,
    timeframe: Any,
    universe: Any,
    symbols: Any,
    top_n: Any,
    quote: Any,
    lookback: Any,
    degree: Any,
    k: Any,
    schedule_minutes: Any,
    notify: Any,
) -> _WatchlistFields:
    clean_name = str(name or "").strip()
    if not clean_name:
        raise ApplicationError("Give the watchlist a name.", field="name")
    if len(clean_name) > 80:
        raise ApplicationError("The name is longer than 80 characters.", field="name")
    taken = Watchlist.objects.filter(owner=user, name=clean_name)
    if instance is not None:
        taken = taken.exclude(pk=instance.pk)
    if taken.exists():
        raise ApplicationError("You already have a watchlist with that name.", field="name")
    ex = _clean_exchange(exchange)
    tf = normalise_timeframe(str(timeframe or ""))
    kind = str(universe or Watchlist.Universe.SYMBOLS)
    if kind not in Watchlist.Universe.values:
        raise ApplicationError("Choose my symbols or the top symbols by volume.", field="universe")
    bands = clean_band_settings(lookback=lookback, degree=degree, k=k)
    schedules = dict(Watchlist.SCHEDULES)
    minutes = _whole(
        schedule_minutes if schedule_minutes not in (None, "") else 0,
        name="schedule_minutes",
        label="schedule",
        low=0,
        high=max(schedules),
    )
    if minutes not in schedules:
        raise ApplicationError("Choose one of the offered schedules.", field="schedule_minutes")
    fields = _WatchlistFields(
        name=clean_name,
        exchange=ex,
        timeframe=tf,
        universe=kind,
        bands=bands,
        schedule_minutes=minutes,
        notify=bool(notify),
    )
    if kind == Watchlist.Universe.TOP:
        if ex == DEMO_EXCHANGE:
            raise ApplicationError(
                "The demo data has no trading volume to rank; choose an exchange, or list "
                "the symbols.",
                field="universe",
            )
        fields.top_n = _whole(
            top_n, name="top_n", label="number of symbols", low=1, high=MAX_SYMBOLS
        )
        q = str(quote or "").strip().upper()
        if not q.isalnum() or len(q) > 10:
            raise ApplicationError(
                "The quote currency is letters and digits, like USDT.", field="quote"
            )
        fields.quote = q
        make_client(ex).check_timeframe(tf)
        return fields
    raw = _split_symbols(symbols)
    if not raw:
        raise ApplicationError("List at least one symbol, like BTC/USDT.", field="symbols")
    clean: list[str] = []
    for text in raw:
        try:
            symbol = normalise_symbol(text)
        except ApplicationError as exc:
            raise ApplicationError(exc.message, field="symbols") from None
        if symbol not in clean:
            clean.append(symbol)
    if len(clean) > MAX_SYMBOLS:
        raise ApplicationError(
            f"A watchlist holds at most {MAX_SYMBOLS} symbols; you listed {len(clean)}.",
            field="symbols",
        )
    _check_symbols(user=user, exchange=ex, timeframe=tf, symbols=clean)
    fields.symbols = clean
    return fields


def _apply(watchlist: Watchlist, fields: _WatchlistFields, *, now: datetime) -> None:
    schedule_changed = watchlist.pk is None or watchlist.schedule_minutes != fields.schedule_minutes
    watchlist.name = fields.name
    watchlist.exchange = fields.exchange
    watchlist.timeframe = fields.timeframe
    watchlist.universe = fields.universe
    watchlist.symbols = fields.symbols
    watchlist.top_n = fields.top_n
    watchlist.quote = fields.quote
    watchlist.lookback = fields.bands.lookback
    watchlist.degree = fields.bands.degree
    watchlist.k = float(fields.bands.k)
    watchlist.notify = fields.notify
    watchlist.schedule_minutes = fields.schedule_minutes
    if schedule_changed:
        watchlist.next_run_at = _next_slot(now, fields.schedule_minutes)


@transaction.atomic
def watchlist_create(
    *,
    user: User,
    name: str,
    exchange: str,
    timeframe: str,
    universe: str = Watchlist.Universe.SYMBOLS,
    symbols: str | Sequence[str] = (),
    top_n: int = 20,
    quote: str = "USDT",
    lookback: int = 100,
    degree: int = 2,
    k: float = 2.0,
    schedule_minutes: int = 0,
    notify: bool = False,
) -> Watchlist:
    """Save a new watchlist of ``user`` (at most MAX_WATCHLISTS each).

    ``symbols`` is a list or a comma/space separated text of BASE/QUOTE symbols that must exist
    on the exchange (or in the demo data at that timeframe); ``universe="top"`` scans the
    ``top_n`` markets quoted in ``quote`` with the largest 24 h volume instead. The band
    settings must lie within the polyband_reversion preset's ranges. A schedule runs the scan
    at each UTC boundary of its period. ApplicationError naming the field on bad input.
    """
    require_pro(user)
    User.objects.select_for_update().filter(pk=user.pk).first()
    if Watchlist.objects.filter(owner=user).count() >= MAX_WATCHLISTS:
        raise PlanRequired(
            f"You have {MAX_WATCHLISTS} watchlists, the most allowed; delete one first."
        )
    fields = _validated(
        user=user,
        instance=None,
        name=name,
        exchange=exchange,
        timeframe=timeframe,
        universe=universe,
        symbols=symbols,
        top_n=top_n,
        quote=quote,
        lookback=lookback,
        degree=degree,
        k=k,
        schedule_minutes=schedule_minutes,
        notify=notify,
    )
    watchlist = Watchlist(owner=user)
    _apply(watchlist, fields, now=timezone.now())
    watchlist.save()
    return watchlist


_KEEP: Any = object()


@transaction.atomic
def watchlist_update(
    *,
    user: User,
    watchlist: Watchlist,
    name: Any = _KEEP,
    exchange: Any = _KEEP,
    timeframe: Any = _KEEP,
    universe: Any = _KEEP,
    symbols: Any = _KEEP,
    top_n: Any = _KEEP,
    quote: Any = _KEEP,
    lookback: Any = _KEEP,
    degree: Any = _KEEP,
    k: Any = _KEEP,
    schedule_minutes: Any = _KEEP,
    notify: Any = _KEEP,
) -> Watchlist:
    """Change some fields of ``user``'s watchlist (those not given keep their value); the same
    checks as ``watchlist_create`` apply to the result. NotFound for another user's. A changed
    schedule restarts from the next boundary; earlier scans keep their own snapshot."""
    require_pro(user)
    locked = Watchlist.objects.select_for_update().filter(pk=watchlist.pk, owner=user).first()
    if locked is None:
        raise NotFound("Watchlist not found.")
    given = {
        "name": name,
        "exchange": exchange,
        "timeframe": timeframe,
        "universe": universe,
        "symbols": symbols,
        "top_n": top_n,
        "quote": quote,
        "lookback": lookback,
        "degree": degree,
        "k": k,
        "schedule_minutes": schedule_minutes,
        "notify": notify,
    }
    merged = {
        key: (getattr(locked, key) if value is _KEEP else value) for key, value in given.items()
    }
    fields = _validated(user=user, instance=locked, **merged)
    _apply(locked, fields, now=timezone.now())
    locked.save()
    return locked


@transaction.atomic
def watchlist_delete(*, user: User, watchlist: Watchlist) -> None:
    """Delete ``user``'s watchlist. Its scans and alerts stay (they carry their own snapshot)."""
    deleted, _ = Watchlist.objects.filter(pk=watchlist.pk, owner=user).delete()
    if not deleted:
        raise NotFound("Watchlist not found.")


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
    locked = Watchlist.objects.select_for_update().filter(pk=watchlist.pk, owner=user).first()
    if locked is None:
        raise NotFound("Watchlist not found.")
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
            watchlist.next_run_at = _next_slot(now, watchlist.schedule_minutes)
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
