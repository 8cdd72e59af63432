"""Strategy bots with resting stop-loss / take-profit orders on the exchange.

A bot whose settings have a stop-loss and a take-profit places both as resting orders once its
entry fills (where the adapter can rest them), does the OCO itself, cancels both when it exits
otherwise, re-places a lost one once, and keeps watching the levels where the adapter cannot
rest them. Against the paper exchange (its feed moved by the test) and the loopback fake
Binance through the real ccxt adapter; a "crash" is an exception that is not a trading error,
raised around the chosen order as a dying worker would stop the step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import pytest

from backtester.engine.language import PRESETS
from backtester.engine.run import run_backtest
from backtester.engine.simulate import EXIT_REASONS
from backtester.models import BotOrder, LiveBot
from backtester.models.live import BotEvent
from backtester.services.backtests import sim_config
from backtester.services.live_bots import bot_create, bot_step
from exchanges.paper import PaperExchange
from exchanges.paper_models import PaperBalance, PaperOrder
from risk.models import RiskProfile
from tests.backtester.backtest_factories import make_strategy, make_user
from tests.bots.helpers import (
    RULES,
    Clock,
    ReplayPrices,
    demo_candles,
    engine_settings,
    paper_account,
    store_series,
)
from tests.fakes.binance_private import FakeBinancePrivate

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal
PARAMS = {"fast": 5, "slow": 20}
# The replay market with a cent tick, so the triggers' rounding shows.
CENT_RULES = replace(RULES, price_tick=D("0.01"))


class Killed(BaseException):
    """Stands in for the worker process dying at this point (not a trading error)."""


class Crashing:
    """The real adapter, interrupted once around ``create_order`` of the order whose client
    order id ends with ``match``."""

    def __init__(self, inner: Any, *, when: str, match: str) -> None:
        self.inner, self.when, self.match, self.armed = inner, when, match, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create_order(self, request: Any) -> Any:
        hit = self.armed and request.client_order_id.endswith(self.match)
        if hit and self.when == "before_send":
            self.armed = False
            raise Killed
        state = self.inner.create_order(request)
        if hit and self.when == "after_send":
            self.armed = False
            raise Killed
        return state


class NoStops:
    """The paper adapter as an exchange without resting stop orders would be."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def supports_stop_orders(self, symbol: str) -> bool:
        return False


class World:
    """A paper bot (sma_cross 5/20) on demo SOL/USDT hourly candles, stepped one closed candle
    at a time with the paper exchange quoting the next bar's open."""

    def __init__(self, days: int = 8, user: Any = None, **settings: Any) -> None:
        self.user = user or make_user(pro=True)
        RiskProfile.objects.create(owner=self.user, max_orders_per_minute=0)
        self.candles = demo_candles(days=days)
        self.series = store_series(self.candles)
        self.account = paper_account(self.user)
        ts = self.candles.timestamp
        self.bot = bot_create(
            user=self.user,
            account=self.account,
            series=self.series,
            strategy=make_strategy(self.user, "sma_cross"),
            settings=engine_settings(**settings),
            param_values=PARAMS,
            start_ts=int(ts[0]),
            data_start_ts=int(ts[0]),
        )
        self.prices, self.clock = ReplayPrices(), Clock()
        self.backtest = run_backtest(
            self.candles, PRESETS["sma_cross"], PARAMS, sim_config(self.bot.settings)
        )

    def adapter(self) -> PaperExchange:
        return PaperExchange(
            self.account, price_source=self.prices, clock=self.clock, rules=lambda _s: CENT_RULES
        )

    def step(self, i: int, adapter: Any = None) -> int:
        ts, tf = self.candles.timestamp, self.candles.timeframe_ms
        self.clock.now = int(ts[i + 1])
        self.prices.price = Decimal(repr(float(self.candles.open[i + 1])))
        return bot_step(
            bot_id=self.bot.pk, now_ms=int(ts[i]) + tf, adapter=adapter or self.adapter()
        )

    def run_until_long(self, adapter: Any = None) -> int:
        for i in range(len(self.candles) - 1):
            self.step(i, adapter)
            self.bot.refresh_from_db()
            if self.bot.position > 0:
                return i
        raise AssertionError("the bot never entered")

    def resting(self, action: str) -> BotOrder:
        return BotOrder.objects.get(bot=self.bot, action=action)

    def paper(self, client_order_id: str) -> list[PaperOrder]:
        return list(
            PaperOrder.objects.filter(account=self.account, client_order_id=client_order_id)
        )

    def sol(self) -> Decimal:
        row = PaperBalance.objects.filter(account=self.account, asset="SOL").first()
        return row.free + row.used if row else D(0)


