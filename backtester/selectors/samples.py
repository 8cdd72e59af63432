"""Reads for the read-only samples every signed-in user may browse (Pro or not)."""

from __future__ import annotations

from django.conf import settings

from backtester.models import Backtest
from backtester.services.samples import SAMPLE_NAME


def sample_backtest() -> Backtest | None:
    """The sample result: the demo user's completed sample backtest (``seed_demo`` makes it),
    or None when this server was never seeded."""
    return (
        Backtest.objects.filter(
            owner__email=settings.DEMO_USER_EMAIL,
            name=SAMPLE_NAME,
            status=Backtest.Status.COMPLETED,
        )
        .select_related("strategy")
        .order_by("-finished_at")
        .first()
    )
