"""The bot page in the real browser (Debian Chromium through Playwright, against daphne):
candles with the entry marked, the drift chart and gap, orders and the log; a step of the
bot and a pause made elsewhere arrive live over ``ws/bots/<id>/``; Stop with its option."""

from __future__ import annotations

import pytest

from accounts.services import demo_user_ensure
from backtester.models import LiveBot
from backtester.results.charts import ms_iso
from backtester.services.live_bots import bot_pause
from tests.bots.helpers import BotReplay

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "bot-page-browser-7"


def test_bot_page_draws_and_updates_live(browser, daphne_server) -> None:
    user, _ = demo_user_ensure(email="bot-page@example.com", password=PASSWORD)
    w = BotReplay(user)
    last = w.run_until_long()
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if "127.0.0.1" not in r.url else None)
    page.goto(daphne_server + "/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(daphne_server + "/dashboard/")

    page.goto(f"{daphne_server}/bots/{w.bot.pk}/")
    page.wait_for_selector("#bot-page[data-socket-state=open]")
    page.wait_for_selector("#chart-candles[data-qf-drawn='1']")
    page.wait_for_selector("#chart-drift[data-qf-drawn='1']")
    names = page.evaluate("document.getElementById('chart-candles').data.map(t => t.name)")
    assert names == ["SOL/USDT", "Entry"] or names[:2] == ["SOL/USDT", "Entry"], names
    drift = page.evaluate("document.getElementById('chart-drift').data.map(t => t.y.length)")
    assert drift == [last + 1, last + 1]
    assert page.inner_text("#bot-gap").endswith("%")
    assert page.inner_text("#bot-status") == "Running"
    entry = w.bot.orders.get(action="enter")
    assert entry.client_order_id in page.inner_text("#bot-orders-table")
    assert "Processed 1 candle(s)" in page.inner_text("#bot-events")

    # The next candle closes and the worker steps the bot: the page follows without a reload.
    w.step(last + 1)
    cursor = ms_iso(int(w.candles.timestamp[last + 1]))
    page.wait_for_function(
        "(c) => document.getElementById('bot-cursor').innerText === c", arg=cursor, timeout=15_000
    )
    drift = page.evaluate("document.getElementById('chart-drift').data[0].y.length")
    assert drift == last + 2

    # Paused from elsewhere (another tab, the API): the badge and reason change live.
    bot_pause(user=user, bot=LiveBot.objects.get(pk=w.bot.pk))
    page.wait_for_function(
        "() => document.getElementById('bot-status').innerText === 'Paused'", timeout=15_000
    )
    page.wait_for_function(
        "() => document.getElementById('bot-reason').innerText === 'Paused by its owner'",
        timeout=15_000,
    )
    first_line = page.inner_text("#bot-events li:first-child")
    assert "Paused by its owner" in first_line

    # Stop with the cancel option (the close needs a market price the test has not got).
    page.check("#stop-cancel-orders")
    page.once("dialog", lambda d: d.accept())
    page.click("#stop-button")
    page.wait_for_function(
        "() => document.getElementById('bot-status').innerText === 'Stopped'", timeout=15_000
    )
    bot = LiveBot.objects.get(pk=w.bot.pk)
    assert bot.status == LiveBot.Status.STOPPED
    assert "asked to cancel its orders" in page.inner_text("#bot-events")
    assert errors == []
    assert external == []
