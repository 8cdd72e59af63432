"""Live strategy bots: a strategy deployed on an exchange account, and every order it plans.

A ``LiveBot`` runs the same compiled rules and the same simulation code as a backtest, one
closed candle at a time (``backtester.services.live_bots.bot_step``). Its ``cursor_ts`` is the
open time of the last candle it has fully processed; ``cash``/``position`` are the bot's own
ledger of what its fills did (the account may hold more than one bot's money).

``BotOrder`` rows are written *before* an order is sent, with a client order id that is a pure
function of (bot, bar, action), so a restart finds the row, looks the order up by that id and
never sends it twice.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from django.db import models

from accounts.fields import owner_field
from backtester.models.backtests import Backtest
from backtester.models.marketdata import MarketSeries
from backtester.models.strategies import Strategy
from config.modelfields import (
    created_field,
    optional_time,
    owner_status_index,
    unique_constraint,
    updated_field,
)
from exchanges.fields import account_field


class BotStatus(models.TextChoices):
    """Where a strategy bot or a grid bot is in its life."""

    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    STOPPED = "stopped", "Stopped"
    ERROR = "error", "Error"


def bot_status_field() -> models.CharField[str, str]:
    """A bot's ``BotStatus``, running at creation (indexed: the workers list running bots)."""
    return models.CharField(
        max_length=10, choices=BotStatus.choices, default=BotStatus.RUNNING, db_index=True
    )


class LiveBot(models.Model):
    Status = BotStatus

    owner = owner_field("live_bots")
    name = models.CharField(max_length=160)
    strategy = models.ForeignKey(
        Strategy, on_delete=models.SET_NULL, null=True, blank=True, related_name="live_bots"
    )
    source_backtest = models.ForeignKey(
        Backtest, on_delete=models.SET_NULL, null=True, blank=True, related_name="live_bots"
    )
    # Snapshots, as on a Backtest: editing the strategy later never changes a running bot.
    spec = models.JSONField(default=dict)
    param_values = models.JSONField(default=dict)
    settings = models.JSONField(default=dict)  # SimConfig fields
    # Null once the account is deleted (the bot is stopped first; its orders stay).
    account = account_field("live_bots", keep=True)
    series = models.ForeignKey(MarketSeries, on_delete=models.PROTECT, related_name="live_bots")
    symbol = models.CharField(max_length=40)
    timeframe = models.CharField(max_length=8)
    status = bot_status_field()
    status_reason = models.TextField(blank=True)
    # Indicators are computed from data_start_ts on every step (so an EMA is the same number
    # the backtest saw); the bot acts on candles that open at or after start_ts.
    data_start_ts = models.BigIntegerField()
    start_ts = models.BigIntegerField()
    cursor_ts = models.BigIntegerField(null=True, blank=True)
    capital = models.DecimalField(max_digits=28, decimal_places=8)
    cash = models.DecimalField(max_digits=28, decimal_places=8)
    position = models.DecimalField(max_digits=28, decimal_places=8, default=Decimal(0))
    entry_price = models.DecimalField(max_digits=28, decimal_places=8, null=True, blank=True)
    entry_ts = models.BigIntegerField(null=True, blank=True)
    last_step_at = optional_time()
    created_at = created_field()
    updated_at = updated_field()

    class Meta:
        ordering = ("-created_at",)
        indexes: ClassVar[list[models.Index]] = owner_status_index("livebot_owner_status")

    def __str__(self) -> str:
        return self.name


class BotOrder(models.Model):
    class State(models.TextChoices):
        PLANNED = "planned", "Planned (stored, maybe sent)"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        FILLED = "filled", "Filled"
        REJECTED = "rejected", "Rejected"
        SKIPPED = "skipped", "Skipped (not sent)"
        UNKNOWN = "unknown", "Unknown (timeout, to look up)"
        CANCELED = "canceled", "Canceled"

    OPEN_STATES = (State.PLANNED, State.UNKNOWN, State.ACKNOWLEDGED)
    # Resting stop-loss / take-profit orders on the exchange ("-r": re-placed once after the
    # first was lost). Their bar_ts is the entry's bar until one fills, then the bar it
    # filled in.
    RESTING_ACTIONS = ("stop", "stop-r", "target", "target-r")

    bot = models.ForeignKey(LiveBot, on_delete=models.CASCADE, related_name="orders")
    client_order_id = models.CharField(max_length=36, unique=True)
    # The candle the order belongs to: the bar whose open it fills at (signal orders) or the
    # bar whose high/low reached a watched level (stop-loss, take-profit, trailing stop).
    bar_ts = models.BigIntegerField()
    # "enter" | "exit" (signal) | "protect" (a watched level) | RESTING_ACTIONS
    action = models.CharField(max_length=12)
    reason = models.CharField(max_length=20, blank=True)  # exit reason as the engine names it
    side = models.CharField(max_length=4)  # buy | sell
    amount = models.DecimalField(max_digits=28, decimal_places=8)
    # Resting stop-loss / take-profit orders: the trigger as sent (rounded to the tick).
    trigger_price = models.DecimalField(max_digits=28, decimal_places=8, null=True, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.PLANNED)
    exchange_order_id = models.CharField(max_length=80, blank=True)
    filled = models.DecimalField(max_digits=28, decimal_places=8, default=Decimal(0))
    average_price = models.DecimalField(max_digits=28, decimal_places=8, null=True, blank=True)
    fee = models.DecimalField(max_digits=28, decimal_places=8, default=Decimal(0))
    # The currency the exchange took ``fee`` in: the quote, or the base coin of a buy (Binance
    # spot); "" when the exchange did not say (booked as the quote).
    fee_currency = models.CharField(max_length=16, blank=True, default="")
    error = models.TextField(blank=True)
    created_at = created_field()
    updated_at = updated_field()

    class Meta:
        ordering = ("bot", "bar_ts", "pk")
        constraints = unique_constraint("botorder_unique_bar", "bot", "bar_ts", "action")

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.amount} ({self.state})"


class BotEvent(models.Model):
    """One line of a bot's log: what it did and why (a candle processed, an order planned,
    sent, filled or skipped, reconciliation, pause/resume/stop, errors, entries refused).
    ``data`` holds the figures behind the message (ids, amounts, prices) as JSON."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    bot = models.ForeignKey(LiveBot, on_delete=models.CASCADE, related_name="events")
    at = created_field(index=True)
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.INFO)
    kind = models.CharField(max_length=24, blank=True)  # step, order, reconcile, status, error
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-at", "-pk")
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["bot", "-at"], name="botevent_bot_at")
        ]

    def __str__(self) -> str:
        return f"{self.bot_id} {self.level}: {self.message[:60]}"
