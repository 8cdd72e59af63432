"""CSV, Parquet and JSON readers: round trips, timestamp forms and errors that name the line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from backtester.engine.candles import Candles
from backtester.engine.errors import CandleError
from backtester.engine.readers import read_csv, read_json, read_parquet

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000
HEADER = "timestamp,open,high,low,close,volume\n"


def sample(n: int = 6) -> Candles:
    """n one-minute bars from 2024-01-01 with irregular prices and an extra column."""
    rng = np.random.default_rng(11)
    close = 100 + np.cumsum(rng.normal(0, 1, n))
    open_ = np.r_[100.0, close[:-1]]
    return Candles(
        timestamp=T0 + np.arange(n, dtype=np.int64) * MINUTE,
        open=open_,
        high=np.maximum(open_, close) + rng.uniform(0, 1, n),
        low=np.minimum(open_, close) - rng.uniform(0, 1, n),
        close=close,
        volume=rng.uniform(1, 50, n),
        extra={"funding_rate": rng.normal(0, 1e-4, n)},
    )


def frame_of(c: Candles) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": c.timestamp,
            "open": c.open,
            "high": c.high,
            "low": c.low,
            "close": c.close,
            "volume": c.volume,
            **c.extra,
        }
    )


def assert_same_candles(a: Candles, b: Candles) -> None:
    np.testing.assert_array_equal(a.timestamp, b.timestamp)
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(a.column(name), b.column(name))
    assert sorted(a.extra) == sorted(b.extra)
    for key in a.extra:
        np.testing.assert_array_equal(a.extra[key], b.extra[key])


def csv_rows(*rows: str) -> bytes:
    return (HEADER + "".join(row + "\n" for row in rows)).encode()


GOOD = "1704067200000,1,2,0.5,1.5,10"
GOOD2 = "1704067260000,1,2,0.5,1.5,10"


def error_of(reader: object, data: bytes) -> str:
    with pytest.raises(CandleError) as e:
        reader(data)  # type: ignore[operator]  # a wrong type on purpose
    return str(e.value)


# ----------------------------------------------------------------------------------- CSV


def test_csv_round_trip_from_path_bytes_and_file_object(tmp_path: Path) -> None:
    c = sample()
    text = frame_of(c).to_csv(index=False, float_format="%.17g").encode()
    path = tmp_path / "btc.csv"
    path.write_bytes(text)
    for source in (path, str(path), text, bytearray(text), io.BytesIO(text)):
        got = read_csv(source, symbol="BTC/USDT", timeframe="1m")
        assert_same_candles(got, c)
        assert (got.symbol, got.timeframe) == ("BTC/USDT", "1m")


def test_csv_iso_timestamps_with_offsets_are_converted_to_utc() -> None:
    data = csv_rows(
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,10",
        "2024-01-01T02:01:00+02:00,1,2,0.5,1.5,10",  # = 00:01 UTC
        "2023-12-31T19:02:00-05:00,1,2,0.5,1.5,10",  # = 00:02 UTC
        "2024-01-01 00:03:00,1,2,0.5,1.5,10",  # naive = UTC
        "2024-01-01T00:04:00.000000Z,1,2,0.5,1.5,10",
    )
    assert read_csv(data).timestamp.tolist() == [T0 + k * MINUTE for k in range(5)]


def test_csv_dates_alone_are_midnight_utc() -> None:
    data = (
        b"Date,Open,High,Low,Close,Volume\n2024-01-01,1,2,0.5,1.5,10\n2024-01-02,1,2,0.5,1.5,10\n"
    )
    assert read_csv(data).timestamp.tolist() == [T0, T0 + 86_400_000]


def test_csv_epoch_seconds_are_recognised_when_every_value_is_below_1e11() -> None:
    data = csv_rows("1704067200,1,2,0.5,1.5,10", "1704067260,1,2,0.5,1.5,10")
    assert read_csv(data).timestamp.tolist() == [T0, T0 + MINUTE]
    fractional = csv_rows("1704067200.5,1,2,0.5,1.5,10", "1704067260.25,1,2,0.5,1.5,10")
    assert read_csv(fractional).timestamp.tolist() == [T0 + 500, T0 + MINUTE + 250]


def test_csv_epoch_microseconds_are_refused_rather_than_misread() -> None:
    data = csv_rows("1704067200000000,1,2,0.5,1.5,10")
    assert error_of(read_csv, data).startswith(
        "line 2: timestamp 1704067200000000 is too large for epoch milliseconds"
    )


def test_csv_float_epoch_milliseconds_are_accepted_when_whole() -> None:
    data = csv_rows("1704067200000.0,1,2,0.5,1.5,10", "1704067260000.0,1,2,0.5,1.5,10")
    assert read_csv(data).timestamp.tolist() == [T0, T0 + MINUTE]
    bad = csv_rows("1704067200000.0,1,2,0.5,1.5,10", "1704067260000.5,1,2,0.5,1.5,10")
    assert error_of(read_csv, bad).startswith("line 3: timestamp 1704067260000.5 is not a whole")


def test_csv_headers_are_case_insensitive_with_aliases_and_extras() -> None:
    data = (
        b" Open Time ;O;H;L;C;Vol;Funding Rate;Symbol\n"
        b"1704067200000;1;2;0.5;1.5;10;0.0001;BTC\n"
        b"1704067260000;1;2;0.5;1.5;11;;BTC\n"
    )
    c = read_csv(data)
    assert c.timestamp.tolist() == [T0, T0 + MINUTE]
    assert c.volume.tolist() == [10.0, 11.0]
    assert list(c.extra) == ["Funding Rate"]  # the text column is left out
    assert c.extra["Funding Rate"][0] == 0.0001
    assert np.isnan(c.extra["Funding Rate"][1])


def test_csv_tab_separated_with_a_byte_order_mark() -> None:
    data = "\ufeffts\topen\thigh\tlow\tclose\tvolume\n1704067200000\t1\t2\t0.5\t1.5\t3\n"
    assert read_csv(data.encode()).close.tolist() == [1.5]


def test_csv_index_column_written_by_pandas_is_ignored() -> None:
    data = frame_of(sample(3)).to_csv().encode()  # leading unnamed index column
    assert list(read_csv(data).extra) == ["funding_rate"]


def test_csv_blank_lines_are_skipped_but_lines_still_count() -> None:
    data = (HEADER + GOOD + "\n\n" + GOOD2 + "\n\n").encode()
    assert len(read_csv(data)) == 2
    bad = (HEADER + GOOD + "\n\n" + GOOD2 + "\n1704067320000,1,2,0.5,abc,10\n").encode()
    assert error_of(read_csv, bad) == "line 5: close 'abc' is not a number"


def test_csv_text_in_a_price_names_the_line() -> None:
    rows = [f"{T0 + k * MINUTE},1,2,0.5,1.5,10" for k in range(5)]
    rows.append(f"{T0 + 5 * MINUTE},1,2,0.5,abc,10")
    # header is line 1, the six data rows are lines 2-7
    assert error_of(read_csv, csv_rows(*rows)) == "line 7: close 'abc' is not a number"


def test_csv_missing_column_is_named() -> None:
    data = b"timestamp,open,high,low,volume\n1704067200000,1,2,0.5,10\n"
    message = error_of(read_csv, data)
    assert message.startswith("missing column 'close'")
    assert "'volume'" in message


def test_csv_without_a_header_says_the_first_line_must_name_columns() -> None:
    message = error_of(read_csv, (GOOD + "\n" + GOOD2 + "\n").encode())
    assert message.startswith("missing column 'timestamp' (the first line must name the columns")


def test_csv_two_columns_for_one_field_are_refused() -> None:
    data = b"time,Time,open,high,low,close,volume\n1,1,1,2,0.5,1.5,10\n"
    assert error_of(read_csv, data) == "columns 'time', 'Time' all mean 'timestamp'; keep one"


def test_csv_row_with_too_many_fields_names_the_line() -> None:
    data = csv_rows(GOOD, GOOD2 + ",99")
    assert error_of(read_csv, data) == "line 3: expected 6 fields, saw 7"


def test_csv_empty_cell_in_a_price_names_the_line() -> None:
    assert (
        error_of(read_csv, csv_rows(GOOD, "1704067260000,1,2,,1.5,10")) == "line 3: low is missing"
    )


def test_csv_missing_timestamp_names_the_line() -> None:
    assert error_of(read_csv, csv_rows(GOOD, ",1,2,0.5,1.5,10")) == "line 3: timestamp is missing"


def test_csv_bad_iso_timestamp_names_the_line() -> None:
    data = csv_rows("2024-01-01T00:00:00Z,1,2,0.5,1.5,10", "yesterday,1,2,0.5,1.5,10")
    assert error_of(read_csv, data) == (
        "line 3: timestamp 'yesterday' is not an ISO 8601 date or epoch milliseconds"
    )


def test_csv_validation_errors_point_at_the_file_line() -> None:
    rows = [f"{T0 + k * MINUTE},100,101,99,100.5,10" for k in range(4)]
    rows[2] = f"{T0 + 2 * MINUTE},100,99.5,99,100.0,10"  # high below open and close
    assert error_of(read_csv, csv_rows(*rows)) == "line 4: high 99.5 is below open 100.0"
    rows = [GOOD, GOOD2, GOOD2]
    assert error_of(read_csv, csv_rows(*rows)) == (
        "line 4: timestamp 1704067260000 is not after the previous one 1704067260000"
    )
    negative = csv_rows(GOOD, "1704067260000,1,2,0.5,1.5,-3")
    assert error_of(read_csv, negative) == "line 3: volume -3.0 is negative"
    infinite = csv_rows(GOOD, "1704067260000,inf,2,0.5,1.5,3")
    assert error_of(read_csv, infinite) == "line 3: open is not a finite number"


def test_csv_length_errors_have_no_line() -> None:
    # a wrong timeframe label is a whole-file problem, reported without a line
    with pytest.raises(CandleError, match="timeframe 'soon'"):
        read_csv(csv_rows(GOOD), timeframe="soon")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        (HEADER.encode(), "the file has no data rows"),
        (b"timestamp,open\n", "missing column 'high'"),
        (b"\xff\xfe\x00t\x00s", "the file is not UTF-8 text"),
        (b'timestamp,open\n"1,2\n', "not a readable CSV file"),
    ],
)
def test_csv_unusable_files(data: bytes, message: str) -> None:
    assert error_of(read_csv, data).startswith(message)


def test_missing_path_is_a_candle_error(tmp_path: Path) -> None:
    with pytest.raises(CandleError, match=r"cannot read .*nope\.csv"):
        read_csv(tmp_path / "nope.csv")


def test_a_text_file_object_also_works() -> None:
    # (type: ignore below) a text stream on purpose
    assert len(read_csv(io.StringIO(HEADER + GOOD + "\n"))) == 1  # type: ignore[arg-type]


def test_an_unreadable_source_type_is_refused() -> None:
    with pytest.raises(CandleError, match="expected a path, bytes or a binary file object"):
        read_csv(42)  # type: ignore[arg-type]  # a wrong type on purpose


def test_reading_500k_csv_rows_is_fast() -> None:
    n = 500_000
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    frame = pd.DataFrame(
        {
            "timestamp": T0 + np.arange(n, dtype=np.int64) * MINUTE,
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": rng.uniform(1, 10, n),
        }
    )
    sink = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pandas(frame), sink)  # much quicker to write than pandas
    data = sink.getvalue()
    c = read_csv(data)
    assert len(c) == n
    np.testing.assert_allclose(c.close, close, rtol=1e-15)


# ------------------------------------------------------------------------------- Parquet


def test_parquet_round_trip_with_epoch_milliseconds(tmp_path: Path) -> None:
    c = sample()
    path = tmp_path / "btc.parquet"
    frame_of(c).to_parquet(path)
    assert_same_candles(read_parquet(path), c)
    assert_same_candles(read_parquet(path.read_bytes()), c)
    with path.open("rb") as handle:
        assert_same_candles(read_parquet(handle, symbol="X").slice(), c)


def test_parquet_timezone_aware_timestamps_become_utc_milliseconds() -> None:
    c = sample(3)
    frame = frame_of(c)
    frame["timestamp"] = pd.to_datetime(c.timestamp, unit="ms", utc=True).tz_convert("Asia/Tokyo")
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    assert read_parquet(buffer.getvalue()).timestamp.tolist() == c.timestamp.tolist()


def test_parquet_naive_timestamps_are_taken_as_utc() -> None:
    c = sample(3)
    frame = frame_of(c)
    frame["timestamp"] = pd.to_datetime(c.timestamp, unit="ms")
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    assert read_parquet(buffer.getvalue()).timestamp.tolist() == c.timestamp.tolist()


def test_parquet_other_datetime_columns_are_not_extras() -> None:
    frame = frame_of(sample(3))
    frame["close_time"] = pd.to_datetime(frame["timestamp"] + MINUTE - 1, unit="ms", utc=True)
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    assert list(read_parquet(buffer.getvalue()).extra) == ["funding_rate"]


def test_parquet_bad_row_is_named_by_its_index() -> None:
    frame = frame_of(sample(5))
    frame.loc[3, "low"] = frame.loc[3, "high"] + 1
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    assert error_of(read_parquet, buffer.getvalue()).startswith("row 3: low ")


def test_parquet_missing_timestamp_names_the_row() -> None:
    frame = frame_of(sample(3))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    frame.loc[1, "timestamp"] = pd.NaT
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    assert error_of(read_parquet, buffer.getvalue()) == "row 1: timestamp is missing"


def test_not_a_parquet_file() -> None:
    assert error_of(read_parquet, b"timestamp,open\n1,2\n").startswith("not a valid Parquet file")


# ---------------------------------------------------------------------------------- JSON


def test_json_array_of_objects_round_trip() -> None:
    c = sample()
    records = [
        {
            "timestamp": int(c.timestamp[k]),
            **{name: float(c.column(name)[k]) for name in c.columns},
        }
        for k in range(len(c))
    ]
    assert_same_candles(read_json(json.dumps(records).encode()), c)


def test_json_array_of_arrays_round_trip(tmp_path: Path) -> None:
    c = sample()
    rows = np.column_stack([c.timestamp, c.open, c.high, c.low, c.close, c.volume]).tolist()
    rows = [[int(r[0]), *r[1:]] for r in rows]
    path = tmp_path / "btc.json"
    path.write_text(json.dumps(rows))
    got = read_json(path)
    assert_same_candles(got, Candles(c.timestamp, c.open, c.high, c.low, c.close, c.volume))


def test_json_exchange_klines_with_strings_and_trailing_fields() -> None:
    klines = [
        [T0, "1.0", "2.0", "0.5", "1.5", "10", T0 + MINUTE - 1, "15.0", 7],
        [T0 + MINUTE, "1.5", "2.5", "1.0", "2.0", "12", T0 + 2 * MINUTE - 1, "24.0", 9],
    ]
    c = read_json(json.dumps(klines).encode())
    assert c.close.tolist() == [1.5, 2.0]
    assert c.extra == {}


def test_json_objects_with_iso_times_and_missing_extras() -> None:
    data = [
        {"time": "2024-01-01T01:00:00+01:00", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 3, "oi": 5},
        {"time": "2024-01-01T00:01:00Z", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 3, "note": "x"},
    ]
    c = read_json(json.dumps(data).encode())
    assert c.timestamp.tolist() == [T0, T0 + MINUTE]
    assert list(c.extra) == ["oi"]
    assert np.isnan(c.extra["oi"][1])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "not valid JSON: "),
        ('{"candles": []}', "expected a JSON array of candles, got a JSON object"),
        ('"text"', "expected a JSON array of candles, got a JSON string"),
        ("[]", "the JSON array is empty"),
        ("[1, 2]", "element 0: expected an object or an array, got a JSON number"),
        (
            "[[1,1,2,0.5,1.5,3], null]",
            "element 1: expected an array like element 0, got a JSON null",
        ),
        ('[{"a": 1}, [1]]', "element 1: expected an object like element 0, got a JSON array"),
        ('[{"a": 1}, true]', "element 1: expected an object like element 0, got a JSON boolean"),
        ("[[1,1,2,0.5,1.5,3], [2,1,2,0.5,1.5]]", "element 1: expected 6 values"),
        ('[{"ts": 1, "open": 1, "high": 2, "low": 0.5, "volume": 1}]', "missing column 'close'"),
    ],
)
def test_json_unusable_documents(doc: str, message: str) -> None:
    assert error_of(read_json, doc.encode()).startswith(message)


def test_json_bad_value_names_the_element_index() -> None:
    rows: list[list[Any]] = [[T0 + k * MINUTE, 1, 2, 0.5, 1.5, 3] for k in range(4)]
    rows[2][4] = "x"
    assert error_of(read_json, json.dumps(rows).encode()) == "element 2: close 'x' is not a number"
    rows[2][4] = 1.5
    rows[3][0] = rows[2][0]
    assert error_of(read_json, json.dumps(rows).encode()).startswith(
        "element 3: timestamp 1704067320000 is not after"
    )


def test_json_numeric_strings_as_timestamps_are_epoch_milliseconds() -> None:
    rows = [[str(T0), 1, 2, 0.5, 1.5, 3], [str(T0 + MINUTE), 1, 2, 0.5, 1.5, 3]]
    assert read_json(json.dumps(rows).encode()).timestamp.tolist() == [T0, T0 + MINUTE]


def test_json_that_is_not_utf8() -> None:
    assert error_of(read_json, b"\xff\xfe[") == "the file is not UTF-8 text"


# ------------------------------------------------------------- price bounds, every reader


def _encoded(kind: str, rows: list[list[float]]) -> bytes:
    """rows of [timestamp, open, high, low, close, volume] written as a csv/json/parquet file."""
    if kind == "csv":
        return csv_rows(*(",".join(repr(v) for v in row) for row in rows))
    if kind == "json":
        return json.dumps(rows).encode()
    frame = pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])
    frame["timestamp"] = frame["timestamp"].astype(np.int64)
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


READERS = {"csv": (read_csv, "line 4"), "json": (read_json, "element 2"), "parquet": (
    read_parquet, "row 2"
)}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ([100.0, 101.0, 0.0, 100.5, 5.0], "low 0.0 is not positive (prices must be above 0)"),
        ([-1.0, 101.0, -2.0, 100.5, 5.0], "open -1.0 is not positive (prices must be above 0)"),
        (
            [100.0, 1.7e308, 99.0, 1.7e308, 5.0],
            "high 1.7e+308 is above the largest price the engine accepts (1e+15)",
        ),
        (
            [100.0, 101.0, 99.0, 100.5, 1e300],
            "volume 1e+300 is above the largest volume the engine accepts (1e+24)",
        ),
    ],
)
def test_every_reader_refuses_out_of_range_prices_naming_where(
    kind: str, bad_row: list[float], message: str
) -> None:
    rows = [[float(T0 + k * MINUTE), 100.0, 101.0, 99.0, 100.5, 5.0] for k in range(4)]
    rows[2] = [rows[2][0], *bad_row]
    reader, where = READERS[kind]
    assert error_of(reader, _encoded(kind, rows)) == f"{where}: {message}"
