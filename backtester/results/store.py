"""Writing and reading a completed backtest's result: metrics, curves and trade rows.

``result_save(backtest=, run=)`` stores what the engine produced for ``backtest`` in one
transaction: the BacktestResult row (metrics with non-finite values as null, open positions,
the compressed curves) and one BacktestTrade row per closed round trip. Saving again for the
same backtest replaces the earlier result and trades; it never duplicates them.

``result_curves(result)`` reads the full per-bar curves back: ``timestamp`` (int64 ms, UTC),
``equity``, ``cash``, ``benchmark`` (buy-and-hold equity of the first symbol: initial cash x
close / first close) and ``position`` (1-D for one symbol, bars x symbols for a portfolio).

The curves blob also carries the small, chart-ready arrays the results page draws (downsampled
curves, coarse candles per symbol), so the page never decodes or ships the raw curves; see
``result_chart_arrays``.

Curves codec ``qfr1-blosc2-lz4``: ``b"QFR1"``, a 4-byte little-endian header length, a JSON
header (``{"arrays": [{name, dtype, shape, filter, offset, size}], "meta": {...}}``) and the
payloads, each compressed on its own (blosc2: LZ4 with byte shuffle) so a reader can decode only
the arrays it needs. Integer arrays are delta-encoded first (bar timestamps become a constant).
The chart arrays come first in the blob, the full curves after them. Measured on a year of
1-minute bars: zlib took ~170 ms to encode the five curves, blosc2 LZ4 ~20 ms for a blob of
similar size (equity curves are close to noise for any compressor).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import blosc2
import numpy as np
import numpy.typing as npt
from django.db import connection, transaction
from django.db.models import BinaryField
from django.db.models.functions import Substr

from backtester.engine.candles import Candles
from backtester.engine.run import BacktestResult as EngineResult
from backtester.engine.run import PortfolioBacktestResult
from backtester.engine.simulate import EXIT_REASONS, OpenPosition
from backtester.models import Backtest, BacktestResult, BacktestTrade, MarketSeries

CURVES_CODEC = "qfr1-blosc2-lz4"
CURVE_NAMES = ("timestamp", "equity", "cash", "benchmark", "position")
_MAGIC = b"QFR1"  # results curves; candle chunks use "QFC1" (marketdata.codec)
_BLOSC_ARGS: dict[str, Any] = {
    "codec": blosc2.Codec.LZ4,
    "clevel": 5,
    "filters": [blosc2.Filter.SHUFFLE],
}

EngineRun = EngineResult | PortfolioBacktestResult


# --- codec ----------------------------------------------------------------------------------


def encode_arrays(
    arrays: Mapping[str, npt.ArrayLike], *, meta: Mapping[str, Any] | None = None
) -> bytes:
    """Pack named numeric arrays (and a small JSON ``meta``) into one ``qfr1-blosc2-lz4`` blob."""
    entries: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    offset = 0
    for name, value in arrays.items():
        arr = np.ascontiguousarray(value)
        if arr.dtype.kind not in "iufb":
            raise ValueError(f"array {name!r} has dtype {arr.dtype}; only numbers can be stored")
        flat = arr.reshape(-1)
        filt = "shuffle"
        if arr.dtype.kind == "i" and flat.size:
            flat = np.diff(flat, prepend=flat.dtype.type(0))
            filt = "delta+shuffle"
        payload = blosc2.compress2(
            np.ascontiguousarray(flat).tobytes(), typesize=arr.dtype.itemsize, **_BLOSC_ARGS
        )
        entries.append(
            {
                "name": name,
                "dtype": arr.dtype.str,
                "shape": list(arr.shape),
                "filter": filt,
                "offset": offset,
                "size": len(payload),
            }
        )
        payloads.append(payload)
        offset += len(payload)
    header = json.dumps({"arrays": entries, "meta": dict(meta or {})}).encode()
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *payloads])


def _read_header(blob: bytes) -> tuple[dict[str, Any], int]:
    if blob[:4] != _MAGIC:
        raise ValueError("not a qfr1 curves blob")
    (length,) = struct.unpack_from("<I", blob, 4)
    header = json.loads(bytes(blob[8 : 8 + length]))
    return header, 8 + length


def decode_meta(blob: bytes) -> dict[str, Any]:
    """The ``meta`` mapping stored with the arrays."""
    header, _ = _read_header(blob)
    return dict(header.get("meta", {}))


def decode_arrays(blob: bytes, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Unpack the arrays of a blob (only ``names`` when given; missing names are skipped)."""
    blob = bytes(blob)
    header, base = _read_header(blob)
    wanted = None if names is None else set(names)
    out: dict[str, np.ndarray] = {}
    for entry in header["arrays"]:
        if wanted is not None and entry["name"] not in wanted:
            continue
        dtype = np.dtype(entry["dtype"])
        start = base + entry["offset"]
        raw = blosc2.decompress2(blob[start : start + entry["size"]])
        arr = np.frombuffer(raw, dtype)
        # frombuffer over bytes is read-only; both branches return a fresh writable array.
        arr = np.cumsum(arr, dtype=dtype) if entry["filter"].startswith("delta") else arr.copy()
        out[entry["name"]] = arr.reshape(entry["shape"])
    return out


