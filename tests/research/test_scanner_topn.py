"""The scanner against a Binance-compatible fake on loopback: ranking the top N symbols by
quote volume, and scanning exchange symbols whose candles are fetched into the store."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from backtester.engine.scanner import BandSettings, scan
from backtester.models import Alert, MarketSeries, ScanRun
from backtester.services.scan_watchlists import watchlist_create
from config.exceptions import ApplicationError
from exchanges.clients import MAX_TOP_SYMBOLS, fetch_top_symbols
from tests.conftest import clear_run_cache
from tests.fakes.binance import DEFAULT_NOW_MS, FakeBinance
from tests.research.scanner_support import make_user, run_scan_now

DAY_MS = 86_400_000
EXTRA = [("BNBUSDC", "BNB", "USDC", 300, 2, 3), ("USDCUSDT", "USDC", "USDT", 1, 4, 2)]
VOLUMES = {
    "SOLUSDT": 9e9,
    "ETHUSDT": 5e9,
    "BTCUSDT": 1e9,
    "BNBUSDC": 50e9,  # largest, but quoted in USDC
    "USDCUSDT": 90e9,  # a stablecoin against a stablecoin: never ranked
}


@pytest.fixture
def fake(monkeypatch) -> Iterator[FakeBinance]:
    server = FakeBinance(extra_symbols=list(EXTRA), quote_volumes=dict(VOLUMES))
    server.serve()
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": server.base_url}))
    try:
        yield server
    finally:
        server.release.set()
        server.stop()


def test_top_symbols_are_ranked_by_quote_volume_in_the_chosen_quote(fake):
    assert fetch_top_symbols("binance", 2) == [("SOL/USDT", 9e9), ("ETH/USDT", 5e9)]
    assert fetch_top_symbols("binance", 10) == [
        ("SOL/USDT", 9e9),
        ("ETH/USDT", 5e9),
        ("BTC/USDT", 1e9),
    ]
    assert fetch_top_symbols("binance", 10, quote="usdc") == [("BNB/USDC", 50e9)]
    assert fetch_top_symbols("binance", 5, quote="EUR") == []


def test_ranking_asks_for_the_markets_and_all_tickers_in_one_request_each(fake):
    fetch_top_symbols("binance", 3)
    paths = [r.path for r in fake.requests]
    assert paths == ["/api/v3/exchangeInfo", "/api/v3/ticker/24hr"]
    assert fake.requests[1].params == {}  # every symbol at once, not one call per symbol


def test_equal_volumes_rank_by_symbol(fake):
    fake.quote_volumes.update({"SOLUSDT": 7e9, "ETHUSDT": 7e9, "BTCUSDT": 7e9})
    assert [s for s, _ in fetch_top_symbols("binance", 3)] == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n": 0}, "n"), ({"n": MAX_TOP_SYMBOLS + 1}, "n"), ({"n": True}, "n"),
     ({"n": 5, "quote": "US DT"}, "quote"), ({"n": 5, "quote": ""}, "quote")],
)  # fmt: skip
def test_top_symbols_refuse_bad_arguments_before_asking_the_exchange(fake, kwargs, field):
    with pytest.raises(ApplicationError) as info:
        fetch_top_symbols("binance", **kwargs)
    assert info.value.field == field
    assert fake.requests == []


# --- exchange watchlists -----------------------------------------------------------------------


@pytest.mark.django_db
def test_an_exchange_watchlist_checks_its_symbols_and_timeframe_with_the_exchange(fake):
    clear_run_cache()
    user = make_user()
    with pytest.raises(ApplicationError, match="Binance has no market DOGE/USDT") as info:
        watchlist_create(
            user=user, name="x", exchange="binance", timeframe="1d", symbols=["DOGE/USDT"]
        )
    assert info.value.field == "symbols"
    with pytest.raises(ApplicationError, match="has no 2w candles") as info:
        watchlist_create(
            user=user, name="x", exchange="binance", timeframe="2w", symbols="BTC/USDT"
        )
    assert info.value.field == "timeframe"
    ok = watchlist_create(
        user=user, name="x", exchange="binance", timeframe="1d", symbols="btc/usdt sol/usdt"
    )
    assert ok.symbols == ["BTC/USDT", "SOL/USDT"]


def _fake_closes(fake: FakeBinance, symbol_id: str) -> tuple[np.ndarray, list[int]]:
    """The closed daily candles' closes as the fake defines them (the oracle), oldest first."""
    times = [t for t in fake.history("1d") if t + DAY_MS <= fake.now_ms]
    closes = np.array([float(fake.candle(symbol_id, "1d", t)[4]) for t in times])
    return closes, times


