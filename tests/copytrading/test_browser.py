"""A real browser through the copy-trading pages: from the directory to a leader, the subscribe
form (a bad value first, then a good one), the subscription page, pausing it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client

from copytrading.models import Subscription
from tests.copytrading.conftest import build_copy_setup, make_account

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _signed_in_page(browser, base_url: str, user):
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": base_url,
            }
        ]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def test_a_follower_subscribes_fixes_a_bad_value_and_pauses(browser, daphne_server):
    s = build_copy_setup()
    account = make_account(s.follower, label="Browser account")
    page, errors = _signed_in_page(browser, daphne_server, s.follower)

    page.goto(daphne_server + "/copy/")
    page.click("#leaders >> text=Steady BTC")
    page.wait_for_url(f"**/copy/leaders/{s.leader.pk}/")
    page.click("text=Copy this leader")
    page.wait_for_url(f"**/copy/leaders/{s.leader.pk}/subscribe/")

    page.select_option("#id_account", label=str(account))
    page.select_option("#id_sizing_mode", "fixed_notional")
    page.fill("#id_notional", "250")
    page.fill("#id_slippage_pct", "15")  # 15 % is past the 10 % most a guard may be
    page.click("#subscribe-form button[type=submit]")
    assert "slippage_guard must be more than 0 and at most 0.1" in page.content()
    assert not Subscription.objects.filter(account=account).exists()

    page.fill("#id_slippage_pct", "0.8")
    page.click("#subscribe-form button[type=submit]")
    page.wait_for_url("**/copy/subscriptions/*/")
    sub = Subscription.objects.get(account=account)
    assert (sub.sizing_mode, sub.notional, sub.slippage_guard) == (
        "fixed_notional",
        Decimal(250),
        Decimal("0.008"),
    )
    assert page.inner_text("#status") == "Active"

    page.click("text=Pause")
    page.wait_for_selector("#status >> text=Paused")
    sub.refresh_from_db()
    assert sub.status == "paused"
    assert errors == []
