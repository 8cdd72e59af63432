"""Deleting an exchange account stops what runs on it: its leaders retire (their followers are
told), subscriptions copying into it stop, bots on it stop; their history stays, with an empty
account link. It is refused (409, nothing changed) while an order on it is still being sent or
looked up, or a bot on it is stepping: once the keys are erased, nobody could settle it."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.services.apikeys import api_key_create
from backtester.models import BotOrder, LiveBot
from backtester.services.live_bots import bot_create
from copytrading.models import CopyOrder, Leader, LeaderFill, Subscription
from copytrading.services.leaders import leader_publish
from copytrading.services.subscriptions import subscription_create
from exchanges.models import AccountEvent, ExchangeAccount
from exchanges.services_paper import paper_account_create
from tests.backtester.backtest_factories import make_strategy, make_user
from tests.bots.helpers import demo_candles, engine_settings, store_series

pytestmark = pytest.mark.django_db(transaction=True)


def _paper(user, label):
    return paper_account_create(owner=user, label=label, quote="USDT", starting_balance="10000")


class World:
    """A leader on ``leading``; a follower copying it into ``copying``; a bot on ``botting``."""

    def __init__(self) -> None:
        self.leader_user = make_user()
        self.leading = _paper(self.leader_user, "Leads")
        self.leader = leader_publish(
            user=self.leader_user, account_id=self.leading.pk, name="Trend follower"
        )
        self.follower = make_user()
        self.copying = _paper(self.follower, "Copies")
        self.sub = subscription_create(
            user=self.follower, leader_id=self.leader.pk, account_id=self.copying.pk
        )
        self.botting = _paper(self.follower, "Bots")
        candles = demo_candles(days=3)
        self.bot = bot_create(
            user=self.follower,
            account=self.botting,
            series=store_series(candles),
            strategy=make_strategy(self.follower, "sma_cross"),
            settings=engine_settings(),
            param_values={"fast": 5, "slow": 20},
            name="SOL trend bot",
        )

    def copy_order(self, state: str) -> CopyOrder:
        now = timezone.now()
        fill = LeaderFill.objects.create(
            leader=self.leader, fill_id="f1", symbol="BTC/USDT", side="buy",
            amount=Decimal("0.1"), price=Decimal(60000), timestamp_ms=1, exchange_time=now,
            detected_at=now, source="poll", position_before=Decimal(0),
            position_after=Decimal("0.1"),
        )  # fmt: skip
        return CopyOrder.objects.create(
            subscription=self.sub, leader_fill=fill, client_order_id="qfc-test-1",
            symbol="BTC/USDT", side="buy", order_type="limit", amount=Decimal("0.01"),
            reference_price=Decimal(60000), state=state, leader_filled_at=now,
            detected_at=now, planned_at=now,
        )  # fmt: skip


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_confirmation_page_says_what_will_stop() -> None:
    w = World()
    page = _login(w.leader_user).get(reverse("exchanges:delete", kwargs={"pk": w.leading.pk}))
    assert page.status_code == 200
    assert "Trend follower" in page.content.decode()
    page = _login(w.follower).get(reverse("exchanges:delete", kwargs={"pk": w.botting.pk}))
    assert "SOL trend bot" in page.content.decode()
    page = _login(w.follower).get(reverse("exchanges:delete", kwargs={"pk": w.copying.pk}))
    assert "copying “Trend follower”" in page.content.decode()


def test_deleting_a_leaders_account_retires_it_and_tells_its_followers() -> None:
    w = World()
    response = _login(w.leader_user).post(reverse("exchanges:delete", kwargs={"pk": w.leading.pk}))
    assert response.status_code == 302
    assert not ExchangeAccount.objects.filter(pk=w.leading.pk).exists()
    leader = Leader.objects.get(pk=w.leader.pk)
    assert leader.status == Leader.Status.RETIRED
    assert leader.account_id is None
    sub = Subscription.objects.get(pk=w.sub.pk)
    assert sub.status == Subscription.Status.PAUSED
    assert "account was deleted" in sub.status_message
    event = AccountEvent.objects.get(action=AccountEvent.Action.DELETE)
    assert "Trend follower" in event.message
    # The retired leader's page still renders without its account.
    page = _login(w.leader_user).get(reverse("copytrading:leader_detail", args=[leader.pk]))
    assert page.status_code == 200


def test_deleting_a_followers_account_stops_its_subscription_and_keeps_the_copies() -> None:
    w = World()
    done = w.copy_order(CopyOrder.State.FILLED)
    response = _login(w.follower).post(reverse("exchanges:delete", kwargs={"pk": w.copying.pk}))
    assert response.status_code == 302
    sub = Subscription.objects.get(pk=w.sub.pk)
    assert sub.status == Subscription.Status.STOPPED
    assert sub.account_id is None
    assert "was deleted" in sub.status_message
    assert CopyOrder.objects.filter(pk=done.pk).exists()
    assert Leader.objects.get(pk=w.leader.pk).status == Leader.Status.ACTIVE
    page = _login(w.follower).get(reverse("copytrading:subscription_detail", args=[sub.pk]))
    assert page.status_code == 200
    assert "(deleted account)" in page.content.decode()


def test_deleting_a_bots_account_through_the_api_stops_the_bot_and_keeps_its_orders() -> None:
    w = World()
    BotOrder.objects.create(
        bot=w.bot, client_order_id="qfb-x-1", bar_ts=1, action="enter", side="buy",
        amount=Decimal(1), state=BotOrder.State.FILLED,
    )  # fmt: skip
    key = api_key_create(user=w.follower, name="t").key
    response = Client().delete(
        f"/api/v1/exchange-accounts/{w.botting.pk}/", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 204
    bot = LiveBot.objects.get(pk=w.bot.pk)
    assert bot.status == LiveBot.Status.STOPPED
    assert bot.account_id is None
    assert "account was deleted" in bot.status_reason
    assert bot.orders.count() == 1
    assert _login(w.follower).get(f"/bots/{bot.pk}/").status_code == 200


@pytest.mark.parametrize("state", [CopyOrder.State.PLANNED, CopyOrder.State.UNKNOWN])
def test_a_copy_still_in_flight_refuses_the_delete_and_changes_nothing(state: str) -> None:
    w = World()
    w.copy_order(state)
    response = _login(w.follower).post(reverse("exchanges:delete", kwargs={"pk": w.copying.pk}))
    assert response.status_code == 409
    assert "still being sent or looked up" in response.content.decode()
    assert ExchangeAccount.objects.filter(pk=w.copying.pk).exists()
    assert Subscription.objects.get(pk=w.sub.pk).status == Subscription.Status.ACTIVE
    assert not AccountEvent.objects.filter(action=AccountEvent.Action.DELETE).exists()


def test_an_unsettled_bot_order_refuses_the_delete_in_the_api_error_shape() -> None:
    w = World()
    BotOrder.objects.create(
        bot=w.bot, client_order_id="qfb-x-2", bar_ts=1, action="enter", side="buy",
        amount=Decimal(1), state=BotOrder.State.UNKNOWN,
    )  # fmt: skip
    key = api_key_create(user=w.follower, name="t").key
    response = Client().delete(
        f"/api/v1/exchange-accounts/{w.botting.pk}/", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert "not settled" in response.json()["error"]["message"]
    assert LiveBot.objects.get(pk=w.bot.pk).status == LiveBot.Status.RUNNING
    assert ExchangeAccount.objects.filter(pk=w.botting.pk).exists()


def test_a_bot_stepping_right_now_refuses_the_delete() -> None:
    """Another database session holds the bot's step lock (as a worker in ``bot_step``)."""
    w = World()
    params = connection.get_connection_params()
    dsn = {k: v for k, v in params.items() if k in ("host", "port", "user", "password", "dbname")}
    assert connection.vendor == "postgresql", settings.DATABASES
    with psycopg.connect(**dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [0x51B0_0000 + w.bot.pk])
        response = _login(w.follower).post(reverse("exchanges:delete", kwargs={"pk": w.botting.pk}))
        assert response.status_code == 409
        assert "placing orders right now" in response.content.decode()
    assert LiveBot.objects.get(pk=w.bot.pk).status == LiveBot.Status.RUNNING
    # Lock released (the session ended): the delete goes through.
    response = _login(w.follower).post(reverse("exchanges:delete", kwargs={"pk": w.botting.pk}))
    assert response.status_code == 302
    assert LiveBot.objects.get(pk=w.bot.pk).status == LiveBot.Status.STOPPED
