"""The Celery application. Settings come from Django settings under the CELERY_ prefix."""

from __future__ import annotations

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.worker_process_init.connect
def _warm_engine(**_: object) -> None:
    """Load the engine's numba kernels before the first backtest, not during it."""
    from backtester.engine.run import warm_up
    from backtester.results import downsample

    warm_up()
    downsample.warm_up()
