"""What copy trading does when one of its exchange accounts is about to be deleted.

Called (through ``exchanges.events``) inside the transaction that deletes the account: the
leaders publishing from it are retired, the subscriptions copying into it are stopped, and the
delete is refused while a copy on that account is still being sent or looked up (its outcome
could never be learned once the keys are erased). The rows keep their history; their account
link becomes empty when the delete commits.
"""

from __future__ import annotations

from django.utils import timezone

from config.exceptions import Conflict
from copytrading import live
from copytrading.models import CopyAdjustment, CopyOrder, Leader, Subscription
from copytrading.services.leaders import leader_retire_locked


def copy_account_uses(*, account_id: int) -> list[str]:
    """What copy trading runs on the account, in words for the confirmation page."""
    uses = [
        f"leader “{name}” (published from it; it will be retired)"
        for name in Leader.objects.filter(account_id=account_id)
        .exclude(status=Leader.Status.RETIRED)
        .values_list("name", flat=True)
    ]
    uses += [
        f"copying “{name}” into it (the subscription will be stopped)"
        for name in Subscription.objects.filter(account_id=account_id)
        .exclude(status=Subscription.Status.STOPPED)
        .values_list("leader__name", flat=True)
    ]
    return uses


def copy_account_removing(*, account_id: int) -> None:
    """Retire the account's leaders and stop the subscriptions copying into it (row locks
    first, so a copy being planned right now either finished before, and is seen below, or
    finds its subscription stopped)."""
    subs = list(
        Subscription.objects.select_for_update()
        .filter(account_id=account_id)
        .exclude(status=Subscription.Status.STOPPED)
    )
    in_flight = (
        CopyOrder.objects.filter(
            subscription__account_id=account_id,
            state__in=(CopyOrder.State.PLANNED, *CopyOrder.IN_FLIGHT),
        ).count()
        + CopyAdjustment.objects.filter(
            subscription__account_id=account_id, state__in=CopyAdjustment.OPEN_STATES
        ).count()
    )
    if in_flight:
        raise Conflict(
            f"{in_flight} copied order(s) on this account are still being sent or looked up. "
            "Try again in a minute, once the exchange has answered for them."
        )
    if subs:
        Subscription.objects.filter(pk__in=[s.pk for s in subs]).update(
            status=Subscription.Status.STOPPED,
            stopped_at=timezone.now(),
            status_message="Stopped: the account it copied into was deleted.",
            updated_at=timezone.now(),
        )
        live.publish_subscriptions(
            [(s.pk, s.leader_id) for s in subs], change="stopped", status="stopped"
        )
    for leader in (
        Leader.objects.select_for_update()
        .filter(account_id=account_id)
        .exclude(status=Leader.Status.RETIRED)
    ):
        leader_retire_locked(leader, why="retired (its account was deleted)")