def test_entry_places_stop_and_target_at_the_engines_levels_rounded_to_the_tick() -> None:
    w = World(stop_loss=0.2, take_profit=0.3)
    w.run_until_long()
    bot = w.bot
    stop, target = w.resting("stop"), w.resting("target")
    assert bot.entry_price is not None
    assert bot.entry_ts is not None
    # The kernel's levels from the entry fill: e x (1 - 0.2) and e x (1 + 0.3); a sell stop
    # rounds up to the cent (fires no later), a sell target down.
    assert stop.trigger_price == (bot.entry_price * D("0.8")).quantize(D("0.01"), ROUND_CEILING)
    assert target.trigger_price == (bot.entry_price * D("1.3")).quantize(D("0.01"), ROUND_FLOOR)
    for order, code in ((stop, "S"), (target, "T")):
        assert order.client_order_id == f"qfb{bot.pk}-{bot.entry_ts // 1000}-{code}"
        assert order.state == BotOrder.State.ACKNOWLEDGED
        assert (order.side, order.amount, order.bar_ts) == ("sell", bot.position, bot.entry_ts)
        [on_exchange] = w.paper(order.client_order_id)
        assert on_exchange.status == "open"
        assert on_exchange.trigger_price == order.trigger_price
        assert on_exchange.amount == bot.position
    assert PaperOrder.objects.get(client_order_id=stop.client_order_id).type == "stop_market"
    assert PaperOrder.objects.get(client_order_id=target.client_order_id).type == (
        "take_profit_market"
    )


def test_price_through_the_stop_books_the_exit_as_stop_loss_and_cancels_the_target() -> None:
    w = World(stop_loss=0.2, take_profit=0.3)
    i = w.run_until_long()
    held = w.bot.position
    stop = w.resting("stop")
    assert stop.trigger_price is not None
    # The market falls through the stop between two candles: the paper feed triggers it.
    w.prices.price = stop.trigger_price - D("1")
    [fill] = w.adapter().match()
    assert fill.client_order_id == stop.client_order_id

    assert w.step(i + 1) == 1
    w.bot.refresh_from_db()
    stop.refresh_from_db()
    target = w.resting("target")
    assert (stop.state, stop.reason, stop.filled) == (BotOrder.State.FILLED, "stop_loss", held)
    assert stop.average_price == fill.price
    assert (w.bot.position, w.sol()) == (0, 0)
    assert target.state == BotOrder.State.CANCELED
    assert target.error == "cancelled by the bot: stop_loss filled"
    assert w.paper(target.client_order_id)[0].status == "canceled"
    assert BotEvent.objects.filter(bot=w.bot, message__startswith="Stop-loss filled").count() == 1
    # The ledger agrees with the account: the exit's proceeds are the bot's cash.
    usdt = PaperBalance.objects.get(account=w.account, asset="USDT")
    assert usdt.free + usdt.used == w.bot.cash
    # Nothing is left resting, and the next candle sends nothing for this position.
    sent = PaperOrder.objects.filter(account=w.account).count()
    w.step(i + 2)
    assert PaperOrder.objects.filter(account=w.account).count() == sent
    assert not PaperOrder.objects.filter(account=w.account, status="open").exists()


