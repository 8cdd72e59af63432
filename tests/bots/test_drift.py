"""Drift: the bot's equity (cash plus position at each close, from its fills) beside the
engine's expectation from the deployment, and the gap in %."""

from __future__ import annotations

from decimal import Decimal

import pytest

from backtester.engine.language import PRESETS
from backtester.engine.run import run_backtest
from backtester.marketdata.store import load_candles
from backtester.models import LiveBot
from backtester.services.backtests import sim_config
from backtester.services.live_bots import LedgerFill, bot_drift, equity_from_fills
from tests.bots.helpers import BotReplay

D = Decimal


def test_equity_from_fills_on_a_hand_computed_case() -> None:
    # 1000 USDT; buy 2 at 100 (fee 0.2) on bar 1, sell 2 at 110 (fee 0.22) on bar 3.
    # bar 0: 1000                         bar 1: 799.8 + 2 * 101 = 1001.8
    # bar 2: 799.8 + 2 * 105 = 1009.8    bar 3: 799.8 + 220 - 0.22 = 1019.58; bar 4 the same
    fills = [
        LedgerFill(3, "sell", D("2"), D("110"), D("0.22")),
        LedgerFill(1, "buy", D("2"), D("100"), D("0.2")),
    ]
    got = equity_from_fills(
        timestamps=[0, 1, 2, 3, 4], closes=[100, 101, 105, 111, 108], capital=D(1000), fills=fills
    )
    assert got == [1000.0, 1001.8, 1009.8, 1019.58, 1019.58]


def test_equity_from_fills_with_the_buys_fee_taken_in_the_coin() -> None:
    # 1000 USDT; buy 2 at 100 on bar 1, the fee 0.002 taken in the coin: 1.998 held, cash 800.
    # bar 1: 800 + 1.998 * 101 = 1001.798        bar 2: 800 + 1.998 * 105 = 1009.79
    # bar 3: sell 1.99 (the lot) at 110, fee 0.2189: 800 + 218.9 - 0.2189 = 1018.6811; the
    # 0.008 of dust left is let go with the completed sell, so bar 4 is the same.
    fills = [
        LedgerFill(1, "buy", D("2"), D("100"), D(0), fee_base=D("0.002")),
        LedgerFill(3, "sell", D("1.99"), D("110"), D("0.2189"), closes=True),
    ]
    got = equity_from_fills(
        timestamps=[0, 1, 2, 3, 4], closes=[100, 101, 105, 111, 108], capital=D(1000), fills=fills
    )
    assert got == [1000.0, 1001.798, 1009.79, 1018.6811, 1018.6811]


def test_a_buys_cost_is_booked_rounded_up_to_eight_decimals() -> None:
    # 0.333 * 3.00000003 = 0.99900000999 -> 0.99900001 paid; then marked at 3.
    got = equity_from_fills(
        timestamps=[5],
        closes=[3.0],
        capital=D(10),
        fills=[LedgerFill(5, "buy", D("0.333"), D("3.00000003"), D(0))],
    )
    assert got == [float(D(10) - D("0.99900001") + D("0.333") * 3)]


@pytest.mark.django_db(transaction=True)
def test_a_paper_bot_replayed_over_a_series_has_no_drift_beyond_rounding() -> None:
    w = BotReplay()
    n = len(w.candles)
    for i in range(n - 1):
        w.step(i)
    bot = LiveBot.objects.get(pk=w.bot.pk)
    assert bot.orders.filter(filled__gt=0).count() >= 4
    drift = bot_drift(bot)
    assert drift is not None
    assert drift.timestamps == [int(t) for t in w.candles.timestamp[: n - 1]]
    # The expectation is the backtest of the same candles (deployed at the first candle, so
    # the indicators' history and the simulation start at the same bar).
    backtest = run_backtest(
        load_candles(w.series), PRESETS["sma_cross"], BotReplay.PARAMS, sim_config(bot.settings)
    )
    assert drift.expected == pytest.approx(list(backtest.sim.equity[: n - 1]), rel=1e-12)
    # The live curve ends at the bot's own ledger marked at the last processed close.
    last_close = D(repr(float(w.candles.close[n - 2])))
    assert drift.live[-1] == pytest.approx(float(bot.cash + bot.position * last_close), abs=1e-9)
    assert drift.gap_pct is not None
    assert abs(drift.gap_pct) < 1e-5  # a few millionths of a USDT on 10 000
    assert max(abs(a - b) for a, b in zip(drift.live, drift.expected, strict=True)) < 1e-3


@pytest.mark.django_db(transaction=True)
def test_no_drift_before_the_first_candle_and_the_expectation_starts_at_the_capital() -> None:
    w = BotReplay()
    assert bot_drift(w.bot) is None
    # Deployed later than its data start: the expectation trades from the deployment only.
    ts = w.candles.timestamp
    LiveBot.objects.filter(pk=w.bot.pk).update(start_ts=int(ts[60]))
    w.bot.refresh_from_db()
    for i in range(58, 80):
        w.step(i)
    bot = LiveBot.objects.get(pk=w.bot.pk)
    drift = bot_drift(bot)
    assert drift is not None
    assert drift.timestamps[0] == int(ts[60])
    assert drift.expected[0] == pytest.approx(float(bot.capital))
    assert drift.live[0] == pytest.approx(float(bot.capital))
