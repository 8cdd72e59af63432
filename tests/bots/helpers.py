"""Builders for the bot tests: a demo market in the store, a paper account, a replay market.

``ReplayPrices`` is the paper exchange's price source during a replay: before the bot handles
the close of bar t the test moves it to bar t+1's open, the moment a next-open order is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from django.conf import settings

from backtester.engine.candles import Candles
from backtester.marketdata.demo import DEMO_ASSETS, generate_series
from backtester.marketdata.store import write_candles
from backtester.models import MarketSeries
from exchanges.paper import PaperExchange, PriceRange
from exchanges.services_paper import paper_account_create
from exchanges.trading import MarketRules

D = Decimal
SOL = next(a for a in DEMO_ASSETS if a.symbol == "SOL/USDT")
# A SOL/USDT-like market: 0.001 lot, 5 USDT minimum order value, 0.1 % taker fee, and an
# 8-decimal price tick. The engine does not round prices to a tick; with SOL's real 0.001 tick
# the paper's tick-rounded slipped prices move the bot's cash by up to 0.1 USDT a fill, and
# after a few trades the entry sizes drift by a few lots from the backtest's.
RULES = MarketRules(
    symbol="SOL/USDT",
    base="SOL",
    quote="USDT",
    amount_step=D("0.001"),
    price_tick=D("0.00000001"),
    min_notional=D("5"),
    taker_fee=D("0.001"),
    maker_fee=D("0.001"),
)


def demo_candles(days: int = 20, timeframe: str = "1h") -> Candles:
    return generate_series(SOL, days=days)[timeframe]


def store_series(candles: Candles) -> MarketSeries:
    series = MarketSeries.objects.create(
        exchange="demo",
        symbol=candles.symbol,
        timeframe=candles.timeframe,
        source=MarketSeries.Source.DEMO,
        synthetic=True,
    )
    write_candles(series=series, candles=candles)
    series.refresh_from_db()
    return series


@dataclass
class ReplayPrices:
    price: Decimal = Decimal(0)

    def last_price(self, symbol: str) -> Decimal | None:
        return self.price if self.price > 0 else None

    def range_since(self, symbol: str, since_ms: int) -> PriceRange | None:
        return None


@dataclass
class Clock:
    now: int = 0

    def __call__(self) -> int:
        return self.now


def paper_account(user, balance: str = "10000"):
    return paper_account_create(owner=user, label="Paper", quote="USDT", starting_balance=balance)


def paper_adapter(account, prices: ReplayPrices, clock: Clock) -> PaperExchange:
    return PaperExchange(account, price_source=prices, clock=clock, rules=lambda _s: RULES)


def engine_settings(**overrides) -> dict:
    """SimConfig fields matching the paper market: taker fee, paper slippage, lot, minimum."""
    base = {
        "initial_cash": 10_000.0,
        "taker_fee": float(RULES.taker_fee),
        "maker_fee": float(RULES.maker_fee),
        "slippage_bps": float(settings.PAPER_SLIPPAGE_BPS),
        "lot_step": float(RULES.amount_step),
        "min_notional": float(RULES.min_notional),
        "size_value": 0.95,
        "allow_short": False,
    }
    base.update(overrides)
    return base


class BotReplay:
    """A paper bot on ``days`` of demo SOL/USDT hourly candles (sma_cross 5/20), stepped one
    closed candle at a time with the paper exchange quoting the next bar's open."""

    PARAMS: ClassVar[dict[str, int]] = {"fast": 5, "slow": 20}

    def __init__(self, user=None, *, days: int = 8) -> None:
        from backtester.services.live_bots import bot_create
        from risk.models import RiskProfile
        from tests.backtester.backtest_factories import make_strategy, make_user

        self.user = user or make_user(pro=True)
        RiskProfile.objects.get_or_create(owner=self.user, account=None)
        RiskProfile.objects.filter(owner=self.user).update(max_orders_per_minute=0)
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
            param_values=self.PARAMS,
            start_ts=int(ts[0]),
            data_start_ts=int(ts[0]),
        )
        self.prices, self.clock = ReplayPrices(), Clock()

    def adapter(self) -> PaperExchange:
        return paper_adapter(self.account, self.prices, self.clock)

    def step(self, i: int) -> int:
        from backtester.services.live_bots import bot_step

        ts, tf = self.candles.timestamp, self.candles.timeframe_ms
        self.clock.now = int(ts[i + 1])
        self.prices.price = Decimal(repr(float(self.candles.open[i + 1])))
        return bot_step(bot_id=self.bot.pk, now_ms=int(ts[i]) + tf, adapter=self.adapter())

    def run_until_long(self) -> int:
        """Step until the bot holds a position; the index of the last bar stepped."""
        for i in range(len(self.candles) - 1):
            self.step(i)
            self.bot.refresh_from_db()
            if self.bot.position > 0:
                return i
        raise AssertionError("the bot never entered")
