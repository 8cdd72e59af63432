"""Live grid bots: a spot grid of resting limit orders on an exchange account.

A ``GridBot`` is the live twin of ``backtester.engine.gridbot.simulate_grid``: ``levels`` price
lines from ``lower`` to ``upper`` make ``levels - 1`` cells, and each cell is one ``GridLevel``
row: it buys its fixed ``quantity`` at its line (``price``) and sells it one line up
(``sell_price``). A level is always in one state (idle, buy resting, bought, sell resting, done)
and holds at most one order of ours at a time, named by ``client_order_id``.

Exactly once: the order's client order id is a pure function of (bot, level, order number) and
is written to the level row (``order_status`` "planned") in a committed transaction *before* the
order is sent; a restart finds it there, looks it up by that id and never sends it twice. The
stop-loss / take-profit exit sale is stored on the bot the same way (``exit_client_order_id``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from django.db import models

from accounts.fields import owner_field
from backtester.models.live import BotStatus, bot_status_field
from config.fields import DecimalDigits
from config.modelfields import (
    created_field,
    optional_time,
    owner_status_index,
    unique_constraint,
    updated_field,
)
from config.runs.models import Run
from exchanges.fields import account_field

MONEY: DecimalDigits = {"max_digits": 28, "decimal_places": 8}


class GridBot(models.Model):
    Status = BotStatus

    class Spacing(models.TextChoices):
        ARITHMETIC = "arithmetic", "Arithmetic (equal steps)"
        GEOMETRIC = "geometric", "Geometric (equal ratios)"

    class Exit(models.TextChoices):
        NONE = "", "None"
        STOP_LOSS = "stop_loss", "Stop-loss"
        TAKE_PROFIT = "take_profit", "Take-profit"
        STOP = "stop", "Stopped and sold by its owner"

    class ExitState(models.TextChoices):
        NONE = "", "None"
        PLANNED = "planned", "Planned (stored, maybe sent)"
        UNKNOWN = "unknown", "Unknown (timeout, to look up)"
        FILLED = "filled", "Filled"
        NOTHING = "nothing", "Nothing held: no sale needed"
        FAILED = "failed", "Refused by the exchange"

    owner = owner_field("grid_bots")
    name = models.CharField(max_length=160)
    # Null once the account is deleted (the bot is stopped first; its levels stay).
    account = account_field("grid_bots", keep=True)
    symbol = models.CharField(max_length=40)
    lower = models.DecimalField(**MONEY)
    upper = models.DecimalField(**MONEY)
    levels = models.PositiveIntegerField(help_text="Price lines; the grid has levels - 1 cells")
    spacing = models.CharField(max_length=10, choices=Spacing.choices, default=Spacing.ARITHMETIC)
    investment = models.DecimalField(**MONEY)
    stop_loss = models.DecimalField(null=True, blank=True, **MONEY)
    take_profit = models.DecimalField(null=True, blank=True, **MONEY)
    # Trailing up: when the price passes one spacing above the top line, the lowest level
    # leaves and a level joins on top (the engine's rule, ``gridbot`` docstring).
    trailing = models.BooleanField(default=False)
    trail_shifts = models.PositiveIntegerField(default=0)
    # The candles walked for the stop-loss / take-profit / trailing (the engine's intrabar
    # rule): from the candle opening at ``watch_ts`` (ms) on, the price coming from
    # ``watch_prev`` (the close before it). Null until the first step.
    watch_ts = models.BigIntegerField(null=True, blank=True)
    watch_prev = models.DecimalField(null=True, blank=True, **MONEY)
    # What fired the exit: the candle (its open time) and the engine's price for it.
    exit_trigger_ts = models.BigIntegerField(null=True, blank=True)
    exit_trigger_price = models.DecimalField(null=True, blank=True, **MONEY)
    # The market's rules and fees when the bot was created (what the levels were sized with).
    price_tick = models.DecimalField(default=Decimal(0), **MONEY)
    min_notional = models.DecimalField(default=Decimal(0), **MONEY)
    maker_fee = models.DecimalField(max_digits=10, decimal_places=6, default=Decimal("0.001"))
    status = bot_status_field()
    status_reason = models.TextField(blank=True)
    started = models.BooleanField(default=False)  # the first step placed the grid
    # Totals, in the quote currency: grid profit (every completed buy-then-sell), the exit's
    # P&L (stop-loss / take-profit / stop-and-sell), fees paid.
    grid_profit = models.DecimalField(default=Decimal(0), **MONEY)
    exit_pnl = models.DecimalField(default=Decimal(0), **MONEY)
    fees_paid = models.DecimalField(default=Decimal(0), **MONEY)
    # The one market sale that closes the bot (stop-loss, take-profit, or stop-and-sell).
    exit_reason = models.CharField(max_length=12, choices=Exit.choices, blank=True)
    exit_client_order_id = models.CharField(max_length=36, blank=True)
    exit_state = models.CharField(max_length=8, choices=ExitState.choices, blank=True)
    exit_amount = models.DecimalField(default=Decimal(0), **MONEY)
    exit_price = models.DecimalField(null=True, blank=True, **MONEY)
    exit_error = models.TextField(blank=True)
    last_step_at = optional_time()
    created_at = created_field()
    updated_at = updated_field()

    class Meta:
        ordering = ("-created_at",)
        indexes: ClassVar[list[models.Index]] = owner_status_index("gridbot_owner_status")

    def __str__(self) -> str:
        return self.name

    @property
    def cells(self) -> int:
        return self.levels - 1


class GridLevel(models.Model):
    """One grid cell: buys ``quantity`` at ``price``, sells what it holds at ``sell_price``."""

    class State(models.TextChoices):
        IDLE = "idle", "Idle (no order)"
        BUY_RESTING = "buy_resting", "Buy resting"
        BOUGHT = "bought", "Bought (holding, no order)"
        SELL_RESTING = "sell_resting", "Sell resting"
        DONE = "done", "Done"

    class OrderStatus(models.TextChoices):
        NONE = "", "No order"
        PLANNED = "planned", "Planned (stored, maybe sent)"
        OPEN = "open", "Open on the exchange"
        UNKNOWN = "unknown", "Unknown (timeout, to look up)"

    bot = models.ForeignKey(GridBot, on_delete=models.CASCADE, related_name="grid_levels")
    index = models.PositiveIntegerField()
    price = models.DecimalField(**MONEY)  # the buy line
    sell_price = models.DecimalField(**MONEY)  # the line above
    quantity = models.DecimalField(**MONEY)  # what each buy asks for (rounded to the lot)
    state = models.CharField(max_length=12, choices=State.choices, default=State.IDLE)
    held = models.DecimalField(default=Decimal(0), **MONEY)  # base bought and not yet sold
    held_cost = models.DecimalField(default=Decimal(0), **MONEY)  # what buying it cost, fee in
    # The level's current order (or its last one): id stored before the order is sent.
    order_seq = models.PositiveIntegerField(default=0)
    client_order_id = models.CharField(max_length=36, blank=True)
    exchange_order_id = models.CharField(max_length=80, blank=True)
    order_status = models.CharField(max_length=8, choices=OrderStatus.choices, blank=True)
    order_side = models.CharField(max_length=4, blank=True)
    order_amount = models.DecimalField(default=Decimal(0), **MONEY)
    order_filled = models.DecimalField(default=Decimal(0), **MONEY)  # already booked
    order_fee = models.DecimalField(default=Decimal(0), **MONEY)  # already booked
    realized_pnl = models.DecimalField(default=Decimal(0), **MONEY)
    buys = models.PositiveIntegerField(default=0)
    sells = models.PositiveIntegerField(default=0)  # completed round trips
    note = models.TextField(blank=True)  # why the level is idle (e.g. the risk check's denial)
    updated_at = updated_field()

    class Meta:
        ordering = ("bot", "index")
        constraints = unique_constraint("gridlevel_unique_index", "bot", "index")

    def __str__(self) -> str:
        return f"level {self.index} @ {self.price} ({self.state})"


class GridSearch(Run):
    """A background search over grid settings (``backtester.services.grid_search``): every
    combination of ``space`` replayed by the engine's ``simulate_grid`` over one market's
    stored candles, ranked by ``objective``; ``rows`` holds them best first."""

    owner = owner_field("grid_searches")
    series = models.ForeignKey(
        "backtester.MarketSeries", on_delete=models.CASCADE, related_name="grid_searches"
    )
    investment = models.DecimalField(**MONEY)
    # {"lower": [..], "upper": [..], "levels": [..], "spacing": [..], "trailing": [..]}
    space = models.JSONField(default=dict)
    objective = models.CharField(max_length=20, default="total_return")
    combinations = models.PositiveIntegerField(default=0)
    evaluated = models.PositiveIntegerField(default=0)
    bars = models.PositiveIntegerField(default=0)
    market = models.JSONField(default=dict, blank=True)  # the rules and fees searched with
    rows = models.JSONField(default=list, blank=True)

    kind = "gridsearch"

    class Meta:
        ordering = ("-created_at",)
        verbose_name = "grid search"
        indexes: ClassVar[list[models.Index]] = owner_status_index("gridsearch_owner_status")

    def __str__(self) -> str:
        return f"grid search {self.pk}"
