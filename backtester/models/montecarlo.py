"""Monte Carlo runs and stress runs made from a finished backtest.

Both keep what was asked (so a result can be read later without guessing) and a compact JSON
result: the percentile bands downsampled to about a hundred points, histogram bins and
summary numbers for Monte Carlo; one row per scenario for a stress run. Neither stores a path.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models

from backtester.models.backtests import Backtest
from config.modelfields import owner_status_index
from config.runs.models import Run, RunStatus

ResearchStatus = RunStatus


class MonteCarloRun(Run):
    """Resampled histories of one backtest's trades or bar returns."""

    class Method(models.TextChoices):
        SHUFFLE = "shuffle", "Shuffle the trade order"
        BOOTSTRAP = "bootstrap", "Resample trades (with replacement)"
        BLOCK = "block", "Block bootstrap of bar returns"

    kind = "montecarlo"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="montecarlo_runs"
    )
    backtest = models.ForeignKey(Backtest, on_delete=models.CASCADE, related_name="montecarlo_runs")
    method = models.CharField(max_length=10, choices=Method.choices)
    iterations = models.PositiveIntegerField()
    block_length = models.PositiveIntegerField(
        null=True, blank=True, help_text="Bars per block (block bootstrap only)."
    )
    ruin_threshold = models.FloatField(
        help_text="Drawdown fraction counted as ruin: 0.5 means a path that falls 50 % from a peak."
    )
    seed = models.BigIntegerField()
    results = models.JSONField(default=dict, blank=True)
    # Wall seconds: queue, load, simulate, save, total.
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes: ClassVar[list[models.Index]] = owner_status_index("mc_owner_status")

    def __str__(self) -> str:
        return f"Monte Carlo #{self.pk} of {self.backtest}"

    @property
    def ruin_display(self) -> str | None:
        """The probability of ruin as "1.23 %", or None before there are results."""
        probability = ((self.results or {}).get("ruin") or {}).get("probability")
        return None if probability is None else f"{float(probability) * 100:.2f} %"


class StressRun(Run):
    """A backtest's strategy over crisis windows and over shocked data.

    ``windows``: ``[{"key", "label", "start_ms", "end_ms"}]`` (end exclusive; key "" for a
    user's own window). ``shocks``: ``[{"kind": "gap", "at_ms", "change"}, {"kind":
    "vol_spike", "at_ms", "bars", "factor"}]``.
    """

    kind = "stress"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stress_runs"
    )
    backtest = models.ForeignKey(Backtest, on_delete=models.CASCADE, related_name="stress_runs")
    windows = models.JSONField(default=list, blank=True)
    shocks = models.JSONField(default=list, blank=True)
    results = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes: ClassVar[list[models.Index]] = owner_status_index("stress_owner_status")

    def __str__(self) -> str:
        return f"Stress test #{self.pk} of {self.backtest}"