def test_a_signal_exit_cancels_both_resting_orders_first() -> None:
    w = World(stop_loss=0.2, take_profit=0.3)
    first = w.backtest.sim.trades[0]
    assert EXIT_REASONS[int(first["exit_reason"])] == "signal"
    exit_bar = int(w.candles.timestamp.searchsorted(int(first["exit_time"]))) - 1
    for k in range(exit_bar + 1):
        w.step(k)
    exit_order = BotOrder.objects.get(bot=w.bot, action="exit")
    assert (exit_order.reason, exit_order.state) == ("signal", BotOrder.State.FILLED)
    for action in ("stop", "target"):
        order = w.resting(action)
        assert order.state == BotOrder.State.CANCELED
        assert order.error == "cancelled by the bot: signal exit at market"
        assert w.paper(order.client_order_id)[0].status == "canceled"
    w.bot.refresh_from_db()
    assert (w.bot.position, w.sol()) == (0, 0)
    assert not PaperOrder.objects.filter(account=w.account, status="open").exists()


@pytest.mark.parametrize("how", ["cancelled_outside", "gone"])
def test_a_lost_resting_order_is_placed_again_exactly_once(how: str) -> None:
    w = World(stop_loss=0.2, take_profit=0.3)
    i = w.run_until_long()
    stop = w.resting("stop")

    def lose(order: BotOrder) -> None:
        if how == "cancelled_outside":
            w.adapter().cancel_order(w.bot.symbol, order.client_order_id)
        else:
            PaperOrder.objects.filter(client_order_id=order.client_order_id).delete()

    lose(stop)
    w.step(i + 1)  # the restart's reconciliation sees it lost and places it again
    stop.refresh_from_db()
    assert stop.state == BotOrder.State.CANCELED
    assert stop.error.startswith("lost: ")
    again = w.resting("stop-r")
    assert again.client_order_id == stop.client_order_id + "2"
    assert (again.trigger_price, again.amount) == (stop.trigger_price, stop.amount)
    assert again.state == BotOrder.State.ACKNOWLEDGED
    assert len(w.paper(again.client_order_id)) == 1
    w.step(i + 2)
    assert len(w.paper(again.client_order_id)) == 1  # not placed a second time

    lose(again)
    w.step(i + 3)  # lost again: the level is only watched from now on
    w.step(i + 4)
    w.bot.refresh_from_db()
    assert w.bot.status == LiveBot.Status.RUNNING
    assert BotOrder.objects.filter(bot=w.bot, action__startswith="stop").count() == 2
    # The target was never touched: one order, still resting (unless the position closed).
    target = w.resting("target")
    assert len(w.paper(target.client_order_id)) == 1


@pytest.mark.parametrize("when", ["before_send", "after_send"])
def test_killed_around_the_stops_send_restarts_without_a_second_order(when: str) -> None:
    w = World(stop_loss=0.2, take_profit=0.3)
    entry_bar = int(w.candles.timestamp.searchsorted(int(w.backtest.sim.trades[0]["entry_time"])))
    for k in range(entry_bar - 1):
        w.step(k)
    with pytest.raises(Killed):
        w.step(entry_bar - 1, Crashing(w.adapter(), when=when, match="-S"))
    stop = w.resting("stop")
    assert stop.state == BotOrder.State.PLANNED  # stored before it was sent
    assert len(w.paper(stop.client_order_id)) == (1 if when == "after_send" else 0)
    assert not BotOrder.objects.filter(bot=w.bot, action="target").exists()

    # Restart on the same candle: the stop is looked up (sent only if the exchange never got
    # it), the target placed, the entry not sent again.
    assert w.step(entry_bar - 1) == 1
    stop.refresh_from_db()
    assert stop.state == BotOrder.State.ACKNOWLEDGED
    for action in ("enter", "stop", "target"):
        order = BotOrder.objects.get(bot=w.bot, action=action)
        assert len(w.paper(order.client_order_id)) == 1, action
    w.bot.refresh_from_db()
    assert w.bot.position == w.sol() > 0


def test_an_adapter_without_stop_orders_keeps_watching_the_levels() -> None:
    w = World(stop_loss=0.01, take_profit=0.015)
    reasons = {EXIT_REASONS[int(r)] for r in w.backtest.sim.trades["exit_reason"]}
    assert {"stop_loss", "take_profit"} <= reasons
    adapter = NoStops(w.adapter())
    for k in range(len(w.candles) - 1):
        w.step(k, adapter)
    assert not BotOrder.objects.filter(bot=w.bot, action__in=BotOrder.RESTING_ACTIONS).exists()
    assert not PaperOrder.objects.filter(account=w.account).exclude(type="market").exists()
    watched = set(
        BotOrder.objects.filter(bot=w.bot, action="protect").values_list("reason", flat=True)
    )
    assert watched & {"stop_loss", "take_profit"}
    w.bot.refresh_from_db()
    assert w.bot.status == LiveBot.Status.RUNNING


