"""Market data reads: what a user may see, gaps of a series, recent fetch jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db.models import Q, QuerySet

from backtester.engine.candles import Candles, Gap, timeframe_ms
from backtester.marketdata import store
from backtester.models import FetchJob, MarketSeries, UploadJob
from config.exceptions import NotFound
from config.selectors import first_or_raise

_GAPS_TTL = 24 * 3600


def series_visible_to(user: Any) -> QuerySet[MarketSeries]:
    """Shared series (exchange downloads, demo) and the user's own uploads."""
    return MarketSeries.objects.filter(Q(owner__isnull=True) | Q(owner=user))


def series_catalog(user: Any) -> QuerySet[MarketSeries]:
    """The catalog list: visible series that hold candles, shared first, then by market."""
    return (
        series_visible_to(user)
        .filter(count__gt=0)
        .order_by("source", "exchange", "symbol", "timeframe")
    )


def series_for_user(*, user: Any, pk: int) -> MarketSeries:
    """One visible series; NotFound (404) for a missing one or somebody else's upload."""
    return first_or_raise(
        series_visible_to(user).filter(pk=pk), NotFound("No such market data series")
    )


def own_upload(*, user: Any, pk: int) -> MarketSeries:
    """One of the user's uploads; NotFound for anything else."""
    return first_or_raise(
        MarketSeries.objects.filter(pk=pk, owner=user, source=MarketSeries.Source.UPLOAD),
        NotFound("No such upload"),
    )


def fetch_job_for_user(*, user: Any, pk: int) -> FetchJob:
    return first_or_raise(
        FetchJob.objects.select_related("series").filter(pk=pk, owner=user),
        NotFound("No such download"),
    )


def upload_job_for_user(*, user: Any, pk: int) -> UploadJob:
    return first_or_raise(
        UploadJob.objects.select_related("series").filter(pk=pk, owner=user),
        NotFound("No such upload"),
    )


def recent_fetch_jobs(user: Any, *, limit: int = 10) -> list[FetchJob]:
    return list(FetchJob.objects.select_related("series").filter(owner=user)[:limit])


@dataclass(frozen=True)
class GapInfo:
    start_ms: int
    end_ms: int
    missing_bars: int

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ms / 1000, tz=UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.end_ms / 1000, tz=UTC)


def series_gaps(series: MarketSeries) -> list[GapInfo]:
    """Every gap (missing bars between two stored candles), cached per version of the data."""
    if not series.count:
        return []
    key = f"md:gaps:{series.pk}:{series.data_hash}"
    cached = cache.get(key)
    if cached is not None:
        return [GapInfo(*g) for g in cached]
    ts = store.load_timestamps(series)
    gaps = _gaps_of(ts, series.timeframe)
    cache.set(key, [(g.start_ms, g.end_ms, g.missing_bars) for g in gaps], _GAPS_TTL)
    return gaps


def _gaps_of(ts: np.ndarray, timeframe: str) -> list[GapInfo]:
    if len(ts) < 2:
        return []
    tf = timeframe_ms(timeframe) if timeframe else int(np.median(np.diff(ts)))
    spacing = np.diff(ts)
    where = np.flatnonzero(spacing > tf)
    return [GapInfo(int(ts[i]) + tf, int(ts[i + 1]), (int(spacing[i]) - 1) // tf) for i in where]


def gaps_as_engine(gaps: list[GapInfo]) -> list[Gap]:
    return [Gap(-1, g.start_ms, g.end_ms, g.missing_bars) for g in gaps]


def series_preview(series: MarketSeries, *, bars: int = 300) -> Candles:
    """The last ``bars`` candles of a series (for the chart on the detail page)."""
    if not series.count or series.last_ts is None:
        return store.load_candles(series, start_ts=0, end_ts=0)
    start = int(series.last_ts) - (bars - 1) * timeframe_ms(series.timeframe)
    candles = store.load_candles(series, start_ts=start)
    return candles.slice(max(0, len(candles) - bars))
