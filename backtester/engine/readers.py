"""Turn uploaded CSV, Parquet and JSON candle files into validated ``Candles``.

Every reader takes a path, the file's bytes, or a binary file object, and either returns
Candles or raises CandleError whose text starts with where the problem is: ``line N`` for CSV
(the header is line 1, so the first data row is line 2), ``element N`` (0-based array index) for
JSON and ``row N`` (0-based) for Parquet. The Candles validation rules apply unchanged; a bad
row they find is reported at its place in the file.

Columns are matched case-insensitively: timestamp (aliases time, date, datetime, ts,
open_time, ...), open, high, low, close and volume (short aliases o/h/l/c/v, vol). Any other
column whose values are all numbers (or empty) becomes an extra column under its own name.

Timestamps may be ISO 8601 strings (an offset is converted to UTC; no offset means UTC) or epoch
milliseconds. A numeric timestamp column whose values are all below 1e11 is read as epoch
*seconds*: 1e11 ms is March 1973, long before any crypto market, while 1e11 s is the year 5138.
Values of 1e14 or more (microseconds, nanoseconds) are refused rather than misread.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from backtester.engine.candles import PRICE_COLUMNS, Candles, FloatArray
from backtester.engine.errors import CandleError

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
Where = Callable[[int], str]

_EPOCH_SECONDS_BELOW = 1e11
# 1e14 ms is the year 5138: anything larger is microseconds or nanoseconds, not milliseconds.
_EPOCH_MS_BELOW = 1e14
_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": (
        "timestamp",
        "ts",
        "time",
        "datetime",
        "date_time",
        "date",
        "open_time",
        "opentime",
        "timestamp_ms",
        "unix",
        "time_utc",
    ),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price"),
    "volume": ("volume", "vol", "v", "base_volume"),
}
_FIELDS: tuple[str, ...] = ("timestamp", *PRICE_COLUMNS)
_PANDAS_FIELD_COUNT = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")

# 2009-01-01: no crypto market traded before it, so an earlier candle is a wrong timestamp.
EARLIEST_CANDLE_MS = 1_230_768_000_000


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Bounds on one file, checked while it is read so a decompression bomb stops early.

    ``max_rows`` caps the candles, ``max_decompressed_bytes`` the decoded data (the file's own
    size for text formats), ``earliest_ms``/``latest_ms`` the timestamps (the caller passes
    "now", the engine has no clock). None leaves a bound off.
    """

    max_rows: int | None = None
    max_decompressed_bytes: int | None = None
    earliest_ms: int | None = None
    latest_ms: int | None = None


def check_size(limits: ReadLimits | None, *, rows: int, nbytes: int) -> None:
    """Raise CandleError when ``rows`` or ``nbytes`` read so far pass the limits."""
    if limits is None:
        return
    if limits.max_rows is not None and rows > limits.max_rows:
        raise CandleError(f"the file holds more than {limits.max_rows:,} rows (the most allowed)")
    if limits.max_decompressed_bytes is not None and nbytes > limits.max_decompressed_bytes:
        most = limits.max_decompressed_bytes / (1024 * 1024)
        raise CandleError(
            f"the file decompresses to more than {most:.0f} MB of data (the most allowed)"
        )


def check_timestamps(timestamp: Any, limits: ReadLimits | None, where: Where) -> None:
    """Raise CandleError naming the first row whose time is before/after the limits."""
    if limits is None:
        return
    ts = np.asarray(timestamp)
    if limits.earliest_ms is not None:
        early = _first_true(ts < limits.earliest_ms)
        if early is not None:
            raise CandleError(
                f"{where(early)}: timestamp {_iso(int(ts[early]))} is before "
                f"{_iso(limits.earliest_ms)[:10]}, earlier than any crypto market"
            )
    if limits.latest_ms is not None:
        late = _first_true(ts > limits.latest_ms)
        if late is not None:
            raise CandleError(f"{where(late)}: timestamp {_iso(int(ts[late]))} is in the future")


