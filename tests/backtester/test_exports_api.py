"""The result's ``links.exports`` are API routes: a script holding only an API key downloads
every format, gets the same bytes as the page, and is refused like any API call."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Subscription
from tests.accounts.api_support import bearer, error_of, key_for
from tests.backtester.test_results_support import make_backtest, make_user

pytestmark = pytest.mark.django_db
TYPES = {
    "trades-csv": "text/csv",
    "equity-csv": "text/csv",
    "json": "application/json",
    "html": "text/html",
}


def _body(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def test_every_export_link_of_the_result_downloads_with_a_bearer_key():
    user = make_user()
    backtest, _, _ = make_backtest(user)
    api = bearer(key_for(user))
    result = api.get(reverse("api_backtest_result", kwargs={"pk": backtest.pk}))
    assert result.status_code == 200
    exports = result.json()["links"]["exports"]
    assert set(exports) == set(TYPES)
    page = Client()
    page.force_login(user)
    for fmt, url in exports.items():
        response = api.get(url)
        assert response.status_code == 200, (fmt, response.status_code, response.get("Location"))
        assert response["Content-Type"].startswith(TYPES[fmt])
        assert f"backtest-{backtest.pk}-" in response["Content-Disposition"]
        body = _body(response)
        web = _body(
            page.get(reverse("backtester:backtest_export", kwargs={"pk": backtest.pk, "fmt": fmt}))
        )
        if fmt == "html":  # the report stamps the time it was generated
            assert body.split(b"Generated")[0] == web.split(b"Generated")[0]
        elif fmt == "json":
            assert json.loads(body)["metrics"] == json.loads(web)["metrics"]
        else:
            assert body == web


def test_an_export_with_an_accept_header_for_the_file_type_still_downloads():
    user = make_user()
    backtest, _, _ = make_backtest(user)
    url = reverse("api_backtest_export", kwargs={"pk": backtest.pk, "fmt": "trades-csv"})
    response = bearer(key_for(user)).get(url, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert _body(response).startswith(b"seq,symbol,side")


def test_export_refusals_use_the_api_error_format():
    owner, other, free = make_user(), make_user(), make_user(pro=False)
    backtest, _, _ = make_backtest(owner)
    url = reverse("api_backtest_export", kwargs={"pk": backtest.pk, "fmt": "json"})
    assert error_of(Client().get(url))["code"] == "not_authenticated"
    assert error_of(bearer("qf_nope_nope").get(url))["code"] == "authentication_failed"
    assert error_of(bearer(key_for(other)).get(url))["code"] == "not_found"
    assert error_of(bearer(key_for(free)).get(url))["code"] == "plan_required"
    unknown = reverse("api_backtest_export", kwargs={"pk": backtest.pk, "fmt": "xlsx"})
    assert error_of(bearer(key_for(owner)).get(unknown))["code"] == "not_found"
    Subscription.objects.filter(user=owner).update(status=Subscription.Status.CANCELED)
    assert error_of(bearer(key_for(owner)).get(url))["code"] == "plan_required"


def test_an_unfinished_backtest_has_nothing_to_export_yet():
    user = make_user()
    backtest, _, _ = make_backtest(user, status="queued", save=False)
    url = reverse("api_backtest_export", kwargs={"pk": backtest.pk, "fmt": "json"})
    response = bearer(key_for(user)).get(url)
    assert response.status_code == 409
    assert error_of(response)["code"] == "conflict"