@pytest.mark.django_db(transaction=True)
def test_a_top_n_scan_fetches_candles_into_the_store_and_signals_on_the_last_closed_one(fake):
    user = make_user()
    watchlist = watchlist_create(
        user=user,
        name="Top 2",
        exchange="binance",
        timeframe="1d",
        universe="top",
        top_n=2,
        quote="USDT",
        lookback=60,
        degree=2,
        k=1.0,
    )
    run = run_scan_now(watchlist)
    assert run.status == ScanRun.Status.COMPLETED, run.error
    assert run.symbols_total == 2
    assert run.as_of_ts == DEFAULT_NOW_MS
    alerts = {a.symbol: a for a in Alert.objects.filter(scan=run)}
    assert set(alerts) == {"SOL/USDT", "ETH/USDT"}
    for symbol, symbol_id in (("SOL/USDT", "SOLUSDT"), ("ETH/USDT", "ETHUSDT")):
        series = MarketSeries.objects.get(
            owner=None, exchange="binance", symbol=symbol, timeframe="1d"
        )
        # Every candle the fake has (the one still forming included) is in the store ...
        assert series.count == len(fake.history("1d"))
        closes, times = _fake_closes(fake, symbol_id)
        # ... but the scan used only closed candles.
        alert = alerts[symbol]
        assert alert.candle_ts == times[-1] == DEFAULT_NOW_MS - DAY_MS
        assert alert.series_id == series.pk
        assert alert.bars == len(times)  # the closed candles stored
        expected = scan({symbol: closes}, BandSettings(lookback=60, degree=2, k=1.0)).outcome(0)
        assert alert.signal == expected.signal
        assert alert.price == expected.price == closes[-1]
        assert alert.lower == pytest.approx(expected.lower, rel=1e-12)
        assert alert.upper == pytest.approx(expected.upper, rel=1e-12)
        assert alert.zscore == pytest.approx(expected.zscore, rel=1e-12)


@pytest.mark.django_db(transaction=True)
def test_the_next_scan_only_fetches_the_newest_candles(fake):
    user = make_user()
    watchlist = watchlist_create(
        user=user, name="Majors", exchange="binance", timeframe="1d",
        symbols=["BTC/USDT", "ETH/USDT"], lookback=30, degree=1, k=2.0,
    )  # fmt: skip
    run_scan_now(watchlist)
    fake.reset_log()
    fake.now_ms += DAY_MS  # a day later
    second = run_scan_now(watchlist)
    assert second.status == ScanRun.Status.COMPLETED
    klines = fake.klines_requests()
    assert len(klines) == 2  # one page per symbol, starting at the last stored candle
    assert all(int(r.params["startTime"]) == DEFAULT_NOW_MS for r in klines)
    assert set(Alert.objects.filter(scan=second).values_list("candle_ts", flat=True)) == {
        DEFAULT_NOW_MS
    }


@pytest.mark.django_db(transaction=True)
def test_symbols_without_recent_candles_are_hold_as_stale(fake):
    fake.gaps = [(DEFAULT_NOW_MS - 5 * DAY_MS, DEFAULT_NOW_MS + DAY_MS)]
    user = make_user()
    watchlist = watchlist_create(
        user=user, name="Gappy", exchange="binance", timeframe="1d", symbols=["SOL/USDT"],
        lookback=30, degree=1, k=2.0,
    )  # fmt: skip
    alert = Alert.objects.get(scan=run_scan_now(watchlist))
    assert alert.signal == "HOLD"
    assert alert.reason.startswith("Stale data: the newest closed candle is from 2024-02-24")
    assert alert.potential_return is None


@pytest.mark.django_db(transaction=True)
def test_a_symbol_the_exchange_refuses_is_hold_with_the_exchanges_reason(fake):
    user = make_user()
    watchlist = watchlist_create(
        user=user, name="Refused", exchange="binance", timeframe="1d",
        symbols=["BTC/USDT", "ETH/USDT"], lookback=30, degree=1, k=2.0,
    )  # fmt: skip
    fake.hard_error_from = 1
    run = run_scan_now(watchlist)
    assert run.status == ScanRun.Status.COMPLETED
    reasons = set(Alert.objects.filter(scan=run).values_list("signal", "reason"))
    assert len(reasons) == 1
    signal, reason = reasons.pop()
    assert signal == "HOLD"
    assert reason.startswith("Could not fetch candles: Binance refused the request")