# --- against the fake Binance ------------------------------------------------------------------


@pytest.fixture
def binance(monkeypatch: Any) -> Iterator[FakeBinancePrivate]:
    fake = FakeBinancePrivate()
    fake.serve()
    fake.now_ms = int(time.time() * 1000)
    fake.set_price("SOLUSDT", "100")
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": fake.url_overrides()}))
    try:
        yield fake
    finally:
        fake.release.set()
        fake.stop()


def _binance_bot(binance: FakeBinancePrivate, **settings: Any) -> tuple[Any, Any, Any, LiveBot]:
    """A sma_cross bot on 8 days of demo SOL/USDT hours, on a fake Binance account holding
    10 000 USDT and no SOL (Binance takes a buy's fee in SOL: the bot must hold what the buy
    left, not what it filled): (the fake account, the linked account, the candles, the bot)."""
    from exchanges.services import account_link
    from risk.services import risk_profile_update

    user = make_user(pro=True)
    key = binance.add_account(balances={"USDT": "10000"})
    account = account_link(
        user=user, exchange="binance", label="bot", api_key=key.api_key, secret=key.secret
    )
    risk_profile_update(user=user, values={"max_orders_per_minute": 0})
    candles = demo_candles(days=8)
    ts = candles.timestamp
    bot = bot_create(
        user=user,
        account=account,
        series=store_series(candles),
        strategy=make_strategy(user, "sma_cross"),
        settings=engine_settings(**settings),
        param_values=PARAMS,
        start_ts=int(ts[0]),
        data_start_ts=int(ts[0]),
    )
    return key, account, candles, bot


def test_binance_bot_rests_stop_loss_and_take_profit_and_does_the_oco(binance) -> None:
    from exchanges.adapters import adapter_for

    key, account, candles, bot = _binance_bot(
        binance, stop_loss=0.2, take_profit=0.3, size_value=0.5
    )
    ts, tf = candles.timestamp, candles.timeframe_ms

    def step(i: int) -> int:
        binance.set_price("SOLUSDT", f"{float(candles.open[i + 1]):.3f}")
        adapter = adapter_for(account, timeout_ms=3000, sleep=lambda _s: None)
        return bot_step(bot_id=bot.pk, now_ms=int(ts[i]) + tf, adapter=adapter)

    i = 0
    while True:
        step(i)
        bot.refresh_from_db()
        assert bot.status == LiveBot.Status.RUNNING, bot.status_reason
        if bot.position > 0:
            break
        i += 1
    stop = BotOrder.objects.get(bot=bot, action="stop")
    target = BotOrder.objects.get(bot=bot, action="target")
    enter = BotOrder.objects.get(bot=bot, action="enter")
    [buy] = [t for t in binance.trades if t.order.client_id == enter.client_order_id]
    assert (buy.commission_asset, enter.fee_currency) == ("SOL", "SOL")
    assert enter.fee == buy.commission > 0
    assert bot.position == buy.qty - buy.commission == key.free("SOL")
    held = bot.position.quantize(D("0.001"), ROUND_FLOOR)  # the fake's SOLUSDT lot step
    tick = D("0.001")  # the fake's SOLUSDT tick
    assert bot.entry_price is not None
    assert stop.trigger_price == (bot.entry_price * D("0.8")).quantize(tick, ROUND_CEILING)
    assert target.trigger_price == (bot.entry_price * D("1.3")).quantize(tick, ROUND_FLOOR)
    [on_stop] = binance.orders_with_client_id(stop.client_order_id)
    [on_target] = binance.orders_with_client_id(target.client_order_id)
    assert (on_stop.type, on_stop.stop_price, on_stop.qty) == (
        "STOP_LOSS", stop.trigger_price, held,
    )  # fmt: skip
    assert (on_target.type, on_target.stop_price) == ("TAKE_PROFIT", target.trigger_price)

    binance.set_price("SOLUSDT", stop.trigger_price - D("0.5"))  # through the stop
    assert on_stop.status == "FILLED"
    step(i + 1)
    bot.refresh_from_db()
    stop.refresh_from_db()
    target.refresh_from_db()
    assert (stop.state, stop.reason, stop.filled) == (
        BotOrder.State.FILLED,
        "stop_loss",
        on_stop.qty,
    )
    assert bot.position == 0
    assert bot.status == LiveBot.Status.RUNNING, bot.status_reason
    # The stop's fee, which Binance states only on the fills, was read from them (in USDT).
    [sold] = [t for t in binance.trades if t.order.client_id == stop.client_order_id]
    assert (stop.fee, stop.fee_currency) == (sold.commission.quantize(D("1E-8")), "USDT")
    assert key.free("SOL") == buy.qty - buy.commission - held  # dust below the lot step
    assert target.state == BotOrder.State.CANCELED
    assert on_target.status == "CANCELED"
    # Exactly one order per client order id reached the exchange.
    for order in BotOrder.objects.filter(bot=bot).exclude(state=BotOrder.State.SKIPPED):
        assert len(binance.orders_with_client_id(order.client_order_id)) == 1