def _iso(ms: int) -> str:
    try:
        return str(pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC"))
    except (OverflowError, ValueError):
        return str(ms)


def read_csv(
    source: Source, *, symbol: str = "", timeframe: str = "", limits: ReadLimits | None = None
) -> Candles:
    """Read candles from CSV text with a header row (comma, semicolon or tab separated)."""
    data = _read_source(source)
    check_size(limits, rows=data.count(b"\n") - 1 + (not data.endswith(b"\n")), nbytes=len(data))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise CandleError("the file is empty")
    header = data.split(b"\n", 1)[0]
    sep = ","
    if b"," not in header:
        if b";" in header:
            sep = ";"
        elif b"\t" in header:
            sep = "\t"
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            skip_blank_lines=False,
            skipinitialspace=True,
            low_memory=False,
            encoding="utf-8",
        )
    except UnicodeDecodeError:
        raise CandleError("the file is not UTF-8 text") from None
    except pd.errors.ParserError as exc:
        match = _PANDAS_FIELD_COUNT.search(str(exc))
        if match:
            want, line, saw = match.groups()
            raise CandleError(f"line {line}: expected {want} fields, saw {saw}") from None
        raise CandleError(f"not a readable CSV file ({exc})") from None
    # Blank lines come through as all-empty rows; drop them but remember each row's file line
    # so errors point at the right place.
    lines = np.arange(len(frame), dtype=np.int64) + 2
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():
        frame = frame.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    return _frame_to_candles(
        frame, lambda i: f"line {int(lines[i])}", symbol=symbol, timeframe=timeframe, limits=limits
    )


def read_parquet(
    source: Source, *, symbol: str = "", timeframe: str = "", limits: ReadLimits | None = None
) -> Candles:
    """Read candles from a Parquet file (timestamp may be a timestamp type or epoch numbers).

    With ``limits``, the file is decoded batch by batch and refused as soon as the rows or the
    decoded bytes pass them (a small compressed file can expand a thousandfold)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = _read_source(source)
    try:
        if limits is None:
            table = pq.read_table(pa.BufferReader(data))
        else:
            parquet = pq.ParquetFile(pa.BufferReader(data))
            check_size(limits, rows=parquet.metadata.num_rows, nbytes=0)
            batches, rows, nbytes = [], 0, 0
            for batch in parquet.iter_batches(batch_size=65_536):
                rows, nbytes = rows + batch.num_rows, nbytes + batch.nbytes
                check_size(limits, rows=rows, nbytes=nbytes)
                batches.append(batch)
            table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CandleError(f"not a valid Parquet file ({exc})") from None
    frame = table.to_pandas()
    return _frame_to_candles(
        frame, lambda i: f"row {i}", symbol=symbol, timeframe=timeframe, limits=limits
    )


def read_json(
    source: Source, *, symbol: str = "", timeframe: str = "", limits: ReadLimits | None = None
) -> Candles:
    """Read candles from a JSON array of objects, or of arrays ``[ms, open, high, low, close,
    volume, ...]`` (fields after the sixth are ignored, so exchange kline dumps load as they are).
    """
    data = _read_source(source)
    check_size(limits, rows=0, nbytes=len(data))
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        raise CandleError("the file is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CandleError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise CandleError("not valid candle JSON: nested too deeply") from None
    if not isinstance(doc, list):
        raise CandleError(f"expected a JSON array of candles, got a JSON {_json_kind(doc)}")
    if not doc:
        raise CandleError("the JSON array is empty")
    check_size(limits, rows=len(doc), nbytes=len(data))
    if isinstance(doc[0], list):
        for i, item in enumerate(doc):
            if not isinstance(item, list):
                raise CandleError(
                    f"element {i}: expected an array like element 0, got a JSON {_json_kind(item)}"
                )
            if len(item) < len(_FIELDS):
                raise CandleError(
                    f"element {i}: expected {len(_FIELDS)} values "
                    f"[timestamp, open, high, low, close, volume], got {len(item)}"
                )
        # Elements may be longer (exchange klines carry close time, quote volume, ...): the
        # frame is as wide as the longest one and only the first six columns are used.
        frame = pd.DataFrame(doc).iloc[:, : len(_FIELDS)]
        frame.columns = pd.Index(_FIELDS)
    elif isinstance(doc[0], dict):
        for i, item in enumerate(doc):
            if not isinstance(item, dict):
                raise CandleError(
                    f"element {i}: expected an object like element 0, got a JSON {_json_kind(item)}"
                )
        frame = pd.DataFrame.from_records(doc)
    else:
        raise CandleError(
            f"element 0: expected an object or an array, got a JSON {_json_kind(doc[0])}"
        )
    return _frame_to_candles(
        frame, lambda i: f"element {i}", symbol=symbol, timeframe=timeframe, limits=limits
    )


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _read_source(source: Source) -> bytes:
    """The raw bytes of a path, a bytes-like object or an open binary file."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CandleError(f"cannot read {path}: {exc.strerror or exc}") from None
    read = getattr(source, "read", None)
    if read is None:
        raise CandleError(
            f"expected a path, bytes or a binary file object, got {type(source).__name__}"
        )
    content = read()
    if isinstance(content, str):
        return content.encode("utf-8")
    return bytes(content)


