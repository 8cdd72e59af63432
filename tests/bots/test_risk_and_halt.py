"""Bots and the risk app: every bot order passes the pre-trade check (a denial is stored on
both sides and nothing is sent), a halt pauses the owner's bots, and a halted owner cannot
start them again until the state is reset."""

from __future__ import annotations

from decimal import Decimal

import pytest

from backtester.engine.language import PRESETS
from backtester.engine.run import run_backtest
from backtester.models import BotOrder, LiveBot
from backtester.services.backtests import sim_config
from backtester.services.live_bots import bot_create, bot_resume, bot_step
from config.exceptions import ApplicationError
from exchanges.paper_models import PaperOrder
from exchanges.services_paper import paper_account_create
from risk.models import DeniedOrder, RiskProfile, TradingState
from risk.services import kill_switch_engage, trading_state_reset, trading_state_set
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


class Replay:
    def __init__(self) -> None:
        self.user = make_user(pro=True)
        RiskProfile.objects.create(owner=self.user, max_orders_per_minute=0)
        self.candles = demo_candles(days=8)
        self.account = paper_account(self.user)
        ts = self.candles.timestamp
        self.bot = bot_create(
            user=self.user,
            account=self.account,
            series=store_series(self.candles),
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

    def step(self, i: int) -> int:
        ts, tf = self.candles.timestamp, self.candles.timeframe_ms
        self.clock.now = int(ts[i + 1])
        self.prices.price = Decimal(repr(float(self.candles.open[i + 1])))
        adapter = paper_adapter(self.account, self.prices, self.clock)
        return bot_step(bot_id=self.bot.pk, now_ms=int(ts[i]) + tf, adapter=adapter)

    def signal_bar(self) -> int:
        return int(self.candles.timestamp.searchsorted(self.first_entry)) - 1


def test_an_entry_on_a_halted_account_is_denied_stored_and_not_sent() -> None:
    w = Replay()
    bar = w.signal_bar()
    for i in range(bar):
        w.step(i)
    # Halted on the account only (a state the bot's step does not itself react to): the
    # entry reaches the pre-trade check, which must deny it.
    TradingState.objects.create(
        owner=w.user, account=w.account, state="halted", code="manual", reason="Held by hand"
    )
    assert w.step(bar) == 1
    order = BotOrder.objects.get(bot=w.bot)
    assert order.state == BotOrder.State.SKIPPED
    assert order.action == "enter"
    assert "trading_halted" in order.error
    assert PaperOrder.objects.filter(account=w.account).count() == 0
    denial = DeniedOrder.objects.get(owner=w.user)
    assert (denial.code, denial.source, denial.symbol) == (
        "trading_halted",
        f"bot:{w.bot.pk}",
        "SOL/USDT",
    )
    w.bot.refresh_from_db()
    assert w.bot.position == 0
    assert w.bot.cash == w.bot.capital


def test_an_entry_the_check_reduces_is_sent_at_the_approved_size() -> None:
    w = Replay()
    # A 100 USDT cap per order: far below the bot's own sizing (~95 % of 10 000 capped at
    # the profile's 6 % heat = ~600 USDT).
    RiskProfile.objects.filter(owner=w.user).update(max_order_notional=100.0)
    bar = w.signal_bar()
    for i in range(bar + 1):
        w.step(i)
    order = BotOrder.objects.get(bot=w.bot, action="enter")
    assert order.state == BotOrder.State.FILLED
    price = Decimal(repr(float(w.candles.open[bar + 1])))
    # round down to the 0.001 lot of 100 / price (the check prices at the last price)
    expected = (Decimal(100) / price).quantize(Decimal("0.001"), rounding="ROUND_FLOOR")
    assert order.amount == expected
    assert order.filled == expected


def test_the_kill_switch_pauses_running_bots_and_resume_waits_for_the_reset() -> None:
    w = Replay()
    other = make_user(pro=True)
    other_bot = LiveBot.objects.create(
        owner=other, name="not theirs", spec=w.bot.spec, settings=w.bot.settings,
        account=paper_account(other), series=w.bot.series, symbol="SOL/USDT", timeframe="1h",
        data_start_ts=0, start_ts=0, capital=Decimal(1000), cash=Decimal(1000),
    )  # fmt: skip
    run = kill_switch_engage(user=w.user, close_positions=False)
    assert run.pk
    w.bot.refresh_from_db()
    assert w.bot.status == LiveBot.Status.PAUSED
    assert "halted" in w.bot.status_reason
    assert "Kill switch" in w.bot.status_reason
    other_bot.refresh_from_db()
    assert other_bot.status == LiveBot.Status.RUNNING
    # Paused: stepping does nothing.
    assert w.step(0) == 0
    with pytest.raises(ApplicationError, match="Trading is halted"):
        bot_resume(user=w.user, bot=w.bot)
    for state in TradingState.objects.filter(owner=w.user):
        trading_state_reset(user=w.user, state=state)
    assert bot_resume(user=w.user, bot=w.bot).status == LiveBot.Status.RUNNING


def test_a_breaker_halt_on_one_account_pauses_only_the_bots_on_it() -> None:
    w = Replay()
    elsewhere = bot_create(
        user=w.user,
        account=paper_account_create(
            owner=w.user, label="Second", quote="USDT", starting_balance="5000"
        ),
        series=w.bot.series,
        strategy=make_strategy(w.user, "sma_cross"),
        settings=engine_settings(),
        param_values=PARAMS,
    )
    trading_state_set(
        user=w.user, account=w.account, to_state="halted", code="drawdown",
        reason="Drawdown 21 % (limit 20 %)", actor="breaker:drawdown",
    )  # fmt: skip
    w.bot.refresh_from_db()
    elsewhere.refresh_from_db()
    assert w.bot.status == LiveBot.Status.PAUSED
    assert "Drawdown 21 %" in w.bot.status_reason
    assert elsewhere.status == LiveBot.Status.RUNNING