def test_binance_bot_sells_what_the_buys_fee_left_and_books_both_fees(binance) -> None:
    """Binance takes a buy's fee in the coin bought: the bot holds filled - fee, its exit sells
    exactly that (rounded down to the lot step), the account never runs short, and the bot's
    P&L is the hand-computed round trip with both fees (the buy's in SOL, the sell's in USDT)."""
    from backtester.services.live_bots import bot_fills, equity_from_fills, order_fee_quote
    from exchanges.adapters import adapter_for

    # No stop or target: the exit is a market sell on the strategy's signal.
    key, account, candles, bot = _binance_bot(binance, size_value=0.5)
    ts, tf = candles.timestamp, candles.timeframe_ms
    bought = False
    for i in range(len(ts) - 1):
        binance.set_price("SOLUSDT", f"{float(candles.open[i + 1]):.3f}")
        adapter = adapter_for(account, timeout_ms=3000, sleep=lambda _s: None)
        bot_step(bot_id=bot.pk, now_ms=int(ts[i]) + tf, adapter=adapter)
        bot.refresh_from_db()
        assert bot.status == LiveBot.Status.RUNNING, bot.status_reason
        if bot.position > 0 and not bought:
            bought = True
            enter = BotOrder.objects.get(bot=bot, action="enter")
            [buy] = [t for t in binance.trades if t.order.client_id == enter.client_order_id]
            # What the account received, not what filled.
            assert buy.commission_asset == "SOL"
            assert bot.position == buy.qty - buy.commission == key.free("SOL")
            assert bot.entry_price == buy.price  # the fill price: the fee does not move it
        if bought and bot.position == 0:
            break
    else:
        raise AssertionError("the bot never completed a round trip")
    exit_ = BotOrder.objects.get(bot=bot, action="exit")
    [sell] = [t for t in binance.trades if t.order.client_id == exit_.client_order_id]
    held = buy.qty - buy.commission
    step = D("0.001")  # the fake's SOLUSDT lot step
    # It sold exactly what the buy left, rounded down to the lot step; the dust stays.
    assert exit_.amount == exit_.filled == sell.qty == held.quantize(step, ROUND_FLOOR)
    assert key.free("SOL") == held - sell.qty < step
    assert (exit_.state, exit_.fee_currency) == (BotOrder.State.FILLED, "USDT")
    # Hand-computed: the buy's cost rounded up to 8 decimals, the sell's proceeds rounded down,
    # less the sell's USDT fee (0.1 %, as Binance states it to 8 decimals). The buy's fee is
    # paid in coins: fewer were sold (and the dust below the step was left behind).
    eight = D("1E-8")
    cost = (buy.qty * buy.price).quantize(eight, ROUND_CEILING)
    proceeds = (sell.qty * sell.price).quantize(eight, ROUND_FLOOR)
    sell_fee = (sell.qty * sell.price * D("0.001")).quantize(eight)
    assert exit_.fee == sell_fee
    assert bot.cash - bot.capital == proceeds - cost - sell_fee
    # Both fees valued in USDT for the order list: the buy's at its fill price.
    assert order_fee_quote(enter) == (buy.commission * buy.price).quantize(eight, ROUND_CEILING)
    assert order_fee_quote(exit_) == sell_fee
    # The drift chart's ledger books the same: the coins the fee took, the dust let go.
    [last] = equity_from_fills(
        timestamps=[int(ts[-1])], closes=[1.0], capital=bot.capital, fills=bot_fills(bot)
    )
    assert last == float(bot.cash)
    # The bot's USDT is what the account's USDT moved by (to the fake's unrounded cents).
    assert abs(key.free("USDT") - bot.cash) < D("0.00000002")
    # No order reached the exchange twice, and none was refused for want of SOL.
    for order in BotOrder.objects.filter(bot=bot).exclude(state=BotOrder.State.SKIPPED):
        assert order.state == BotOrder.State.FILLED, (order.action, order.error)
        assert len(binance.orders_with_client_id(order.client_order_id)) == 1


