"""The candle store: exact round trips, merging, bounded chunks, the catalog, ranges."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from backtester.engine.candles import Candles
from backtester.engine.errors import CandleError
from backtester.marketdata import codec, store
from backtester.models import CandleChunk, MarketSeries
from tests.backtester.marketdata_fixtures import HOUR, START_MS, decimal_candles, make_series

pytestmark = pytest.mark.django_db


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a.view(np.int64), b.view(np.int64))


def _assert_same_candles(got: Candles, want: Candles) -> None:
    assert len(got) == len(want)
    assert np.array_equal(got.timestamp, want.timestamp)
    for name in ("open", "high", "low", "close", "volume"):
        assert _same_bits(getattr(got, name), getattr(want, name)), name


# --- codec ------------------------------------------------------------------------------


def test_codec_round_trips_decimal_prices_bit_for_bit_as_scaled_integers():
    c = decimal_candles(5000)
    cols = {name: getattr(c, name) for name in ("open", "high", "low", "close", "volume")}
    data = codec.encode_chunk(c.timestamp, cols)
    _, header, _ = codec.read_header(data)
    kinds = {col["name"]: (col["kind"], col.get("scale")) for col in header}
    assert kinds["close"] == ("dec", 2)
    assert kinds["volume"] == ("dec", 5)
    out = codec.decode_chunk(data)
    assert np.array_equal(out.timestamp, c.timestamp)
    for name, arr in cols.items():
        assert _same_bits(out.columns[name], arr)
    assert len(data) < 5000 * 6 * 8 / 3  # decimal columns shrink several times


def test_codec_keeps_values_that_are_not_short_decimals_as_raw_floats_exactly():
    n = 1000
    ts = START_MS + np.arange(n, dtype=np.int64) * HOUR
    thirds = np.arange(1, n + 1) / 3.0  # 0.333..., no short decimal form
    with_nan = np.where(np.arange(n) % 7 == 0, np.nan, 1.5)
    negative_zero = np.full(n, -0.0)
    data = codec.encode_chunk(ts, {"a": thirds, "b": with_nan, "c": negative_zero})
    kinds = {col["name"]: col["kind"] for col in codec.read_header(data)[1]}
    assert kinds == {"timestamp": "ts", "a": "f8", "b": "f8", "c": "f8"}
    out = codec.decode_chunk(data)
    assert _same_bits(out.columns["a"], thirds)
    assert _same_bits(out.columns["b"], with_nan)
    assert _same_bits(out.columns["c"], negative_zero)


def test_codec_refuses_bytes_it_did_not_write():
    with pytest.raises(codec.ChunkFormatError):
        codec.decode_chunk(b"PNG not a chunk at all")


# --- store ------------------------------------------------------------------------------


def test_written_candles_load_back_identical_with_symbol_and_timeframe():
    c = decimal_candles(3000)
    series = make_series(candles=c)
    loaded = store.load_candles(series)
    _assert_same_candles(loaded, c)
    assert loaded.symbol == "BTC/USDT"
    assert loaded.timeframe == "1h"
    assert (series.first_ts, series.last_ts, series.count) == (
        int(c.timestamp[0]),
        int(c.timestamp[-1]),
        3000,
    )


def test_load_range_is_half_open_start_included_end_excluded():
    c = decimal_candles(100)
    series = make_series(candles=c)
    start, end = int(c.timestamp[10]), int(c.timestamp[20])
    part = store.load_candles(series, start_ts=start, end_ts=end)
    assert part.timestamp[0] == start
    assert part.timestamp[-1] == c.timestamp[19]
    assert len(part) == 10
    assert len(store.load_candles(series, start_ts=end, end_ts=end)) == 0
    assert len(store.load_candles(series, start_ts=int(c.timestamp[-1]) + HOUR)) == 0


def test_overlapping_write_dedupes_by_timestamp_and_the_newer_candle_wins():
    first = decimal_candles(50)
    series = make_series(candles=first)
    # The last stored candle was still forming: the second download has its final values.
    revised_close = first.close.copy()
    revised_close[-1] = first.close[-1] + 12.34
    second_part = Candles(
        timestamp=np.r_[first.timestamp[-1], first.timestamp[-1] + HOUR],
        open=np.r_[first.open[-1], revised_close[-1]],
        high=np.r_[max(first.high[-1], revised_close[-1]), revised_close[-1] + 5],
        low=np.r_[first.low[-1], revised_close[-1] - 5],
        close=np.r_[revised_close[-1], revised_close[-1] + 1],
        volume=np.r_[99.0, 1.0],
    )
    count = store.write_candles(series=series, candles=second_part)
    assert count == 51
    loaded = store.load_candles(series)
    assert len(np.unique(loaded.timestamp)) == 51
    assert loaded.close[49] == revised_close[-1]
    assert loaded.volume[49] == 99.0
    assert loaded.close[50] == revised_close[-1] + 1
    _assert_same_candles(loaded.slice(0, 49), first.slice(0, 49))


def test_chunks_stay_bounded_and_an_append_rewrites_only_the_last_chunk(monkeypatch):
    monkeypatch.setattr(store, "CHUNK_CANDLES", 100)
    c = decimal_candles(450)
    series = make_series(candles=c.slice(0, 430))
    chunks = list(CandleChunk.objects.filter(series=series).order_by("start_ts"))
    assert [ch.count for ch in chunks] == [100, 100, 100, 100, 30]
    untouched = {ch.pk: bytes(ch.data) for ch in chunks[:4]}
    report = store.write_candles_report(series=series, candles=c.slice(429, 450))
    assert report.chunks_deleted == 1  # only the partial last chunk
    after = list(CandleChunk.objects.filter(series=series).order_by("start_ts"))
    assert [ch.count for ch in after] == [100, 100, 100, 100, 50]
    for ch in after[:4]:
        assert untouched[ch.pk] == bytes(ch.data)
    _assert_same_candles(store.load_candles(series), c)


def test_data_hash_changes_with_the_data_and_not_for_an_identical_rewrite():
    c = decimal_candles(200)
    series = make_series(candles=c.slice(0, 150))
    h1 = series.data_hash
    assert h1
    report = store.write_candles_report(series=series, candles=c.slice(100, 150))
    assert report.changed is False
    series.refresh_from_db()
    assert series.data_hash == h1
    store.write_candles(series=series, candles=c.slice(150, 200))
    series.refresh_from_db()
    assert series.data_hash != h1
    assert series.count == 200


def test_extra_columns_are_stored_listed_in_the_catalog_and_nan_where_a_write_lacked_them():
    base = decimal_candles(20)
    funding = np.round(np.linspace(-0.001, 0.001, 10), 6)
    later = decimal_candles(10, start_ms=START_MS + 20 * HOUR, seed=9, extra={"funding": funding})
    series = make_series(candles=base)
    store.write_candles(series=series, candles=later)
    series.refresh_from_db()
    assert series.extra_columns == ["funding"]
    loaded = store.load_candles(series)
    assert np.isnan(loaded.extra["funding"][:20]).all()
    assert _same_bits(loaded.extra["funding"][20:], funding)


def test_a_write_that_would_break_the_candle_rules_changes_nothing():
    c = decimal_candles(10)
    series = make_series(candles=c)
    h = series.data_hash
    bad = Candles.__new__(Candles)  # bypass validation: the store must still check the merge
    for name, value in (
        ("timestamp", np.array([START_MS + 20 * HOUR], dtype=np.int64)),
        ("open", np.array([10.0])),
        ("high", np.array([5.0])),  # below open
        ("low", np.array([4.0])),
        ("close", np.array([6.0])),
        ("volume", np.array([1.0])),
        ("extra", {}),
        ("symbol", ""),
        ("timeframe", "1h"),
    ):
        object.__setattr__(bad, name, value)
    with pytest.raises(CandleError, match="high"):
        store.write_candles(series=series, candles=bad)
    series.refresh_from_db()
    assert (series.count, series.data_hash) == (10, h)
    assert len(store.load_candles(series)) == 10


def test_postgres_keeps_chunk_bytes_out_of_line_without_compressing_them_again():
    with connection.cursor() as cur:
        cur.execute(
            "SELECT attstorage FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'data'",
            [CandleChunk._meta.db_table],
        )
        assert cur.fetchone()[0] == "e"  # EXTERNAL


def test_load_timestamps_matches_the_full_load():
    c = decimal_candles(300)
    series = make_series(candles=c)
    ts = store.load_timestamps(series, start_ts=int(c.timestamp[5]), end_ts=int(c.timestamp[25]))
    assert np.array_equal(ts, c.timestamp[5:25])


def test_deleting_a_series_removes_its_chunks():
    series = make_series(candles=decimal_candles(10))
    pk = series.pk
    series.delete()
    assert not CandleChunk.objects.filter(series_id=pk).exists()
    assert not MarketSeries.objects.filter(pk=pk).exists()
