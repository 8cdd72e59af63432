"""A bot across restarts: no duplicate order, no lost position, reconciliation before acting.

Each "crash" is a real interruption of ``bot_step`` at a chosen point (an exception that is not
a trading error propagates out of the step, as a killed worker would stop it); the restart is a
new ``bot_step`` with a new adapter and the bot re-read from the database (no memory kept).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from backtester.engine.language import PRESETS
from backtester.engine.run import run_backtest
from backtester.models import BotOrder, LiveBot
from backtester.services.backtests import sim_config
from backtester.services.live_bots import bot_create, bot_pause, bot_resume, bot_step
from config.exceptions import ApplicationError, NotFound
from exchanges.models import ExchangeAccount
from exchanges.paper_models import PaperBalance, PaperOrder
from exchanges.trading import OrderStatusUnknown
from tests.backtester.backtest_factories import make_strategy, make_user
from tests.bots.helpers import (
    Clock,
    ReplayPrices,
    demo_candles,
    engine_settings,
    paper_account,
    paper_adapter,
    store_series,
)

pytestmark = pytest.mark.django_db(transaction=True)
PARAMS = {"fast": 5, "slow": 20}


class Killed(BaseException):
    """Stands in for the worker process dying at this point (not a trading error)."""


class CrashingAdapter:
    """The real paper adapter, interrupted around ``create_order`` once."""

    def __init__(self, inner, *, when: str) -> None:
        self.inner, self.when, self.armed = inner, when, True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def create_order(self, request):
        if self.armed and self.when == "before_send":
            self.armed = False
            raise Killed
        state = self.inner.create_order(request)
        if self.armed and self.when == "after_send":
            self.armed = False
            raise Killed
        if self.armed and self.when == "timeout":
            self.armed = False
            raise OrderStatusUnknown("read timed out")
        return state


class World:
    def __init__(self, days: int = 8) -> None:
        self.user = make_user(pro=True)
        self.candles = demo_candles(days=days)
        self.series = store_series(self.candles)
        self.account = paper_account(self.user)
        ts = self.candles.timestamp
        self.bot = bot_create(
            user=self.user,
            account=self.account,
            series=self.series,
            strategy=make_strategy(self.user, "sma_cross"),
            settings=engine_settings(),
            param_values=PARAMS,
            start_ts=int(ts[0]),
            data_start_ts=int(ts[0]),
        )
        self.prices, self.clock = ReplayPrices(), Clock()
        result = run_backtest(
            self.candles, PRESETS["sma_cross"], PARAMS, sim_config(self.bot.settings)
        )
        self.first_entry = int(result.sim.trades["entry_time"][0])
        self.first_exit = int(result.sim.trades["exit_time"][0])

    def index(self, ts: int) -> int:
        return int(self.candles.timestamp.searchsorted(ts))

    def adapter(self):
        return paper_adapter(self.account, self.prices, self.clock)

    def step(self, i: int, adapter=None) -> int:
        """Close bar i (the market now at bar i+1's open) and step the bot."""
        ts, tf = self.candles.timestamp, self.candles.timeframe_ms
        self.clock.now = int(ts[i + 1])
        self.prices.price = Decimal(repr(float(self.candles.open[i + 1])))
        return bot_step(
            bot_id=self.bot.pk, now_ms=int(ts[i]) + tf, adapter=adapter or self.adapter()
        )

    def run_until(self, i: int) -> None:
        for k in range(i):
            self.step(k)

    def paper_orders(self) -> int:
        return PaperOrder.objects.filter(account=self.account).count()

    def sol(self) -> Decimal:
        row = PaperBalance.objects.filter(account=self.account, asset="SOL").first()
        return row.free if row else Decimal(0)


def test_the_same_candle_twice_sends_nothing_new() -> None:
    w = World()
    signal_bar = w.index(w.first_entry) - 1
    w.run_until(signal_bar)
    assert w.step(signal_bar) == 1
    assert w.paper_orders() == 1
    assert w.step(signal_bar) == 0  # the cursor has moved: nothing to do
    # Even with the cursor wound back (a crash after sending, before the cursor was saved),
    # the stored (bot, bar, action) row stops a second order.
    LiveBot.objects.filter(pk=w.bot.pk).update(cursor_ts=int(w.candles.timestamp[signal_bar - 1]))
    assert w.step(signal_bar) == 1
    assert w.paper_orders() == 1
    assert BotOrder.objects.filter(bot=w.bot).count() == 1
    w.bot.refresh_from_db()
    assert w.bot.position > 0
    assert w.sol() == w.bot.position


@pytest.mark.parametrize("when", ["before_send", "after_send"])
def test_killed_around_the_send_resumes_without_duplicate_or_loss(when: str) -> None:
    w = World()
    signal_bar = w.index(w.first_entry) - 1
    w.run_until(signal_bar)
    with pytest.raises(Killed):
        w.step(signal_bar, adapter=CrashingAdapter(w.adapter(), when=when))
    order = BotOrder.objects.get(bot=w.bot)
    assert order.state == BotOrder.State.PLANNED  # stored before sending
    assert w.paper_orders() == (1 if when == "after_send" else 0)
    w.bot.refresh_from_db()
    assert w.bot.cursor_ts == int(w.candles.timestamp[signal_bar - 1])

    # Restart: reconcile first (look the order up; send it only if the exchange never got it),
    # then carry on from the cursor. The market has not moved on: same bar again.
    assert w.step(signal_bar) == 1
    order.refresh_from_db()
    assert order.state == BotOrder.State.FILLED
    assert w.paper_orders() == 1
    w.bot.refresh_from_db()
    assert w.bot.position == order.filled > 0
    assert w.sol() == w.bot.position

    # And the position is closed where the backtest closes it, once.
    exit_bar = w.index(w.first_exit) - 1
    for k in range(signal_bar + 1, exit_bar + 1):
        w.step(k)
    w.bot.refresh_from_db()
    assert w.bot.position == 0
    assert w.sol() == 0
    assert w.paper_orders() == 2


def test_a_timeout_is_resolved_by_lookup_not_by_resending() -> None:
    w = World()
    signal_bar = w.index(w.first_entry) - 1
    w.run_until(signal_bar)
    assert w.step(signal_bar, adapter=CrashingAdapter(w.adapter(), when="timeout")) == 1
    order = BotOrder.objects.get(bot=w.bot)
    assert order.state == BotOrder.State.FILLED
    assert w.paper_orders() == 1
    w.bot.refresh_from_db()
    assert w.bot.position == order.filled == w.sol()


def test_a_position_changed_outside_the_bot_stops_it_with_the_reason() -> None:
    w = World()
    signal_bar = w.index(w.first_entry) - 1
    w.run_until(signal_bar + 1)
    w.bot.refresh_from_db()
    assert w.bot.position > 0
    PaperBalance.objects.filter(account=w.account, asset="SOL").update(free=Decimal("0.5"))
    assert w.step(signal_bar + 1) == 0
    w.bot.refresh_from_db()
    assert w.bot.status == LiveBot.Status.ERROR
    assert "changed outside the bot" in w.bot.status_reason
    sent = w.paper_orders()
    assert w.step(signal_bar + 2) == 0  # a failed bot does nothing
    assert w.paper_orders() == sent


def test_paused_bot_catches_up_from_its_cursor_when_resumed() -> None:
    w = World()
    w.run_until(30)
    bot_pause(user=w.user, bot=w.bot)
    assert w.step(30) == 0
    bot_resume(user=w.user, bot=LiveBot.objects.get(pk=w.bot.pk))
    assert w.step(32) == 3  # bars 30, 31, 32 in order
    w.bot.refresh_from_db()
    assert w.bot.cursor_ts == int(w.candles.timestamp[32])


def test_read_only_and_foreign_accounts_are_refused() -> None:
    w = World(days=3)
    read_only = ExchangeAccount.objects.create(
        owner=w.user, kind="api_key", exchange="binance", label="RO", can_trade=False
    )
    with pytest.raises(ApplicationError, match="cannot trade"):
        bot_create(
            user=w.user,
            account=read_only,
            series=w.series,
            strategy=make_strategy(w.user, "sma_cross"),
        )
    other = make_user(pro=True)
    with pytest.raises(NotFound):
        bot_create(
            user=other,
            account=w.account,
            series=w.series,
            strategy=make_strategy(other, "sma_cross"),
        )
    with pytest.raises(ApplicationError, match="next-open"):
        bot_create(
            user=w.user,
            account=w.account,
            series=w.series,
            strategy=make_strategy(w.user, "sma_cross"),
            settings={"fill": "close"},
        )
    assert LiveBot.objects.count() == 1


def test_losing_pro_stops_new_entries_and_says_so() -> None:
    from accounts.models import Subscription

    w = World()
    signal_bar = w.index(w.first_entry) - 1
    w.run_until(signal_bar)
    Subscription.objects.filter(user=w.user).update(status=Subscription.Status.CANCELED)
    assert w.step(signal_bar) == 1
    w.bot.refresh_from_db()
    assert w.paper_orders() == 0
    assert w.bot.position == 0
    assert "no new entries" in w.bot.status_reason
    assert w.bot.status == LiveBot.Status.RUNNING  # exits of an open position would still run
