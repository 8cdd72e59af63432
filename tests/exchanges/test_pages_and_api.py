"""The exchange pages and /api/v1/exchange-accounts/ against the fake Binance: what the list
and an account's page show, linking and its refusals as form errors and API errors, rename,
rotate, and the delete confirmation that says what stops."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from exchanges.events import account_usage
from exchanges.models import ExchangeAccount
from exchanges.services import account_link
from tests.backtester.backtest_factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return make_user()


@pytest.fixture
def web(user):
    client = Client()
    client.force_login(user)
    return client


def _post_json(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_navigation_has_exchanges_and_the_empty_list_invites_a_link(web):
    page = web.get(reverse("exchanges:list")).content.decode()
    assert f'href="{reverse("exchanges:list")}"' in page
    assert "No exchange accounts yet" in page


def test_add_page_offers_the_six_exchanges_with_their_credential_facts(web):
    page = web.get(reverse("exchanges:add")).content.decode()
    for ex in ("binance", "bybit", "okx", "kraken", "coinbase", "kucoin"):
        assert f'<option value="{ex}"' in page
    assert 'data-exchange="okx" data-passphrase="1"' in page
    assert 'data-exchange="kucoin" data-passphrase="1"' in page
    assert 'data-exchange="binance" data-passphrase="0" data-sandbox="1"' in page
    assert 'type="password" name="secret"' in page
    assert "js/exchanges.js" in page


def test_linking_from_the_form_shows_status_permissions_and_balances(web, private_exchange):
    key = private_exchange.add_account(balances={"USDT": "321.5", "ETH": "2"})
    response = web.post(reverse("exchanges:add"), {"exchange": "binance", "label": "Spot main",
                        "api_key": key.api_key, "secret": key.secret})  # fmt: skip
    account = ExchangeAccount.objects.get(label="Spot main")
    assert response["Location"] == reverse("exchanges:detail", args=[account.pk])
    detail = web.get(response["Location"]).content.decode()
    assert 'data-status="ok"' in detail
    assert "Can trade" in detail and "No withdrawals" in detail  # noqa: PT018
    assert "321.5" in detail and "ETH" in detail  # noqa: PT018
    assert "enableWithdrawals" in detail
    assert f"…{key.api_key[-4:]}" in detail
    listing = web.get(reverse("exchanges:list")).content.decode()
    assert "Spot main" in listing and "321.5 USDT" in listing  # noqa: PT018
    assert "Last checked" in listing


def test_withdraw_key_is_a_form_error_and_nothing_is_stored(web, private_exchange):
    key = private_exchange.add_account(withdrawals=True)
    response = web.post(reverse("exchanges:add"), {"exchange": "binance", "label": "Risky",
                        "api_key": key.api_key, "secret": key.secret})  # fmt: skip
    assert response.status_code == 400
    assert "create a new key" in response.content.decode().lower()
    assert not ExchangeAccount.objects.exists()


def test_exchange_down_is_refused_unless_saved_as_not_verified(web, private_exchange, monkeypatch):
    key = private_exchange.add_account()
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": "http://127.0.0.1:9"}))
    body = {"exchange": "binance", "label": "Later", "api_key": key.api_key, "secret": key.secret}
    response = web.post(reverse("exchanges:add"), body)
    assert response.status_code == 400
    assert "could not be reached" in response.content.decode()
    assert not ExchangeAccount.objects.exists()
    response = web.post(reverse("exchanges:add"), {**body, "save_unverified": "on"})
    assert response.status_code == 302
    assert ExchangeAccount.objects.get().status == "unverified"


def test_test_now_rename_rotate_and_delete_from_the_pages(web, user, private_exchange):
    key = private_exchange.add_account(balances={"USDT": "10"})
    account = account_link(user=user, exchange="binance", label="A", api_key=key.api_key,
                           secret=key.secret)  # fmt: skip
    private_exchange.accounts[key.api_key].permissions["enableSpotAndMarginTrading"] = False
    response = web.post(reverse("exchanges:test", args=[account.pk]), follow=True)
    assert "cannot place orders" in response.content.decode()

    response = web.post(reverse("exchanges:rename", args=[account.pk]), {"label": "B"})
    assert response.status_code == 302
    assert ExchangeAccount.objects.get(pk=account.pk).label == "B"

    new = private_exchange.add_account()
    response = web.post(reverse("exchanges:rotate", args=[account.pk]),
                        {"api_key": new.api_key, "secret": new.secret})  # fmt: skip
    assert response.status_code == 302
    assert ExchangeAccount.objects.get(pk=account.pk).key_last4 == new.api_key[-4:]

    def uses(sender, account, **kw):
        return ["Copying leader Alice into this account"]

    account_usage.connect(uses, weak=False)
    try:
        confirm = web.get(reverse("exchanges:delete", args=[account.pk])).content.decode()
    finally:
        account_usage.disconnect(uses)
    assert "This stops:" in confirm
    assert "Copying leader Alice into this account" in confirm
    assert "erases its stored keys" in confirm
    plain = web.get(reverse("exchanges:delete", args=[account.pk])).content.decode()
    assert "Nothing live uses this account" in plain
    response = web.post(reverse("exchanges:delete", args=[account.pk]))
    assert response["Location"] == reverse("exchanges:list")
    assert not ExchangeAccount.objects.filter(pk=account.pk).exists()


def test_api_links_with_write_only_secrets(web, private_exchange):
    key = private_exchange.add_account(balances={"USDT": "50"})
    response = _post_json(web, reverse("api_exchange_account_list"),
                          {"exchange": "binance", "label": "Via API", "api_key": key.api_key,
                           "secret": key.secret})  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["key_last4"] == key.api_key[-4:]
    assert body["balances"] == {"USDT": {"free": "50", "used": "0"}}
    assert not {"api_key", "secret", "passphrase"} & set(body)
    assert body["url"] == reverse("api_exchange_account_detail", args=[body["id"]])
    listed = web.get(reverse("api_exchange_account_list")).json()
    assert [a["label"] for a in listed["results"]] == ["Via API"]

    renamed = web.patch(body["url"], json.dumps({"label": "Renamed"}),
                        content_type="application/json")  # fmt: skip
    assert renamed.json()["label"] == "Renamed"
    tested = web.post(reverse("api_exchange_account_test", args=[body["id"]]))
    assert tested.json()["status"] == "ok"


def test_api_bad_input_is_a_clear_4xx_and_changes_nothing(web, user, private_exchange):
    url = reverse("api_exchange_account_list")
    missing = _post_json(web, url, {"exchange": "binance", "label": "x"})
    assert missing.status_code == 400
    assert set(missing.json()["error"]["fields"]) == {"api_key", "secret"}
    unknown = _post_json(web, url, {"exchange": "nope", "label": "x", "api_key": "abcd1234",
                                    "secret": "abcdefgh"})  # fmt: skip
    assert unknown.status_code == 400
    assert unknown.json()["error"]["fields"] == {
        "exchange": ["Nope is not an exchange this service can trade on."]
    }
    key = private_exchange.add_account(withdrawals=True)
    refused = _post_json(web, url, {"exchange": "binance", "label": "x", "api_key": key.api_key,
                                    "secret": key.secret})  # fmt: skip
    assert refused.status_code == 400
    assert "can withdraw" in refused.json()["error"]["message"]
    assert not ExchangeAccount.objects.exists()

    good = private_exchange.add_account()
    account_link(user=user, exchange="binance", label="Taken", api_key=good.api_key,
                 secret=good.secret)  # fmt: skip
    dup = _post_json(web, url, {"exchange": "binance", "label": "Taken", "api_key": good.api_key,
                                "secret": good.secret})  # fmt: skip
    assert dup.status_code == 409
    garbage = web.post(url, "{not json", content_type="application/json")
    assert garbage.status_code == 400
    assert ExchangeAccount.objects.count() == 1


def test_api_exchange_down_is_503_with_the_retry_hint(web, private_exchange, monkeypatch):
    key = private_exchange.add_account()
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": "http://127.0.0.1:9"}))
    response = _post_json(web, reverse("api_exchange_account_list"),
                          {"exchange": "binance", "label": "x", "api_key": key.api_key,
                           "secret": key.secret})  # fmt: skip
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "exchange_unavailable"
    assert "not verified yet" in response.json()["error"]["message"]
