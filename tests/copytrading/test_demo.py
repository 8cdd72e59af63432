"""The embedded demo of copy trading: ``seed_demo`` seeds a demo leader on a paper account and
the demo user following it with their "Paper USDT" account; one replay step of the demo leader
(the SMA crossover preset on the demo candles) trades, and the follower gets a copy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command

from copytrading.models import CopyOrder, Leader, LeaderFill, Subscription
from copytrading.services.demo import (
    DEMO_LEADER_EMAIL,
    SLOW,
    demo_copy_ensure,
    demo_leader_step,
    first_cross_up,
    long_at,
)
from copytrading.tasks import copy_one_task, demo_leader_step_task
from exchanges.paper_models import PaperOrder

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _real_parts(settings):
    """The product's wiring: paper accounts through ``exchanges.adapters.adapter_for``, the
    real risk check, and the embedded shape's paper prices (the stored demo candles)."""
    settings.COPYTRADING_ADAPTER_FACTORY = "exchanges.adapters.adapter_for"
    settings.COPYTRADING_ORDER_CHECK = "risk.services.order_request_check"
    settings.PAPER_ALLOW_STALE_PRICES = True


def test_the_replay_rule_is_the_sma_crossover_by_hand():
    closes = np.array([10.0] * 30 + [20.0] * 5 + [5.0] * 40)
    long = long_at(closes)
    # fast (10) above slow (30) once the jump is inside the fast window and not yet gone
    assert not long[:30].any()
    assert long[30]
    assert long[34]
    assert not long[-1]
    assert first_cross_up(long) == 30
    assert first_cross_up(np.full(40, 1.0)) == SLOW  # never crosses: starts at the first bar


def test_seeding_then_one_step_copies_the_demo_leaders_trade(
    settings, django_capture_on_commit_callbacks
):
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "Demo copy trading:" in out.getvalue()
    leader = Leader.objects.get(owner__email=DEMO_LEADER_EMAIL)
    sub = Subscription.objects.get(leader=leader)
    assert sub.account.label == "Paper USDT"
    assert sub.follower.email == settings.DEMO_USER_EMAIL
    # Seeding twice changes nothing.
    again = demo_copy_ensure(demo_user=sub.follower)
    assert (again.leader.pk, again.subscription.pk) == (leader.pk, sub.pk)

    with django_capture_on_commit_callbacks(execute=True):
        step = demo_leader_step()
    assert step is not None
    assert step.order == "buy"  # the replay starts at an upward cross
    fill = LeaderFill.objects.get(leader=leader)
    assert (fill.side, fill.symbol, fill.source) == ("buy", "BTC/USDT", "stream")
    copy_one_task.apply(args=[fill.pk, sub.pk])  # what the live worker runs for the fan-out
    copy = CopyOrder.objects.get(subscription=sub, leader_fill=fill)
    assert (copy.side, copy.state) == ("buy", "filled")
    booked = PaperOrder.objects.get(account=sub.account)
    assert booked.client_order_id == copy.client_order_id


def test_the_demo_beat_does_nothing_unless_enabled(settings):
    settings.COPYTRADING_DEMO_LEADER = False
    call_command("seed_demo", stdout=io.StringIO())
    demo_leader_step_task.apply()
    assert not PaperOrder.objects.exists()
    settings.COPYTRADING_DEMO_LEADER = True
    demo_leader_step_task.apply()
    assert PaperOrder.objects.filter(account__owner__email=DEMO_LEADER_EMAIL).count() == 1


def test_seeding_again_after_the_follower_deleted_the_demo_account(settings):
    """Deleting "Paper USDT" stops the demo subscription and empties its account; seeding again
    (every ``make run``) makes a new "Paper USDT" and says the old subscription lost its
    account, instead of failing on the empty account."""
    from exchanges.services import account_delete

    call_command("seed_demo", stdout=io.StringIO())
    sub = Subscription.objects.get(follower__email=settings.DEMO_USER_EMAIL)
    account_delete(user=sub.follower, account=sub.account)
    sub.refresh_from_db()
    assert (sub.account, sub.status) == (None, Subscription.Status.STOPPED)

    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "(its account was deleted)" in out.getvalue()
    assert sub.follower.exchange_accounts.filter(label="Paper USDT").exists()
