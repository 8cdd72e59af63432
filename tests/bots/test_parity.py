"""Backtest parity: a paper bot replayed bar by bar makes the backtest's decisions.

The same demo SOL/USDT hourly series is (a) backtested by the engine and (b) fed to a paper bot
one closed candle at a time, the paper exchange quoting each next bar's open when the bot acts.
Engine fees and slippage are set to the paper market's. Expected: the same entries and exits at
the same bars, the same exit reasons, order sizes equal to the lot step, final equity within the
paper exchange's rounding (tick-rounded slipped prices, fees rounded up to 8 decimals).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from backtester.engine.language import PRESETS
from backtester.engine.run import run_backtest
from backtester.marketdata.store import load_candles
from backtester.models import BotOrder, LiveBot
from backtester.services.backtests import sim_config
from backtester.services.live_bots import bot_create, bot_step
from risk.models import RiskProfile
from tests.backtester.backtest_factories import make_strategy, make_user
from tests.bots.helpers import (
    RULES,
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


def _bot_trades(bot: LiveBot) -> list[dict]:
    """Round trips from the bot's filled orders, in the backtest's trade shape."""
    trades: list[dict] = []
    current: dict | None = None
    for order in bot.orders.order_by("bar_ts", "pk"):
        if order.action in BotOrder.RESTING_ACTIONS and order.filled == 0:
            # A resting stop/target the bot cancelled when it exited otherwise: not a trade.
            assert order.state == BotOrder.State.CANCELED, (order, order.error)
            continue
        assert order.state == BotOrder.State.FILLED, (order, order.error)
        if order.action == "enter":
            assert current is None
            current = {"entry_time": order.bar_ts, "qty": order.filled, "side": 1}
        else:
            assert current is not None
            assert order.filled == current["qty"]
            current.update(exit_time=order.bar_ts, exit_reason=order.reason)
            trades.append(current)
            current = None
    if current is not None:
        trades.append(current)
    return trades


def _replay(settings_overrides: dict, days: int = 20):
    user = make_user(pro=True)
    candles = demo_candles(days=days)
    series = store_series(candles)
    account = paper_account(user)
    # Every bot order passes the risk check. The replay sends 20 days of orders within
    # seconds, so the live-only order-rate limit is switched off; the rest of the default
    # profile applies (and approves these orders unchanged).
    RiskProfile.objects.create(owner=user, max_orders_per_minute=0)
    strategy = make_strategy(user, "sma_cross")
    settings = engine_settings(**settings_overrides)
    ts = candles.timestamp
    tf = candles.timeframe_ms
    bot = bot_create(
        user=user,
        account=account,
        series=series,
        strategy=strategy,
        settings=settings,
        param_values=PARAMS,
        start_ts=int(ts[0]),
        data_start_ts=int(ts[0]),
    )
    prices, clock = ReplayPrices(), Clock()
    adapter = paper_adapter(account, prices, clock)
    n = len(candles)
    # Bars 0..n-2 close one by one; the bot's last possible order fills at bar n-1's open.
    for i in range(n - 1):
        clock.now = int(ts[i + 1])
        prices.price = Decimal(repr(float(candles.open[i + 1])))
        assert bot_step(bot_id=bot.pk, now_ms=int(ts[i]) + tf, adapter=adapter) == 1
    bot.refresh_from_db()
    assert bot.status == LiveBot.Status.RUNNING, bot.status_reason
    assert bot.cursor_ts == int(ts[n - 2])
    stored = load_candles(series)
    backtest = run_backtest(stored, PRESETS["sma_cross"], PARAMS, sim_config(bot.settings))
    return bot, candles, backtest


def _engine_trades(backtest) -> list[dict]:
    from backtester.engine.simulate import EXIT_REASONS

    out = [
        {
            "entry_time": int(t["entry_time"]),
            "exit_time": int(t["exit_time"]),
            "exit_reason": EXIT_REASONS[int(t["exit_reason"])],
            "qty": float(t["qty"]),
            "side": int(t["side"]),
        }
        for t in backtest.sim.trades
    ]
    pos = backtest.sim.open_position
    if pos is not None:
        out.append({"entry_time": pos.entry_time, "qty": pos.qty, "side": pos.side})
    return out


def _assert_same_decisions(bot_trades: list[dict], engine_trades: list[dict]) -> None:
    lot = float(RULES.amount_step)
    assert len(bot_trades) == len(engine_trades)
    for got, want in zip(bot_trades, engine_trades, strict=True):
        assert got["entry_time"] == want["entry_time"]
        assert got.get("exit_time") == want.get("exit_time")
        assert got.get("exit_reason") == want.get("exit_reason")
        assert got["side"] == want["side"]
        # Sized by the engine's function from the bot's own ledger: the same lots.
        assert abs(float(got["qty"]) - want["qty"]) < lot / 2, (got, want)


def test_sma_cross_paper_bot_matches_backtest_bar_by_bar() -> None:
    bot, candles, backtest = _replay({})
    bot_trades = _bot_trades(bot)
    engine_trades = _engine_trades(backtest)
    assert len(engine_trades) >= 8, "the series must make the strategy trade often"
    _assert_same_decisions(bot_trades, engine_trades)

    last_close = Decimal(repr(float(candles.close[-1])))
    bot_equity = float(bot.cash + bot.position * last_close)
    engine_equity = float(backtest.sim.equity[-1])
    # Rounding per fill: the slipped price to the 1e-8 tick (<= 1e-8 * ~100 units) and the
    # fee up to 8 decimals: a few millionths of a USDT over the whole run.
    assert abs(bot_equity - engine_equity) < 1e-4, (bot_equity, engine_equity)
    # The paper account agrees with the bot's ledger.
    balances = paper_adapter(bot.account, ReplayPrices(), Clock()).balances()
    assert balances["USDT"].total == bot.cash
    held = balances.get("SOL")
    assert (held.total if held else Decimal(0)) == bot.position


def test_stops_and_targets_are_watched_like_the_simulation() -> None:
    bot, _candles, backtest = _replay({"stop_loss": 0.01, "take_profit": 0.015})
    # The paper exchange rests them too; the replay's feed (each bar's open) never reaches a
    # level the bar's high/low did, so the bot's watching exits and cancels both each time.
    resting = bot.orders.filter(action__in=BotOrder.RESTING_ACTIONS)
    assert {o.action for o in resting} == {"stop", "target"}
    assert resting.count() == 2 * bot.orders.filter(action="enter").count()
    bot_trades = _bot_trades(bot)
    engine_trades = _engine_trades(backtest)
    reasons = {t.get("exit_reason") for t in engine_trades}
    assert {"stop_loss", "take_profit"} <= reasons, reasons
    assert [t["entry_time"] for t in bot_trades] == [t["entry_time"] for t in engine_trades]
    assert [t.get("exit_time") for t in bot_trades] == [t.get("exit_time") for t in engine_trades]
    assert [t.get("exit_reason") for t in bot_trades] == [
        t.get("exit_reason") for t in engine_trades
    ]


def test_trailing_stop_is_watched_like_the_simulation() -> None:
    bot, _candles, backtest = _replay({"trailing_stop": 0.006})
    bot_trades = _bot_trades(bot)
    engine_trades = _engine_trades(backtest)
    assert "trailing_stop" in {t.get("exit_reason") for t in engine_trades}
    assert [(t["entry_time"], t.get("exit_time"), t.get("exit_reason")) for t in bot_trades] == [
        (t["entry_time"], t.get("exit_time"), t.get("exit_reason")) for t in engine_trades
    ]
