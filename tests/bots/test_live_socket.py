"""The bot page's socket, ``ws/bots/<id>/``, on the real channel layer: a step of the bot
reaches its owner (the step, its order, the fill and the log lines); another user's socket on
the same bot is closed with 4404 and hears nothing; a Free user gets 4403."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from backtester.engine.language import PRESETS
from backtester.engine.run import run_backtest
from backtester.models import LiveBot
from backtester.services.backtests import sim_config
from config.asgi import application
from tests.backtester.backtest_factories import make_user
from tests.bots.helpers import BotReplay
from tests.conftest import arun

pytestmark = pytest.mark.django_db(transaction=True)


def _socket(path: str, user) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost")])
    comm.scope["user"] = user
    return comm


async def _drain(comm: WebsocketCommunicator, seconds: float = 2.0) -> list[dict]:
    got: list[dict] = []
    while not await comm.receive_nothing(timeout=seconds):
        got.append(await comm.receive_json_from(timeout=5))
    return got


def test_a_step_pushes_its_updates_to_the_owner_only() -> None:
    w = BotReplay()
    path = f"/ws/bots/{w.bot.pk}/"
    # Up to the bar before the first entry signal; the step that enters is watched live.
    backtest = run_backtest(
        w.candles, PRESETS["sma_cross"], BotReplay.PARAMS, sim_config(w.bot.settings)
    )
    signal_bar = int(w.candles.timestamp.searchsorted(backtest.sim.trades["entry_time"][0])) - 1
    for i in range(signal_bar):
        w.step(i)
    assert not w.bot.orders.exists()
    other = make_user(pro=True)
    free = make_user(pro=False)

    async def scenario():
        mine = _socket(path, w.user)
        assert (await mine.connect(timeout=10))[0]
        hello = await mine.receive_json_from(timeout=5)
        theirs = _socket(path, other)
        refused = await theirs.connect(timeout=10)
        unpaid = await _socket(path, free).connect(timeout=10)
        await database_sync_to_async(w.step)(signal_bar)
        got = await _drain(mine)
        await mine.disconnect()
        await database_sync_to_async(connections.close_all)()
        return hello, refused, unpaid, got

    hello, refused, unpaid, got = arun(scenario())
    assert hello == {"type": "bot.update", "kind": "hello", "bot": w.bot.pk}
    assert refused == (False, 4404)
    assert unpaid == (False, 4403)
    kinds = [m["kind"] for m in got]
    assert "step" in kinds, kinds
    assert all(m["bot"] == w.bot.pk for m in got)
    step = next(m for m in got if m["kind"] == "step")
    bot = LiveBot.objects.get(pk=w.bot.pk)
    assert step["cursor_ts"] == bot.cursor_ts == int(w.candles.timestamp[signal_bar])
    assert step["position"] == str(bot.position)
    events = [m["event"]["message"] for m in got if m["kind"] == "event"]
    assert any(e.startswith("Processed 1 candle(s)") for e in events), events
    # The entry it placed on that candle: planned, then filled, as it happened.
    entry = bot.orders.get(action="enter")
    orders = [m["order"] for m in got if m["kind"] == "order"]
    assert [o["state"] for o in orders] == ["planned", "filled"]
    assert {o["client_order_id"] for o in orders} == {entry.client_order_id}
    assert any(e.startswith("Buy ") and "filled at" in e for e in events), events


def test_pause_from_another_session_updates_the_status_live() -> None:
    from backtester.services.live_bots import bot_pause

    w = BotReplay()

    async def scenario():
        mine = _socket(f"/ws/bots/{w.bot.pk}/", w.user)
        assert (await mine.connect(timeout=10))[0]
        await mine.receive_json_from(timeout=5)  # hello
        await database_sync_to_async(bot_pause)(user=w.user, bot=w.bot)
        got = await _drain(mine)
        await mine.disconnect()
        await database_sync_to_async(connections.close_all)()
        return got

    got = arun(scenario())
    status = next(m for m in got if m["kind"] == "status")
    assert (status["status"], status["reason"]) == ("paused", "Paused by its owner")
    event = next(m for m in got if m["kind"] == "event")
    assert event["event"]["message"] == "Paused by its owner"
