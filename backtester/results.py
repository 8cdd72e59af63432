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

Curves codec ``qfc1-zlib``: ``b"QFR1"``, a 4-byte little-endian header length, a JSON header
(``{"arrays": [{name, dtype, shape, filter, offset, size}], "meta": {...}}``) and the payloads,
each compressed on its own with zlib so a reader can decode only the arrays it needs. Integer
arrays are delta-encoded, every array is byte-shuffled (all first bytes, then all second
bytes...), which lets zlib find the repetition in float columns.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from django.db import transaction

from backtester.engine.candles import Candles
from backtester.engine.run import BacktestResult as EngineResult
from backtester.engine.run import PortfolioBacktestResult
from backtester.engine.simulate import EXIT_REASONS, OpenPosition
from backtester.models import Backtest, BacktestResult, BacktestTrade, MarketSeries

CURVES_CODEC = "qfc1-zlib"
CURVE_NAMES = ("timestamp", "equity", "cash", "benchmark", "position")
_MAGIC = b"QFR1"  # results curves; candle chunks use "QFC1" (marketdata.codec)
_ZLIB_LEVEL = 1  # level 1 compresses shuffled floats almost as well as 6, several times faster

EngineRun = EngineResult | PortfolioBacktestResult


# --- codec ----------------------------------------------------------------------------------


def _shuffle(raw: bytes, itemsize: int) -> bytes:
    if itemsize == 1:
        return raw
    return np.frombuffer(raw, np.uint8).reshape(-1, itemsize).T.tobytes()


def _unshuffle(raw: bytes, itemsize: int) -> bytes:
    if itemsize == 1:
        return raw
    return np.frombuffer(raw, np.uint8).reshape(itemsize, -1).T.tobytes()


def encode_arrays(
    arrays: Mapping[str, npt.ArrayLike], *, meta: Mapping[str, Any] | None = None
) -> bytes:
    """Pack named numeric arrays (and a small JSON ``meta``) into one ``qfc1-zlib`` blob."""
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
        payload = zlib.compress(_shuffle(flat.tobytes(), arr.dtype.itemsize), _ZLIB_LEVEL)
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
        raise ValueError("not a qfc1-zlib curves blob")
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
        raw = _unshuffle(zlib.decompress(blob[start : start + entry["size"]]), dtype.itemsize)
        arr = np.frombuffer(raw, dtype)
        # frombuffer over bytes is read-only; both branches return a fresh writable array.
        arr = np.cumsum(arr, dtype=dtype) if entry["filter"].startswith("delta") else arr.copy()
        out[entry["name"]] = arr.reshape(entry["shape"])
    return out


# --- helpers --------------------------------------------------------------------------------


def _finite_or_none(value: Any) -> float | None:
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
        "qty": _finite_or_none(pos.qty),
        "entry_index": int(pos.entry_index),
        "entry_time": int(pos.entry_time),
        "entry_at": ms_to_datetime(pos.entry_time).isoformat().replace("+00:00", "Z"),
        "entry_price": _finite_or_none(pos.entry_price),
        "entry_fee": _finite_or_none(pos.entry_fee),
        "mark_price": _finite_or_none(pos.mark_price),
        "unrealized_pnl": _finite_or_none(pos.unrealized_pnl),
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


def _trade_rows(
    backtest: Backtest, trades: np.ndarray, symbols: Sequence[str]
) -> list[BacktestTrade]:
    cols = {name: trades[name].tolist() for name in trades.dtype.names or ()}
    rows: list[BacktestTrade] = []
    for i in range(trades.shape[0]):
        sym = int(cols["symbol"][i])
        reason = int(cols["exit_reason"][i])
        rows.append(
            BacktestTrade(
                backtest=backtest,
                seq=i + 1,
                symbol=symbols[sym] if 0 <= sym < len(symbols) else str(sym),
                side=1 if cols["side"][i] > 0 else -1,
                qty=cols["qty"][i],
                entry_time=ms_to_datetime(cols["entry_time"][i]),
                exit_time=ms_to_datetime(cols["exit_time"][i]),
                entry_price=cols["entry_price"][i],
                exit_price=cols["exit_price"][i],
                fees=cols["entry_fee"][i] + cols["exit_fee"][i],
                pnl=cols["pnl"][i],
                ret=cols["return"][i],
                bars_held=max(int(cols["bars_held"][i]), 0),
                exit_reason=EXIT_REASONS[reason]
                if 0 <= reason < len(EXIT_REASONS)
                else str(reason),
            )
        )
    return rows


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
    the new ones bulk-inserted (``seq`` from 1 in the engine's order, times as aware UTC,
    exit reasons by name, symbols from ``backtest.series_order``). Does not touch the
    backtest's status; the caller does that. Returns the saved BacktestResult.
    """
    from backtester import charts  # charts imports this module; import late

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
    arrays: dict[str, np.ndarray] = {
        "timestamp": timestamp,
        "equity": equity,
        "cash": np.asarray(sim.cash, np.float64),
        "benchmark": np.asarray(benchmark, np.float64),
        "position": np.asarray(sim.position, np.float64),
    }
    chart_arrays, chart_meta = charts.chart_arrays(
        timestamp=timestamp,
        equity=equity,
        benchmark=arrays["benchmark"],
        candles=aligned,
        initial_cash=initial_cash,
        trade_returns=sim.trades["return"],
    )
    arrays.update(chart_arrays)
    meta = {"symbols": symbols, "initial_cash": initial_cash, **chart_meta}
    blob = encode_arrays(arrays, meta=meta)

    if isinstance(run, PortfolioBacktestResult):
        opened = [_open_position_json(p, symbols) for p in run.sim.open_positions]
    else:
        pos = run.sim.open_position
        opened = [] if pos is None else [_open_position_json(pos, symbols)]
    metrics = {key: _finite_or_none(value) for key, value in run.metrics.items()}
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
        BacktestTrade.objects.bulk_create(_trade_rows(backtest, trades, symbols), batch_size=2000)
    return result


def _blob(result: BacktestResult) -> bytes:
    if result.curves_codec != CURVES_CODEC:
        raise ValueError(f"unknown curves codec {result.curves_codec!r}")
    return bytes(result.curves)


def result_curves(result: BacktestResult) -> dict[str, np.ndarray]:
    """The full per-bar curves of a saved result: timestamp, equity, cash, benchmark, position."""
    return decode_arrays(_blob(result), CURVE_NAMES)


def result_chart_arrays(result: BacktestResult) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The small chart-ready arrays saved with the result (names start with ``chart.``) and the
    blob's meta (symbols, initial cash, chart candle timeframe...)."""
    blob = _blob(result)
    header, _ = _read_header(blob)
    names = [e["name"] for e in header["arrays"] if e["name"].startswith("chart.")]
    return decode_arrays(blob, names), dict(header.get("meta", {}))
