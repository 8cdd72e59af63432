"""A user's strategy: rules in the strategy language, declared parameters and chosen values."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Strategy(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="strategies"
    )
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    preset = models.CharField(max_length=40, blank=True, help_text="The preset it started from")
    entry_long = models.TextField(blank=True)
    exit_long = models.TextField(blank=True)
    entry_short = models.TextField(blank=True)
    exit_short = models.TextField(blank=True)
    # [{"name", "kind", "default", "low", "high", "step", "description"}, ...]
    params = models.JSONField(default=list, blank=True)
    # {"fast": 10, "slow": 30}: the values a backtest uses unless it overrides them
    param_values = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "strategies"
        ordering = ("-updated_at",)

    def __str__(self) -> str:
        return self.name
