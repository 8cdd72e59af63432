"""Live dashboards over Channels (real channel layer on Redis): the follower's socket hears its
own copies change state, after commit; the leader's socket hears its fills and the copies
made of them; nobody else may listen."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections, transaction
from django.utils import timezone

from config.asgi import application
from copytrading.models import CopyOrder
from tests.backtester.backtest_factories import make_user
from tests.conftest import arun
from tests.copytrading.conftest import build_copy_setup
from tests.copytrading.test_dashboards import decide, make_fill, make_order

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = [(b"origin", b"http://localhost")]


def socket(path: str, user) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, path, headers=ORIGIN)
    if user is not None:
        comm.scope["user"] = user
    return comm


def test_the_follower_hears_its_copy_change_state_and_others_hear_nothing():
    s = build_copy_setup()
    other_setup = build_copy_setup()  # another follower of another leader, also listening
    fill = make_fill(s.leader, at=timezone.now())
    order = make_order(s.subscription, fill, state="submitted", filled="0")

    def move_to_filled() -> None:
        with transaction.atomic():
            row = CopyOrder.objects.select_for_update().get(pk=order.pk)
            row.state = "filled"
            row.filled_amount = row.amount
            row.save()

    def roll_back_a_change() -> None:
        try:
            with transaction.atomic():
                row = CopyOrder.objects.get(pk=order.pk)
                row.state = "cancelled"
                row.save()
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass

    async def scenario() -> tuple[list[dict], bool, bool]:
        mine = socket(f"/ws/copy/subscriptions/{s.subscription.pk}/", s.follower)
        theirs = socket(
            f"/ws/copy/subscriptions/{other_setup.subscription.pk}/", other_setup.follower
        )
        assert (await mine.connect(timeout=10))[0]
        assert (await theirs.connect(timeout=10))[0]
        await database_sync_to_async(roll_back_a_change)()
        nothing_for_rollback = await mine.receive_nothing(timeout=0.5)
        await database_sync_to_async(move_to_filled)()
        first = await mine.receive_json_from(timeout=10)
        await database_sync_to_async(decide)(s.subscription, fill, "copied", "", order)
        second = await mine.receive_json_from(timeout=10)
        quiet = await theirs.receive_nothing(timeout=0.5)
        await mine.disconnect()
        await theirs.disconnect()
        await database_sync_to_async(connections.close_all)()
        return [first, second], nothing_for_rollback, quiet

    (first, second), nothing_for_rollback, quiet = arun(scenario())
    assert nothing_for_rollback
    assert (first["kind"], first["id"], first["state"], first["created"]) == (
        "order",
        order.pk,
        "filled",
        False,
    )
    assert (second["kind"], second["outcome"], second["subscription"]) == (
        "decision",
        "copied",
        s.subscription.pk,
    )
    assert quiet
    assert "type" not in first


def test_the_leader_hears_its_fills_and_their_copies():
    s = build_copy_setup()

    async def scenario() -> list[dict]:
        comm = socket(f"/ws/copy/leaders/{s.leader.pk}/", s.leader_user)
        assert (await comm.connect(timeout=10))[0]
        fill = await database_sync_to_async(make_fill)(s.leader, at=timezone.now())
        got = [await comm.receive_json_from(timeout=10)]
        await database_sync_to_async(make_order)(s.subscription, fill, state="planned")
        got.append(await comm.receive_json_from(timeout=10))
        await comm.disconnect()
        await database_sync_to_async(connections.close_all)()
        return got

    fill_msg, order_msg = arun(scenario())
    assert (fill_msg["kind"], fill_msg["leader"], fill_msg["created"]) == (
        "fill",
        s.leader.pk,
        True,
    )
    assert (order_msg["kind"], order_msg["state"], order_msg["created"]) == (
        "order",
        "planned",
        True,
    )


def test_only_the_owner_may_listen():
    s = build_copy_setup()
    stranger = make_user()
    free = make_user(pro=False)

    async def refused(path: str, user) -> int | None:
        comm = socket(path, user)
        connected, code = await comm.connect(timeout=10)
        await comm.disconnect()
        return None if connected else code

    async def scenario() -> list[int | None]:
        sub = f"/ws/copy/subscriptions/{s.subscription.pk}/"
        leader = f"/ws/copy/leaders/{s.leader.pk}/"
        codes = [
            await refused(sub, stranger),
            await refused(leader, stranger),
            await refused(leader, s.follower),  # following a leader is not owning it
            await refused(sub, s.leader_user),  # nor is leading the followed one
            await refused(sub, free),
            await refused("/ws/copy/subscriptions/999999/", s.follower),
        ]
        from django.contrib.auth.models import AnonymousUser

        codes.append(await refused(sub, AnonymousUser()))
        await database_sync_to_async(connections.close_all)()
        return codes

    assert arun(scenario()) == [4404, 4404, 4404, 4404, 4403, 4404, 4401]
