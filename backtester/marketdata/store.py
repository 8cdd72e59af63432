"""The candle store: the only code that reads or writes ``CandleChunk.data``.

A series is kept as consecutive, non-overlapping chunks of at most ``CHUNK_CANDLES`` candles,
each one row holding its columns encoded by ``backtester.marketdata.codec``. Writes merge new
candles into the chunks they touch and rewrite only those; reads fetch the chunks of a range in
one query and decode them straight into the arrays the engine gets.

Reads on PostgreSQL go through a raw psycopg cursor in binary mode: Django's BinaryField reads
bytea in text (hex) form, which doubles the bytes on the wire and then hex-decodes them. The
``data`` column is stored EXTERNAL (migration 0002) so PostgreSQL does not try to pglz-compress
bytes that are already compressed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from django.db import connection, transaction

from backtester.engine.candles import PRICE_COLUMNS, Candles
from backtester.marketdata import codec
from backtester.models import CandleChunk, MarketSeries

# 2^17 candles: a year of minutes is 5 chunks (about 1.2 MB each once encoded), small enough
# that appending a day rewrites one chunk, large enough that a load is a handful of rows.
CHUNK_CANDLES = 131_072


@dataclass(frozen=True, slots=True)
class WriteReport:
    """What a write did: candles now stored in the series, chunks rewritten, rows changed."""

    count: int
    chunks_written: int
    chunks_deleted: int
    changed: bool


def write_candles(*, series: MarketSeries, candles: Candles) -> int:
    """Merge ``candles`` into ``series`` and return how many candles the series now holds.

    Candles at a timestamp already stored replace the stored ones (newer data wins: the last
    candle of an earlier download may have been still forming). Only the chunks the new candles
    touch are rewritten; the catalog (first_ts, last_ts, count, extra_columns, data_hash) is
    updated in the same transaction. Writing candles identical to what is stored changes
    nothing, the hash included.
    """
    return write_candles_report(series=series, candles=candles).count


@transaction.atomic
def write_candles_report(*, series: MarketSeries, candles: Candles) -> WriteReport:
    """``write_candles`` returning the details (tests and the fetch service count rewrites)."""
    # Lock the catalog row: concurrent writers to one series queue up instead of interleaving.
    locked = MarketSeries.objects.select_for_update().get(pk=series.pk)
    if len(candles) == 0:
        return WriteReport(locked.count, 0, 0, changed=False)
    new_first = int(candles.timestamp[0])
    new_last = int(candles.timestamp[-1])
    touched = list(_touched_chunks(locked.pk, new_first, new_last))
    old = _decode_rows(touched)
    merged = _merge(old, candles)
    if old is not None and _same(old, merged):
        return WriteReport(locked.count, 0, 0, changed=False)

    # Validate the merged run as the engine would (order, finite prices, high/low, volume);
    # every part was valid alone, so this only guards the merge itself.
    Candles(
        timestamp=merged.timestamp,
        open=merged.columns["open"],
        high=merged.columns["high"],
        low=merged.columns["low"],
        close=merged.columns["close"],
        volume=merged.columns["volume"],
        extra={k: v for k, v in merged.columns.items() if k not in PRICE_COLUMNS},
    )
    if touched:
        CandleChunk.objects.filter(pk__in=[row.pk for row in touched]).delete()
    new_rows: list[CandleChunk] = []
    digest = hashlib.sha256(locked.data_hash.encode("ascii"))
    for row in touched:
        digest.update(f"-{row.start_ts}:{row.count}".encode("ascii"))
    n = len(merged.timestamp)
    for start in range(0, n, CHUNK_CANDLES):
        stop = min(start + CHUNK_CANDLES, n)
        ts = merged.timestamp[start:stop]
        cols = {name: arr[start:stop] for name, arr in merged.columns.items()}
        data = codec.encode_chunk(ts, cols)
        digest.update(f"+{int(ts[0])}:{stop - start}:".encode("ascii"))
        digest.update(hashlib.sha256(data).digest())
        new_rows.append(
            CandleChunk(
                series=locked,
                start_ts=int(ts[0]),
                end_ts=int(ts[-1]),
                count=stop - start,
                codec=codec.CODEC_NAME,
                data=data,
            )
        )
    CandleChunk.objects.bulk_create(new_rows)

    summary = _summary(locked.pk)
    extras = list(locked.extra_columns or [])
    for name in merged.columns:
        if name not in PRICE_COLUMNS and name not in extras:
            extras.append(name)
    locked.first_ts = summary["first"]
    locked.last_ts = summary["last"]
    locked.count = summary["count"]
    locked.extra_columns = extras
    locked.data_hash = digest.hexdigest()
    locked.save(
        update_fields=["first_ts", "last_ts", "count", "extra_columns", "data_hash", "updated_at"]
    )
    # Keep the caller's instance in step with the row.
    for field in ("first_ts", "last_ts", "count", "extra_columns", "data_hash", "updated_at"):
        setattr(series, field, getattr(locked, field))
    return WriteReport(locked.count, len(new_rows), len(touched), changed=True)


def load_candles(
    series: MarketSeries, *, start_ts: int | None = None, end_ts: int | None = None
) -> Candles:
    """The series' candles with ``start_ts <= timestamp < end_ts`` (None: unbounded).

    Symbol and timeframe are filled in from the catalog; extra columns the series has are
    present (NaN where a chunk lacks one). An empty range gives empty Candles.
    """
    extras = [str(name) for name in (series.extra_columns or [])]
    names = [*PRICE_COLUMNS, *extras]
    rows = _fetch_chunk_bytes(series.pk, start_ts, end_ts)
    total = sum(count for count, _ in rows)
    ts = np.empty(total, dtype=np.int64)
    block = np.empty((len(names), total), dtype=np.float64)
    offset = 0
    for count, data in rows:
        codec.decode_into(
            data,
            timestamp_out=ts[offset : offset + count],
            columns_out={name: block[i, offset : offset + count] for i, name in enumerate(names)},
        )
        offset += count
    lo = 0 if start_ts is None else int(np.searchsorted(ts, start_ts, side="left"))
    hi = total if end_ts is None else int(np.searchsorted(ts, end_ts, side="left"))
    hi = max(hi, lo)
    columns = {name: block[i, lo:hi] for i, name in enumerate(names)}
    return Candles(
        timestamp=ts[lo:hi],
        **{name: columns[name] for name in PRICE_COLUMNS},
        extra={name: columns[name] for name in extras},
        symbol=series.symbol,
        timeframe=series.timeframe,
    )


def load_timestamps(
    series: MarketSeries, *, start_ts: int | None = None, end_ts: int | None = None
) -> npt.NDArray[np.int64]:
    """Only the timestamps of ``load_candles`` (gap reports): the price frames are skipped."""
    rows = _fetch_chunk_bytes(series.pk, start_ts, end_ts)
    total = sum(count for count, _ in rows)
    ts = np.empty(total, dtype=np.int64)
    offset = 0
    for count, data in rows:
        codec.decode_into(data, timestamp_out=ts[offset : offset + count], columns_out={})
        offset += count
    lo = 0 if start_ts is None else int(np.searchsorted(ts, start_ts, side="left"))
    hi = total if end_ts is None else int(np.searchsorted(ts, end_ts, side="left"))
    return ts[lo : max(hi, lo)]


def delete_candles(*, series: MarketSeries) -> None:
    """Remove every chunk of ``series`` and reset its catalog numbers (the row stays)."""
    with transaction.atomic():
        CandleChunk.objects.filter(series=series).delete()
        MarketSeries.objects.filter(pk=series.pk).update(
            first_ts=None, last_ts=None, count=0, data_hash=""
        )


# --- internals --------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    timestamp: npt.NDArray[np.int64]
    columns: dict[str, npt.NDArray[np.float64]]


def _touched_chunks(series_id: int, first: int, last: int) -> Iterable[CandleChunk]:
    """Chunks overlapping [first, last], plus the chunk just before ``first`` when it has room
    (so appending a page fills the last chunk instead of starting a tiny new one each time)."""
    overlapping = list(
        CandleChunk.objects.filter(series_id=series_id, start_ts__lte=last, end_ts__gte=first)
    )
    before = (
        CandleChunk.objects.filter(series_id=series_id, end_ts__lt=first)
        .order_by("-end_ts")
        .only("pk", "count")
        .first()
    )
    if before is not None and before.count < CHUNK_CANDLES:
        overlapping.insert(0, CandleChunk.objects.get(pk=before.pk))
    # A chunk that starts after ``last`` but is small may as well absorb the new run too.
    after = (
        CandleChunk.objects.filter(series_id=series_id, start_ts__gt=last)
        .order_by("start_ts")
        .only("pk", "count")
        .first()
    )
    if after is not None and after.count < CHUNK_CANDLES // 2:
        overlapping.append(CandleChunk.objects.get(pk=after.pk))
    overlapping.sort(key=lambda row: row.start_ts)
    return overlapping


def _decode_rows(rows: list[CandleChunk]) -> _Run | None:
    if not rows:
        return None
    parts = [codec.decode_chunk(bytes(row.data)) for row in rows]
    names: list[str] = []
    for part in parts:
        for name in part.columns:
            if name not in names:
                names.append(name)
    ts = np.concatenate([p.timestamp for p in parts])
    cols = {
        name: np.concatenate(
            [p.columns[name] if name in p.columns else np.full(len(p), np.nan) for p in parts]
        )
        for name in names
    }
    return _Run(ts, cols)


def _merge(old: _Run | None, new: Candles) -> _Run:
    """Union by timestamp; where both have a candle, the new one wins."""
    new_cols: dict[str, npt.NDArray[np.float64]] = {
        name: getattr(new, name) for name in PRICE_COLUMNS
    }
    new_cols.update(dict(new.extra))
    if old is None:
        return _Run(
            np.array(new.timestamp, dtype=np.int64), {k: np.array(v) for k, v in new_cols.items()}
        )
    names = list(old.columns)
    for name in new_cols:
        if name not in names:
            names.append(name)
    n_old = len(old.timestamp)
    ts = np.concatenate([old.timestamp, new.timestamp])
    # Stable sort keeps an old candle before a new one with the same timestamp; keeping the
    # last of each run of equal timestamps then keeps the new one.
    order = np.argsort(ts, kind="stable")
    ts_sorted = ts[order]
    keep = np.ones(len(ts_sorted), dtype=bool)
    keep[:-1] = ts_sorted[1:] != ts_sorted[:-1]
    picked = order[keep]
    cols: dict[str, npt.NDArray[np.float64]] = {}
    for name in names:
        a = old.columns.get(name)
        b = new_cols.get(name)
        a = np.full(n_old, np.nan) if a is None else a
        b = np.full(len(new), np.nan) if b is None else b
        cols[name] = np.concatenate([a, b])[picked]
    return _Run(ts_sorted[keep], cols)


def _same(a: _Run, b: _Run) -> bool:
    """Bit-for-bit equality (NaN equals NaN) of two runs, column sets included."""
    if a.timestamp.shape != b.timestamp.shape or list(a.columns) != list(b.columns):
        return False
    if not np.array_equal(a.timestamp, b.timestamp):
        return False
    return all(
        np.array_equal(a.columns[k].view(np.int64), b.columns[k].view(np.int64)) for k in a.columns
    )


def _summary(series_id: int) -> dict[str, Any]:
    from django.db.models import Max, Min, Sum

    agg = CandleChunk.objects.filter(series_id=series_id).aggregate(
        first=Min("start_ts"), last=Max("end_ts"), count=Sum("count")
    )
    return {"first": agg["first"], "last": agg["last"], "count": int(agg["count"] or 0)}


def _fetch_chunk_bytes(
    series_id: int, start_ts: int | None, end_ts: int | None
) -> list[tuple[int, bytes]]:
    """(count, data) of the chunks that may hold [start_ts, end_ts), in time order."""
    table = CandleChunk._meta.db_table
    where = ["series_id = %s"]
    params: list[Any] = [series_id]
    if start_ts is not None:
        where.append("end_ts >= %s")
        params.append(int(start_ts))
    if end_ts is not None:
        where.append("start_ts < %s")
        params.append(int(end_ts))
    sql = f"SELECT count, data FROM {table} WHERE {' AND '.join(where)} ORDER BY start_ts"  # noqa: S608
    if connection.vendor == "postgresql":
        import psycopg

        connection.ensure_connection()
        raw = connection.connection
        # A plain server-binding cursor in binary mode: bytea arrives as the bytes themselves.
        with psycopg.Cursor(raw) as cur:
            cur.execute(sql, params, binary=True)
            return [(int(count), data) for count, data in cur.fetchall()]
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [(int(count), bytes(data)) for count, data in cur.fetchall()]


def series_column_names(series: MarketSeries) -> list[str]:
    """OHLCV and the series' extra columns, in stored order."""
    return [*PRICE_COLUMNS, *[str(x) for x in (series.extra_columns or [])]]


def chunk_counts(series: MarketSeries) -> Mapping[str, int]:
    """How many chunks the series has and the largest one (for the bench and tests)."""
    counts = list(CandleChunk.objects.filter(series=series).values_list("count", flat=True))
    return {"chunks": len(counts), "largest": max(counts, default=0)}
