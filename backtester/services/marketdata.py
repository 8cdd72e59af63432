"""Market data writes: exchange downloads, uploads, the demo set, fetch jobs, deletion.

Every function is keyword-only. Bad input raises ApplicationError (with ``field`` when one
field is at fault) before anything is stored. Downloads are the exception to "one transaction":
each page is committed as it arrives, so an interrupted download keeps what it had and the next
run continues from the last stored candle (a crash loses at most one page).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import IO, Any, NotRequired, TypedDict, Unpack

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.gating import require_pro
from backtester.engine import readers
from backtester.engine.candles import Candles, Gap, timeframe_ms
from backtester.engine.errors import CandleError
from backtester.marketdata import demo, store
from backtester.models import FetchJob, MarketSeries, UploadJob
from config.exceptions import ApplicationError, Conflict, NotFound
from config.kwargs import only_known
from config.runs import lifecycle
from config.selectors import first_or_raise
from exchanges.clients import ExchangeClient, ExchangeUnavailable, exchange_label, make_client

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES: int = int(getattr(settings, "MARKETDATA_MAX_UPLOAD_BYTES", 50 * 1024 * 1024))
_SYMBOL_RE = re.compile(
    r"^[A-Z0-9][A-Z0-9._-]{0,19}/[A-Z0-9][A-Z0-9._-]{0,19}(:[A-Z0-9._-]{1,20})?$"
)
_UPLOAD_SYMBOL_RE = re.compile(r"^[\w./:\- ]{1,40}$")
_TIMEFRAME_UNITS = (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000))
_MARKETS_TTL = 3600
# How long a web request waits for an exchange before leaving the check to the background job.
QUICK_CHECK_MS = 3000

ProgressCallback = Callable[[float, int], None]


# --- shared validation ------------------------------------------------------------------


def normalise_timeframe(value: str, *, field_name: str = "timeframe") -> str:
    """A timeframe in its shortest form ("60m" -> "1h"); ApplicationError on the field if bad."""
    text = (value or "").strip()
    try:
        ms = timeframe_ms(text)
    except CandleError:
        raise ApplicationError(
            f"{value!r} is not a timeframe: use a number and m, h, d or w, like 1m, 15m, 1h, 1d",
            field=field_name,
        ) from None
    return timeframe_label(ms)


def timeframe_label(ms: int) -> str:
    """The shortest label for a bar length: 3,600,000 -> "1h", 5,400,000 -> "90m"."""
    for unit, size in _TIMEFRAME_UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    raise ApplicationError(
        f"bars {ms} ms apart are not a whole number of minutes", field="timeframe"
    )


def normalise_symbol(value: str) -> str:
    """Exchange symbols in ccxt's unified form, "btc/usdt" -> "BTC/USDT"."""
    text = (value or "").strip().upper()
    if not _SYMBOL_RE.match(text):
        raise ApplicationError(
            f"{value!r} is not a market symbol: write it as BASE/QUOTE, like BTC/USDT",
            field="symbol",
        )
    return text


# --- exchange downloads -----------------------------------------------------------------


