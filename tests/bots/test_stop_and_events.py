"""Stopping a bot with options, and the bot's log.

Stop can cancel the bot's open orders and close its position at market. The close goes
through the risk check (a reducing order passes even when trading is halted; a close the
account does not hold is not reducing, so a halt denies it and it is stored, not sent) and
the exactly-once path (a ``close`` BotOrder with a deterministic client order id stored
before sending; a close already sent by a run that died is found by its id, not resent).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from backtester.models import BotOrder, LiveBot
from backtester.models.live import BotEvent
from backtester.services.live_bots import (
    bot_pause,
    bot_resume,
    bot_stop,
    bots_pause_for_halt,
    close_client_order_id,
)
from exchanges.paper_models import PaperOrder
from exchanges.trading import OrderRequest
from risk.models import DeniedOrder, TradingState
from risk.services import trading_state_set
from tests.backtester.backtest_factories import make_user
from tests.bots.helpers import BotReplay

pytestmark = pytest.mark.django_db(transaction=True)


def _held(w: BotReplay, asset: str) -> Decimal:
    held = w.adapter().balances().get(asset)
    return held.total if held is not None else Decimal(0)


def test_stop_without_options_leaves_the_position_and_logs_it() -> None:
    w = BotReplay()
    w.run_until_long()
    position = w.bot.position
    bot = bot_stop(user=w.user, bot=LiveBot.objects.get(pk=w.bot.pk))
    assert bot.status == LiveBot.Status.STOPPED
    assert bot.position == position
    assert _held(w, "SOL") == position
    assert not BotOrder.objects.filter(bot=bot, action="close").exists()
    assert BotEvent.objects.filter(bot=bot, kind="status", message__startswith="Stopped").exists()


def test_stop_with_close_sends_exactly_one_close_even_when_halted() -> None:
    w = BotReplay()
    w.run_until_long()
    bot = LiveBot.objects.get(pk=w.bot.pk)
    position = bot.position
    # Halted: no new entries, but a close (reducing) still passes the check.
    trading_state_set(user=w.user, to_state="halted", code="manual", reason="By hand", actor="test")
    bot.refresh_from_db()
    assert bot.status == LiveBot.Status.PAUSED  # the halt paused it, with the reason
    assert bot.status_reason.startswith("HALTED")

    stopped = bot_stop(user=w.user, bot=bot, close_position=True, adapter=w.adapter())
    assert stopped.status == LiveBot.Status.STOPPED
    close = BotOrder.objects.get(bot=bot, action="close")
    assert close.client_order_id == close_client_order_id(bot.pk, 1)
    assert close.state == BotOrder.State.FILLED, close.error
    assert (close.side, close.amount, close.filled) == ("sell", position, position)
    assert stopped.position == 0
    assert _held(w, "SOL") == 0
    # The bot's ledger and the paper account agree after the close.
    assert w.adapter().balances()["USDT"].total == stopped.cash
    sells = PaperOrder.objects.filter(account=w.account, client_order_id=close.client_order_id)
    assert sells.count() == 1
    assert not DeniedOrder.objects.filter(source=f"bot:{bot.pk}").exists()

    # Asking again closes nothing more: one close order, one exchange order.
    again = bot_stop(user=w.user, bot=stopped, close_position=True, adapter=w.adapter())
    assert again.position == 0
    assert BotOrder.objects.filter(bot=bot, action="close").count() == 1
    assert (
        PaperOrder.objects.filter(account=w.account, side="sell").count()
        == BotOrder.objects.filter(bot=bot, side="sell", state=BotOrder.State.FILLED).count()
    )
    messages = list(BotEvent.objects.filter(bot=bot).values_list("message", flat=True))
    assert any(m.startswith("Closing the position at stop") for m in messages)
    assert any(m.startswith("Sell ") and "(close, stop)" in m for m in messages)
    assert any(m.startswith("Nothing to close") for m in messages)


def test_a_close_the_account_does_not_hold_is_denied_by_the_risk_check_and_not_sent() -> None:
    w = BotReplay()
    w.run_until_long()
    bot = LiveBot.objects.get(pk=w.bot.pk)
    # Someone sells the SOL outside the bot: the account holds nothing to reduce.
    adapter = w.adapter()
    adapter.create_order(
        OrderRequest(
            symbol="SOL/USDT",
            side="sell",
            type="market",
            amount=bot.position,
            client_order_id="outside-1",
        )
    )
    TradingState.objects.create(
        owner=w.user, account=w.account, state="halted", code="manual", reason="Held by hand"
    )
    sent_before = PaperOrder.objects.filter(account=w.account).count()
    stopped = bot_stop(user=w.user, bot=bot, close_position=True, adapter=w.adapter())
    assert stopped.status == LiveBot.Status.STOPPED
    close = BotOrder.objects.get(bot=bot, action="close")
    assert close.state == BotOrder.State.SKIPPED
    assert "trading_halted" in close.error
    assert PaperOrder.objects.filter(account=w.account).count() == sent_before
    denial = DeniedOrder.objects.get(source=f"bot:{bot.pk}")
    assert (denial.code, denial.side) == ("trading_halted", "sell")
    assert BotEvent.objects.filter(
        bot=bot, level="warning", message__startswith="Close at stop not sent"
    ).exists()


def test_a_close_sent_by_a_run_that_died_is_found_by_its_id_not_resent() -> None:
    w = BotReplay()
    w.run_until_long()
    bot = LiveBot.objects.get(pk=w.bot.pk)
    position = bot.position
    cid = close_client_order_id(bot.pk, 1)
    # A stop that stored its close and sent it, then died before recording the answer.
    BotOrder.objects.create(
        bot=bot, client_order_id=cid, bar_ts=1, action="close", reason="stop", side="sell",
        amount=position,
    )  # fmt: skip
    w.adapter().create_order(
        OrderRequest(
            symbol="SOL/USDT", side="sell", type="market", amount=position, client_order_id=cid
        )
    )
    stopped = bot_stop(user=w.user, bot=bot, close_position=True, adapter=w.adapter())
    assert PaperOrder.objects.filter(account=w.account, client_order_id=cid).count() == 1
    assert BotOrder.objects.filter(bot=bot, action="close").count() == 1
    assert BotOrder.objects.get(client_order_id=cid).state == BotOrder.State.FILLED
    assert stopped.position == 0
    assert _held(w, "SOL") == 0


def test_stop_cancels_a_resting_order_and_drops_one_never_sent() -> None:
    w = BotReplay()
    w.step(0)
    bot = LiveBot.objects.get(pk=w.bot.pk)
    rest_id, never_id = f"qfb{bot.pk}-rest", f"qfb{bot.pk}-never"
    w.prices.price = Decimal("100")
    w.adapter().create_order(
        OrderRequest(
            symbol="SOL/USDT", side="buy", type="limit", amount=Decimal("1"),
            price=Decimal("50"), client_order_id=rest_id,
        )
    )  # fmt: skip
    for cid, bar, state in ((rest_id, 10, "acknowledged"), (never_id, 20, "planned")):
        BotOrder.objects.create(
            bot=bot, client_order_id=cid, bar_ts=bar, action="enter", side="buy",
            amount=Decimal("1"), state=state,
        )  # fmt: skip
    bot_stop(user=w.user, bot=bot, cancel_orders=True, adapter=w.adapter())
    rested = BotOrder.objects.get(client_order_id=rest_id)
    assert rested.state == BotOrder.State.REJECTED  # cancelled with nothing filled
    assert PaperOrder.objects.get(client_order_id=rest_id).status == "canceled"
    never = BotOrder.objects.get(client_order_id=never_id)
    assert never.state == BotOrder.State.SKIPPED
    assert "never" in never.error or "before it reached" in never.error
    assert not PaperOrder.objects.filter(client_order_id=never_id).exists()
    assert BotOrder.objects.filter(bot=bot, state__in=BotOrder.OPEN_STATES).count() == 0


def test_another_users_bot_cannot_be_stopped_and_nothing_changes() -> None:
    w = BotReplay()
    w.run_until_long()
    from config.exceptions import NotFound

    with pytest.raises(NotFound):
        bot_stop(user=make_user(pro=True), bot=w.bot, close_position=True, adapter=w.adapter())
    w.bot.refresh_from_db()
    assert w.bot.status == LiveBot.Status.RUNNING
    assert not BotOrder.objects.filter(bot=w.bot, action="close").exists()


def test_the_log_records_steps_orders_fills_and_lifecycle() -> None:
    w = BotReplay()
    last = w.run_until_long()
    bot = LiveBot.objects.get(pk=w.bot.pk)
    events = BotEvent.objects.filter(bot=bot)
    assert events.filter(kind="step").count() == last + 1  # one per processed step
    step = events.filter(kind="step").first()  # newest first
    assert step is not None
    assert step.data["cursor_ts"] == int(w.candles.timestamp[last])
    entry = BotOrder.objects.get(bot=bot, action="enter")
    planned = events.get(kind="order", data__order=entry.pk)
    assert planned.message.startswith(f"Planned buy {entry.amount.normalize()} SOL/USDT")
    fill = events.get(kind="fill", data__order=entry.pk)
    assert entry.average_price is not None
    assert f"filled at {entry.average_price.normalize()}" in fill.message

    bot_pause(user=w.user, bot=bot)
    bot_resume(user=w.user, bot=LiveBot.objects.get(pk=bot.pk))
    kinds = list(events.filter(kind="status").values_list("message", flat=True))
    assert kinds[0].startswith("Started again by its owner")
    assert kinds[1] == "Paused by its owner"

    assert bots_pause_for_halt(user_id=w.user.pk, account_id=None, reason="Kill switch") == 1
    halted = events.filter(kind="status").first()
    assert halted is not None
    assert halted.level == "warning"
    assert halted.message.startswith("HALTED")
    assert "Kill switch" in halted.message


def test_stopping_a_bot_whose_account_was_deleted_meanwhile_is_refused_with_the_reason() -> None:
    """The page read the bot, then its account was deleted (which stops the bot): a stop that
    cancels or closes is refused with the reason instead of failing on the missing account
    (the check reads the bot under its lock, not the copy the caller holds)."""
    from config.exceptions import ApplicationError
    from exchanges.services import account_delete

    w = BotReplay()
    loaded = LiveBot.objects.get(pk=w.bot.pk)
    account_delete(user=w.user, account=w.account)
    with pytest.raises(ApplicationError, match="account was deleted"):
        bot_stop(user=w.user, bot=loaded, cancel_orders=True)
    assert LiveBot.objects.get(pk=w.bot.pk).status == LiveBot.Status.STOPPED
