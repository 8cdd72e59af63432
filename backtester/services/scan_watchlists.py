"""The scanner's watchlists: create, update and delete, each checked whole first
(ApplicationError naming the field; nothing is saved on error), and the band settings a
watchlist may use (the ranges of the ``polyband_reversion`` preset, so every alert can be
backtested with the same numbers). Split from services/scanner.py, which starts and runs scans."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, Unpack

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.gating import require_pro
from accounts.models import User
from backtester.engine.language import PRESETS
from backtester.engine.scanner import BandSettings
from backtester.models import MarketSeries, Watchlist
from backtester.services.marketdata import cached_symbols, normalise_symbol, normalise_timeframe
from backtester.services.scan_alerts import (
    BAND_PRESET,
)
from backtester.services.scan_loader import DEMO_EXCHANGE
from config.exceptions import ApplicationError, NotFound, PlanRequired
from config.kwargs import only_known
from config.selectors import first_or_raise
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


QUICK_CHECK_MS = 3000  # how long saving a watchlist waits for the exchange's market list


_SYMBOL_SPLIT = re.compile(r"[\s,;]+")


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


def _as_float(value: Any, *, name: str, message: str) -> float:
    """``value`` (a string stripped first) as a float; ``message`` on ``name`` if it is not one."""
    if isinstance(value, bool):
        raise ApplicationError(message, field=name)
    try:
        return float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ApplicationError(message, field=name) from None


def _whole(value: Any, *, name: str, label: str, low: int, high: int) -> int:
    message = f"The {label} must be a whole number."
    number = _as_float(value, name=name, message=message)
    if not math.isfinite(number) or number != int(number):
        raise ApplicationError(message, field=name)
    if not low <= int(number) <= high:
        raise ApplicationError(f"The {label} must be between {low} and {high}.", field=name)
    return int(number)


def _real(value: Any, *, name: str, label: str, low: float, high: float) -> float:
    number = _as_float(value, name=name, message=f"The {label} must be a number.")
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
    return set(cached_symbols(client, "scan:markets:"))


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


def next_slot(now: datetime, minutes: int) -> datetime | None:
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
        watchlist.next_run_at = next_slot(now, fields.schedule_minutes)


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


class WatchlistChanges(TypedDict, total=False):
    """What ``watchlist_update`` may change (checked as ``watchlist_create`` checks them);
    whatever is left out keeps its stored value."""

    name: Any
    exchange: Any
    timeframe: Any
    universe: Any
    symbols: Any
    top_n: Any
    quote: Any
    lookback: Any
    degree: Any
    k: Any
    schedule_minutes: Any
    notify: Any


@transaction.atomic
def watchlist_update(
    *, user: User, watchlist: Watchlist, **changes: Unpack[WatchlistChanges]
) -> Watchlist:
    """Change some fields of ``user``'s watchlist (those not given keep their value); the same
    checks as ``watchlist_create`` apply to the result. NotFound for another user's. A changed
    schedule restarts from the next boundary; earlier scans keep their own snapshot."""
    only_known(changes, WatchlistChanges, where="watchlist_update")
    require_pro(user)
    locked = first_or_raise(
        Watchlist.objects.select_for_update().filter(pk=watchlist.pk, owner=user),
        NotFound("Watchlist not found."),
    )
    merged = {
        key: changes.get(key, getattr(locked, key)) for key in WatchlistChanges.__annotations__
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
