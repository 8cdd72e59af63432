"""The Risk page, the dashboard's data, the API and the live socket, against PostgreSQL,
Redis and the real channel layer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from accounts.services.apikeys import api_key_create
from backtester.engine.candles import Candles
from backtester.marketdata.store import write_candles
from backtester.models import MarketSeries
from config.asgi import application
from exchanges.models import ExchangeAccount
from risk import charts, selectors, services
from risk.models import DeniedOrder, RiskProfile, TradingState
from risk.rules import Proposal
from tests.backtester.backtest_factories import make_user
from tests.conftest import arun
from tests.risk.doubles import AdapterDouble

HOUR = 3_600_000


def form_data(**changes: object) -> dict[str, object]:
    """The Risk form as the page shows it for a new user (percent), with ``changes``."""
    from risk.forms import RiskProfileForm

    form = RiskProfileForm(profile=RiskProfile())
    data = {name: field.initial for name, field in form.fields.items()}
    data.update(changes)
    return {k: ("on" if v is True else v) for k, v in data.items() if v is not False}


@pytest.mark.django_db
def test_saving_the_form_stores_fractions_from_percent():
    user = make_user()
    client = Client()
    client.force_login(user)
    response = client.post("/risk/", form_data(max_heat=5, daily_loss_limit=3))
    assert response.status_code == 302
    p = RiskProfile.objects.get(owner=user, account=None)
    assert (p.max_heat, p.daily_loss_limit, p.risk_per_trade) == (0.05, 0.03, 0.02)


@pytest.mark.django_db
def test_bad_limits_show_field_errors_and_save_nothing():
    user = make_user()
    client = Client()
    client.force_login(user)
    response = client.post(
        "/risk/",
        form_data(risk_per_trade=-1, min_order_notional=100, max_order_notional=50, max_heat=250),
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="risk_per_trade-errors"' in html
    assert "below the minimum" in html
    assert 'id="max_heat-errors"' in html
    assert not RiskProfile.objects.filter(owner=user).exists()


@pytest.mark.django_db
def test_another_users_account_override_page_is_not_found():
    user, other = make_user(), make_user()
    theirs = ExchangeAccount.objects.create(owner=other, kind="paper", exchange="paper", label="x")
    client = Client()
    client.force_login(user)
    assert client.get(f"/risk/accounts/{theirs.pk}/").status_code == 404
    assert client.post(f"/risk/accounts/{theirs.pk}/", form_data()).status_code == 404
    assert not RiskProfile.objects.filter(account=theirs).exists()


@pytest.mark.django_db
def test_kill_switch_needs_the_typed_confirmation():
    user = make_user()
    client = Client()
    client.force_login(user)
    assert client.post("/risk/kill-switch/", {"confirm": "yes"}).status_code == 400
    assert not TradingState.objects.filter(owner=user).exists()
    assert client.post("/risk/kill-switch/", {"confirm": "HALT"}).status_code == 302
    assert TradingState.objects.get(owner=user, account=None).state == "halted"


# --- the dashboard -----------------------------------------------------------------------------


def _series(symbol: str, close: np.ndarray) -> MarketSeries:
    n = close.shape[0]
    ts = 1_704_067_200_000 + np.arange(n, dtype=np.int64) * HOUR
    series = MarketSeries.objects.create(
        exchange="binance", symbol=symbol, timeframe="1h", source=MarketSeries.Source.CCXT
    )
    write_candles(
        series=series,
        candles=Candles(ts, close, close, close, close, np.ones(n), symbol=symbol, timeframe="1h"),
    )
    series.refresh_from_db()
    return series


@pytest.mark.django_db
def test_dashboard_data_exposure_heat_correlation_and_todays_pnl():
    user = make_user()
    acct = ExchangeAccount.objects.create(owner=user, kind="paper", exchange="paper", label="p")
    rng = np.random.default_rng(9)
    btc = 100 * np.cumprod(1 + rng.normal(0, 0.01, 80))
    _series("BTC/USDT", btc)
    _series("ETH/USDT", btc / 10)  # moves with BTC: correlation 1
    ex = AdapterDouble(
        cash=Decimal("5000"),
        prices={"BTC/USDT": Decimal("100"), "ETH/USDT": Decimal("10")},
        held={"BTC/USDT": Decimal("20"), "ETH/USDT": Decimal("-100")},
    )
    now = datetime(2024, 3, 6, 12, tzinfo=UTC)
    services.equity_snapshot_record(
        user=user, account=None, equity=Decimal("7500"), at=now - timedelta(hours=13)
    )
    data = selectors.dashboard_data(user, adapter_for=lambda a: ex, now=now)
    # Equity: 5,000 cash + 20*100 - 100*10 = 6,000. Exposure 2,000/6,000 and 1,000/6,000;
    # no stop is known for exchange positions, so the whole value is the heat.
    assert data["equity"] == pytest.approx(6_000.0)
    by = {r["symbol"]: r for r in data["exposure"]}
    assert by["BTC/USDT"]["exposure"] == pytest.approx(1 / 3)
    assert by["ETH/USDT"]["heat"] == pytest.approx(1 / 6)
    assert data["symbols"] == ["BTC/USDT", "ETH/USDT"]
    assert data["correlation"][0, 1] == pytest.approx(1.0)
    # Today: 6,000 against the day's opening 7,500; the daily limit is 5 % of 7,500 = 375.
    assert data["today_pnl"] == pytest.approx(-1_500.0)
    assert data["daily_limit_money"] == pytest.approx(375.0)
    fig = charts.correlation_figure(data["symbols"], data["correlation"])
    assert fig["data"][0]["z"][0][1] == pytest.approx(1.0)
    assert acct.pk  # the account was read through the double


@pytest.mark.django_db
def test_dashboard_page_lists_state_transitions_and_denials():
    user = make_user()
    acct = ExchangeAccount.objects.create(owner=user, kind="paper", exchange="paper", label="p")
    services.order_check(
        user=user, account=acct, equity=10_000.0, positions=[],
        proposal=Proposal("BTC/USDT", 1, None, qty=1.0), source="manual",
    )  # fmt: skip
    services.trading_state_set(
        user=user, to_state="halted", code="manual", reason="Stopped for the night", actor="t"
    )
    services.equity_snapshot_record(user=user, account=None, equity=Decimal("10000"))
    client = Client()
    client.force_login(user)
    html = client.get("/risk/dashboard/").content.decode()
    assert "Stopped for the night" in html
    assert 'data-code="no_price"' in html
    assert "chart-equity-data" in html


# --- API ---------------------------------------------------------------------------------------


def _api(user) -> Client:
    key = api_key_create(user=user, name="t").key
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.mark.django_db
def test_api_profile_update_names_every_bad_field_and_saves_nothing():
    user = make_user()
    api = _api(user)
    body = {"max_heat": -0.1, "min_order_notional": 10, "max_order_notional": 5}
    r = api.patch("/api/v1/risk/profile/", json.dumps(body), content_type="application/json")
    assert r.status_code == 400
    assert set(r.json()["error"]["fields"]) == {"max_heat", "max_order_notional"}
    assert not RiskProfile.objects.filter(owner=user).exists()
    r = api.patch(
        "/api/v1/risk/profile/", json.dumps({"max_heat": 0.03}), content_type="application/json"
    )
    assert r.status_code == 200
    assert r.json()["max_heat"] == 0.03
    assert r.json()["drawdown_limit"] == 0.2


@pytest.mark.django_db
def test_api_state_reset_and_denials():
    user, other = make_user(), make_user()
    row = services.trading_state_set(
        user=user, to_state="halted", code="drawdown", reason="dd", actor="breaker:drawdown"
    )
    theirs = services.trading_state_set(
        user=other, to_state="halted", code="m", reason="m", actor="t"
    )
    api = _api(user)
    assert api.get("/api/v1/risk/state/").json()["effective"] == "halted"
    assert api.post(f"/api/v1/risk/states/{theirs.pk}/reset/").status_code == 404
    assert TradingState.objects.get(pk=theirs.pk).state == "halted"
    assert api.post(f"/api/v1/risk/states/{row.pk}/reset/").json()["state"] == "active"
    DeniedOrder.objects.create(owner=user, symbol="BTC/USDT", side="buy", code="x", reason="r")
    DeniedOrder.objects.create(owner=other, symbol="ETH/USDT", side="buy", code="y", reason="r")
    results = api.get("/api/v1/risk/denials/").json()["results"]
    assert [d["code"] for d in results] == ["x"]


# --- live socket -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_socket_delivers_the_users_own_denials_only():
    user, other = make_user(), make_user()
    acct = ExchangeAccount.objects.create(owner=user, kind="paper", exchange="paper", label="p")

    async def scenario() -> tuple[dict, bool]:
        mine = WebsocketCommunicator(
            application, "/ws/risk/", headers=[(b"origin", b"http://localhost")]
        )
        mine.scope["user"] = user
        theirs = WebsocketCommunicator(
            application, "/ws/risk/", headers=[(b"origin", b"http://localhost")]
        )
        theirs.scope["user"] = other
        assert (await mine.connect(timeout=10))[0]
        assert (await theirs.connect(timeout=10))[0]
        await database_sync_to_async(services.order_check)(
            user=user, account=acct, equity=10_000.0, positions=[],
            proposal=Proposal("BTC/USDT", 1, None, qty=1.0),
        )  # fmt: skip
        got = await mine.receive_json_from(timeout=10)
        quiet = await theirs.receive_nothing(timeout=0.5)
        await mine.disconnect()
        await theirs.disconnect()
        await database_sync_to_async(connections.close_all)()
        return got, quiet

    got, quiet = arun(scenario())
    assert (got["kind"], got["code"], got["symbol"]) == ("denied", "no_price", "BTC/USDT")
    assert quiet


@pytest.mark.django_db
def test_risk_api_answers_match_the_published_schema():
    from tests.accounts.test_api_schema import Contract

    contract = Contract(Client().get("/api/v1/schema/?format=json").json())
    user = make_user()
    api = _api(user)
    contract.check(api.get("/api/v1/risk/profile/"), "/api/v1/risk/profile/")
    body = json.dumps({"max_heat": 0.04})
    contract.check(
        api.patch("/api/v1/risk/profile/", body, content_type="application/json"),
        "/api/v1/risk/profile/",
        "patch",
    )
    bad = json.dumps({"max_heat": 4})
    contract.check(
        api.put("/api/v1/risk/profile/", bad, content_type="application/json"),
        "/api/v1/risk/profile/",
        "put",
        expect=400,
    )
    row = services.trading_state_set(
        user=user, to_state="reducing", code="m", reason="m", actor="t"
    )
    contract.check(api.get("/api/v1/risk/state/"), "/api/v1/risk/state/")
    contract.check(
        api.post(f"/api/v1/risk/states/{row.pk}/reset/"),
        "/api/v1/risk/states/{id}/reset/",
        "post",
    )
    contract.check(
        api.post("/api/v1/risk/states/999999/reset/"),
        "/api/v1/risk/states/{id}/reset/",
        "post",
        expect=404,
    )
    contract.check(
        api.post(
            "/api/v1/risk/kill-switch/",
            json.dumps({"close_positions": False}),
            content_type="application/json",
        ),
        "/api/v1/risk/kill-switch/",
        "post",
    )
    DeniedOrder.objects.create(owner=user, symbol="BTC/USDT", side="buy", code="x", reason="r")
    contract.check(api.get("/api/v1/risk/denials/"), "/api/v1/risk/denials/")
