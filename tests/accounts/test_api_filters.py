"""Filters and pages of the API lists: each filter narrows to exactly the matching objects of
the caller, and page sizes are the caller's to choose within a bound."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backtester.models import Backtest
from tests.accounts.api_support import bearer, key_for, make_user
from tests.backtester.backtest_factories import make_series, make_strategy

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner():
    return make_user()


@pytest.fixture
def api(owner):
    return bearer(key_for(owner))


def _submit(api, strategy, series, django_capture_on_commit_callbacks) -> int:
    with django_capture_on_commit_callbacks(execute=False):  # queued; no worker runs it
        response = api.post(
            "/api/v1/backtests/",
            {
                "strategy": strategy.pk,
                "series": [s.pk for s in series],
                "start": "2024-01-03",
                "end": "2024-01-20",
            },
            content_type="application/json",
        )
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def _ids(api, url: str) -> set[int]:
    response = api.get(url)
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


def test_backtests_filter_by_status_strategy_symbol_timeframe_and_creation_date(
    api, owner, django_capture_on_commit_callbacks
):
    btc = make_series(symbol="BTC/USDT", n=800)
    eth = make_series(symbol="ETH/USDT", n=800, seed=2)
    btc4h = make_series(symbol="BTC/USDT", timeframe="4h", n=300, seed=3)
    sma, rsi = make_strategy(owner), make_strategy(owner, "rsi_reversion")
    a = _submit(api, sma, [btc], django_capture_on_commit_callbacks)
    b = _submit(api, rsi, [eth], django_capture_on_commit_callbacks)
    c = _submit(api, sma, [btc4h], django_capture_on_commit_callbacks)
    d = _submit(api, rsi, [eth, btc], django_capture_on_commit_callbacks)
    Backtest.objects.filter(pk=a).update(
        status=Backtest.Status.FAILED, created_at=datetime(2024, 5, 1, 12, tzinfo=UTC)
    )
    Backtest.objects.filter(pk=b).update(created_at=datetime(2024, 5, 2, 9, tzinfo=UTC))
    Backtest.objects.filter(pk=c).update(
        status=Backtest.Status.CANCELLED, created_at=datetime(2024, 5, 3, 0, tzinfo=UTC)
    )
    other = make_user()  # someone else's backtest never shows
    _submit(bearer(key_for(other)), make_strategy(other), [btc], django_capture_on_commit_callbacks)

    url = "/api/v1/backtests/"
    assert _ids(api, url) == {a, b, c, d}
    assert _ids(api, url + "?status=queued") == {b, d}
    assert _ids(api, url + "?status=failed,cancelled") == {a, c}
    assert _ids(api, url + f"?strategy={sma.pk}") == {a, c}
    assert _ids(api, url + "?symbol=btc/usdt") == {a, c, d}
    assert _ids(api, url + "?symbol=BTC/USDT&timeframe=4h") == {c}
    assert _ids(api, url + "?created_after=2024-05-02") == {b, c, d}
    assert _ids(api, url + "?created_before=2024-05-02") == {a, b}  # the whole day
    assert _ids(api, url + "?created_after=2024-05-01T13:00:00Z&created_before=2024-05-03") == {
        b,
        c,
    }
    assert _ids(api, url + "?symbol=DOGE/USDT") == set()


def test_series_filter_by_market_source_and_ownership(api, owner):
    shared = make_series(symbol="BTC/USDT", exchange="binance", n=300)
    mine = make_series(symbol="SOL/USDT", owner=owner, n=300, seed=5)
    theirs = make_series(symbol="SOL/USDT", owner=make_user(), n=300, seed=6)
    url = "/api/v1/market-data/series/"
    listed = _ids(api, url)
    assert {shared.pk, mine.pk} <= listed
    assert theirs.pk not in listed
    assert _ids(api, url + "?symbol=sol/usdt") == {mine.pk}
    assert _ids(api, url + "?exchange=BINANCE") == {shared.pk}
    assert _ids(api, url + "?source=upload") == {mine.pk}
    assert _ids(api, url + "?mine=true") == {mine.pk}
    assert mine.pk not in _ids(api, url + "?mine=false")


def test_strategies_filter_by_name_and_preset(api, owner):
    sma = make_strategy(owner)
    rsi = make_strategy(owner, "rsi_reversion")
    url = "/api/v1/strategies/"
    assert _ids(api, url + "?preset=rsi_reversion") == {rsi.pk}
    assert _ids(api, url + f"?q={sma.name[:5].lower()}") >= {sma.pk}
    assert _ids(api, url + "?q=no-such-words") == set()


def test_lists_page_with_a_bounded_page_size(api, owner):
    for preset in ("sma_cross", "rsi_reversion", "bollinger_reversion"):
        make_strategy(owner, preset)
    first = api.get("/api/v1/strategies/?page_size=2").json()
    assert first["count"] == 3
    assert len(first["results"]) == 2
    assert first["next"]
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1
    ids = {r["id"] for r in first["results"]} | {r["id"] for r in second["results"]}
    assert len(ids) == 3
    capped = api.get("/api/v1/strategies/?page_size=100000").json()
    assert len(capped["results"]) == 3  # bounded, not refused