# --- a real worker killed mid-step --------------------------------------------------------------


def test_worker_killed_mid_step_with_resting_stops_no_order_twice(tmp_path) -> None:
    """A real Celery worker SIGKILLed while it catches up on 1-minute candles with resting
    stops and targets (each trade: entry, stop, target, exit), then a new worker: every
    stored order reached the paper exchange at most once, none is left planned or unknown, and
    the account holds exactly the bot's position."""
    import os
    import signal

    from backtester.tasks.live_bots import live_bot_step_task
    from tests.bots.test_worker_kill import _wait, _worker

    user = make_user(pro=True)
    candles = demo_candles(days=2, timeframe="1m")
    series = store_series(candles)
    account = paper_account(user)
    ts = candles.timestamp
    bot = bot_create(
        user=user,
        account=account,
        series=series,
        strategy=make_strategy(user, "sma_cross"),
        settings={"size_value": 0.5, "taker_fee": 0.001, "stop_loss": 0.01, "take_profit": 0.02},
        param_values=PARAMS,
        start_ts=int(ts[0]),
        data_start_ts=int(ts[0]),
    )
    queue = f"botstops-{os.getpid()}"
    log = tmp_path / "worker.log"
    log.write_bytes(b"")
    first = _worker(queue, log)
    try:
        live_bot_step_task.apply_async((bot.pk,), queue=queue)
        _wait(
            lambda: BotOrder.objects.filter(bot=bot, action__in=("stop", "target")).count() >= 5,
            180,
            "five resting orders",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    bot.refresh_from_db()
    assert bot.cursor_ts is None or bot.cursor_ts < int(ts[-2]), "killed too late: step finished"

    second = _worker(queue, log)
    try:
        live_bot_step_task.apply_async((bot.pk,), queue=queue)
        _wait(
            lambda: (
                LiveBot.objects.get(pk=bot.pk).cursor_ts == int(ts[-1])
                or LiveBot.objects.get(pk=bot.pk).status != LiveBot.Status.RUNNING
            ),
            300,
            "the second worker to finish the catch-up",
        )
    finally:
        second.terminate()
        second.wait(timeout=30)

    bot.refresh_from_db()
    assert bot.status == LiveBot.Status.RUNNING, bot.status_reason
    orders = list(BotOrder.objects.filter(bot=bot))
    assert {"stop", "target"} <= {o.action for o in orders}
    assert not [o for o in orders if o.state in (BotOrder.State.PLANNED, BotOrder.State.UNKNOWN)]
    paper = [p.client_order_id for p in PaperOrder.objects.filter(account=account)]
    assert len(paper) == len(set(paper)), "an order was sent twice"
    rows = {o.client_order_id for o in orders if o.state != BotOrder.State.SKIPPED}
    assert set(paper) <= rows  # nothing on the exchange without its stored row first
    reached = {o.client_order_id for o in orders if o.state != BotOrder.State.SKIPPED and not (
        o.state == BotOrder.State.CANCELED and o.error.endswith("(it never reached the exchange)")
    )}  # fmt: skip
    assert reached <= set(paper) | {o.client_order_id for o in orders if o.state == "rejected"}
    # Only the last position's stop and target may still rest.
    open_rows = [o for o in orders if o.state == BotOrder.State.ACKNOWLEDGED]
    assert len(open_rows) <= 2
    assert all(o.action in BotOrder.RESTING_ACTIONS for o in open_rows)
    held = PaperBalance.objects.filter(account=account, asset="SOL").first()
    assert (held.free + held.used if held else D(0)) == bot.position


def test_the_bot_page_state_and_api_show_the_resting_orders() -> None:
    from django.test import Client

    w = World(stop_loss=0.2, take_profit=0.3)
    w.run_until_long()
    stop, target = w.resting("stop"), w.resting("target")
    assert stop.trigger_price is not None
    assert target.trigger_price is not None
    client = Client()
    client.force_login(w.user)
    page = client.get(f"/bots/{w.bot.pk}/").content.decode()
    resting = page[page.index('id="bot-resting"') : page.index('id="bot-orders"')]
    for order, word in ((stop, "Stop-loss"), (target, "Take-profit")):
        assert order.trigger_price is not None
        assert order.client_order_id in resting
        assert f"{order.trigger_price.normalize():f}" in resting
        assert word in resting
    state = client.get(f"/bots/{w.bot.pk}/state/").json()
    assert [(o["action"], o["trigger_price"]) for o in state["resting"]] == [
        ("stop", f"{stop.trigger_price.normalize():f}"),
        ("target", f"{target.trigger_price.normalize():f}"),
    ]
    api = client.get(f"/api/v1/bots/{w.bot.pk}/orders/").json()
    rows = api["results"] if isinstance(api, dict) else api
    by_id = {r["client_order_id"]: r for r in rows}
    assert by_id[stop.client_order_id]["resting"] is True
    assert by_id[stop.client_order_id]["trigger_price"] == f"{stop.trigger_price.normalize():f}"
    assert by_id[w.bot.orders.get(action="enter").client_order_id]["resting"] is False
    # Someone else's bot page is a 404.
    other = Client()
    other.force_login(make_user(pro=True))
    assert other.get(f"/bots/{w.bot.pk}/state/").status_code == 404


def test_a_stop_filled_while_the_bot_was_paused_is_booked_when_it_starts_again() -> None:
    from backtester.services.live_bots import bot_pause, bot_resume

    w = World(stop_loss=0.2, take_profit=0.3)
    i = w.run_until_long() + 1
    w.step(i)  # one candle in the position
    w.bot.refresh_from_db()
    assert w.bot.position > 0
    entry_ts = w.bot.entry_ts
    bot_pause(user=w.user, bot=LiveBot.objects.get(pk=w.bot.pk))
    stop = w.resting("stop")
    assert stop.trigger_price is not None
    w.prices.price = stop.trigger_price - D("2")
    [fill] = w.adapter().match()  # the exchange fills it while the bot is not running
    assert w.step(i + 1) == 0  # paused: nothing looked at
    stop.refresh_from_db()
    assert stop.state == BotOrder.State.ACKNOWLEDGED
    bot_resume(user=w.user, bot=LiveBot.objects.get(pk=w.bot.pk))
    assert w.step(i + 2) == 2  # catches up bars i+1 and i+2 after reconciling
    stop.refresh_from_db()
    w.bot.refresh_from_db()
    assert (stop.state, stop.reason, stop.average_price) == (
        BotOrder.State.FILLED, "stop_loss", fill.price,
    )  # fmt: skip
    # Booked on the first candle the bot had not processed when it came back (not the
    # entry's candle, where it was stored).
    assert stop.bar_ts == int(w.candles.timestamp[i + 1]) != entry_ts
    assert w.bot.position == 0
    assert w.resting("target").state == BotOrder.State.CANCELED
    assert not PaperOrder.objects.filter(account=w.account, status="open").exists()
