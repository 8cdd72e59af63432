"""Prices at or below zero and values near the float maximum are refused on every way in:
an upload names the file's line, a download names the exchange and the candle's time. The
check itself is the engine's candle validation (tests/engine/test_candles.py)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from backtester.models import CandleChunk, MarketSeries
from backtester.services.marketdata import candles_fetch, series_upload
from config.exceptions import ApplicationError
from exchanges.clients import make_client
from tests.backtester.marketdata_fixtures import HOUR, decimal_candles, make_user
from tests.fakes.binance import FakeBinance

pytestmark = pytest.mark.django_db

JAN_1 = 1_704_067_200_000  # 2024-01-01T00:00Z


def _csv_with(row: int, **values: float) -> bytes:
    c = decimal_candles(12)
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
    for column, value in values.items():
        frame.loc[row, column] = value
    return frame.to_csv(index=False).encode()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"low": 0.0}, "line 5: low 0.0 is not positive (prices must be above 0)"),
        (
            {"open": -1.0, "low": -2.0, "close": -1.5},
            "line 5: open -1.0 is not positive (prices must be above 0)",
        ),
        (
            {"high": 1.7e308, "close": 1.7e308},
            "line 5: high 1.7e+308 is above the largest price the engine accepts (1e+15)",
        ),
    ],
)
def test_an_upload_with_an_impossible_price_is_refused_and_nothing_is_stored(
    values: dict[str, float], message: str
) -> None:
    with pytest.raises(ApplicationError) as err:
        series_upload(
            owner=make_user(),
            file=io.BytesIO(_csv_with(3, **values)),
            filename="btc.csv",
            symbol="BTC/USDT",
        )
    assert err.value.field == "file"
    assert err.value.message == f"btc.csv: {message}"
    assert not MarketSeries.objects.exists()
    assert not CandleChunk.objects.exists()


@dataclass
class ZeroLowBinance(FakeBinance):
    """The loopback fake with one broken kline: a low of 0 at ``broken_ms``."""

    broken_ms: int = JAN_1 + 5 * HOUR

    def candle(self, symbol_id: str, interval: str, open_ms: int) -> list[Any]:
        row = super().candle(symbol_id, interval, open_ms)
        if open_ms == self.broken_ms:
            row[3] = "0.00"
        return row


@pytest.fixture
def zero_low_fake() -> Iterator[ZeroLowBinance]:
    server = ZeroLowBinance()
    server.serve()
    try:
        yield server
    finally:
        server.release.set()
        server.stop()


def test_a_download_with_a_zero_price_names_the_exchange_and_the_candle(
    zero_low_fake: ZeroLowBinance,
) -> None:
    client = make_client("binance", url_overrides=zero_low_fake.base_url, sleep=lambda s: None)
    with pytest.raises(ApplicationError) as err:
        candles_fetch(
            exchange="binance",
            symbol="BTC/USDT",
            timeframe="1h",
            since_ts=JAN_1,
            until_ts=JAN_1 + 24 * HOUR,
            client=client,
        )
    assert err.value.message == (
        "Binance sent an invalid candle at 2024-01-01T05:00:00.000 UTC: low 0.0 is not "
        "positive (prices must be above 0)"
    )
    assert not CandleChunk.objects.exists()
