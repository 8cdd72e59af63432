"""One error format everywhere in the API: {"error": {"code", "message", "fields"}} for a field
error, no or bad credentials, a Free user on Pro, a missing object, a wrong method, too many
requests, a conflict, an unknown URL, a page past the end."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from accounts.gating import UPGRADE_MESSAGE
from tests.accounts.api_support import bearer, error_of, key_for, make_user
from tests.backtester.backtest_factories import make_series, make_strategy

pytestmark = pytest.mark.django_db


@pytest.fixture
def pro():
    return make_user(pro=True)


@pytest.fixture
def api(pro):
    return bearer(key_for(pro))


def test_a_400_names_each_field_at_fault(api):
    response = api.post(
        "/api/v1/backtests/",
        {"strategy": "one", "series": []},
        content_type="application/json",
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid"
    assert {"strategy", "series", "start", "end"} <= set(error["fields"])
    assert error["message"] in {m for ms in error["fields"].values() for m in ms}


def test_a_400_from_a_service_rule_names_its_field(api, pro):
    strategy = make_strategy(pro)
    response = api.patch(
        f"/api/v1/strategies/{strategy.pk}/",
        {"entry_long": "close >> 3"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["entry_long"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=finished", "status"),
        ("strategy=abc", "strategy"),
        ("created_after=last+week", "created_after"),
        ("created_after=2024-02-01&created_before=2024-01-01", "created_before"),
    ],
)
def test_a_bad_filter_is_a_400_on_that_parameter(api, query, field):
    response = api.get(f"/api/v1/backtests/?{query}")
    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == [field]


def test_a_bad_series_filter_is_a_400_on_that_parameter(api):
    response = api.get("/api/v1/market-data/series/?source=ftp")
    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["source"]


def test_401_without_credentials_and_with_a_bad_key():
    for client in (Client(), bearer("qf_nope")):
        response = client.get("/api/v1/backtests/")
        assert response.status_code == 401
        assert error_of(response)["code"] in {"not_authenticated", "authentication_failed"}


def test_403_for_a_free_user_carries_the_upgrade_message():
    response = bearer(key_for(make_user(pro=False))).post(
        "/api/v1/backtests/", {}, content_type="application/json"
    )
    assert response.status_code == 403
    error = error_of(response)
    assert (error["code"], error["message"]) == ("plan_required", UPGRADE_MESSAGE)


def test_404_for_someone_elses_object_and_for_a_missing_one(api):
    theirs = make_strategy(make_user())
    for url in (
        f"/api/v1/strategies/{theirs.pk}/",
        "/api/v1/backtests/987654/",
        "/api/v1/backtests/987654/trades/",
        "/api/v1/market-data/series/987654/",
        "/api/v1/market-data/fetch-jobs/987654/",
    ):
        response = api.get(url)
        assert response.status_code == 404, url
        assert error_of(response)["code"] == "not_found"


def test_404_for_an_unknown_api_url_and_a_page_past_the_end(api):
    unknown = api.get("/api/v1/no-such-thing/")
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "not_found"
    past = api.get("/api/v1/strategies/?page=99")
    assert past.status_code == 404
    assert error_of(past)["code"] == "not_found"


def test_405_for_a_method_the_endpoint_does_not_have(api, pro):
    strategy = make_strategy(pro)
    for method, url in (
        ("delete", "/api/v1/backtests/"),
        ("post", f"/api/v1/strategies/{strategy.pk}/"),
        ("get", "/api/v1/market-data/series/upload/"),
    ):
        response = getattr(api, method)(url)
        assert response.status_code == 405, url
        assert error_of(response)["code"] == "method_not_allowed"


def test_409_when_a_backtest_has_no_result_yet(api, pro, django_capture_on_commit_callbacks):
    series = make_series(n=500)
    with django_capture_on_commit_callbacks(execute=False):  # stays queued: no worker runs it
        created = api.post(
            "/api/v1/backtests/",
            {
                "strategy": make_strategy(pro).pk,
                "series": [series.pk],
                "start": "2024-01-02",
                "end": "2024-01-15",
            },
            content_type="application/json",
        )
    assert created.status_code == 202
    response = api.get(created.json()["links"]["result"])
    assert response.status_code == 409
    assert error_of(response)["code"] == "conflict"


@override_settings(API_THROTTLE_RATES={"anon": "60/min", "free": "1/min", "pro": "1/min"})
def test_429_with_retry_after(spare_redis):
    own = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": spare_redis["url"]}
    with override_settings(CACHES={"default": own}):  # no other test's cache.clear() in between
        _too_many()


def _too_many() -> None:
    api = bearer(key_for(make_user()))
    assert api.get("/api/v1/strategies/").status_code == 200
    response = api.get("/api/v1/strategies/")
    assert response.status_code == 429
    assert error_of(response)["code"] == "throttled"
    assert int(response["Retry-After"]) >= 1


def test_the_schema_and_docs_answer_errors_in_the_format_too():
    response = bearer("qf_nope").get("/api/v1/schema/")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert error_of(response)["code"] == "authentication_failed"
    docs = bearer("qf_nope").get("/api/v1/docs/")
    assert docs.status_code == 401
    assert error_of(docs)["code"] == "authentication_failed"
