"""The signal scanner: watchlists, scan runs and the outcome of every symbol of every run.

A ``Watchlist`` says what to scan (my symbols on an exchange and timeframe, or the top N by
volume), how to fit the bands and how often. A ``ScanRun`` is one scan; it snapshots the
watchlist's settings when it is created, so editing or deleting the watchlist later never
changes what an earlier scan means. An ``Alert`` row holds one symbol's outcome in one run
(BUY, SELL or HOLD with its reason); BUY and SELL rows are the alerts proper (``is_alert``).
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models

from backtester.models.marketdata import MarketSeries
from config.modelfields import unique_constraint
from config.runs.models import Run


class Watchlist(models.Model):
    """What to scan and when. ``next_run_at`` is None when no schedule is set."""

    class Universe(models.TextChoices):
        SYMBOLS = "symbols", "My symbols"
        TOP = "top", "Top symbols by volume"

    SCHEDULES: ClassVar[tuple[tuple[int, str], ...]] = (
        (0, "Only when I run it"),
        (15, "Every 15 minutes"),
        (60, "Every hour"),
        (240, "Every 4 hours"),
        (1440, "Every day"),
    )

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="watchlists"
    )
    name = models.CharField(max_length=80)
    exchange = models.CharField(max_length=40, help_text='A ccxt exchange id, or "demo"')
    timeframe = models.CharField(max_length=8)
    universe = models.CharField(max_length=10, choices=Universe.choices, default=Universe.SYMBOLS)
    symbols = models.JSONField(default=list, blank=True)
    top_n = models.PositiveSmallIntegerField(default=20)
    quote = models.CharField(max_length=10, default="USDT")
    lookback = models.PositiveIntegerField(default=100, help_text="Closes the bands are fitted to")
    degree = models.PositiveSmallIntegerField(default=2)
    k = models.FloatField(default=2.0, help_text="Band width in residual standard deviations")
    schedule_minutes = models.PositiveIntegerField(default=0, choices=SCHEDULES)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    notify = models.BooleanField(
        default=False, help_text="Notify me when a BUY or SELL appears that the last scan lacked"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)
        constraints = unique_constraint("watchlist_name_per_owner", "owner", "name")

    def __str__(self) -> str:
        return self.name

    @property
    def universe_label(self) -> str:
        if self.universe == self.Universe.TOP:
            return f"Top {self.top_n} {self.quote} markets by 24 h volume"
        count = len(self.symbols or [])
        return f"{count} symbol{'' if count == 1 else 's'}"


class ScanRun(Run):
    """One scan of a watchlist, with the watchlist's settings as they were when it started."""

    kind = "scan"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Run by hand"
        SCHEDULE = "schedule", "Scheduled"
        API = "api", "API"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scan_runs"
    )
    watchlist = models.ForeignKey(
        Watchlist, on_delete=models.SET_NULL, null=True, blank=True, related_name="scans"
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    symbols_total = models.PositiveIntegerField(default=0)
    symbols_done = models.PositiveIntegerField(default=0)
    buy_count = models.PositiveIntegerField(default=0)
    sell_count = models.PositiveIntegerField(default=0)
    hold_count = models.PositiveIntegerField(default=0)
    # Snapshot of the watchlist.
    name = models.CharField(max_length=80)
    exchange = models.CharField(max_length=40)
    timeframe = models.CharField(max_length=8)
    universe = models.CharField(max_length=10, choices=Watchlist.Universe.choices)
    symbols = models.JSONField(default=list, blank=True)
    top_n = models.PositiveSmallIntegerField(default=0)
    quote = models.CharField(max_length=10, blank=True)
    lookback = models.PositiveIntegerField()
    degree = models.PositiveSmallIntegerField()
    k = models.FloatField()
    # What happened.
    warnings = models.JSONField(default=list, blank=True)
    as_of_ts = models.BigIntegerField(
        null=True, blank=True, help_text="The exchange's clock when the scan ran (ms, UTC)"
    )
    load_seconds = models.FloatField(null=True, blank=True)
    scan_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["owner", "-created_at"], name="scanrun_owner_recent"),
            models.Index(fields=["watchlist", "status"], name="scanrun_watchlist_status"),
        ]

    def __str__(self) -> str:
        return f"Scan #{self.pk} of {self.name}"


class Alert(models.Model):
    """One symbol's outcome in one scan. Numbers are null where they do not exist (no fit for
    too little data; no potential return for HOLD)."""

    class Signal(models.TextChoices):
        BUY = "BUY", "Buy"
        SELL = "SELL", "Sell"
        HOLD = "HOLD", "Hold"

    scan = models.ForeignKey(ScanRun, on_delete=models.CASCADE, related_name="alerts")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scan_alerts"
    )
    series = models.ForeignKey(
        MarketSeries, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    exchange = models.CharField(max_length=40)
    symbol = models.CharField(max_length=40)
    timeframe = models.CharField(max_length=8)
    signal = models.CharField(max_length=4, choices=Signal.choices)
    is_alert = models.BooleanField(default=False, help_text="BUY or SELL")
    is_new = models.BooleanField(default=False, help_text="Not signalled by the previous scan")
    created_at = models.DateTimeField(help_text="When the scan produced it")
    candle_ts = models.BigIntegerField(
        null=True, blank=True, help_text="Open time of the last closed candle used (ms, UTC)"
    )
    price = models.FloatField(null=True, blank=True)
    lower = models.FloatField(null=True, blank=True)
    mid = models.FloatField(null=True, blank=True)
    upper = models.FloatField(null=True, blank=True)
    std = models.FloatField(null=True, blank=True)
    zscore = models.FloatField(null=True, blank=True)
    potential_return = models.FloatField(null=True, blank=True)
    bars = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ("-created_at", "symbol")
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["owner", "-created_at"], name="alert_owner_recent"),
            models.Index(fields=["owner", "signal", "-created_at"], name="alert_owner_signal"),
            models.Index(fields=["owner", "symbol"], name="alert_owner_symbol"),
            models.Index(fields=["scan", "signal"], name="alert_scan_signal"),
        ]

    def __str__(self) -> str:
        return f"{self.signal} {self.symbol} ({self.created_at:%Y-%m-%d %H:%M})"
