"""Builders for the grid bot tests: a Pro user, a paper account on a SOL/USDT-like market, and
a replay that walks each candle along the engine's intrabar path.

``legs`` is the simulation's stated intrabar rule (``backtester.engine.gridbot``): the price
goes open -> the extreme nearer the open (the high on a tie) -> the other extreme -> close,
and jumps from the previous close to the open between bars. The replay feeds each leg to the
paper exchange as one price range, lets it match the resting orders (the paper matching task's
job), then steps the bot, so orders placed after leg k can only fill on leg k + 1 or later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from backtester.engine.candles import Candles
from backtester.services.grid_bots import grid_step
from exchanges.models import ExchangeAccount
from exchanges.paper import ManualPrices, PaperExchange
from risk.models import RiskProfile
from tests.backtester.backtest_factories import make_user
from tests.bots.helpers import RULES, Clock, paper_account

SYMBOL = "SOL/USDT"


def dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def legs(o: float, h: float, low: float, c: float) -> list[float]:
    """The points the price passes within one bar (after the open)."""
    if h - o <= o - low:
        return [h, low, c]
    return [low, h, c]


@dataclass
class GridWorld:
    balance: str = "10000"
    open_limits: bool = True
    user: Any = None  # a Pro user made in __post_init__ unless given
    account: ExchangeAccount = field(init=False)  # the user's paper account
    prices: ManualPrices = field(default_factory=ManualPrices)
    clock: Clock = field(default_factory=Clock)
    at: int = 0

    def __post_init__(self) -> None:
        self.user = self.user or make_user(pro=True)
        self.account = paper_account(self.user, balance=self.balance)
        if self.open_limits:
            # The replay sends days of orders within seconds, and a grid's resting buys add up
            # to its whole investment: the order-rate, heat and position-size limits are off;
            # every buy still passes the risk check.
            RiskProfile.objects.create(
                owner=self.user, max_orders_per_minute=0, max_heat=0, max_position_fraction=1
            )

    def adapter(self) -> PaperExchange:
        return PaperExchange(
            self.account, price_source=self.prices, clock=self.clock, rules=lambda _s: RULES
        )

    def move(self, start: float, end: float) -> None:
        """One leg of the price path: a range, then the clock moves past it."""
        self.at += 2
        self.prices.bar(
            SYMBOL,
            at_ms=self.at,
            low=dec(min(start, end)),
            high=dec(max(start, end)),
            close=dec(end),
        )
        self.clock.now = self.at + 1

    def set_price(self, price: float) -> None:
        self.move(price, price)

    def step(self, bot_id: int, adapter=None) -> int:
        """The paper matching pass, then one bot step."""
        self.adapter().match()
        return grid_step(bot_id=bot_id, adapter=adapter or self.adapter())

    def replay(self, bot_id: int, candles: Candles) -> None:
        """The bot's start at the first open, then every bar leg by leg."""
        self.set_price(float(candles.open[0]))
        self.step(bot_id)
        prev = float(candles.open[0])
        for i in range(len(candles)):
            o, h, low, c = (float(candles.open[i]), float(candles.high[i]),
                            float(candles.low[i]), float(candles.close[i]))  # fmt: skip
            if o != prev:
                self.move(prev, o)
                self.step(bot_id)
            point = o
            for nxt in legs(o, h, low, c):
                self.move(point, nxt)
                self.step(bot_id)
                point = nxt
            prev = c
