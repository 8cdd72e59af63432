"""The byte format of one candle chunk (pure numpy + blosc2, no Django).

Chosen by measurement on a year of 1-minute BTC/USDT candles (525,600 bars, 25.2 MB as raw
float64/int64 columns; bench/store_bench.py re-measures the whole path):

* PostgreSQL hands bytea to a binary-mode cursor at roughly 1 ms per MB here, so bytes on the
  wire dominate a load: raw columns alone cost ~28 ms, over the 30 ms target before decoding.
* Generic compressors on float64 prices barely help: zstd-3 2.6x but 18 ms to decompress, lz4
  1.8x, blosc2 lz4 + byte shuffle 1.5x, blosc2 zstd + bitshuffle 2.0x (5 ms). The mantissas of
  decimal prices look like noise to a compressor.
* Exchange prices and volumes are decimals on a tick grid (42033.08, 1.23456). Stored as the
  scaled integers (round(x * 10^d), int32 when it fits) they compress 4x with blosc2 lz4 + byte
  shuffle (6.1 MB) and decode in ~4 ms (decompress, then one divide). Delta-coding those
  integers gained no size and cost a cumulative sum per column, so only timestamps are
  delta-coded (constant spacing compresses to almost nothing).

Exactness is never traded for size: a column is stored as scaled integers only when dividing
them back reproduces every float64 bit for bit (checked at encode time); otherwise (NaN in an
extra column, prices with more than 10 decimals, values beyond 2^53) it is stored as raw
float64 with blosc2's byte shuffle. So a decoded chunk always equals what was written.

Layout of a chunk: ``b"QFC1"``, a little-endian uint32 header length, a UTF-8 JSON header
``{"n": rows, "cols": [{"name", "kind", "nbytes", ...}, ...]}``, then each column's blosc2 frame
in header order. Kinds: ``ts`` (int64 deltas, "first" holds the first timestamp), ``dec``
("scale" decimals, "dtype" i4/i8), ``f8`` (raw float64).
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# blosc2 imports numexpr, which logs its thread count at INFO on import: noise in every command.
logging.getLogger("numexpr.utils").setLevel(logging.WARNING)

import blosc2  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

CODEC_NAME = "qfc1-blosc2-lz4"
MAGIC = b"QFC1"
_HEAD = struct.Struct("<4sI")
_MAX_DECIMALS = 10
_EXACT_INT_LIMIT = 2.0**53
_INT32_LIMIT = 2**31 - 1
# A chunk is decoded by one thread per call; blosc2's own threads help little on this 2-core
# budget and would fight the web server, so they stay at one.
_COMPRESS_ARGS: dict[str, Any] = {
    "codec": blosc2.Codec.LZ4,
    "clevel": 5,
    "filters": [blosc2.Filter.SHUFFLE],
    "filters_meta": [0],
}

blosc2.set_nthreads(1)


class ChunkFormatError(ValueError):
    """The bytes are not a chunk this module wrote (corruption or a foreign codec)."""


@dataclass(frozen=True, slots=True)
class ChunkColumns:
    """Decoded columns of one chunk: timestamps and named float64 columns of equal length."""

    timestamp: npt.NDArray[np.int64]
    columns: Mapping[str, npt.NDArray[np.float64]]

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])


def encode_chunk(
    timestamp: npt.NDArray[np.int64], columns: Mapping[str, npt.NDArray[np.float64]]
) -> bytes:
    """Encode one chunk. ``columns`` keeps its order (open, high, low, close, volume, extras)."""
    n = int(timestamp.shape[0])
    if n == 0:
        raise ValueError("a chunk holds at least one candle")
    ts = np.ascontiguousarray(timestamp, dtype=np.int64)
    header_cols: list[dict[str, Any]] = []
    frames: list[bytes] = []
    deltas = np.diff(ts)
    frame = _compress(deltas) if n > 1 else b""
    header_cols.append(
        {"name": "timestamp", "kind": "ts", "first": int(ts[0]), "nbytes": len(frame)}
    )
    frames.append(frame)
    for name, values in columns.items():
        arr = np.ascontiguousarray(values, dtype=np.float64)
        if arr.shape != (n,):
            raise ValueError(f"column {name!r} has shape {arr.shape}, expected ({n},)")
        scaled = _as_scaled_integers(arr)
        if scaled is None:
            frame = _compress(arr)
            header_cols.append({"name": name, "kind": "f8", "nbytes": len(frame)})
        else:
            decimals, ints = scaled
            frame = _compress(ints)
            header_cols.append(
                {
                    "name": name,
                    "kind": "dec",
                    "scale": decimals,
                    "dtype": ints.dtype.str[1:],
                    "nbytes": len(frame),
                }
            )
        frames.append(frame)
    header = json.dumps({"n": n, "cols": header_cols}, separators=(",", ":")).encode("utf-8")
    return b"".join([_HEAD.pack(MAGIC, len(header)), header, *frames])


def read_header(data: bytes | memoryview) -> tuple[int, list[dict[str, Any]], int]:
    """(rows, column descriptions, offset of the first frame) of an encoded chunk."""
    view = memoryview(data)
    if len(view) < _HEAD.size:
        raise ChunkFormatError("chunk is shorter than its header")
    magic, length = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise ChunkFormatError(f"unknown chunk format {bytes(magic)!r}")
    try:
        header = json.loads(bytes(view[_HEAD.size : _HEAD.size + length]))
        return int(header["n"]), list(header["cols"]), _HEAD.size + length
    except (ValueError, KeyError, TypeError) as exc:
        raise ChunkFormatError(f"unreadable chunk header ({exc})") from None


def decode_into(
    data: bytes | memoryview,
    *,
    timestamp_out: npt.NDArray[np.int64],
    columns_out: Mapping[str, npt.NDArray[np.float64]],
) -> list[str]:
    """Decode a chunk straight into caller-provided slices (no intermediate copies).

    ``timestamp_out`` and each array in ``columns_out`` must have exactly the chunk's length.
    Output columns the chunk does not hold are filled with NaN. Returns the names of the
    chunk's columns that were not asked for (so a caller can tell a column set changed).
    """
    view = memoryview(data)
    n, cols, offset = read_header(view)
    if timestamp_out.shape != (n,):
        raise ChunkFormatError(f"chunk holds {n} rows, output has {timestamp_out.shape[0]}")
    unused: list[str] = []
    filled: set[str] = set()
    for col in cols:
        nbytes = int(col["nbytes"])
        frame = view[offset : offset + nbytes]
        offset += nbytes
        kind = col["kind"]
        if kind == "ts":
            timestamp_out[0] = int(col["first"])
            if n > 1:
                deltas = timestamp_out[1:]
                _decompress(frame, deltas)
                np.cumsum(deltas, out=deltas)
                deltas += timestamp_out[0]
            continue
        out = columns_out.get(col["name"])
        if out is None:
            unused.append(col["name"])
            continue
        if out.shape != (n,):
            raise ChunkFormatError(f"output column {col['name']!r} has the wrong length")
        if kind == "f8":
            _decompress(frame, out)
        elif kind == "dec":
            ints = np.empty(n, dtype=np.dtype(col["dtype"]))
            _decompress(frame, ints)
            np.divide(ints, 10.0 ** int(col["scale"]), out=out)
        else:
            raise ChunkFormatError(f"unknown column kind {kind!r}")
        filled.add(col["name"])
    for name, out in columns_out.items():
        if name not in filled:
            out.fill(np.nan)
    return unused


def decode_chunk(data: bytes | memoryview) -> ChunkColumns:
    """Decode a whole chunk into fresh arrays (used by writes, which merge chunks)."""
    n, cols, _ = read_header(data)
    names = [c["name"] for c in cols if c["kind"] != "ts"]
    ts = np.empty(n, dtype=np.int64)
    out = {name: np.empty(n, dtype=np.float64) for name in names}
    decode_into(data, timestamp_out=ts, columns_out=out)
    return ChunkColumns(timestamp=ts, columns=out)


def chunk_column_names(data: bytes | memoryview) -> Sequence[str]:
    """The non-timestamp column names of an encoded chunk, in stored order."""
    return [c["name"] for c in read_header(data)[1] if c["kind"] != "ts"]


def _compress(arr: npt.NDArray[Any]) -> bytes:
    out = blosc2.compress2(arr, typesize=arr.itemsize, **_COMPRESS_ARGS)
    return bytes(out)


def _decompress(frame: memoryview, out: npt.NDArray[Any]) -> None:
    try:
        blosc2.decompress2(frame, dst=out)
    except (RuntimeError, ValueError) as exc:
        raise ChunkFormatError(f"corrupt column frame ({exc})") from None


def _as_scaled_integers(arr: npt.NDArray[np.float64]) -> tuple[int, npt.NDArray[Any]] | None:
    """(decimals, integers) such that integers / 10**decimals == arr bit for bit, else None."""
    if arr.size == 0 or not np.isfinite(arr).all():
        return None
    bits = arr.view(np.int64)
    for decimals in range(_MAX_DECIMALS + 1):
        scale = 10.0**decimals
        rounded = np.round(arr * scale)
        if np.abs(rounded).max() >= _EXACT_INT_LIMIT:
            return None
        as_int = rounded.astype(np.int64)
        # Check what decoding will do (integer / scale), so even -0.0 is caught: it has no
        # integer form and stays a raw float.
        back = as_int / scale
        if np.array_equal(back.view(np.int64), bits):
            if np.abs(as_int).max() <= _INT32_LIMIT:
                return decimals, as_int.astype(np.int32)
            return decimals, as_int
    return None
