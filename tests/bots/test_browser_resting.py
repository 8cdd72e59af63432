"""The bot page's resting orders in the real browser (Chromium through Playwright, against
daphne): the stop-loss and take-profit with their triggers after the entry, then, when the
stop fills and the bot books it, the table empties live over ``ws/bots/<id>/``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.services import demo_user_ensure
from tests.bots.test_resting_stops import World

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "bot-resting-browser-3"


def test_resting_orders_show_then_clear_live_when_the_stop_fills(browser, daphne_server) -> None:
    user, _ = demo_user_ensure(email="bot-resting@example.com", password=PASSWORD)
    w = World(user=user, stop_loss=0.2, take_profit=0.3)
    i = w.run_until_long()
    stop, target = w.resting("stop"), w.resting("target")
    assert stop.trigger_price is not None
    assert target.trigger_price is not None
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(daphne_server + "/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(daphne_server + "/dashboard/")

    page.goto(f"{daphne_server}/bots/{w.bot.pk}/")
    page.wait_for_selector("#bot-page[data-socket-state=open]")
    table = page.inner_text("#bot-resting-table")
    for order, word in ((stop, "Stop-loss"), (target, "Take-profit")):
        assert order.trigger_price is not None
        assert order.client_order_id in table
        assert f"{order.trigger_price.normalize():f}" in table
        assert word in table

    # The market falls through the stop; the next candle's step books it and cancels the
    # target: the page redraws the table from the bot's socket, without a reload.
    w.prices.price = stop.trigger_price - Decimal("1")
    w.adapter().match()
    w.step(i + 1)
    page.wait_for_function(
        "() => document.querySelector('#bot-resting-table tbody').innerText"
        ".includes('No resting orders')",
        timeout=15_000,
    )
    row = page.inner_text(f"#bot-orders-table tr[data-order='{stop.pk}']")
    assert "Filled" in row
    assert "stop_loss" in row
    assert errors == []