# --- helpers --------------------------------------------------------------------------------


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float; None when it is not a number or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds → aware UTC datetime."""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _series_symbols(backtest: Backtest, run: EngineRun) -> list[str]:
    """Symbol names in the backtest's series order (the engine's symbol indexes)."""
    order = [int(i) for i in (backtest.series_order or [])]
    if order:
        by_id = dict(MarketSeries.objects.filter(pk__in=order).values_list("pk", "symbol"))
        return [by_id.get(i, str(i)) for i in order]
    if isinstance(run, PortfolioBacktestResult):
        return list(run.sim.symbols)
    return [run.symbol or "?"]


def _open_position_json(pos: OpenPosition, symbols: Sequence[str]) -> dict[str, Any]:
    sym = int(pos.symbol)
    return {
        "symbol": symbols[sym] if 0 <= sym < len(symbols) else str(sym),
        "side": "long" if pos.side > 0 else "short",
        "qty": finite_or_none(pos.qty),
        "entry_index": int(pos.entry_index),
        "entry_time": int(pos.entry_time),
        "entry_at": ms_to_datetime(pos.entry_time).isoformat().replace("+00:00", "Z"),
        "entry_price": finite_or_none(pos.entry_price),
        "entry_fee": finite_or_none(pos.entry_fee),
        "mark_price": finite_or_none(pos.mark_price),
        "unrealized_pnl": finite_or_none(pos.unrealized_pnl),
    }


def _candles_list(candles: Candles | Sequence[Candles] | None) -> list[Candles]:
    if candles is None:
        return []
    if isinstance(candles, Candles):
        return [candles]
    return list(candles)


def _aligned(candles: Candles, timestamp: np.ndarray) -> Candles:
    """The candles on exactly the run's bars (the run may cover a slice of what was loaded)."""
    if len(candles) == timestamp.shape[0] and np.array_equal(candles.timestamp, timestamp):
        return candles
    start = int(np.searchsorted(candles.timestamp, timestamp[0]))
    stop = start + timestamp.shape[0]
    part = candles.slice(start, stop)
    if len(part) != timestamp.shape[0] or not np.array_equal(part.timestamp, timestamp):
        raise ValueError(
            "the candles given to result_save do not cover the backtest's bars; pass the same "
            "candles the engine ran on"
        )
    return part


def _load_candles(backtest: Backtest) -> list[Candles]:
    """Read the backtest's candles from the market-data store, in series order."""
    from backtester.marketdata.store import load_candles  # market data's module; import late

    by_id = {s.pk: s for s in MarketSeries.objects.filter(pk__in=backtest.series_order or [])}
    return [
        # The store's end bound is exclusive; the backtest's end_ts is the last bar.
        load_candles(by_id[int(i)], start_ts=backtest.start_ts, end_ts=backtest.end_ts + 1)
        for i in backtest.series_order or []
        if int(i) in by_id
    ]


