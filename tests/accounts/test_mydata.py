"""My data: the JSON export holds everything of mine, nothing of anyone else's and no secret;
deleting my account asks for my password, cancels my Stripe subscription first (against
localstripe), then removes every row I own and keeps shared market data."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest
from allauth.mfa.models import Authenticator
from django.apps import apps
from django.conf import settings as django_settings
from django.db.models.signals import pre_delete
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse

from accounts.billing import subscription_sync
from accounts.gating import user_has_pro
from accounts.models import ApiKey, AuditLog, Subscription, User
from accounts.mydata import COVERAGE, EXPORT_FORMAT, GENERIC
from accounts.services.apikeys import api_key_create
from backtester.models import (
    Backtest,
    BacktestResult,
    BacktestTrade,
    CandleChunk,
    FetchJob,
    MarketSeries,
    Strategy,
    Watchlist,
)
from backtester.services.backtests import backtest_create, backtest_execute
from tests.backtester.backtest_factories import make_series, make_strategy, make_user, span

pytestmark = pytest.mark.django_db

PASSWORD = "x-unused-pass-9"  # what make_user sets
TOTP_SECRET = "JBSWY3DPEHPK3PXPMYDATA234"
_n = itertools.count(1)


def _person(shared: MarketSeries, tag: str, capture) -> SimpleNamespace:
    """A Pro user with one of everything: strategy, completed backtest, upload, download job,
    API key, two-factor authenticator."""
    user = make_user(email=f"{tag}{next(_n)}@example.com")
    strategy = make_strategy(user)
    strategy.name = f"{tag} strategy"
    strategy.save(update_fields=["name"])
    start, end = span(shared)
    with capture(execute=False):
        backtest = backtest_create(
            user=user,
            strategy=strategy,
            series=[shared],
            start=start,
            end=end,
            settings={},
            name=f"{tag} run",
        )
    backtest_execute(backtest_id=backtest.pk)
    upload = make_series(owner=user, symbol=f"{tag.upper()}/USDT", n=40, seed=3)
    job = FetchJob.objects.create(owner=user, series=shared, since_ts=start)
    key = api_key_create(user=user, name=f"{tag} notebook")
    Authenticator.objects.create(
        user=user, type=Authenticator.Type.TOTP, data={"secret": TOTP_SECRET}
    )
    Watchlist.objects.create(owner=user, name=f"{tag} list", exchange="demo", timeframe="1h")
    return SimpleNamespace(
        user=user, strategy=strategy, backtest=backtest, upload=upload, job=job, key=key
    )


@pytest.fixture
def people(django_capture_on_commit_callbacks) -> SimpleNamespace:
    shared = make_series(n=500)
    return SimpleNamespace(
        shared=shared,
        me=_person(shared, "mine", django_capture_on_commit_callbacks),
        other=_person(shared, "theirs", django_capture_on_commit_callbacks),
    )


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _export(user: User) -> tuple[str, dict]:
    response = _client(user).get(reverse("accounts:mydata_export"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"].startswith('attachment; filename="quantfold-my-data-')
    assert response["Cache-Control"] == "private, no-store"
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    return text, json.loads(text)


# --- export ----------------------------------------------------------------------------------


def test_the_export_holds_all_of_my_objects(people):
    me = people.me
    _, doc = _export(me.user)
    assert doc["format"] == EXPORT_FORMAT
    assert doc["profile"]["email"] == me.user.email
    assert doc["profile"]["plan_now"] == "pro"
    assert [t["type"] for t in doc["profile"]["two_factor"]] == ["totp"]
    assert doc["subscription"]["status"] == "active"
    assert [s["id"] for s in doc["strategies"]] == [me.strategy.pk]
    assert doc["strategies"][0]["entry_long"] == me.strategy.entry_long
    assert [u["id"] for u in doc["market_data"]["uploads"]] == [me.upload.pk]
    assert doc["market_data"]["uploads"][0]["count"] == 40
    assert [j["id"] for j in doc["market_data"]["fetch_jobs"]] == [me.job.pk]
    assert [(k["name"], k["prefix"]) for k in doc["api_keys"]] == [
        ("mine notebook", me.key.api_key.prefix)
    ]
    assert [w["name"] for w in doc["more"]["watchlists"]] == ["mine list"]
    assert doc["more"]["watchlists"][0]["owner_id"] == me.user.pk
    (backtest,) = doc["backtests"]
    assert backtest["id"] == me.backtest.pk
    assert backtest["status"] == "completed"
    assert backtest["settings"] == Backtest.objects.get(pk=me.backtest.pk).settings
    result = BacktestResult.objects.get(backtest_id=me.backtest.pk)
    assert backtest["result"]["trade_count"] == result.trade_count > 0
    assert backtest["result"]["metrics"]["sharpe"] == result.metrics["sharpe"]
    trades = BacktestTrade.objects.filter(backtest_id=me.backtest.pk).order_by("seq")
    assert [t["seq"] for t in backtest["trades"]] == [t.seq for t in trades]
    assert backtest["trades"][0]["pnl"] == trades[0].pnl


def test_the_export_holds_nothing_of_another_user(people):
    text, doc = _export(people.me.user)
    other = people.other
    assert other.user.email not in text
    assert "theirs" not in text  # their strategy, run, upload and key names all say so
    assert other.key.api_key.prefix not in text
    assert other.backtest.pk not in [b["id"] for b in doc["backtests"]]
    assert other.strategy.pk not in [s["id"] for s in doc["strategies"]]
    assert other.job.pk not in [j["id"] for j in doc["market_data"]["fetch_jobs"]]


def test_the_export_never_contains_a_secret(people):
    me = people.me
    text, _ = _export(me.user)
    row = ApiKey.objects.get(pk=me.key.api_key.pk)
    assert me.key.key not in text
    assert row.secret_hash not in text
    assert User.objects.get(pk=me.user.pk).password not in text
    assert TOTP_SECRET not in text
    assert "password" not in text
    assert "secret" not in text


def test_every_model_linked_to_users_is_accounted_for_in_the_export():
    """A new model with a foreign key to the user must say what the export does with it."""
    user_model = apps.get_model(django_settings.AUTH_USER_MODEL)
    linked = {
        model._meta.label_lower
        for model in apps.get_models()
        for f in model._meta.get_fields()
        if f.concrete and f.is_relation and f.related_model is user_model
    }
    assert "backtester.backtest" in linked  # the walk itself works
    named = set(COVERAGE) | set(GENERIC)
    assert not set(COVERAGE) & set(GENERIC)
    assert linked == named, f"add to accounts.mydata.COVERAGE or GENERIC: {linked ^ named}"


def test_a_free_user_can_export_their_data():
    free = make_user(pro=False)
    _, doc = _export(free)
    assert doc["profile"]["plan_now"] == "free"
    assert doc["backtests"] == []


def test_the_profile_page_links_to_export_and_delete():
    page = _client(make_user()).get(reverse("accounts:profile")).content.decode()
    assert reverse("accounts:mydata_export") in page
    assert reverse("accounts:account_delete") in page


# --- delete ----------------------------------------------------------------------------------

DELETE = reverse("accounts:account_delete")


def test_a_wrong_password_or_no_confirmation_deletes_nothing():
    user = make_user()
    client = _client(user)
    assert client.get(DELETE).status_code == 200
    wrong = client.post(DELETE, {"password": "not-it", "confirm": "on"})
    assert wrong.status_code == 400
    assert "That is not your password." in wrong.content.decode()
    unconfirmed = client.post(DELETE, {"password": PASSWORD})
    assert unconfirmed.status_code == 400
    assert "Tick the box to confirm." in unconfirmed.content.decode()
    assert User.objects.filter(pk=user.pk).exists()
    assert user_has_pro(User.objects.get(pk=user.pk))


def test_too_many_wrong_passwords_stop_the_form_for_a_while():
    user = make_user()
    client = _client(user)
    for _ in range(5):
        assert client.post(DELETE, {"password": "guess", "confirm": "on"}).status_code == 400
    locked = client.post(DELETE, {"password": PASSWORD, "confirm": "on"})
    assert locked.status_code == 429
    assert User.objects.filter(pk=user.pk).exists()


def test_deleting_my_account_removes_everything_of_mine_and_nothing_else(people):
    me, other, shared = people.me, people.other, people.shared
    mine = {
        Strategy: Strategy.objects.filter(owner=me.user).count(),
        Backtest: Backtest.objects.filter(owner=me.user).count(),
        MarketSeries: MarketSeries.objects.filter(owner=me.user).count(),
        FetchJob: FetchJob.objects.filter(owner=me.user).count(),
        ApiKey: ApiKey.objects.filter(user=me.user).count(),
    }
    assert all(mine.values())
    trades_of_mine = BacktestTrade.objects.filter(backtest__owner=me.user).count()
    assert trades_of_mine > 0
    before = {model: model.objects.count() for model in mine}
    trades_before = BacktestTrade.objects.count()
    shared_chunks = CandleChunk.objects.filter(series=shared).count()
    client = _client(me.user)
    response = client.post(DELETE, {"password": PASSWORD, "confirm": "on"})
    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert not User.objects.filter(pk=me.user.pk).exists()
    for model, count in mine.items():
        assert model.objects.count() == before[model] - count, model
    assert BacktestTrade.objects.count() == trades_before - trades_of_mine
    assert not CandleChunk.objects.filter(series=me.upload).exists()
    assert not Subscription.objects.filter(user_id=me.user.pk).exists()
    assert not Authenticator.objects.filter(user_id=me.user.pk).exists()
    # Shared data and the other user's things stay.
    assert CandleChunk.objects.filter(series=shared).count() == shared_chunks
    assert Backtest.objects.filter(owner=other.user).count() == 1
    assert user_has_pro(User.objects.get(pk=other.user.pk))
    entry = AuditLog.objects.get(action=AuditLog.Action.ACCOUNT_DELETED)
    assert entry.detail["user_id"] == me.user.pk
    assert me.user.email not in json.dumps(entry.detail)
    # Signed out: the profile now asks to sign in.
    assert client.get(reverse("accounts:profile")).status_code == 302


@pytest.fixture
def payer(localstripe):
    """A Pro user paying through Stripe (localstripe), mirrored on our row."""
    user = make_user(pro=False, email=f"payer{next(_n)}@example.com")
    customer = localstripe.customer_with_card(email=user.email, user_id=user.pk)
    sub = localstripe.subscribe(customer)
    subscription_sync(stripe_subscription_id=sub["id"], stripe_customer_id=customer)
    assert user_has_pro(User.objects.get(pk=user.pk))
    make_strategy(user)
    return SimpleNamespace(user=user, sub=sub)


def test_deleting_cancels_the_stripe_subscription_before_anything_is_deleted(payer, localstripe):
    seen: list[tuple[str, str]] = []

    def at_deletion(sender, instance, **kwargs):
        # What Stripe and our row say at the moment each row is about to go.
        stripe_status = localstripe.subscription(payer.sub["id"])["status"]
        seen.append((sender.__name__, stripe_status))
        if sender is Subscription:
            seen.append(("row", instance.status))

    for model in (User, Subscription, Strategy):
        pre_delete.connect(at_deletion, sender=model, weak=False)
    try:
        response = _client(payer.user).post(DELETE, {"password": PASSWORD, "confirm": "on"})
    finally:
        for model in (User, Subscription, Strategy):
            pre_delete.disconnect(at_deletion, sender=model)
    assert response.status_code == 302
    assert seen, "nothing was deleted"
    assert {status for name, status in seen if name != "row"} == {"canceled"}
    assert ("row", "canceled") in seen
    assert localstripe.subscription(payer.sub["id"])["status"] == "canceled"
    assert not User.objects.filter(pk=payer.user.pk).exists()
    entry = AuditLog.objects.get(action=AuditLog.Action.ACCOUNT_DELETED)
    assert entry.detail["stripe_subscription_id"] == payer.sub["id"]


def test_when_stripe_cannot_cancel_nothing_is_deleted(payer, localstripe, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # Stripe unreachable
    response = _client(payer.user).post(DELETE, {"password": PASSWORD, "confirm": "on"})
    assert response.status_code == 503
    assert "Nothing was deleted" in response.content.decode()
    assert User.objects.filter(pk=payer.user.pk).exists()
    assert Strategy.objects.filter(owner=payer.user).exists()
    assert user_has_pro(User.objects.get(pk=payer.user.pk))
    assert localstripe.subscription(payer.sub["id"])["status"] == "active"
    assert not AuditLog.objects.exists()
