"""The dashboard reads real positions (fake Binance through ccxt, and a paper account) and
closes one at market from a button: the close passes ``order_check`` (a reducing order passes
while HALTED), its client order id is stored before it is sent, an ambiguous answer is looked
up (exactly one order on the exchange), and a denial is stored and shown."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from exchanges.adapters import adapter_for
from exchanges.models import ExchangeAccount
from exchanges.paper import PaperExchange
from exchanges.paper_models import PaperBalance, PaperOrder
from exchanges.services import account_link
from exchanges.services_paper import paper_account_create
from exchanges.trading import OrderRequest
from risk import selectors, services
from risk.models import DeniedOrder, ManualClose
from tests.backtester.backtest_factories import make_user

pytestmark = pytest.mark.django_db


def link(user, fake, label: str, balances: dict[str, str]):
    key = fake.add_account(balances=balances)
    account = account_link(
        user=user, exchange="binance", label=label, api_key=key.api_key, secret=key.secret
    )
    return account, key


def web(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_dashboard_reads_positions_of_a_binance_and_a_paper_account(live_binance):
    user = make_user()
    link(user, live_binance, "binance", {"USDT": "1000", "BTC": "0.5"})
    paper = paper_account_create(owner=user, label="paper", quote="USDT", starting_balance="5000")
    PaperExchange(paper).create_order(
        OrderRequest("ETH/USDT", "buy", "market", Decimal("1"), client_order_id="p-eth")
    )
    data = selectors.dashboard_data(user)
    rows = {(r["account"], r["symbol"]): r for r in data["positions"]}
    assert set(rows) == {("binance", "BTC/USDT"), ("paper", "ETH/USDT")}
    assert rows["binance", "BTC/USDT"]["amount"] == Decimal("0.5")
    assert rows["binance", "BTC/USDT"]["mark"] == 40000.0
    assert rows["paper", "ETH/USDT"]["amount"] == Decimal("1")
    assert rows["paper", "ETH/USDT"]["mark"] == 2000.0
    html = web(user).get("/risk/dashboard/").content.decode()
    assert html.count("Close at market") == 2
    assert 'name="symbol" value="BTC/USDT"' in html


def test_a_close_while_halted_passes_the_check_and_sells_on_the_exchange(live_binance):
    user = make_user()
    account, key = link(user, live_binance, "binance", {"USDT": "1000", "BTC": "0.5"})
    services.trading_state_set(
        user=user, to_state="halted", code="manual", reason="Stopped", actor="t"
    )
    response = web(user).post(
        f"/risk/accounts/{account.pk}/close/", {"symbol": "BTC/USDT"}, follow=True
    )
    assert response.status_code == 200
    assert "Close order for BTC/USDT on binance sent." in response.content.decode()
    row = ManualClose.objects.get(owner=user)
    assert (row.status, row.side, row.amount) == ("sent", "sell", Decimal("0.5"))
    assert row.client_order_id.startswith("qfmc")
    (order,) = live_binance.orders_with_client_id(row.client_order_id)
    assert (order.side, order.type, order.status, order.qty) == (
        "SELL",
        "MARKET",
        "FILLED",
        Decimal("0.5"),
    )
    assert key.free("BTC") == 0
    assert key.free("USDT") == Decimal("1000") + Decimal("20000") * Decimal("0.999")
    assert not DeniedOrder.objects.filter(owner=user).exists()


def test_a_timed_out_close_is_looked_up_by_its_stored_id_never_resent(live_binance):
    user = make_user()
    account, key = link(user, live_binance, "binance", {"USDT": "0", "BTC": "0.3"})
    live_binance.hang_seconds = 2.0
    live_binance.fault("/api/v3/order", "timeout")
    row = services.position_close(
        user=user, account=account, symbol="BTC/USDT",
        adapter_for=lambda a: adapter_for(a, timeout_ms=500, sleep=lambda _s: None),
    )  # fmt: skip
    assert row.status == "sent", row.message
    assert row.order_status == "closed"
    assert len(live_binance.orders_with_client_id(row.client_order_id)) == 1
    assert len(live_binance.order_requests()) == 1
    assert key.free("BTC") == 0


def test_a_position_without_a_price_is_denied_stored_and_shown(live_binance):
    user = make_user()
    paper = paper_account_create(owner=user, label="paper", quote="USDT", starting_balance="5000")
    PaperBalance.objects.create(account=paper, asset="XYZ", free=Decimal("7"))  # no XYZ market
    client = web(user)
    page = client.get("/risk/dashboard/").content.decode()
    assert f'data-close="{paper.pk}-XYZ/USDT"' in page  # listed, marked without a price
    response = client.post(f"/risk/accounts/{paper.pk}/close/", {"symbol": "XYZ/USDT"}, follow=True)
    html = response.content.decode()
    row = ManualClose.objects.get(owner=user)
    assert (row.status, row.code, row.client_order_id) == ("denied", "no_price", None)
    denial = DeniedOrder.objects.get(owner=user)
    assert (denial.code, denial.source, denial.symbol) == ("no_price", "manual_close", "XYZ/USDT")
    assert "Close of XYZ/USDT denied (no_price)" in html
    assert 'data-code="no_price"' in html
    assert not PaperOrder.objects.filter(account=paper).exists()  # nothing sent
    assert PaperBalance.objects.get(account=paper, asset="XYZ").free == Decimal("7")


def test_bad_input_and_another_users_account(live_binance):
    user, other = make_user(), make_user()
    account, _ = link(other, live_binance, "theirs", {"USDT": "10", "BTC": "0.1"})
    client = web(user)
    assert (
        client.post(f"/risk/accounts/{account.pk}/close/", {"symbol": "BTC/USDT"}).status_code
        == 404
    )
    mine, _ = link(user, live_binance, "mine", {"USDT": "10"})
    for symbol, told in (
        ("", "Say which position to close"),
        ("BTCUSDT", "Say which position to close"),
        ("ETH/USDT", "mine has no open ETH/USDT position."),
    ):
        response = client.post(f"/risk/accounts/{mine.pk}/close/", {"symbol": symbol}, follow=True)
        assert response.status_code == 200
        assert told in response.content.decode()
    assert not ManualClose.objects.exists()
    assert live_binance.order_requests() == []
    assert ExchangeAccount.objects.get(pk=account.pk).owner_id == other.pk


def _api(user) -> Client:
    from accounts.services.apikeys import api_key_create

    key = api_key_create(user=user, name="closer").key
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def test_the_api_closes_a_position_through_the_same_check_and_reports_the_stored_close(
    live_binance,
):
    user = make_user()
    account, key = link(user, live_binance, "binance", {"USDT": "0", "BTC": "0.25"})
    services.trading_state_set(
        user=user, to_state="halted", code="manual", reason="Stopped", actor="t"
    )
    api = _api(user)
    response = api.post(
        f"/api/v1/risk/accounts/{account.pk}/close/",
        {"symbol": "btc/usdt"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    row = ManualClose.objects.get(owner=user)
    assert body["id"] == row.pk
    assert (body["status"], body["side"], body["symbol"]) == ("sent", "sell", "BTC/USDT")
    assert Decimal(body["amount"]) == Decimal("0.25")
    assert body["client_order_id"] == row.client_order_id
    assert len(live_binance.orders_with_client_id(row.client_order_id)) == 1
    assert key.free("BTC") == 0


def test_the_api_answers_a_denial_with_its_code_and_sends_nothing(live_binance):
    user = make_user()
    paper = paper_account_create(owner=user, label="paper", quote="USDT", starting_balance="5000")
    PaperBalance.objects.create(account=paper, asset="XYZ", free=Decimal("7"))
    response = _api(user).post(
        f"/api/v1/risk/accounts/{paper.pk}/close/",
        {"symbol": "XYZ/USDT"},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["code"]) == ("denied", "no_price")
    assert not PaperOrder.objects.filter(account=paper).exists()


def test_the_api_refuses_bad_input_and_other_users_accounts_without_sending(live_binance):
    user, other = make_user(), make_user()
    theirs, _ = link(other, live_binance, "theirs", {"USDT": "10", "BTC": "0.1"})
    mine, _ = link(user, live_binance, "mine", {"USDT": "10"})
    api = _api(user)
    url = "/api/v1/risk/accounts/{}/close/"
    answer = api.post(url.format(theirs.pk), {"symbol": "BTC/USDT"}, "application/json")
    assert answer.status_code == 404
    for payload, field in (({}, "symbol"), ({"symbol": "BTCUSDT"}, "symbol")):
        answer = api.post(url.format(mine.pk), payload, "application/json")
        assert answer.status_code == 400
        assert field in str(answer.json()["error"])
    answer = api.post(url.format(mine.pk), {"symbol": "ETH/USDT"}, "application/json")
    assert answer.status_code == 400
    assert "no open ETH/USDT position" in answer.json()["error"]["message"]
    assert not ManualClose.objects.exists()
    assert live_binance.order_requests() == []
