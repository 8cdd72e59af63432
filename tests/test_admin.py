"""Operators' admin: every registered model's list page works with its search and filters."""

from __future__ import annotations

import re

import pytest
from allauth.mfa.models import Authenticator
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_celery_results.models import TaskResult

from accounts.models import AuditLog, Plan, Subscription, User, WebhookEvent
from accounts.services import demo_user_ensure, subscription_grant
from accounts.services.apikeys import api_key_create
from backtester.models import Backtest, CandleChunk, FetchJob
from backtester.services.backtests import backtest_create, backtest_execute
from tests.backtester.backtest_factories import make_series, make_strategy, make_user, span

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client):
    operator = User.objects.create_superuser(email="ops@example.com", password="x-unused-123")
    client.force_login(operator)
    return client


def test_every_registered_model_has_a_working_changelist_with_search(operator_client):
    demo_user_ensure(email="demo@example.com")
    for model, model_admin in admin.site._registry.items():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = operator_client.get(url)
        assert response.status_code == 200, url
        if model_admin.search_fields:
            assert operator_client.get(url, {"q": "demo"}).status_code == 200, url


def test_user_list_shows_each_users_plan_and_filters_by_it(operator_client):
    demo_user_ensure(email="demo@example.com")
    User.objects.create_user(email="free@example.com", password="x-unused-123")
    url = reverse("admin:accounts_user_changelist")
    page = operator_client.get(url).content.decode()
    assert "demo@example.com" in page
    assert "Pro" in page
    assert "Free" in page
    pro = Plan.objects.get(code=Plan.PRO)
    filtered = operator_client.get(url, {"subscription__plan__id__exact": pro.pk}).content.decode()
    assert "free@example.com" not in filtered


def test_admin_is_closed_to_regular_users(client):
    user, _ = demo_user_ensure(email="demo@example.com")
    client.force_login(user)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


# --- every model with rows: change pages, every filter choice, no secret shown ---------------

TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DP"


@pytest.fixture
def populated(operator_client, django_capture_on_commit_callbacks):
    """At least one row of every model the operators' admin shows."""
    owner = make_user(email="owner@example.com")
    series = make_series(n=400)
    make_series(owner=owner, symbol="MINE/USDT", n=50)
    start, end = span(series)
    with django_capture_on_commit_callbacks(execute=False):
        backtest = backtest_create(
            user=owner,
            strategy=make_strategy(owner),
            series=[series],
            start=start,
            end=end,
            settings={},
        )
    backtest_execute(backtest_id=backtest.pk)
    FetchJob.objects.create(owner=owner, series=series, since_ts=start, error="boom")
    made = api_key_create(user=owner, name="notebook")
    Authenticator.objects.create(
        user=owner, type=Authenticator.Type.TOTP, data={"secret": TOTP_SECRET}
    )
    operator = User.objects.get(email="ops@example.com")
    subscription_grant(user=make_user(pro=False, email="granted@example.com"), actor=operator)
    WebhookEvent.objects.create(
        stripe_event_id="evt_123",
        type="customer.subscription.updated",
        object_id="sub_123",
        payload={"id": "evt_123"},
    )
    TaskResult.objects.create(task_id="t-1", task_name="backtester.run_backtest", status="SUCCESS")
    assert AuditLog.objects.exists()
    return {"owner": owner, "key": made.key, "key_row": made.api_key}


def _changelist_url(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def test_every_registered_model_answers_on_every_filter_choice_and_change_page(
    operator_client, populated, rf
):
    operator = User.objects.get(email="ops@example.com")
    empty = []
    for model, model_admin in admin.site._registry.items():
        url = _changelist_url(model)
        request = rf.get(url)
        request.user = operator
        changelist = model_admin.get_changelist_instance(request)
        for spec in changelist.filter_specs:
            for choice in spec.choices(changelist):
                response = operator_client.get(url + choice["query_string"])
                assert response.status_code == 200, (url, choice["query_string"])
        obj = model_admin.get_queryset(request).first()
        if obj is None:
            empty.append(model._meta.label)
            continue
        info = (model._meta.app_label, model._meta.model_name)
        change = reverse("admin:{}_{}_change".format(*info), args=[obj.pk])
        assert operator_client.get(change).status_code == 200, change
    # The fixture must reach the operators' core models, or the loop above proves little.
    core = {
        "accounts.User",
        "accounts.Plan",
        "accounts.Subscription",
        "accounts.AuditLog",
        "accounts.ApiKey",
        "accounts.WebhookEvent",
        "mfa.Authenticator",
        "backtester.Backtest",
        "backtester.BacktestTrade",
        "backtester.Strategy",
        "backtester.MarketSeries",
        "backtester.FetchJob",
        "backtester.CandleChunk",
    }
    assert not core & set(empty), f"no rows to open for {core & set(empty)}"


def test_operators_never_see_secrets(operator_client, populated):

    owner = populated["owner"]
    key_row = populated["key_row"]
    key_row.refresh_from_db()
    pages = [
        reverse("admin:accounts_user_change", args=[owner.pk]),
        reverse("admin:accounts_apikey_changelist"),
        reverse("admin:accounts_apikey_change", args=[key_row.pk]),
        reverse("admin:mfa_authenticator_changelist"),
        reverse(
            "admin:mfa_authenticator_change",
            args=[Authenticator.objects.get(user=owner).pk],
        ),
    ]
    for url in pages:
        page = operator_client.get(url).content.decode()
        assert populated["key"] not in page, url
        assert key_row.secret_hash not in page, url
        assert TOTP_SECRET not in page, url
        assert owner.password not in page, url  # the hash itself; Django shows a masked summary
    assert key_row.prefix in operator_client.get(pages[1]).content.decode()


def test_candle_chunks_are_listed_without_reading_their_data(operator_client, populated):

    chunk = CandleChunk.objects.defer("data").first()
    urls = [
        reverse("admin:backtester_candlechunk_changelist"),
        reverse("admin:backtester_candlechunk_change", args=[chunk.pk]),
    ]
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            page = operator_client.get(url).content.decode()
        raw_column = re.compile(r'(?<!LENGTH\()"backtester_candlechunk"\."data"')
        assert not any(raw_column.search(q["sql"]) for q in queries.captured_queries), url
        assert "memory at" not in page
        assert f"{len(bytes(CandleChunk.objects.get(pk=chunk.pk).data)):,}" in page


def test_users_and_backtests_cannot_be_edited_around_the_services(operator_client, populated):

    backtest = Backtest.objects.first()
    url = reverse("admin:backtester_backtest_change", args=[backtest.pk])
    operator_client.post(url, {"status": "queued"})
    backtest.refresh_from_db()
    assert backtest.status == Backtest.Status.COMPLETED
    assert operator_client.get(reverse("admin:backtester_backtest_add")).status_code == 403
    sub = Subscription.objects.get(user=populated["owner"])
    url = reverse("admin:accounts_subscription_change", args=[sub.pk])
    operator_client.post(url, {"status": "canceled"})
    sub.refresh_from_db()
    assert sub.status == Subscription.Status.ACTIVE
    entry = AuditLog.objects.first()
    delete = reverse("admin:accounts_auditlog_delete", args=[entry.pk])
    assert operator_client.post(delete, {"post": "yes"}).status_code == 403
    assert AuditLog.objects.filter(pk=entry.pk).exists()
