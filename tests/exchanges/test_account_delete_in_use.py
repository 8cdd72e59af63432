"""Deleting an account that a leader still publishes from is refused with a clear 409 that
names what holds it, and changes nothing (it used to be a 500: the link is PROTECT)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.services_apikeys import api_key_create
from copytrading.models import Leader
from exchanges.models import AccountEvent, ExchangeAccount
from tests.backtester.backtest_factories import make_user

pytestmark = pytest.mark.django_db


def _leading_account(user):
    account = ExchangeAccount.objects.create(
        owner=user, kind="paper", exchange="paper", label="Leads", paper_quote="USDT"
    )
    Leader.objects.create(
        owner=user, account=account, name="Trend follower", published_at=timezone.now()
    )
    return account


def test_the_web_delete_of_an_account_a_leader_uses_is_refused_and_names_the_leader():
    user = make_user()
    account = _leading_account(user)
    client = Client()
    client.force_login(user)
    response = client.post(reverse("exchanges:delete", kwargs={"pk": account.pk}))
    assert response.status_code == 409
    page = response.content.decode()
    assert "is still used by" in page
    assert "Trend follower" in page
    assert ExchangeAccount.objects.filter(pk=account.pk).exists()
    assert not AccountEvent.objects.filter(action=AccountEvent.Action.DELETE).exists()


def test_the_api_delete_answers_409_in_the_error_shape_and_keeps_the_account():
    user = make_user()
    account = _leading_account(user)
    key = api_key_create(user=user, name="t").key
    response = Client().delete(
        f"/api/v1/exchange-accounts/{account.pk}/", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert "Trend follower" in error["message"]
    assert ExchangeAccount.objects.filter(pk=account.pk).exists()
