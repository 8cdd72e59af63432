"""The /api/v1/ strategies and backtests endpoints: same services, field-level 400s."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from backtester.models import Backtest, BacktestTrade, Strategy
from backtester.services.backtests import backtest_execute
from tests.backtester.backtest_factories import make_series, make_strategy, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return make_user()


@pytest.fixture
def api(user):
    client = Client()
    client.force_login(user)
    return client


def _post(client, url, body):
    return client.post(url, body, content_type="application/json")


def _fields(response):
    return response.json()["error"]["fields"]


# --- strategies -----------------------------------------------------------------------------


def test_create_a_strategy_from_a_preset_or_from_rules(api, user):
    url = reverse("api_strategy_list")
    preset = _post(api, url, {"preset": "bollinger_reversion"})
    assert preset.status_code == 201
    assert preset.json()["entry_long"] == "close < bb_lower(close, period, k)"
    assert preset.json()["param_values"] == {"period": 20, "k": 2.0}
    mine = _post(
        api,
        url,
        {
            "name": "Momentum",
            "entry_long": "rising(close, n)",
            "exit_long": "falling(close, n)",
            "params": [{"name": "n", "kind": "int", "default": 5, "low": 2, "high": 20}],
            "param_values": {"n": 8},
        },
    )
    assert mine.status_code == 201
    assert mine.json()["param_values"] == {"n": 8}
    listed = api.get(url).json()
    assert listed["count"] == 2


def test_a_bad_rule_is_a_400_on_its_field_and_nothing_is_created(api):
    response = _post(
        api,
        reverse("api_strategy_list"),
        {"name": "x", "entry_long": "close > sma(close, 20", "exit_long": ""},
    )
    assert response.status_code == 400
    assert list(_fields(response)) == ["entry_long"]
    assert "column" in _fields(response)["entry_long"][0]
    assert Strategy.objects.count() == 0


def test_patch_put_and_delete_a_strategy(api, user):
    strategy = make_strategy(user)
    url = reverse("api_strategy_detail", kwargs={"pk": strategy.pk})
    patched = api.patch(url, {"param_values": {"fast": 15}}, content_type="application/json")
    assert patched.status_code == 200
    assert patched.json()["param_values"] == {"fast": 15, "slow": 30}
    bad = api.patch(url, {"param_values": {"fast": 500}}, content_type="application/json")
    assert bad.status_code == 400
    assert "param_values" in _fields(bad)
    put = api.put(
        url,
        {"name": "Just RSI", "entry_long": "rsi(close, 14) < 30"},
        content_type="application/json",
    )
    assert put.status_code == 200
    assert put.json()["exit_long"] == ""
    assert put.json()["params"] == []
    assert api.delete(url).status_code == 204
    assert not Strategy.objects.filter(pk=strategy.pk).exists()


# --- backtests ------------------------------------------------------------------------------


@pytest.fixture
def series():
    return make_series(n=2000)


def _body(strategy, market, **kw):
    body = {
        "strategy": strategy.pk,
        "series": [market.pk],
        "start": "2024-01-02",
        "end": "2024-03-20",
        "settings": {"initial_cash": 5000, "taker_fee": 0.001, "stop_loss": 0.02},
        "param_values": {"fast": 12},
    }
    body.update(kw)
    return body


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"start": "2023-12-01"}, "start"),
        ({"end": "2025-01-01"}, "end"),
        ({"start": "2024-02-01", "end": "2024-02-01T00:00:00Z"}, "end"),
        ({"timeframe": "4h"}, "timeframe"),
        ({"settings": {"initial_cash": 0}}, "initial_cash"),
        ({"settings": {"taker_fee": 2}}, "taker_fee"),
        ({"settings": {"bogus": 1}}, "bogus"),
        ({"settings": {"max_leverage": 500}}, "max_leverage"),
        ({"settings": {"stoploss_guard_lock_bars": -1}}, "stoploss_guard_lock_bars"),
        ({"settings": {"weekly_loss_limit": "lots"}}, "weekly_loss_limit"),
        ({"param_values": {"slow": 9999}}, "param_values"),
        ({"series": []}, "series"),
        ({"start": "yesterday"}, "start"),
    ],
)
def test_bad_input_is_a_400_with_the_field_and_nothing_is_created(api, user, series, change, field):
    strategy = make_strategy(user)
    response = _post(api, reverse("api_backtest_list"), _body(strategy, series, **change))
    assert response.status_code == 400, response.json()
    assert field in _fields(response)
    assert Backtest.objects.count() == 0


def test_someone_elses_strategy_or_series_is_refused(api, user, series):
    other = make_user()
    theirs = make_strategy(other)
    assert _post(api, reverse("api_backtest_list"), _body(theirs, series)).status_code == 404
    private = make_series(owner=other, symbol="PRIV/ATE", n=500)
    response = _post(api, reverse("api_backtest_list"), _body(make_strategy(user), private))
    assert response.status_code == 400
    assert "series" in _fields(response)
    assert Backtest.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_submit_follow_and_read_the_result():
    user = make_user()
    api = Client()
    api.force_login(user)
    series = make_series(n=2000)
    strategy = make_strategy(user)
    created = _post(api, reverse("api_backtest_list"), _body(strategy, series))
    assert created.status_code == 202
    body = created.json()
    assert body["status"] == "queued"
    assert body["settings"]["initial_cash"] == 5000.0
    assert body["param_values"] == {"fast": 12, "slow": 30}
    assert body["start"] == "2024-01-02T00:00:00Z"
    assert body["end"] == "2024-03-20T23:59:59.999000Z"
    links = body["links"]
    assert links["websocket"] == f"/ws/runs/backtest/{body['id']}/"
    assert api.get(links["result"]).status_code == 409  # not completed yet

    backtest_execute(backtest_id=body["id"])  # what the worker does
    detail = api.get(links["self"]).json()
    assert detail["status"] == "completed"
    assert detail["progress"] == 1.0
    result = api.get(links["result"]).json()
    assert result["trade_count"] > 0
    assert "sharpe" in result["metrics"]
    assert set(result["links"]["exports"]) == {"trades-csv", "equity-csv", "json", "html"}

    trades = api.get(links["trades"] + "?page_size=5").json()
    assert trades["count"] == result["trade_count"]
    assert len(trades["results"]) == min(5, result["trade_count"])
    assert trades["results"][0]["seq"] == 1
    assert trades["results"][0]["side"] in ("long", "short")
    first = BacktestTrade.objects.get(backtest_id=body["id"], seq=1)
    assert trades["results"][0]["pnl"] == pytest.approx(first.pnl)

    equity = api.get(links["equity"] + "?points=100").json()
    assert equity["bars"] > 1800
    assert equity["points"] == 100
    assert equity["timestamp"] == sorted(equity["timestamp"])
    assert equity["equity"][0] == pytest.approx(5000, rel=0.01)
    assert api.get(links["equity"] + "?points=2").status_code == 400

    again = _post(api, reverse("api_backtest_list"), _body(strategy, series))
    assert again.status_code == 201  # answered from the cache, completed already
    assert again.json()["cached_from"] == body["id"]


def test_cancel_through_the_api(api, user, series, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        created = _post(api, reverse("api_backtest_list"), _body(make_strategy(user), series))
    url = reverse("api_backtest_cancel", kwargs={"pk": created.json()["id"]})
    cancelled = _post(api, url, {})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert _post(api, url, {}).status_code == 409
