"""The grid bot page over Channels (``ws/grid-bots/<id>/``): on the real channel layer, its
owner's socket gets the bot's state on connecting and again after each step (levels, fills,
P&L), another user's is closed with 4404; in the real browser (Chromium, against daphne) a step
and a pause made elsewhere show on the page without a reload."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from accounts.services import demo_user_ensure
from backtester.models import GridBot
from backtester.services.grid_bots import grid_bot_create, grid_bot_pause
from config.asgi import application
from tests.backtester.backtest_factories import make_user
from tests.conftest import arun
from tests.grid.helpers import SYMBOL, GridWorld

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "grid-page-browser-3"


def started_bot(w: GridWorld) -> GridBot:
    """Lines 90, 95, 100, 105, 110 at a price of 100: levels 2 and 3 buy at once and rest their
    sells at 105 and 110; levels 0 and 1 rest buys at 90 and 95."""
    bot = grid_bot_create(
        user=w.user, account=w.account, symbol=SYMBOL, lower="90", upper="110", levels=5,
        investment="400", adapter=w.adapter(),
    )  # fmt: skip
    w.set_price(100)
    w.step(bot.pk)
    return bot


def _socket(path: str, user: Any) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost")])
    comm.scope["user"] = user
    return comm


def test_the_owner_hears_each_step_and_another_user_is_refused() -> None:
    w = GridWorld()
    bot = started_bot(w)
    path = f"/ws/grid-bots/{bot.pk}/"
    other = make_user(pro=True)

    def rally() -> None:
        w.move(100, 106)  # level 2's sell at 105 fills; it buys again at 100
        w.step(bot.pk)

    async def scenario() -> tuple[dict, list[dict], tuple[bool, int | None]]:
        mine = _socket(path, w.user)
        assert (await mine.connect(timeout=10))[0]
        first = await mine.receive_json_from(timeout=5)
        theirs = await _socket(path, other).connect(timeout=10)
        await database_sync_to_async(rally)()
        got = []
        while not await mine.receive_nothing(timeout=2):
            got.append(await mine.receive_json_from(timeout=5))
        await mine.disconnect()
        await database_sync_to_async(connections.close_all)()
        return first, got, theirs

    first, got, theirs = arun(scenario())
    assert theirs == (False, 4404)
    assert (first["type"], first["kind"], first["bot"]) == ("grid.update", "state", bot.pk)
    states = {lv["index"]: lv["state"] for lv in first["levels"]}
    assert states == {0: "buy_resting", 1: "buy_resting", 2: "sell_resting", 3: "sell_resting"}
    assert first["grid_profit"] == "0.0000"
    assert got, "the step should have told the page"
    last = got[-1]
    level2 = next(lv for lv in last["levels"] if lv["index"] == 2)
    assert (level2["state"], level2["sells"], level2["buys"]) == ("buy_resting", 1, 1)
    bot.refresh_from_db()
    assert last["grid_profit"] == format(bot.grid_profit.quantize(Decimal("0.0001")), "f")
    assert float(last["grid_profit"]) > 0


@pytest.mark.browser
def test_the_grid_page_follows_the_bot_without_a_reload(browser: Any, daphne_server: str) -> None:
    user, _ = demo_user_ensure(email="grid-page@example.com", password=PASSWORD)
    w = GridWorld(user=user)
    bot = started_bot(w)
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

    page.goto(f"{daphne_server}/bots/grid/{bot.pk}/")
    page.wait_for_selector("#grid-live[data-state=open]")
    page.wait_for_selector("#grid-page[data-updates='1']")  # the state sent on connecting
    page.evaluate("window.__notReloaded = true")
    assert page.get_attribute("#level-2", "data-state") == "sell_resting"
    assert page.inner_text("#grid-profit") == "0.0000"

    # The price rallies through 105 and the worker steps the bot: level 2 sells and buys again.
    w.move(100, 106)
    w.step(bot.pk)
    page.wait_for_function(
        "() => document.getElementById('level-2').dataset.state === 'buy_resting'",
        timeout=15_000,
    )
    bot.refresh_from_db()
    assert page.inner_text("#grid-profit") == f"{bot.grid_profit:.4f}"
    assert float(page.inner_text("#grid-profit")) > 0
    cells = page.eval_on_selector_all("#level-2 td", "tds => tds.map(t => t.innerText)")
    assert cells[8] == "1"  # one round trip
    assert f"qfg{bot.pk}-2-3 buy" in cells[6]  # its third order, the buy at 100, resting

    # Paused from elsewhere (the API, another tab): the badge and reason change live.
    grid_bot_pause(user=user, bot=GridBot.objects.get(pk=bot.pk), adapter=w.adapter())
    page.wait_for_function(
        "() => document.getElementById('grid-status').innerText === 'Paused'", timeout=15_000
    )
    assert page.inner_text("#grid-reason") == "Paused by its owner"
    page.wait_for_function(
        "() => document.getElementById('level-0').dataset.state === 'idle'", timeout=15_000
    )
    assert page.evaluate("window.__notReloaded") is True
    assert errors == []
    assert external == []
