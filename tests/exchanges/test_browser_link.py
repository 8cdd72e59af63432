"""A real browser links a Binance API key against the fake exchange (served by daphne, the
fake on loopback) and sees the account's status, permissions and balances; a key that can
withdraw is refused on the page."""

from __future__ import annotations

import pytest

from accounts.services import demo_user_ensure
from exchanges.models import ExchangeAccount

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "exchanges-browser@example.com"
PASSWORD = "browser-pass-exch-7"


def test_link_an_api_key_and_see_its_status(
    browser, daphne_server, private_exchange, worker_sees_the_fake
):
    demo_user_ensure(email=EMAIL, password=PASSWORD)
    good = private_exchange.add_account(balances={"USDT": "1500", "BTC": "0.05"})
    risky = private_exchange.add_account(withdrawals=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if "127.0.0.1" not in r.url else None)

    page.goto(daphne_server + "/accounts/login/")
    page.fill("input[name=login]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(daphne_server + "/dashboard/")

    page.click("nav >> text=Exchanges")
    page.wait_for_selector("#no-accounts")
    page.click("#add-account")
    page.wait_for_selector("#link-form")
    # The passphrase field shows only for exchanges whose keys have one.
    page.select_option("select[name=exchange]", "okx")
    assert page.is_visible("input[name=passphrase]")
    page.select_option("select[name=exchange]", "binance")
    assert not page.is_visible("input[name=passphrase]")
    assert page.is_visible("input[name=sandbox]")

    page.fill("input[name=label]", "Risky")
    page.fill("input[name=api_key]", risky.api_key)
    page.fill("input[name=secret]", risky.secret)
    page.click("#link-submit")
    page.wait_for_selector("#link-form .field-error")
    assert "can withdraw funds" in page.inner_text("#link-form .field-error")
    assert page.input_value("input[name=secret]") == ""  # never sent back
    assert not ExchangeAccount.objects.exists()

    page.fill("input[name=label]", "Binance main")
    page.fill("input[name=api_key]", good.api_key)
    page.fill("input[name=secret]", good.secret)
    page.click("#link-submit")
    page.wait_for_url("**/exchanges/*/")
    status = page.inner_text("#account-status")
    assert "OK" in status
    assert "Can trade" in status
    assert "No withdrawals" in status
    assert "enableSpotAndMarginTrading" in status
    balances = page.inner_text("#account-balances")
    assert "1500" in balances and "BTC" in balances  # noqa: PT018
    assert good.api_key[-4:] in page.inner_text(".page-header")

    page.click("#test-now")
    page.wait_for_selector(".messages")
    assert "Tested: OK" in page.inner_text(".messages")
    page.click("nav >> text=Exchanges")
    row = page.inner_text("#accounts")
    assert "Binance main" in row and "1500 USDT" in row  # noqa: PT018
    assert errors == []
    assert external == []
    page.close()
