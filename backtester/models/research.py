"""Research jobs: parameter optimizations (fanned out over workers in chunks) and walk-forward
analyses. Like a Backtest, each job keeps snapshots of the strategy and settings taken at
submission, so editing the strategy later never changes what a result means."""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models

from backtester.models.marketdata import MarketSeries
from backtester.models.strategies import Strategy
from config.modelfields import owner_status_index, unique_constraint
from config.runs.models import Run, RunStatus

JobStatus = RunStatus


class ResearchJob(Run):
    """What an optimization and a walk-forward share: who, what, on which data, how searched."""

    class Method(models.TextChoices):
        GRID = "grid", "Grid (every combination)"
        RANDOM = "random", "Random sample"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    strategy = models.ForeignKey(
        Strategy, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    series = models.ForeignKey(
        MarketSeries, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    name = models.CharField(max_length=160, blank=True)
    timeframe = models.CharField(max_length=8)
    start_ts = models.BigIntegerField()
    end_ts = models.BigIntegerField(help_text="Last millisecond included")
    # {"name", "entry_long", ..., "params": [...]}: the strategy as it was at submission.
    spec = models.JSONField(default=dict)
    # Engine settings (SimConfig fields, fractions), as a backtest stores them.
    settings = models.JSONField(default=dict)
    # {"fast": [5, 10, 15], ...}: every parameter's candidate values.
    ranges = models.JSONField(default=dict)
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.GRID)
    samples = models.PositiveIntegerField(null=True, blank=True)
    seed = models.BigIntegerField(default=0)
    objective = models.CharField(max_length=30, default="sharpe")
    constraint = models.CharField(max_length=500, blank=True)
    min_trades = models.PositiveIntegerField(default=0)
    combinations = models.PositiveIntegerField(default=0, help_text="Evaluated per search")
    candle_count = models.PositiveIntegerField(default=0)
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return self.name or f"{str(type(self)._meta.verbose_name).capitalize()} #{self.pk}"


class OptimizationJob(ResearchJob):
    """A grid or random search whose combinations run in chunks on any number of workers.

    ``done`` counts evaluated combinations (chunks add theirs as they commit); ``best_*`` is the
    best qualified row so far (ties: the lower combination index), kept up to date by the chunks,
    so the live page and the final result agree whatever order the chunks finish in.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="optimizations"
    )
    chunk_count = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    qualified = models.PositiveIntegerField(default=0)
    space_size = models.PositiveBigIntegerField(default=0)
    best_index = models.IntegerField(null=True, blank=True)
    best_objective = models.FloatField(null=True, blank=True)
    best_params = models.JSONField(null=True, blank=True)
    best_metrics = models.JSONField(null=True, blank=True)

    kind = "optimization"

    class Meta(ResearchJob.Meta):
        indexes: ClassVar[list[models.Index]] = owner_status_index("optimization_owner_status")


class OptimizationChunk(models.Model):
    """One chunk's completion record: written with its rows in one transaction, so a chunk
    delivered twice stores its rows once. ``worker`` and ``pid`` say where it ran."""

    job = models.ForeignKey(OptimizationJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    first = models.PositiveIntegerField(help_text="Index of its first combination")
    size = models.PositiveIntegerField()
    worker = models.CharField(max_length=200, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    seconds = models.FloatField(default=0.0)
    finished_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("job", "index")
        constraints = unique_constraint("optimization_chunk_unique", "job", "index")

    def __str__(self) -> str:
        return f"chunk {self.index} of {self.job_id}"


class OptimizationRow(models.Model):
    """One evaluated combination. Undefined numbers are NULL; infinities are kept (a profit
    factor with no losing trade is +inf). ``objective`` is NULL when the run is not ranked
    (fewer trades than the minimum, or the objective is undefined)."""

    job = models.ForeignKey(OptimizationJob, on_delete=models.CASCADE, related_name="rows")
    index = models.PositiveIntegerField()
    params = models.JSONField()
    objective = models.FloatField(null=True)
    qualified = models.BooleanField(default=True)
    total_return = models.FloatField(null=True)
    cagr = models.FloatField(null=True)
    sharpe = models.FloatField(null=True)
    sortino = models.FloatField(null=True)
    calmar = models.FloatField(null=True)
    max_drawdown = models.FloatField(null=True)
    return_over_drawdown = models.FloatField(null=True)
    profit_factor = models.FloatField(null=True)
    win_rate = models.FloatField(null=True)
    trades = models.PositiveIntegerField(default=0)
    exposure = models.FloatField(null=True)
    annual_volatility = models.FloatField(null=True)
    fees_paid = models.FloatField(null=True)
    final_equity = models.FloatField(null=True)

    class Meta:
        ordering = ("job", "index")
        constraints = unique_constraint("optimization_row_unique", "job", "index")
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["job", "objective"], name="optimization_row_rank")
        ]

    def __str__(self) -> str:
        return f"#{self.index} {self.params}"


class WalkForwardJob(ResearchJob):
    """Optimize on rolling or anchored training windows, trade the winner on the next test
    window, stitch the test runs. ``windows`` holds each window's bounds, winner, in-sample and
    out-of-sample metrics; ``curve`` the stitched out-of-sample equity (downsampled)."""

    class Mode(models.TextChoices):
        ROLLING = "rolling", "Rolling (fixed training length)"
        ANCHORED = "anchored", "Anchored (training grows from the start)"

    class Unit(models.TextChoices):
        BARS = "bars", "Bars"
        DAYS = "days", "Days"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="walkforwards"
    )
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.ROLLING)
    unit = models.CharField(max_length=5, choices=Unit.choices, default=Unit.BARS)
    train = models.PositiveIntegerField()
    test = models.PositiveIntegerField()
    step = models.PositiveIntegerField()
    window_count = models.PositiveIntegerField(default=0)
    windows_done = models.PositiveIntegerField(default=0)
    windows = models.JSONField(default=list, blank=True)
    curve = models.JSONField(default=dict, blank=True)
    oos_metrics = models.JSONField(default=dict, blank=True)
    stability = models.JSONField(default=dict, blank=True)
    in_sample_cagr = models.FloatField(null=True, blank=True)
    efficiency = models.FloatField(null=True, blank=True)

    kind = "walkforward"

    class Meta(ResearchJob.Meta):
        verbose_name = "walk-forward"
        indexes: ClassVar[list[models.Index]] = owner_status_index("walkforward_owner_status")
