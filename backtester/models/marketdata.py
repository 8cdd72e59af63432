"""Market data: a catalog row per candle series and its candles as compressed column chunks.

Candles are not one row each: a year of 1-minute candles must reach numpy in tens of
milliseconds, so a series is stored as a few chunks, each holding the six columns (and any
extra columns) as compressed arrays. The store in backtester/marketdata/store.py is the only
code that reads or writes CandleChunk.data.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q

from config.modelfields import unique_constraint
from config.runs.models import Run


class MarketSeries(models.Model):
    """One (exchange, symbol, timeframe) series. owner=None means shared data (exchange
    downloads and the synthetic demo set); uploads always belong to their uploader."""

    class Source(models.TextChoices):
        CCXT = "ccxt", "Exchange download"
        UPLOAD = "upload", "Upload"
        DEMO = "demo", "Synthetic demo"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="market_series",
    )
    exchange = models.CharField(max_length=40)
    symbol = models.CharField(max_length=40)
    timeframe = models.CharField(max_length=8)
    source = models.CharField(max_length=10, choices=Source.choices)
    name = models.CharField(max_length=120, blank=True, help_text="Shown instead of the symbol")
    synthetic = models.BooleanField(default=False)
    first_ts = models.BigIntegerField(null=True, blank=True, help_text="ms since epoch, UTC")
    last_ts = models.BigIntegerField(null=True, blank=True, help_text="ms since epoch, UTC")
    count = models.PositiveBigIntegerField(default=0)
    extra_columns = models.JSONField(default=list, blank=True)
    data_hash = models.CharField(max_length=64, blank=True, help_text="Changes with the data")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "market series"
        ordering = ("exchange", "symbol", "timeframe")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["owner", "exchange", "symbol", "timeframe"],
                name="series_unique_per_owner",
            ),
            models.UniqueConstraint(
                fields=["exchange", "symbol", "timeframe"],
                condition=Q(owner__isnull=True),
                name="series_unique_shared",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol} {self.timeframe}"


class CandleChunk(models.Model):
    """A run of consecutive candles of one series, columns stored compressed in ``data``."""

    series = models.ForeignKey(MarketSeries, on_delete=models.CASCADE, related_name="chunks")
    start_ts = models.BigIntegerField()
    end_ts = models.BigIntegerField()
    count = models.PositiveIntegerField()
    codec = models.CharField(max_length=20)
    data = models.BinaryField()

    class Meta:
        ordering = ("series", "start_ts")
        constraints = unique_constraint("chunk_unique_start", "series", "start_ts")

    def __str__(self) -> str:
        return f"{self.series} [{self.start_ts}..{self.end_ts}] ({self.count})"


class FetchJob(Run):
    """A download of candles from an exchange, resumable: the series' last candle is the cursor."""

    kind = "fetch"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="fetch_jobs"
    )
    series = models.ForeignKey(MarketSeries, on_delete=models.CASCADE, related_name="fetch_jobs")
    since_ts = models.BigIntegerField()
    until_ts = models.BigIntegerField(null=True, blank=True)
    candles_fetched = models.PositiveBigIntegerField(default=0)
    requests_made = models.PositiveIntegerField(default=0)
    gaps = models.PositiveIntegerField(default=0, help_text="Holes in the exchange's history")

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"fetch {self.series} ({self.status})"


class UploadJob(Run):
    """An uploaded candle file, parsed and stored in the background (a large file must not hold
    a web request). ``data`` keeps the file until it is parsed, then is emptied; ``series`` is
    what it became."""

    kind = "upload"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="upload_jobs"
    )
    filename = models.CharField(max_length=200)
    file_format = models.CharField(max_length=10)
    size = models.PositiveBigIntegerField(default=0)
    symbol = models.CharField(max_length=40)
    timeframe = models.CharField(max_length=8, blank=True, help_text="Blank: inferred")
    exchange = models.CharField(max_length=40, default="upload")
    name = models.CharField(max_length=120, blank=True)
    data = models.BinaryField(blank=True)
    series = models.ForeignKey(
        MarketSeries, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    candle_count = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"upload {self.filename} ({self.status})"
