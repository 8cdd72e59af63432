"""The Celery application. Settings come from Django settings under the CELERY_ prefix."""

from __future__ import annotations

import gc
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
    # What start-up loaded (Django, numba, ccxt: about a million objects) lives as long as the
    # process: moved out of the collector's way, a full collection no longer walks it, which
    # took tens of milliseconds in the middle of a copy fan-out.
    gc.freeze()
