"""Backtest runs, their saved results and their trades."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from django.conf import settings
from django.db import models

from backtester.models.marketdata import MarketSeries
from backtester.models.strategies import Strategy
from config.modelfields import unique_constraint
from config.runs.models import Run


class Backtest(Run):
    """One run request. ``spec`` and ``settings`` are snapshots taken at submission, so editing
    the strategy later never changes what an earlier result means. Status, progress, stage,
    error and the heartbeat come from ``Run`` (config/runs)."""

    kind = "backtest"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="backtests"
    )
    strategy = models.ForeignKey(
        Strategy, on_delete=models.SET_NULL, null=True, blank=True, related_name="backtests"
    )
    name = models.CharField(max_length=160, blank=True)
    series = models.ManyToManyField(MarketSeries, related_name="backtests")
    # Ordered list of series ids (a portfolio's symbol order matters).
    series_order = models.JSONField(default=list)
    timeframe = models.CharField(max_length=8)
    start_ts = models.BigIntegerField()
    end_ts = models.BigIntegerField()
    # Snapshot of the strategy: {"name", "entry_long", ..., "params": [...]} and the values used.
    spec = models.JSONField(default=dict)
    param_values = models.JSONField(default=dict)
    # Engine settings: capital, fees, slippage, sizing, stops, risk limits (SimConfig fields).
    settings = models.JSONField(default=dict)
    cache_key = models.CharField(max_length=64, blank=True, db_index=True)
    cached_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    candle_count = models.PositiveBigIntegerField(default=0)
    engine_seconds = models.FloatField(null=True, blank=True)
    # Wall seconds per stage of the run (queue, load, signals, simulate, metrics, save), for the
    # detail page and the benchmark's breakdown.
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["owner", "status"])]

    def __str__(self) -> str:
        return self.name or f"Backtest #{self.pk}"


class BacktestResult(models.Model):
    """What a completed run produced. Curves are stored compressed (same codec as candles)."""

    backtest = models.OneToOneField(Backtest, on_delete=models.CASCADE, related_name="result")
    metrics = models.JSONField(default=dict)  # engine metrics; non-finite values stored as null
    open_positions = models.JSONField(default=list)
    # Compressed arrays: timestamp, equity, cash, benchmark close (buy-and-hold), positions.
    curves = models.BinaryField()
    curves_codec = models.CharField(max_length=20)
    trade_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"result of {self.backtest}"


class BacktestTrade(models.Model):
    """One closed round trip, as a row so the trade list can sort and paginate in SQL."""

    backtest = models.ForeignKey(Backtest, on_delete=models.CASCADE, related_name="trades")
    seq = models.PositiveIntegerField()
    symbol = models.CharField(max_length=40)
    side = models.SmallIntegerField(help_text="+1 long, -1 short")
    qty = models.FloatField()
    entry_time = models.DateTimeField()
    exit_time = models.DateTimeField()
    entry_price = models.FloatField()
    exit_price = models.FloatField()
    fees = models.FloatField()
    pnl = models.FloatField()
    ret = models.FloatField()
    bars_held = models.PositiveIntegerField()
    exit_reason = models.CharField(max_length=20)

    class Meta:
        ordering = ("backtest", "seq")
        constraints = unique_constraint("trade_unique_seq", "backtest", "seq")

    def __str__(self) -> str:
        return f"{self.symbol} {'long' if self.side > 0 else 'short'} {self.pnl:+.2f}"

    def as_json(self) -> dict[str, Any]:
        """The trade as the JSON exports write it (times as UTC ISO 8601 with a Z)."""

        def iso(value: datetime) -> str:
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

        return {
            "seq": self.seq,
            "symbol": self.symbol,
            "side": "long" if self.side > 0 else "short",
            "qty": self.qty,
            "entry_time": iso(self.entry_time),
            "exit_time": iso(self.exit_time),
            "entry_price": self.entry_price,
            "exit_price": self.exit_price,
            "fees": self.fees,
            "pnl": self.pnl,
            "return": self.ret,
            "bars_held": self.bars_held,
            "exit_reason": self.exit_reason,
        }
