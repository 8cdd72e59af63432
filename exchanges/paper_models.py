"""The paper exchange's state: balances per asset, orders by client order id, fills.

Imported at the bottom of ``exchanges/models.py`` so Django registers these models with the
``exchanges`` app. Only ``exchanges.paper`` writes them (under row locks, see there).
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from django.db import models

from config.fields import DecimalDigits
from config.modelfields import created_field

__all__ = ["PaperBalance", "PaperFill", "PaperOrder"]

MONEY: DecimalDigits = {"max_digits": 28, "decimal_places": 8}


class PaperBalance(models.Model):
    """One asset of a paper account: ``free`` to spend, ``used`` reserved by resting orders."""

    account = models.ForeignKey(
        "exchanges.ExchangeAccount", on_delete=models.CASCADE, related_name="paper_balances"
    )
    asset = models.CharField(max_length=16)
    free = models.DecimalField(default=Decimal(0), **MONEY)
    used = models.DecimalField(default=Decimal(0), **MONEY)

    class Meta:
        ordering = ("account", "asset")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["account", "asset"], name="paper_balance_unique"),
            models.CheckConstraint(
                condition=models.Q(free__gte=0) & models.Q(used__gte=0),
                name="paper_balance_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.asset} of paper account {self.account_id}"


class PaperOrder(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Filled"
        CANCELED = "canceled", "Canceled"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired (triggered, not enough balance)"

    account = models.ForeignKey(
        "exchanges.ExchangeAccount", on_delete=models.CASCADE, related_name="paper_orders"
    )
    client_order_id = models.CharField(max_length=64)
    exchange_order_id = models.CharField(max_length=40, unique=True)
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4)  # buy / sell
    # market / limit / stop_market / stop_limit / take_profit_market / take_profit_limit
    type = models.CharField(max_length=20)
    time_in_force = models.CharField(max_length=4, default="GTC")
    amount = models.DecimalField(**MONEY)
    price = models.DecimalField(null=True, blank=True, **MONEY)  # limit price
    # Stop/target orders: the price that triggers them, and when it did (a triggered
    # *_limit order then rests like a limit order from that moment).
    trigger_price = models.DecimalField(null=True, blank=True, **MONEY)
    triggered_ms = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    filled = models.DecimalField(default=Decimal(0), **MONEY)
    average_price = models.DecimalField(null=True, blank=True, **MONEY)
    fee = models.DecimalField(default=Decimal(0), **MONEY)
    fee_currency = models.CharField(max_length=16, blank=True)
    # What a resting order holds back in ``PaperBalance.used`` (quote for buys, base for sells).
    reserved_asset = models.CharField(max_length=16, blank=True)
    reserved = models.DecimalField(default=Decimal(0), **MONEY)
    placed_ms = models.BigIntegerField()  # the paper clock when it was accepted
    updated_ms = models.BigIntegerField()
    created_at = created_field()

    class Meta:
        ordering = ("account", "placed_ms", "pk")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["account", "client_order_id"], name="paper_order_client_id_unique"
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["account", "status"], name="paper_order_open_idx"),
        ]

    def __str__(self) -> str:
        return f"paper {self.side} {self.amount} {self.symbol} ({self.client_order_id})"


class PaperFill(models.Model):
    account = models.ForeignKey(
        "exchanges.ExchangeAccount", on_delete=models.CASCADE, related_name="paper_fills"
    )
    order = models.ForeignKey(PaperOrder, on_delete=models.CASCADE, related_name="fills")
    fill_id = models.CharField(max_length=64, unique=True)
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4)
    amount = models.DecimalField(**MONEY)
    price = models.DecimalField(**MONEY)
    fee = models.DecimalField(**MONEY)
    fee_currency = models.CharField(max_length=16)
    is_maker = models.BooleanField(default=False)
    timestamp_ms = models.BigIntegerField()

    class Meta:
        ordering = ("account", "timestamp_ms", "pk")
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["account", "timestamp_ms"], name="paper_fill_time_idx"),
        ]

    def __str__(self) -> str:
        return f"paper fill {self.fill_id}"
