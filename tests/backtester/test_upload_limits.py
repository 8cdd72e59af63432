"""Decompression bombs and impossible dates in uploads (issue 10, item 3): rows are capped by the
plan, decompressed size by a setting, and timestamps must lie between 2009 and now. The readers
stop as soon as a limit is passed; nothing is stored."""

from __future__ import annotations

import io
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import Plan, User
from backtester.engine.errors import CandleError
from backtester.engine.readers import (
    EARLIEST_CANDLE_MS,
    ReadLimits,
    read_csv,
    read_json,
    read_parquet,
)
from backtester.models import CandleChunk, MarketSeries
from backtester.services.marketdata import series_upload, upload_job_execute
from config.exceptions import ApplicationError
from tests.accounts.api_support import bearer, key_for
from tests.backtester.marketdata_fixtures import make_user

pytestmark = pytest.mark.django_db

HOUR = 3_600_000
MINUTE = 60_000
START_2020 = 1_577_836_800_000


def _table(n: int, *, start: int = START_2020) -> pa.Table:
    ts = start + MINUTE * np.arange(n, dtype=np.int64)
    price = np.full(n, 100.0)
    return pa.table(
        {
            "timestamp": ts,
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": np.ones(n),
        }
    )


def _bomb(n: int) -> bytes:
    """A small Parquet file (zstd, dictionary and delta encoding) that decodes to ``n`` candles."""
    out = io.BytesIO()
    pq.write_table(
        _table(n),
        out,
        compression="zstd",
        use_dictionary=["open", "high", "low", "close", "volume"],
        column_encoding={"timestamp": "DELTA_BINARY_PACKED"},
    )
    return out.getvalue()


def _csv(timestamps: list[int]) -> bytes:
    rows = [f"{t},100,101,99,100,1" for t in timestamps]
    return ("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n").encode()


def _nothing_stored() -> bool:
    return not MarketSeries.objects.filter(source=MarketSeries.Source.UPLOAD).exists() and (
        not CandleChunk.objects.exists()
    )


def test_a_parquet_bomb_is_refused_by_the_plans_row_cap(settings):
    user = make_user()
    Plan.objects.filter(code=Plan.PRO).update(max_candles_per_backtest=50_000)
    user = User.objects.get(pk=user.pk)
    data = _bomb(400_000)
    assert len(data) < 50_000  # 12 kB on the wire, 19 MB decoded
    with pytest.raises(ApplicationError) as exc:
        series_upload(owner=user, file=data, filename="bomb.parquet", symbol="BTC/USDT")
    assert exc.value.field == "file"
    assert "50,000" in exc.value.message
    assert _nothing_stored()


def test_a_parquet_bomb_is_refused_by_the_decompressed_size_cap(settings):
    settings.UPLOAD_MAX_DECOMPRESSED_BYTES = 2 * 1024 * 1024
    user = make_user()
    with pytest.raises(ApplicationError) as exc:
        series_upload(owner=user, file=_bomb(200_000), filename="bomb.parquet", symbol="BTC/USDT")
    assert "decompress" in exc.value.message
    assert "2 MB" in exc.value.message
    assert _nothing_stored()


def test_the_parquet_reader_stops_reading_at_the_row_cap():
    limits = ReadLimits(max_rows=1_000)
    started = time.perf_counter()
    with pytest.raises(CandleError, match="more than 1,000 rows"):
        read_parquet(_bomb(2_000_000), limits=limits)
    # Reading everything first would take far longer than stopping at the first batches; the
    # bound is loose so a slow machine passes, a full read does not.
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize(
    ("reader", "make"),
    [
        (read_csv, _csv),
        (read_json, lambda ts: str([[t, 100, 101, 99, 100, 1] for t in ts]).encode()),
    ],
)
def test_text_readers_honour_the_row_cap(reader, make):
    data = make([START_2020 + HOUR * i for i in range(11)])
    with pytest.raises(CandleError, match="more than 10 rows"):
        reader(data, limits=ReadLimits(max_rows=10))
    assert len(reader(data, limits=ReadLimits(max_rows=11))) == 11


def test_candles_before_2009_are_refused_naming_the_line():
    user = make_user()
    early = 1_104_537_600_000  # 2005-01-01
    data = _csv([early, early + HOUR, START_2020])
    with pytest.raises(ApplicationError) as exc:
        series_upload(owner=user, file=data, filename="old.csv", symbol="BTC/USDT")
    assert "line 2" in exc.value.message
    assert "2009" in exc.value.message
    assert _nothing_stored()


def test_candles_in_the_future_are_refused():
    user = make_user()
    future = int(time.time() * 1000) + 400 * 24 * HOUR
    data = _csv([future, future + HOUR])
    with pytest.raises(ApplicationError) as exc:
        series_upload(owner=user, file=data, filename="future.csv", symbol="BTC/USDT")
    assert "line 2" in exc.value.message
    assert "future" in exc.value.message
    assert _nothing_stored()


def test_dates_at_the_edges_are_accepted():
    user = make_user()
    data = _csv([EARLIEST_CANDLE_MS, EARLIEST_CANDLE_MS + HOUR])
    series = series_upload(owner=user, file=data, filename="edge.csv", symbol="BTC/USDT")
    assert series.count == 2


def test_the_api_refuses_a_bomb_in_the_background_and_stores_nothing():
    user = make_user()
    Plan.objects.filter(code=Plan.PRO).update(max_candles_per_backtest=50_000)
    api = bearer(key_for(user))
    response = api.post(
        "/api/v1/market-data/series/upload/",
        {
            "file": SimpleUploadedFile("bomb.parquet", _bomb(400_000)),
            "symbol": "BTC/USDT",
            "timeframe": "1h",
        },
    )
    assert response.status_code == 202
    upload_job_execute(job_id=response.json()["id"])  # what the worker does
    state = api.get(f"/api/v1/market-data/upload-jobs/{response.json()['id']}/").json()
    assert state["status"] == "failed"
    assert "more than 50,000 rows" in state["error"]
    assert _nothing_stored()
