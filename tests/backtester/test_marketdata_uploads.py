"""Uploading candle files: the formats, validation with the line and the reason, content
sniffing, size limit, timeframe inference, all-or-nothing."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from backtester.marketdata import store
from backtester.models import CandleChunk, MarketSeries
from backtester.services import marketdata as service
from backtester.services.marketdata import series_upload
from config.exceptions import ApplicationError, PlanRequired
from tests.backtester.marketdata_fixtures import decimal_candles, make_user

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _csv(n: int = 48, *, timeframe: str = "1h") -> bytes:
    c = decimal_candles(n, timeframe=timeframe)
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(c.timestamp, unit="ms", utc=True).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "open": c.open,
            "high": c.high,
            "low": c.low,
            "close": c.close,
            "volume": c.volume,
        }
    )
    return frame.to_csv(index=False).encode()


def _upload(user, data: bytes, filename: str = "btc.csv", **kw):
    kw.setdefault("symbol", "BTC/USDT")
    return series_upload(owner=user, file=io.BytesIO(data), filename=filename, **kw)


def _nothing_stored() -> bool:
    return not MarketSeries.objects.exists() and not CandleChunk.objects.exists()


def test_a_csv_upload_becomes_the_owners_series_with_the_timeframe_inferred():
    user = make_user()
    series = _upload(user, _csv(48))
    assert series.owner_id == user.pk
    assert series.source == MarketSeries.Source.UPLOAD
    assert (series.exchange, series.symbol, series.timeframe) == ("upload", "BTC/USDT", "1h")
    assert series.count == 48
    want = decimal_candles(48)
    got = store.load_candles(series)
    assert np.array_equal(got.close, want.close)
    assert np.array_equal(got.timestamp, want.timestamp)


def test_a_bad_row_is_refused_with_its_line_and_reason_and_nothing_is_stored():
    lines = _csv(10).decode().splitlines()
    cells = lines[5].split(",")
    cells[2] = "1.00"  # high far below open and close
    lines[5] = ",".join(cells)
    with pytest.raises(ApplicationError) as err:
        _upload(make_user(), "\n".join(lines).encode())
    assert err.value.field == "file"
    assert err.value.message.startswith("btc.csv: line 6: high 1.0 is below")
    assert _nothing_stored()


def test_a_non_number_is_refused_with_its_line():
    lines = _csv(5).decode().splitlines()
    cells = lines[3].split(",")
    cells[4] = "abc"
    lines[3] = ",".join(cells)
    with pytest.raises(ApplicationError, match=r"line 4: close 'abc' is not a number"):
        _upload(make_user(), "\n".join(lines).encode())
    assert _nothing_stored()


def test_a_png_named_csv_is_refused_for_what_it_really_is():
    with pytest.raises(ApplicationError) as err:
        _upload(make_user(), PNG, filename="prices.csv")
    assert err.value.message == (
        "prices.csv: the file is a PNG image, not a CSV, Parquet or JSON file of candles"
    )
    assert err.value.field == "file"
    assert _nothing_stored()


def test_a_csv_named_parquet_is_refused_with_a_clear_message():
    with pytest.raises(ApplicationError) as err:
        _upload(make_user(), _csv(5), filename="prices.parquet")
    assert err.value.message == (
        "prices.parquet: the name says Parquet but the content is CSV text; rename it to .csv "
        "or upload the right file"
    )
    assert _nothing_stored()


def test_an_extension_that_is_not_a_candle_format_is_refused():
    with pytest.raises(ApplicationError, match=r"files ending in \.xlsx are not accepted"):
        _upload(make_user(), _csv(5), filename="prices.xlsx")


def test_parquet_and_json_uploads_are_read_by_the_engine_readers():
    user = make_user()
    c = decimal_candles(24)
    frame = pd.DataFrame(
        {
            "timestamp": c.timestamp,
            "open": c.open,
            "high": c.high,
            "low": c.low,
            "close": c.close,
            "volume": c.volume,
        }
    )
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    parquet = _upload(user, buf.getvalue(), filename="eth.parquet", symbol="ETH/USDT")
    assert (parquet.count, parquet.timeframe) == (24, "1h")
    klines = [
        [int(t), f"{o:.2f}", f"{h:.2f}", f"{lo:.2f}", f"{cl:.2f}", f"{v:.5f}", int(t) + 59_999]
        for t, o, h, lo, cl, v in zip(
            c.timestamp, c.open, c.high, c.low, c.close, c.volume, strict=True
        )
    ]
    as_json = _upload(
        user, json.dumps(klines).encode(), filename="sol.json", symbol="SOL/USDT", timeframe="1h"
    )
    assert as_json.count == 24
    assert np.array_equal(store.load_candles(as_json).close, c.close)


def test_a_file_over_the_size_limit_is_refused(monkeypatch):
    monkeypatch.setattr(service, "MAX_UPLOAD_BYTES", 1024)
    with pytest.raises(ApplicationError, match="larger than"):
        _upload(make_user(), _csv(200))
    assert _nothing_stored()


def test_a_timeframe_that_contradicts_the_spacing_is_refused_on_its_field():
    with pytest.raises(ApplicationError) as err:
        _upload(make_user(), _csv(20), timeframe="1m")
    assert err.value.field == "timeframe"
    assert "The candles are 1h apart, not 1m" in err.value.message
    assert _nothing_stored()


def test_daily_candles_are_recognised_as_1d():
    series = _upload(make_user(), _csv(30, timeframe="1d"))
    assert series.timeframe == "1d"


def test_uploading_again_merges_and_a_row_at_a_stored_time_replaces_it():
    user = make_user()
    _upload(user, _csv(10))
    lines = _csv(10).decode().splitlines()
    cells = lines[-1].split(",")
    cells[5] = "999.0"  # volume of the last candle corrected
    extra = decimal_candles(12).slice(10, 12)
    more = [
        f"{pd.Timestamp(int(t), unit='ms', tz='UTC'):%Y-%m-%dT%H:%M:%SZ},{o},{h},{lo},{cl},{v}"
        for t, o, h, lo, cl, v in zip(
            extra.timestamp, extra.open, extra.high, extra.low, extra.close, extra.volume,
            strict=True,
        )
    ]  # fmt: skip
    body = "\n".join([lines[0], ",".join(cells), *more]).encode()
    series = _upload(user, body)
    assert series.count == 12
    assert MarketSeries.objects.filter(owner=user).count() == 1
    assert store.load_candles(series).volume[9] == 999.0


def test_free_users_cannot_upload():
    with pytest.raises(PlanRequired):
        _upload(make_user(pro=False), _csv(5))
    assert _nothing_stored()


def test_empty_and_symbol_less_uploads_are_refused_on_their_fields():
    user = make_user()
    with pytest.raises(ApplicationError) as err:
        _upload(user, b"   \n")
    assert err.value.field == "file"
    with pytest.raises(ApplicationError) as err:
        _upload(user, _csv(5), symbol="  ")
    assert err.value.field == "symbol"
    assert _nothing_stored()
