"""The live candle feed: a bot on an exchange-downloaded series gets its candles from the
exchange (the loopback fake Binance's klines, through the candle client) into the store as
they close, then decides on exactly the newly closed ones."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from backtester.marketdata.store import load_candles
from backtester.models import LiveBot, MarketSeries
from backtester.services.live_bots import bot_create, bot_step
from backtester.services.live_feed import bots_by_series, fed_series, series_feed
from backtester.services.marketdata import candles_fetch
from risk.models import RiskProfile
from tests.backtester.backtest_factories import make_strategy, make_user
from tests.bots.helpers import (
    Clock,
    ReplayPrices,
    demo_candles,
    engine_settings,
    paper_account,
    paper_adapter,
    store_series,
)
from tests.fakes.binance import DEFAULT_NOW_MS, FakeBinance

pytestmark = pytest.mark.django_db
HOUR = 3_600_000


@pytest.fixture
def fake(monkeypatch):
    server = FakeBinance()
    server.serve()
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": server.base_url}))
    try:
        yield server
    finally:
        server.release.set()
        server.stop()


def test_the_feed_stores_newly_closed_candles_and_the_bot_acts_on_them(fake):
    fake.now_ms = DEFAULT_NOW_MS
    start = DEFAULT_NOW_MS - 120 * HOUR
    series = candles_fetch(
        exchange="binance", symbol="BTC/USDT", timeframe="1h", since_ts=start
    ).series
    assert fed_series(series)
    forming_ts = int(series.last_ts)
    assert forming_ts == DEFAULT_NOW_MS // HOUR * HOUR  # stored while still forming
    user = make_user(pro=True)
    RiskProfile.objects.create(owner=user, max_orders_per_minute=0)
    account = paper_account(user)
    bot = bot_create(
        user=user, account=account, series=series, strategy=make_strategy(user, "sma_cross"),
        settings=engine_settings(), param_values={"fast": 5, "slow": 20},
        start_ts=start, data_start_ts=start,
    )  # fmt: skip
    prices, clock = ReplayPrices(Decimal(60000)), Clock(DEFAULT_NOW_MS)
    adapter = paper_adapter(account, prices, clock)
    bot_step(bot_id=bot.pk, now_ms=DEFAULT_NOW_MS, adapter=adapter)
    bot.refresh_from_db()
    assert bot.cursor_ts == forming_ts - HOUR  # the forming candle is not acted on

    fake.now_ms = DEFAULT_NOW_MS + 3 * HOUR  # three more hours on the exchange
    assert bots_by_series() == {series.pk: [bot.pk]}
    added = series_feed(series_id=series.pk)
    assert added == 3
    stored = load_candles(MarketSeries.objects.get(pk=series.pk))
    # The candle that was forming is now stored with its final values, as the exchange has it.
    i = int(stored.timestamp.searchsorted(forming_ts))
    final = fake.candle("BTCUSDT", "1h", forming_ts)
    assert float(stored.close[i]) == pytest.approx(float(final[4]))
    assert int(stored.timestamp[-1]) == forming_ts + 3 * HOUR
    assert bot_step(bot_id=bot.pk, now_ms=fake.now_ms, adapter=adapter) == 3
    bot.refresh_from_db()
    assert bot.cursor_ts == forming_ts + 2 * HOUR
    assert series_feed(series_id=series.pk) == 0  # nothing new on the exchange


def test_series_without_an_exchange_are_not_fed(fake):
    demo = store_series(demo_candles(days=2))
    assert not fed_series(demo)
    assert series_feed(series_id=demo.pk) == 0
    assert fake.klines_requests() == []
    assert LiveBot.objects.count() == 0