def _trade_columns(trades: np.ndarray, symbols: Sequence[str]) -> dict[str, list[Any]]:
    """BacktestTrade column values (not model objects) for every engine trade, in order."""
    n = int(trades.shape[0])
    sym = trades["symbol"].astype(np.int64)
    names = np.array([*symbols, "?"], dtype=object)
    sym_idx = np.where((sym >= 0) & (sym < len(symbols)), sym, len(symbols))
    reasons = np.array([*EXIT_REASONS, "?"], dtype=object)
    reason = trades["exit_reason"].astype(np.int64)
    reason_idx = np.where((reason >= 0) & (reason < len(EXIT_REASONS)), reason, len(EXIT_REASONS))
    return {
        "seq": list(range(1, n + 1)),
        "symbol": names[sym_idx].tolist(),
        "side": np.where(trades["side"] > 0, 1, -1).tolist(),
        "qty": trades["qty"].tolist(),
        "entry_time": [ms_to_datetime(v) for v in trades["entry_time"].tolist()],
        "exit_time": [ms_to_datetime(v) for v in trades["exit_time"].tolist()],
        "entry_price": trades["entry_price"].tolist(),
        "exit_price": trades["exit_price"].tolist(),
        "fees": (trades["entry_fee"] + trades["exit_fee"]).tolist(),
        "pnl": trades["pnl"].tolist(),
        "ret": trades["return"].tolist(),
        "bars_held": np.maximum(trades["bars_held"], 0).tolist(),
        "exit_reason": reasons[reason_idx].tolist(),
    }


# A trade's columns from its symbol to its exit price, as the admin, the API and exports list them.
TRADE_FILL_COLUMNS = (
    *("symbol", "side", "qty", "entry_time"),
    *("exit_time", "entry_price", "exit_price"),
)


