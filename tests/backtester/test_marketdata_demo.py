"""The synthetic demo set: deterministic, valid OHLC, fat tails, volatility clustering, the
coarse timeframes agreeing with the minutes, and seeding (also on SQLite, the embedded shape)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backtester.engine.candles import Candles
from backtester.marketdata import demo, store
from backtester.models import MarketSeries
from backtester.services.marketdata import demo_seed
from tests.test_settings_shapes import PROD_ONLY

ROOT = Path(__file__).resolve().parent.parent.parent
SHORT_DAYS = 30


@pytest.fixture(scope="module")
def btc_minutes() -> Candles:
    return demo.generate_minutes(demo.DEMO_ASSETS[0], days=SHORT_DAYS)


def _log_returns(c: Candles) -> np.ndarray:
    r = np.diff(np.log(c.close))
    return r - r.mean()


def test_the_same_seed_gives_the_same_candles_and_another_seed_does_not(btc_minutes):
    again = demo.generate_minutes(demo.DEMO_ASSETS[0], days=SHORT_DAYS)
    for name in ("timestamp", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(again, name), getattr(btc_minutes, name))
    other = demo.generate_minutes(demo.DEMO_ASSETS[0], days=SHORT_DAYS, seed=123)
    assert not np.array_equal(other.close, btc_minutes.close)


def test_every_bar_obeys_the_ohlc_rules_and_sits_on_the_tick_grid(btc_minutes):
    c = btc_minutes
    assert (c.high >= np.maximum(c.open, c.close)).all()
    assert (c.low <= np.minimum(c.open, c.close)).all()
    assert (c.low > 0).all()
    assert (c.volume > 0).all()
    assert np.array_equal(c.open[1:], c.close[:-1])  # a continuous market: open = last close
    cents = np.round(c.close * 100)
    assert np.array_equal(cents / 100, c.close)
    assert np.all(np.diff(c.timestamp) == 60_000)
    assert c.timestamp[-1] == demo.DEMO_END_MS - 60_000


def test_minute_returns_have_fat_tails_kurtosis_well_above_the_normals_three(btc_minutes):
    r = _log_returns(btc_minutes)
    kurtosis = float(np.mean(r**4) / np.mean(r**2) ** 2)
    assert kurtosis > 5.0, kurtosis  # a normal distribution has 3


def test_volatility_clusters_squared_returns_are_positively_autocorrelated(btc_minutes):
    r = _log_returns(btc_minutes)
    # Hourly realised variance: busy hours follow busy hours (GARCH persistence).
    hourly = (r[: len(r) // 60 * 60] ** 2).reshape(-1, 60).sum(axis=1)
    h = hourly - hourly.mean()
    autocorr_hourly = float(np.sum(h[1:] * h[:-1]) / np.sum(h * h))
    s = r**2 - np.mean(r**2)
    autocorr_minute = float(np.sum(s[1:] * s[:-1]) / np.sum(s * s))
    assert autocorr_hourly > 0.2, autocorr_hourly
    assert autocorr_minute > 0.0, autocorr_minute
    # A shuffled copy (same values, no time structure) shows none.
    shuffled = np.random.default_rng(0).permutation(hourly)
    k = shuffled - shuffled.mean()
    assert abs(float(np.sum(k[1:] * k[:-1]) / np.sum(k * k))) < 0.1


def test_volume_rises_with_the_size_of_the_move(btc_minutes):
    r = np.abs(np.diff(np.log(btc_minutes.close)))
    v = btc_minutes.volume[1:]
    big = r > np.quantile(r, 0.9)
    small = r < np.quantile(r, 0.1)
    assert np.median(v[big]) > 1.5 * np.median(v[small])


def test_hourly_and_daily_series_are_the_minutes_resampled():
    series = demo.generate_series(demo.DEMO_ASSETS[2], days=3)
    minutes, hours, days = series["1m"], series["1h"], series["1d"]
    assert len(hours) == 72
    assert len(days) == 3
    assert hours.open[1] == minutes.open[60]
    assert hours.close[1] == minutes.close[119]
    assert hours.high[1] == minutes.high[60:120].max()
    assert days.low[0] == minutes.low[:1440].min()
    assert np.isclose(days.volume[2], minutes.volume[2880:].sum())


@pytest.mark.django_db
def test_demo_seed_stores_nine_synthetic_shared_series_once(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_DAYS", 2)
    first = demo_seed()
    assert (first.series, first.written) == (9, 9)
    rows = MarketSeries.objects.filter(exchange="demo")
    assert rows.count() == 9
    assert all(
        s.owner_id is None and s.synthetic and s.source == MarketSeries.Source.DEMO for s in rows
    )
    assert {(s.symbol, s.timeframe) for s in rows} == {
        (a.symbol, tf) for a in demo.DEMO_ASSETS for tf in demo.DEMO_TIMEFRAMES
    }
    hashes = {s.pk: s.data_hash for s in rows}
    again = demo_seed()
    assert again.written == 0
    assert {s.pk: s.data_hash for s in MarketSeries.objects.filter(exchange="demo")} == hashes
    eth_hour = MarketSeries.objects.get(exchange="demo", symbol="ETH/USDT", timeframe="1h")
    assert eth_hour.count == 48
    expected = demo.generate_series(demo.DEMO_ASSETS[1], days=2)["1h"]
    assert np.array_equal(store.load_candles(eth_hour).close, expected.close)


@pytest.mark.slow
def test_seed_demo_command_stores_the_demo_year_on_sqlite_and_loads_it_back(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in PROD_ONLY}
    env.update(VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("CELERY_TASK_DEFAULT_QUEUE", None)

    def manage(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return out.stdout

    manage("migrate", "--noinput")
    first = manage("seed_demo", "--password", "demo-pass-for-md-test")
    assert "Demo market data: 9 synthetic series" in first
    assert "(9 written now)" in first
    second = manage("seed_demo")
    assert "(0 written now)" in second
    check = (
        "import numpy as np\n"
        "from backtester.models import MarketSeries\n"
        "from backtester.marketdata import demo, store\n"
        "from django.db import connection\n"
        "s = MarketSeries.objects.get(exchange='demo', symbol='BTC/USDT', timeframe='1m')\n"
        "c = store.load_candles(s)\n"
        "g = demo.generate_minutes(demo.DEMO_ASSETS[0])\n"
        "print(connection.vendor, len(c), bool(np.array_equal(c.close, g.close)), "
        "bool(np.array_equal(c.timestamp, g.timestamp)))\n"
    )
    out = manage("shell", "-c", check)
    assert out.strip().splitlines()[-1].split() == [
        "sqlite",
        str(demo.DEMO_DAYS * 1440),
        "True",
        "True",
    ]
