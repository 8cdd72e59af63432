"""The paper exchange's matching beat: fills resting paper limit orders the price crossed."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="exchanges.paper_match_all", ignore_result=True)
def paper_match_all() -> int:
    from exchanges.services_paper import paper_match_all as match_all

    return match_all()