def _insert_trades(
    backtest: Backtest,
    trades: np.ndarray,
    symbols: Sequence[str],
    *,
    use_copy: bool | None = None,
) -> None:
    """Insert the trade rows: COPY on PostgreSQL (unless ``use_copy`` is False), else
    bulk_create."""
    cols = _trade_columns(trades, symbols)
    names = list(cols)
    n = len(cols["seq"])
    if n == 0:
        return
    rows = zip(*(cols[name] for name in names), strict=True)
    if use_copy is None:
        use_copy = connection.vendor == "postgresql"
    if use_copy:
        table = connection.ops.quote_name(BacktestTrade._meta.db_table)
        # Concrete fields always have a column.
        column_of = {f.name: cast(str, f.column) for f in BacktestTrade._meta.concrete_fields}
        fields = [column_of[name] for name in ["backtest", *names]]
        column_sql = ", ".join(connection.ops.quote_name(f) for f in fields)
        with connection.cursor() as cursor:
            raw = cursor.cursor  # the psycopg 3 cursor under Django's wrapper
            with raw.copy(f"COPY {table} ({column_sql}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((backtest.pk, *row))
        return
    BacktestTrade.objects.bulk_create(
        (BacktestTrade(backtest=backtest, **dict(zip(names, row, strict=True))) for row in rows),
        batch_size=2000,
    )


# --- public API -----------------------------------------------------------------------------


def result_save(
    *,
    backtest: Backtest,
    run: EngineRun,
    candles: Candles | Sequence[Candles] | None = None,
) -> BacktestResult:
    """Store ``run`` (the engine's BacktestResult or PortfolioBacktestResult) for ``backtest``.

    ``candles`` are the candles the engine ran on (one Candles, or a sequence in series order
    for a portfolio); when omitted they are read from the market-data store for the backtest's
    series and date range. They give the buy-and-hold benchmark curve and the chart candles.

    One transaction: the result row is created or replaced, the old trade rows are deleted and
    the new ones inserted (``seq`` from 1 in the engine's order, times as aware UTC, exit
    reasons by name, symbols from ``backtest.series_order``): with COPY on PostgreSQL (10,000
    trades in ~40 ms against ~600 ms for bulk_create), bulk_create elsewhere. Does not touch the
    backtest's status; the caller does that. Returns the saved BacktestResult.
    """
    from backtester.results import charts  # charts imports this module; import late

    sim = run.sim
    timestamp = np.asarray(sim.timestamp, np.int64)
    if timestamp.shape[0] == 0:
        raise ValueError("the run has no bars")
    symbols = _series_symbols(backtest, run)
    loaded = _candles_list(candles) or _load_candles(backtest)
    aligned = [_aligned(c, timestamp) for c in loaded]
    initial_cash = float(sim.initial_cash)
    if aligned:
        first_close = aligned[0].close
        benchmark = initial_cash * first_close / first_close[0]
    else:
        benchmark = np.full(timestamp.shape[0], np.nan)

    equity = np.asarray(sim.equity, np.float64)
    benchmark = np.asarray(benchmark, np.float64)
    # Chart arrays first: the results page reads only the front of the blob.
    arrays, chart_meta = charts.chart_arrays(
        timestamp=timestamp,
        equity=equity,
        benchmark=benchmark,
        candles=aligned,
        initial_cash=initial_cash,
        trade_returns=sim.trades["return"],
    )
    arrays.update(
        {
            "timestamp": timestamp,
            "equity": equity,
            "cash": np.asarray(sim.cash, np.float64),
            "benchmark": benchmark,
            "position": np.asarray(sim.position, np.float64),
        }
    )
    meta = {"symbols": symbols, "initial_cash": initial_cash, **chart_meta}
    blob = encode_arrays(arrays, meta=meta)

    if isinstance(run, PortfolioBacktestResult):
        opened = [_open_position_json(p, symbols) for p in run.sim.open_positions]
    else:
        pos = run.sim.open_position
        opened = [] if pos is None else [_open_position_json(pos, symbols)]
    metrics = {key: finite_or_none(value) for key, value in run.metrics.items()}
    trades = sim.trades

    with transaction.atomic():
        # Lock the backtest row so two saves of the same backtest serialize.
        Backtest.objects.select_for_update().filter(pk=backtest.pk).first()
        BacktestTrade.objects.filter(backtest=backtest).delete()
        result, _ = BacktestResult.objects.update_or_create(
            backtest=backtest,
            defaults={
                "metrics": metrics,
                "open_positions": opened,
                "curves": blob,
                "curves_codec": CURVES_CODEC,
                "trade_count": int(trades.shape[0]),
            },
        )
        _insert_trades(backtest, trades, symbols)
    return result


def _check_codec(result: BacktestResult) -> None:
    if result.curves_codec != CURVES_CODEC:
        raise ValueError(f"unknown curves codec {result.curves_codec!r}")


def _blob(result: BacktestResult) -> bytes:
    _check_codec(result)
    return bytes(result.curves)


_PREFIX_GUESS = 256 * 1024


def _blob_prefix(result: BacktestResult, length: int) -> bytes:
    """The first ``length`` bytes of the curves blob: from the instance when it holds the
    blob, else read from the database without transferring the rest."""
    if "curves" in result.__dict__:
        return bytes(result.curves)[:length]
    row = (
        BacktestResult.objects.filter(pk=result.pk)
        .annotate(head=Substr("curves", 1, length, output_field=BinaryField()))
        .values_list("head", flat=True)
        .first()
    )
    if row is None:
        raise BacktestResult.DoesNotExist(f"result {result.pk} is gone")
    return bytes(row)


def result_curves(result: BacktestResult) -> dict[str, np.ndarray]:
    """The full per-bar curves of a saved result: timestamp, equity, cash, benchmark, position."""
    return decode_arrays(_blob(result), CURVE_NAMES)


def result_meta(result: BacktestResult) -> dict[str, Any]:
    """The meta saved with the curves: symbols (series order), initial_cash,
    candle_timeframes."""
    _check_codec(result)
    head = _blob_prefix(result, 8)
    (length,) = struct.unpack_from("<I", head, 4)
    header, _ = _read_header(_blob_prefix(result, 8 + length))
    return dict(header.get("meta", {}))


def result_chart_arrays(result: BacktestResult) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The small chart-ready arrays saved with the result (names start with ``chart.``) and the
    blob's meta (symbols, initial cash, chart candle timeframes).

    Reads only the front of the blob where the chart arrays are, so the results page never
    moves the full curves; load the result with ``.defer("curves")`` to benefit.
    """
    _check_codec(result)
    blob = _blob_prefix(result, _PREFIX_GUESS)
    if blob[:4] != _MAGIC or len(blob) < 8:
        raise ValueError("not a qfr1 curves blob")
    (length,) = struct.unpack_from("<I", blob, 4)
    if len(blob) < 8 + length:
        blob = _blob_prefix(result, 8 + length)
    header, base = _read_header(blob)
    entries = [e for e in header["arrays"] if e["name"].startswith("chart.")]
    end = base + max((e["offset"] + e["size"] for e in entries), default=0)
    if len(blob) < end:
        blob = _blob_prefix(result, end)
    return decode_arrays(blob, [e["name"] for e in entries]), dict(header.get("meta", {}))
