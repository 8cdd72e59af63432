"""``make run``'s demo bot: ``seed_demo`` leaves the demo user one running paper bot on the
demo ETH/USDT candles, its first week replayed (orders, fills, log, drift), and seeding again
changes nothing."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import User
from backtester.marketdata import demo
from backtester.models import BotOrder, LiveBot
from backtester.models.live import BotEvent
from backtester.services.live_bots import DEMO_BOT_ACCOUNT, bot_drift
from exchanges.paper import PaperExchange

pytestmark = pytest.mark.django_db(transaction=True)


def test_seed_demo_starts_one_running_paper_bot_and_is_idempotent(monkeypatch, settings) -> None:
    settings.LIVE_BOTS_DEMO = True  # on by default in the embedded shape only
    monkeypatch.setattr(demo, "DEMO_DAYS", 40)
    out = StringIO()
    call_command("seed_demo", "--password", "demo-pass-for-bot-1", stdout=out)
    user = User.objects.get(email=settings.DEMO_USER_EMAIL)
    bot = LiveBot.objects.get(owner=user)
    assert bot.status == LiveBot.Status.RUNNING, bot.status_reason
    assert bot.account is not None
    assert (bot.symbol, bot.timeframe, bot.account.label) == ("ETH/USDT", "1h", DEMO_BOT_ACCOUNT)
    assert bot.account.kind == "paper"
    assert bot.series.last_ts is not None
    assert bot.cursor_ts == int(bot.series.last_ts) - 3_600_000  # caught up to the last close
    filled = bot.orders.filter(state=BotOrder.State.FILLED)
    assert filled.count() >= 2, list(bot.orders.values_list("action", "state", "error"))
    assert not bot.orders.exclude(state=BotOrder.State.FILLED).exists()
    assert BotEvent.objects.filter(bot=bot, kind="step").exists()
    # The paper account holds what the bot's ledger says.
    balances = PaperExchange(bot.account).balances()
    assert balances["USDT"].total == bot.cash
    held = balances.get("ETH")
    assert (held.total if held else Decimal(0)) == bot.position
    drift = bot_drift(bot)
    assert drift is not None
    assert drift.gap_pct is not None
    assert len(drift.timestamps) == 7 * 24  # the deployment bar to the last processed one
    assert abs(drift.gap_pct) < 0.5  # fills at the next open, paper slippage and rounding
    assert "Demo bot" in out.getvalue()

    call_command("seed_demo", stdout=StringIO())
    assert LiveBot.objects.filter(owner=user).count() == 1
    assert LiveBot.objects.get(pk=bot.pk).orders.count() == bot.orders.count()


def test_no_demo_bot_where_the_demo_is_off(monkeypatch, settings) -> None:
    settings.LIVE_BOTS_DEMO = False
    monkeypatch.setattr(demo, "DEMO_DAYS", 40)
    call_command("seed_demo", "--password", "demo-pass-for-bot-2", stdout=StringIO())
    assert not LiveBot.objects.exists()