@dataclass
class FetchResult:
    """What one download did. ``gaps`` are stretches with no candles between two candles the
    exchange sent (reported, never filled); ``empty_pages`` are windows that came back empty."""

    series: MarketSeries
    candles_received: int = 0
    candles_added: int = 0
    pages: int = 0
    requests_made: int = 0
    retries: list[tuple[str, float]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    empty_pages: list[tuple[int, int]] = field(default_factory=list)
    ranges: list[tuple[int, int]] = field(default_factory=list)


def candles_fetch(
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    since_ts: int,
    until_ts: int | None = None,
    owner: Any = None,
    job: FetchJob | None = None,
    progress: ProgressCallback | None = None,
    client: ExchangeClient | None = None,
    url_overrides: Any = None,
) -> FetchResult:
    """Download what the shared series (exchange, symbol, timeframe) lacks in [since, until).

    Incremental: with candles already stored it fetches [since, first stored) if since is
    earlier, and from the last stored candle (refetched: it may have been still forming) up to
    ``until_ts`` or the exchange's now. Pages stay within the exchange's limit, each page is
    written as it arrives (deduplicated; newer wins), an empty page advances the cursor by one
    page span (a gap in the exchange's history), and gaps are reported, never filled.
    ``progress(fraction, candles_received)`` is called after every page. Raises
    ApplicationError (UnknownSymbol, ExchangeUnavailable, ...) with nothing stored for a symbol
    the exchange does not list.
    """
    if owner is not None:
        require_pro(owner)
    symbol = normalise_symbol(symbol)
    timeframe = normalise_timeframe(timeframe)
    tf_ms = timeframe_ms(timeframe)
    client = client or make_client(exchange, url_overrides=url_overrides)
    # Ask the exchange first: an unknown symbol or timeframe must not leave an empty series.
    client.market(symbol)
    client.check_timeframe(timeframe)
    since_ts = int(since_ts) // tf_ms * tf_ms
    now_ms = client.now_ms()
    # The newest candle that can exist opened at now rounded down to the timeframe.
    newest_end = (now_ms // tf_ms + 1) * tf_ms
    end = newest_end if until_ts is None else min(int(until_ts), newest_end)
    if end <= since_ts:
        raise ApplicationError("The start date must be before the end date", field="since")
    series = _shared_series(exchange=client.exchange_id, symbol=symbol, timeframe=timeframe)
    result = FetchResult(series=series)
    ranges = _missing_ranges(series, since_ts, end)
    result.ranges = ranges
    total_span = sum(b - a for a, b in ranges) or 1
    done_span = 0
    limit = client.ohlcv_limit
    page_span = limit * tf_ms
    count_before = series.count
    prev_ts: int | None = None
    for start, stop in ranges:
        cursor = start
        prev_ts = None
        while cursor < stop:
            page_end = min(cursor + page_span, stop)
            rows = client.fetch_ohlcv_page(
                symbol=symbol,
                timeframe=timeframe,
                since_ms=cursor,
                limit=limit,
                until_ms=page_end - 1,
            )
            result.pages += 1
            rows = [r for r in rows if cursor <= int(r[0]) < stop]
            if rows:
                candles = _rows_to_candles(
                    rows, symbol=symbol, timeframe=timeframe, label=client.label
                )
                ts = candles.timestamp
                if prev_ts is not None and int(ts[0]) - prev_ts > tf_ms:
                    result.gaps.append(_gap(prev_ts, int(ts[0]), tf_ms))
                result.gaps.extend(
                    _gap(int(a), int(b), tf_ms) for a, b in itertools.pairwise(ts) if b - a > tf_ms
                )
                store.write_candles(series=series, candles=candles)
                result.candles_received += len(candles)
                prev_ts = int(ts[-1])
                next_cursor = prev_ts + tf_ms
            else:
                result.empty_pages.append((cursor, page_end))
                next_cursor = page_end
            done_span += next_cursor - cursor
            cursor = next_cursor
            result.requests_made = client.requests_made
            if job is not None:
                job.requests_made = client.requests_made
            if progress is not None:
                progress(min(done_span / total_span, 1.0), result.candles_received)
    series.refresh_from_db()
    result.series = series
    result.candles_added = series.count - count_before
    result.requests_made = client.requests_made
    result.retries = list(client.retries)
    if progress is not None and done_span < total_span:
        progress(1.0, result.candles_received)
    return result


def _shared_series(*, exchange: str, symbol: str, timeframe: str) -> MarketSeries:
    try:
        with transaction.atomic():
            series, _ = MarketSeries.objects.get_or_create(
                owner=None,
                exchange=exchange,
                symbol=symbol,
                timeframe=timeframe,
                defaults={"source": MarketSeries.Source.CCXT},
            )
    except IntegrityError:  # created by a concurrent job between our get and create
        series = MarketSeries.objects.get(
            owner=None, exchange=exchange, symbol=symbol, timeframe=timeframe
        )
    return series


def _missing_ranges(series: MarketSeries, since: int, end: int) -> list[tuple[int, int]]:
    """[since, end) minus what the series already covers, keeping its last candle to refetch."""
    if not series.count or series.first_ts is None or series.last_ts is None:
        return [(since, end)]
    ranges: list[tuple[int, int]] = []
    if since < series.first_ts:
        ranges.append((since, min(series.first_ts, end)))
    tail_start = max(since, int(series.last_ts))
    if tail_start < end:
        ranges.append((tail_start, end))
    return ranges


def _gap(prev_ts: int, next_ts: int, tf_ms: int) -> Gap:
    return Gap(
        after_index=-1,
        start_ms=prev_ts + tf_ms,
        end_ms=next_ts,
        missing_bars=(next_ts - prev_ts - 1) // tf_ms,
    )


def _rows_to_candles(rows: list[list[Any]], *, symbol: str, timeframe: str, label: str) -> Candles:
    arr = np.asarray([r[:6] for r in rows], dtype=np.float64)
    ts = np.asarray([int(r[0]) for r in rows], dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    ts, arr = ts[order], arr[order]
    keep = np.ones(len(ts), dtype=bool)
    keep[:-1] = ts[1:] != ts[:-1]  # an exchange repeating a candle: keep its last copy
    ts, arr = ts[keep], arr[keep]
    try:
        return Candles(
            timestamp=ts,
            open=arr[:, 1],
            high=arr[:, 2],
            low=arr[:, 3],
            close=arr[:, 4],
            volume=np.nan_to_num(arr[:, 5], nan=0.0),
            symbol=symbol,
            timeframe=timeframe,
        )
    except CandleError as exc:
        at = ""
        if exc.row is not None:
            at = f" at {np.datetime64(int(ts[exc.row]), 'ms')} UTC"
        raise ApplicationError(f"{label} sent an invalid candle{at}: {exc.reason}") from None


# --- fetch jobs (page and API) ----------------------------------------------------------


def fetch_job_create(
    *,
    owner: Any,
    exchange: str,
    symbol: str,
    timeframe: str,
    since_ts: int,
    until_ts: int | None = None,
) -> FetchJob:
    """Validate a download request against the exchange, save a queued FetchJob and enqueue
    its task after commit. One active job per series at a time (Conflict otherwise; a job
    whose worker died is failed by the lifecycle's sweeper)."""
    require_pro(owner)
    symbol = normalise_symbol(symbol)
    timeframe = normalise_timeframe(timeframe)
    tf_ms = timeframe_ms(timeframe)
    since_ts = int(since_ts) // tf_ms * tf_ms
    now_ms = int(timezone.now().timestamp() * 1000)
    if until_ts is not None and int(until_ts) <= since_ts:
        raise ApplicationError("The end date must be after the start date", field="until")
    if since_ts > now_ms:
        raise ApplicationError("The start date is in the future", field="since")
    # One quick look at the exchange's markets (cached an hour): an unknown symbol is refused
    # here, but an exchange that cannot be reached does not hold the form: the download runs in
    # the background and its page says what is wrong (issue 10 item 22).
    client = make_client(exchange, max_attempts=1, timeout_ms=QUICK_CHECK_MS)
    client.check_timeframe(timeframe)
    with contextlib.suppress(ExchangeUnavailable):
        _check_market_cached(client, symbol)
    with transaction.atomic():
        series = _shared_series(exchange=client.exchange_id, symbol=symbol, timeframe=timeframe)
        MarketSeries.objects.select_for_update().get(pk=series.pk)
        if FetchJob.objects.filter(series=series, status__in=FetchJob.ACTIVE).exists():
            raise Conflict(
                f"A download of {exchange_label(client.exchange_id)} {symbol} {timeframe} is "
                "already running; wait for it to finish",
                field="symbol",
            )
        job = FetchJob.objects.create(
            owner=owner,
            series=series,
            since_ts=since_ts,
            until_ts=None if until_ts is None else int(until_ts),
        )
        lifecycle.enqueue(job)
    return job


def cached_symbols(client: ExchangeClient, key_prefix: str) -> list[str]:
    """The exchange's symbols, sorted; cached an hour per exchange and endpoint under
    ``key_prefix``."""
    api = json.dumps(client.exchange.urls.get("api"), sort_keys=True, default=str)
    key = key_prefix + hashlib.sha256(f"{client.exchange_id}|{api}".encode()).hexdigest()
    symbols: list[str] | None = cache.get(key)
    if symbols is None:
        symbols = sorted(client.load_markets())
        cache.set(key, symbols, _MARKETS_TTL)
    return symbols


def _check_market_cached(client: ExchangeClient, symbol: str) -> None:
    """Is ``symbol`` listed? The symbol list is cached an hour per exchange (and endpoint)."""
    if symbol not in cached_symbols(client, "md:markets:"):
        client.market(symbol)  # the markets may be newer than the cache; raises if unknown


def fetch_job_execute(*, job_id: int) -> FetchJob | None:
    """Run a queued fetch job (the Celery task calls this). Progress goes to the job row and to
    its group after each page; the outcome is completed or failed with the error text. Running
    a finished job again does nothing; a job redelivered after its worker died continues from
    the last stored candle (downloads are idempotent); a job whose owner no longer has Pro is
    failed with that reason before anything is downloaded; a deleted job is None."""
    lifecycle.execute(FetchJob, job_id, _download, resume=True)
    return FetchJob.objects.select_related("series").filter(pk=job_id).first()


def _download(job: FetchJob) -> dict[str, Any]:
    series = job.series
    client: ExchangeClient | None = None

    def on_progress(fraction: float, candles: int) -> None:
        requests = client.requests_made if client is not None else 0
        lifecycle.progress(
            FetchJob,
            job.pk,
            fraction=fraction,
            stage="downloading",
            fields={"candles_fetched": candles, "requests_made": requests},
            extra={"candles_fetched": candles, "requests_made": requests},
        )

    client = make_client(series.exchange)
    result = candles_fetch(
        exchange=series.exchange,
        symbol=series.symbol,
        timeframe=series.timeframe,
        since_ts=job.since_ts,
        until_ts=job.until_ts,
        job=job,
        progress=on_progress,
        client=client,
    )
    return {
        "candles_fetched": result.candles_received,
        "requests_made": result.requests_made,
        "gaps": len(result.gaps),
    }


def fetch_user_message(exc: Exception) -> str | None:
    """What the owner of a failed download reads (None: an internal error)."""
    return exc.message if isinstance(exc, ApplicationError) else None


def fetch_state_extra(job: FetchJob) -> dict[str, Any]:
    """A download's own part of its state: candles and requests so far, the series."""
    series = job.series
    return {
        "candles_fetched": int(job.candles_fetched),
        "requests_made": int(job.requests_made),
        "gaps": int(job.gaps),
        "series": {
            "id": series.pk,
            "exchange": series.exchange,
            "symbol": series.symbol,
            "timeframe": series.timeframe,
            "count": int(series.count),
            "first_ts": series.first_ts,
            "last_ts": series.last_ts,
        },
        "since_ts": job.since_ts,
        "until_ts": job.until_ts,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def fetch_job_payload(job: FetchJob) -> dict[str, Any]:
    """The JSON shape of a job, shared by the status URL, the API and the websocket."""
    return lifecycle.state(job)


# --- uploads ----------------------------------------------------------------------------

_FORMATS = {"csv": "CSV", "parquet": "Parquet", "json": "JSON"}
_EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
}
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (an Excel workbook is one too)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Excel/Office document"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a program"),
)


def detect_format(data: bytes, filename: str) -> str:
    """ "csv", "parquet" or "json" from the content, checked against the file's extension.

    The content decides; a file whose content contradicts its extension (a PNG named .csv, a CSV
    named .parquet) is refused with a message saying what it really is.
    """
    ext = ""
    name = (filename or "").strip().lower()
    if "." in name:
        ext = name[name.rfind(".") :]
    claimed = _EXTENSIONS.get(ext)
    if ext and claimed is None:
        raise ApplicationError(
            f"{filename}: files ending in {ext} are not accepted; upload CSV, Parquet or JSON",
            field="file",
        )
    actual, what = _sniff(data)
    if actual is None:
        raise ApplicationError(
            f"{filename}: the file is {what}, not a CSV, Parquet or JSON file of candles",
            field="file",
        )
    if claimed is not None and claimed != actual:
        raise ApplicationError(
            f"{filename}: the name says {_FORMATS[claimed]} but the content is {what}; "
            f"rename it to .{actual} or upload the right file",
            field="file",
        )
    return actual


def _sniff(data: bytes) -> tuple[str | None, str]:
    if not data:
        return None, "empty"
    if data[:4] == b"PAR1":
        return "parquet", "a Parquet file"
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            return None, what
    head = data[:4096]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the 4 KB boundary is still text.
        if exc.start < len(head) - 4:
            return None, "binary data"
        text = head[: exc.start].decode("utf-8")
    if "\x00" in text:
        return None, "binary data"
    stripped = text.lstrip()
    if stripped[:1] in ("[", "{"):
        return "json", "JSON text"
    return "csv", "CSV text"


class UploadArgs(TypedDict):
    """An uploaded file of candles and the owner's series it goes to: ``exchange`` ("upload"
    by default), ``symbol``, ``timeframe`` ("" to infer it from the candles), ``name``."""

    owner: Any
    file: IO[bytes] | bytes
    filename: str
    symbol: str
    timeframe: NotRequired[str]
    exchange: NotRequired[str]
    name: NotRequired[str]


@dataclass(frozen=True, slots=True)
class _CheckedUpload:
    """An upload checked before parsing, named as ``UploadJob``'s fields; ``timeframe`` ""
    means infer it."""

    filename: str
    symbol: str
    data: bytes
    file_format: str
    timeframe: str
    exchange: str
    name: str


def series_upload(**upload: Unpack[UploadArgs]) -> MarketSeries:
    """Validate an uploaded CSV/Parquet/JSON file of candles and store it as the owner's series.

    The format comes from the content (checked against the extension); rows are validated by
    the engine's readers and a bad file is refused with the line (row, element) and the
    reason. The timeframe is inferred from the candles' spacing when not given, and must match
    it when given. Uploading again to the same (exchange, symbol, timeframe) merges: rows at a
    stored time replace it. All or nothing: on any error nothing is stored.
    """
    owner = upload["owner"]
    checked = _upload_checked(upload)
    filename, symbol, data, tf = checked.filename, checked.symbol, checked.data, checked.timeframe
    reader = {"csv": readers.read_csv, "parquet": readers.read_parquet, "json": readers.read_json}[
        checked.file_format
    ]
    try:
        candles = reader(io.BytesIO(data), symbol=symbol, timeframe=tf, limits=upload_limits(owner))
    except CandleError as exc:
        raise ApplicationError(f"{filename}: {exc}", field="file") from None
    if len(candles) == 0:
        raise ApplicationError(f"{filename}: the file has no candles", field="file")
    spacing = _median_spacing(candles)
    if not tf:
        if spacing is None:
            raise ApplicationError(
                "One candle is not enough to tell the timeframe; choose it", field="timeframe"
            )
        tf = timeframe_label(spacing)
        candles = replace(candles, extra=dict(candles.extra), symbol=symbol, timeframe=tf)
    elif spacing is not None and spacing != timeframe_ms(tf):
        found = timeframe_label(spacing)
        raise ApplicationError(
            f"The candles are {found} apart, not {tf}: choose {found} or leave the timeframe empty",
            field="timeframe",
        )
    with transaction.atomic():
        series, created = MarketSeries.objects.get_or_create(
            owner=owner,
            exchange=checked.exchange,
            symbol=symbol,
            timeframe=tf,
            defaults={"source": MarketSeries.Source.UPLOAD, "name": checked.name},
        )
        if not created and series.source != MarketSeries.Source.UPLOAD:
            raise ApplicationError("That series is not an upload", field="symbol")
        if upload.get("name") and not created:
            series.name = checked.name
            series.save(update_fields=["name", "updated_at"])
        store.write_candles(series=series, candles=candles)
    series.refresh_from_db()
    return series


def _upload_checked(upload: UploadArgs) -> _CheckedUpload:
    """What an upload can be checked for before parsing: Pro, the symbol, the size, the format,
    the timeframe; the file name, exchange and series name trimmed."""
    only_known(upload, UploadArgs, where="upload")
    require_pro(upload["owner"])
    filename = (upload["filename"] or "upload").strip()[:200]
    symbol = _upload_symbol(upload["symbol"])
    data = _read_limited(upload["file"])
    kind = detect_format(data, filename)
    timeframe = upload.get("timeframe", "")
    tf = normalise_timeframe(timeframe) if (timeframe or "").strip() else ""
    exchange = (upload.get("exchange", "upload") or "upload").strip().lower()[:40] or "upload"
    name = (upload.get("name", "") or "").strip()[:120]
    return _CheckedUpload(filename, symbol, data, kind, tf, exchange, name)


def upload_limits(owner: Any) -> readers.ReadLimits:
    """What one uploaded file may hold: the owner's plan's candles per backtest, at most
    UPLOAD_MAX_DECOMPRESSED_BYTES once decoded, and times from 2009 to now."""
    return readers.ReadLimits(
        max_rows=int(owner.plan.max_candles_per_backtest),
        max_decompressed_bytes=int(settings.UPLOAD_MAX_DECOMPRESSED_BYTES),
        earliest_ms=readers.EARLIEST_CANDLE_MS,
        latest_ms=int(timezone.now().timestamp() * 1000),
    )


def _upload_symbol(symbol: str) -> str:
    """The symbol an upload is stored under, checked (ApplicationError on "symbol")."""
    symbol = (symbol or "").strip()
    if not symbol:
        raise ApplicationError(
            "Give the symbol these candles are for, like BTC/USDT", field="symbol"
        )
    if not _UPLOAD_SYMBOL_RE.match(symbol):
        raise ApplicationError(
            "A symbol may use letters, digits, spaces and . / : - _ (40 characters at most)",
            field="symbol",
        )
    return symbol


def upload_job_create(**upload: Unpack[UploadArgs]) -> UploadJob:
    """Check what can be checked at once (Pro, the symbol, the size, the format, the timeframe)
    and queue the file to be parsed and stored in the background by ``upload_job_execute``
    (the shared run lifecycle: progress on the job's page, the reason if it fails). Nothing is
    stored as candles until the whole file has been read."""
    checked = _upload_checked(upload)
    with transaction.atomic():
        job = UploadJob.objects.create(
            owner=upload["owner"], size=len(checked.data), **asdict(checked)
        )
        lifecycle.enqueue(job)
    return job


def upload_job_execute(*, job_id: int) -> None:
    """Parse and store a queued upload (the Celery task's body): all or nothing, as
    ``series_upload``; the file's bytes are dropped once it is done either way."""

    def parse(job: UploadJob) -> dict[str, Any]:
        lifecycle.progress(UploadJob, job.pk, fraction=0.1, stage="parsing")
        series = series_upload(
            owner=job.owner,
            file=bytes(job.data),
            filename=job.filename,
            symbol=job.symbol,
            timeframe=job.timeframe,
            exchange=job.exchange,
            name=job.name,
        )
        return {"series": series, "candle_count": series.count, "data": b""}

    lifecycle.execute(UploadJob, job_id, parse)
    UploadJob.objects.filter(pk=job_id).exclude(status__in=UploadJob.ACTIVE).update(data=b"")


def upload_state_extra(job: UploadJob) -> dict[str, Any]:
    """An upload's own part of its state: the file and, once stored, the series."""
    return {
        "filename": job.filename,
        "size": job.size,
        "series": job.series_id,
        "candle_count": job.candle_count,
    }


def _read_limited(file: IO[bytes] | bytes) -> bytes:
    limit_mb = MAX_UPLOAD_BYTES / (1024 * 1024)
    if isinstance(file, bytes | bytearray | memoryview):
        data = bytes(file)
    else:
        size = getattr(file, "size", None)
        if isinstance(size, int) and size > MAX_UPLOAD_BYTES:
            raise ApplicationError(f"The file is larger than {limit_mb:.0f} MB", field="file")
        if hasattr(file, "seek"):
            with contextlib.suppress(OSError, ValueError):
                file.seek(0)
        data = file.read(MAX_UPLOAD_BYTES + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApplicationError(f"The file is larger than {limit_mb:.0f} MB", field="file")
    if not data.strip():
        raise ApplicationError("The file is empty", field="file")
    return data


def _median_spacing(candles: Candles) -> int | None:
    if len(candles) < 2:
        return None
    return int(np.median(np.diff(candles.timestamp)))


def series_delete(*, owner: Any, series_id: int) -> None:
    """Delete one of the owner's uploaded series with its candles; NotFound for anything else
    (shared series and other users' uploads are not the owner's to delete)."""
    with transaction.atomic():
        first_or_raise(
            MarketSeries.objects.select_for_update().filter(
                pk=series_id, owner=owner, source=MarketSeries.Source.UPLOAD
            ),
            NotFound("No such upload"),
        ).delete()


# --- the demo set -----------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSeedSummary:
    series: int
    written: int
    candles: int


def demo_seed(*, force: bool = False) -> DemoSeedSummary:
    """Store the synthetic BTC/USDT, ETH/USDT and SOL/USDT demo candles at 1m, 1h and 1d as
    shared series (exchange "demo", source demo, synthetic). Idempotent: a series already
    holding the full set is left alone unless ``force``."""
    written = 0
    total = 0
    for asset in demo.DEMO_ASSETS:
        existing = {
            s.timeframe: s
            for s in MarketSeries.objects.filter(owner=None, exchange="demo", symbol=asset.symbol)
        }
        expected = {"1m": demo.DEMO_DAYS * 1440, "1h": demo.DEMO_DAYS * 24, "1d": demo.DEMO_DAYS}
        complete = all(
            tf in existing and existing[tf].count == expected[tf] and existing[tf].data_hash
            for tf in demo.DEMO_TIMEFRAMES
        )
        if complete and not force:
            total += sum(existing[tf].count for tf in demo.DEMO_TIMEFRAMES)
            continue
        generated = demo.generate_series(asset, days=demo.DEMO_DAYS)
        for tf, candles in generated.items():
            with transaction.atomic():
                series, _ = MarketSeries.objects.get_or_create(
                    owner=None,
                    exchange="demo",
                    symbol=asset.symbol,
                    timeframe=tf,
                    defaults={
                        "source": MarketSeries.Source.DEMO,
                        "synthetic": True,
                        "name": f"{asset.symbol} (synthetic)",
                    },
                )
                store.delete_candles(series=series)
                series.refresh_from_db()
                store.write_candles(series=series, candles=candles)
            written += 1
            total += len(candles)
    return DemoSeedSummary(
        series=len(demo.DEMO_ASSETS) * len(demo.DEMO_TIMEFRAMES), written=written, candles=total
    )
