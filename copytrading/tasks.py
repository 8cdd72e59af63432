"""Copy-trading tasks, all on the live queue (settings route ``copytrading.*`` there): thin,
ids in, one service call each. ``acks_late``: a task whose worker dies is delivered again,
and every service here is safe to run twice."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.core.cache import cache

from copytrading import services
from copytrading.services.detection import fills_not_fanned_out, leaders_to_poll

RETRY_MAX = 40
SWEEP_HOLD_SECONDS = 600  # longer than a task's whole retry schedule (40 tries, at most 10 s apart)


def _retry(task: Any, exc: Exception) -> Exception:
    """Back off 1, 2, 4 … 10 s; the services are idempotent, so a retry is always safe."""
    return task.retry(exc=exc, countdown=min(2**task.request.retries, 10), max_retries=RETRY_MAX)


@shared_task(name="copytrading.fanout", ignore_result=True, acks_late=True)
def fanout_task(leader_fill_id: int) -> int:
    """Plan, store and send every follower's copy of one leader fill (one task: the orders go
    out concurrently). Delivered again after a worker died, it sends nothing already claimed."""
    return services.copy_fanout(leader_fill_id=leader_fill_id)


@shared_task(name="copytrading.copy_one", bind=True, ignore_result=True, acks_late=True)
def copy_one_task(self: Any, leader_fill_id: int, subscription_id: int) -> None:
    """Plan and send one follower's copy. An order still in flight is looked up again later
    (never resent); the retry finds the stored plan and only looks it up."""
    try:
        services.copy_replicate(leader_fill_id=leader_fill_id, subscription_id=subscription_id)
    except Exception as exc:
        raise _retry(self, exc) from exc


@shared_task(name="copytrading.submit", bind=True, ignore_result=True, acks_late=True)
def submit_task(self: Any, copy_order_id: int) -> None:
    try:
        services.copy_order_submit(copy_order_id=copy_order_id)
    except Exception as exc:
        raise _retry(self, exc) from exc


@shared_task(name="copytrading.resolve", bind=True, ignore_result=True, acks_late=True)
def resolve_task(self: Any, copy_order_id: int) -> None:
    try:
        services.copy_order_resolve(copy_order_id=copy_order_id)
    except Exception as exc:
        raise _retry(self, exc) from exc


@shared_task(name="copytrading.sweep", ignore_result=True)
def sweep_task() -> None:
    """Beat: hand rows a dead worker left behind back to the workers, and fan out fills whose
    fan-out was never queued."""
    found = services.copy_orders_sweep()
    # One hand-back per row at a time: a row whose lookup keeps answering "pending" already
    # has a retrying task, and must not collect one more each sweep.
    for pk in found["submit"]:
        if cache.add(f"copytrading:sweep:submit:{pk}", 1, timeout=SWEEP_HOLD_SECONDS):
            submit_task.delay(pk)
    for pk in found["resolve"]:
        if cache.add(f"copytrading:sweep:resolve:{pk}", 1, timeout=SWEEP_HOLD_SECONDS):
            resolve_task.delay(pk)
    from copytrading.services.adjustments import adjustments_to_sweep

    for pk in adjustments_to_sweep():
        if cache.add(f"copytrading:sweep:adjust:{pk}", 1, timeout=SWEEP_HOLD_SECONDS):
            adjustment_send_task.delay(pk)
    for pk in fills_not_fanned_out():
        if cache.add(f"copytrading:sweep:fanout:{pk}", 1, timeout=SWEEP_HOLD_SECONDS):
            fanout_task.delay(pk)


@shared_task(name="copytrading.adjustment_send", bind=True, ignore_result=True, acks_late=True)
def adjustment_send_task(self: Any, adjustment_id: int) -> None:
    """Send (or, once claimed, only look up) a join / stop close / stop-loss / take-profit /
    repair order of a subscription."""
    from copytrading.services.adjustments import adjustment_send

    try:
        adjustment_send(adjustment_id=adjustment_id)
    except Exception as exc:
        raise _retry(self, exc) from exc


@shared_task(name="copytrading.join", bind=True, ignore_result=True, acks_late=True)
def join_task(self: Any, subscription_id: int) -> None:
    """Open the leader's current positions for a new subscription that asked for it."""
    from copytrading.services.positions import subscription_join

    try:
        subscription_join(subscription_id=subscription_id)
    except Exception as exc:
        raise _retry(self, exc) from exc


@shared_task(name="copytrading.protections", ignore_result=True)
def protections_task() -> None:
    """Beat: one stop-loss / take-profit check per subscription that has them."""
    from copytrading.services.positions import subscriptions_with_protections

    for pk in subscriptions_with_protections():
        protection_check_task.delay(pk)


@shared_task(name="copytrading.protection_check", ignore_result=True, acks_late=True)
def protection_check_task(subscription_id: int) -> int:
    from copytrading.services.positions import copy_protections_check

    return len(copy_protections_check(subscription_id=subscription_id))


@shared_task(name="copytrading.reconcile_all", ignore_result=True)
def reconcile_all_task() -> None:
    """Beat: one reconciliation per live subscription."""
    from copytrading.services.reconcile import subscriptions_to_reconcile

    for pk in subscriptions_to_reconcile():
        reconcile_task.delay(pk)


@shared_task(name="copytrading.reconcile", ignore_result=True, acks_late=True)
def reconcile_task(subscription_id: int) -> None:
    from copytrading.services.reconcile import subscription_reconcile

    subscription_reconcile(subscription_id=subscription_id)


@shared_task(name="copytrading.leaders_poll", ignore_result=True)
def leaders_poll_task() -> None:
    """Beat: one poll task per leader, so the watchers spread over the live workers."""
    for leader_id in leaders_to_poll():
        leader_poll_task.delay(leader_id)


@shared_task(name="copytrading.leader_poll", ignore_result=True, acks_late=True)
def leader_poll_task(leader_id: int) -> int:
    return services.leader_poll(leader_id=leader_id)


@shared_task(name="copytrading.demo_leader_step", ignore_result=True)
def demo_leader_step_task() -> None:
    """Beat (only where ``COPYTRADING_DEMO_LEADER``): one replay step of the demo leader."""
    from copytrading.services.demo import demo_enabled, demo_leader_step

    if demo_enabled():
        demo_leader_step()
