"""Fills reported on any account that backs a leader start the copy path."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from exchanges.events import fill_observed
from exchanges.trading import Fill

logger = logging.getLogger(__name__)


@receiver(fill_observed, dispatch_uid="copytrading.leader_fill_observed")
def leader_fill_observed(sender: Any, *, account_id: int, fill: Fill, **kwargs: Any) -> None:
    from copytrading.services.detection import leader_fill_from_event

    try:
        leader_fill_from_event(account_id=account_id, fill=fill)
    except Exception:
        # Never break the source (a paper order, a stream loop); the REST poll records the
        # fill on its next pass.
        logger.exception("recording fill %s of account %s failed", fill.fill_id, account_id)