def _normalise(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _match_columns(frame: pd.DataFrame) -> dict[str, Any]:
    """Map each canonical field to the frame column that provides it."""
    by_name: dict[str, list[Any]] = {}
    for col in frame.columns:
        by_name.setdefault(_normalise(col), []).append(col)
    chosen: dict[str, Any] = {}
    for field_name in _FIELDS:
        for alias in _ALIASES[field_name]:
            found = by_name.get(alias)
            if not found:
                continue
            if len(found) > 1:
                names = ", ".join(repr(str(c)) for c in found)
                raise CandleError(f"columns {names} all mean {field_name!r}; keep one")
            chosen[field_name] = found[0]
            break
        else:
            available = ", ".join(repr(str(c)) for c in frame.columns) or "none"
            raise CandleError(
                f"missing column {field_name!r} (the first line must name the columns; "
                f"found {available})"
            )
    return chosen


def _shown(value: Any) -> str:
    """A cell as it appears in a message: numpy scalars print like plain Python numbers."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _shown_time(value: Any) -> str:
    """A timestamp cell as the file holds it: text and numbers as written, a datetime in ISO."""
    if isinstance(value, pd.Timestamp | np.datetime64):
        return str(pd.Timestamp(value).isoformat())
    return _shown(value)


def _first_true(mask: Any) -> int | None:
    arr = np.asarray(mask, dtype=bool)
    if not arr.any():
        return None
    return int(np.argmax(arr))


def _numbers(series: pd.Series, name: str, where: Where) -> FloatArray:
    """A column as float64 (empty cells as NaN); a value that is not a number is an error."""
    if ptypes.is_bool_dtype(series.dtype) or ptypes.is_numeric_dtype(series.dtype):
        return np.ascontiguousarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    converted = pd.to_numeric(series, errors="coerce")
    bad = _first_true(converted.isna() & series.notna())
    if bad is not None:
        raise CandleError(f"{where(bad)}: {name} {_shown(series.iloc[bad])} is not a number")
    return np.ascontiguousarray(converted.to_numpy(dtype=np.float64, na_value=np.nan))


def _is_numeric_column(series: pd.Series) -> bool:
    if ptypes.is_bool_dtype(series.dtype) or ptypes.is_numeric_dtype(series.dtype):
        return True
    if ptypes.is_datetime64_any_dtype(series.dtype):
        return False
    converted = pd.to_numeric(series, errors="coerce")
    return not bool((converted.isna() & series.notna()).any())


def _timestamps(series: pd.Series, where: Where) -> Any:
    """Epoch milliseconds from ISO 8601 strings, datetimes, epoch ms or epoch seconds."""
    missing = _first_true(series.isna())
    if missing is not None:
        raise CandleError(f"{where(missing)}: timestamp is missing")
    if ptypes.is_datetime64_any_dtype(series.dtype):
        if getattr(series.dtype, "tz", None) is not None:
            series = series.dt.tz_convert(None)
        return series.to_numpy().astype("datetime64[ms]").astype(np.int64)
    if not (ptypes.is_numeric_dtype(series.dtype) or ptypes.is_bool_dtype(series.dtype)):
        numeric = pd.to_numeric(series, errors="coerce")
        if not bool(numeric.isna().any()):
            series = numeric
        else:
            parsed = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")
            bad = _first_true(parsed.isna())
            if bad is not None:
                raise CandleError(
                    f"{where(bad)}: timestamp {_shown(series.iloc[bad])} is not an ISO 8601 date "
                    "or epoch milliseconds"
                )
            return parsed.dt.tz_convert(None).to_numpy().astype("datetime64[ms]").astype(np.int64)
    values = series.to_numpy(dtype=np.float64)
    too_large = _first_true(np.abs(values) >= _EPOCH_MS_BELOW)
    if too_large is not None:
        raise CandleError(
            f"{where(too_large)}: timestamp {_shown(series.iloc[too_large])} is too large for "
            "epoch milliseconds (microsecond and nanosecond timestamps are not supported)"
        )
    if series.dtype.kind in "iu" and not (np.abs(values) < _EPOCH_SECONDS_BELOW).all():
        # Whole numbers of milliseconds: keep them exact instead of passing through float.
        return series.to_numpy(dtype=np.int64)
    if (np.abs(values) < _EPOCH_SECONDS_BELOW).all():
        return np.round(values * 1000.0)
    # Float milliseconds; Candles rejects any that are not whole and names the row.
    return values


def _frame_to_candles(
    frame: pd.DataFrame,
    where: Where,
    *,
    symbol: str,
    timeframe: str,
    limits: ReadLimits | None = None,
) -> Candles:
    """Pick the OHLCV and extra columns out of a parsed table and validate them as Candles."""
    if len(frame) == 0:
        _match_columns(frame)
        raise CandleError("the file has no data rows")
    chosen = _match_columns(frame)
    used = set(chosen.values())
    timestamp = _timestamps(frame[chosen["timestamp"]], where)
    check_timestamps(timestamp, limits, where)
    prices: dict[str, FloatArray] = {}
    for name in PRICE_COLUMNS:
        values = _numbers(frame[chosen[name]], name, where)
        missing = _first_true(np.isnan(values))
        if missing is not None:
            raise CandleError(f"{where(missing)}: {name} is missing")
        prices[name] = values
    extras: dict[str, FloatArray] = {}
    for col in frame.columns:
        if col in used:
            continue
        series = frame[col]
        key = str(col).strip()
        if not key or key.lower().startswith("unnamed:") or not _is_numeric_column(series):
            continue
        extras[key] = _numbers(series, key, where)
    try:
        return Candles(
            timestamp=timestamp,
            open=prices["open"],
            high=prices["high"],
            low=prices["low"],
            close=prices["close"],
            volume=prices["volume"],
            extra=extras,
            symbol=symbol,
            timeframe=timeframe,
        )
    except CandleError as exc:
        if exc.row is None:
            raise
        row, reason = exc.row, exc.reason
        if row > 0 and timestamp[row] <= timestamp[row - 1]:
            # Out of order: quote the times as the file writes them (ISO stays ISO), not as
            # the epoch milliseconds they became.
            raw = frame[chosen["timestamp"]]
            reason = (
                f"timestamp {_shown_time(raw.iloc[row])} is not after the previous one "
                f"{_shown_time(raw.iloc[row - 1])}"
            )
        raise CandleError(f"{where(row)}: {reason}") from None
