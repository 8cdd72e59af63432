"""Inputs that used to answer 500 (issue 10, items 7 to 13): each is a clear 400 in the one error
format, and nothing is created or changed."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import WebhookEvent
from backtester.models import Backtest, MarketSeries, OptimizationJob, Strategy, WalkForwardJob
from backtester.results.charts import trade_histogram
from tests.accounts.api_support import bearer, error_of, key_for, make_user
from tests.accounts.localstripe import sign
from tests.backtester.backtest_factories import make_series, make_strategy, span

pytestmark = pytest.mark.django_db

# Epoch milliseconds past 9999-12-31 and before year 1 (what a probe sent).
FAR_FUTURE_MS = 10**17
FAR_PAST_MS = -(10**17)
DEEP = 50_000


@pytest.fixture
def pro():
    return make_user(pro=True)


@pytest.fixture
def api(pro):
    return bearer(key_for(pro))


def _post(api: Client, url: str, body) -> object:
    return api.post(url, body, content_type="application/json")


def _counts() -> tuple[int, ...]:
    return (
        Backtest.objects.count(),
        OptimizationJob.objects.count(),
        WalkForwardJob.objects.count(),
        Strategy.objects.count(),
        MarketSeries.objects.count(),
    )


# --- 7. epoch-ms start/end out of range ------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [FAR_FUTURE_MS, FAR_PAST_MS, 2**63, -(2**63) - 1, "9999-12-31", "0001-01-01"]
)
@pytest.mark.parametrize("which", ["start", "end"])
@pytest.mark.parametrize("kind", ["backtest", "optimization", "walkforward"])
def test_epoch_ms_bounds_out_of_range_are_a_400_on_that_field(api, pro, bad, which, kind):
    series = make_series(n=300)
    strategy = make_strategy(pro)
    start, end = span(series)
    bounds = {"start": start, "end": end, which: bad}
    if kind == "backtest":
        url = "/api/v1/backtests/"
        body = {"strategy": strategy.pk, "series": [series.pk], **bounds}
    else:
        url = f"/api/v1/research/{kind}s/"
        body = {
            "strategy": strategy.pk,
            "series": series.pk,
            "ranges": {"fast": [5, 10], "slow": [20, 30]},
            **bounds,
        }
    before = _counts()
    response = _post(api, url, body)
    assert response.status_code == 400, response.content[:300]
    assert which in error_of(response)["fields"]
    assert _counts() == before


# --- 8. deeply nested JSON -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/backtests/",
        "/api/v1/strategies/",
        "/api/v1/research/optimizations/",
        "/api/v1/scanner/watchlists/",
    ],
)
def test_deeply_nested_json_body_is_a_400(api, url):
    before = _counts()
    response = _post(api, url, "[" * DEEP + "]" * DEEP)
    assert response.status_code == 400
    assert error_of(response)["code"] == "parse_error"
    nested_in_object = '{"name": ' + "[" * DEEP + "]" * DEEP + "}"
    response = _post(api, url, nested_in_object)
    assert response.status_code == 400
    error_of(response)
    assert _counts() == before


def test_deeply_nested_json_upload_fails_its_job_with_a_clear_message(api):
    # Uploads are parsed in the background: the request is accepted (202), and the job ends
    # failed with a readable reason, stores nothing, and never errors with a 500.
    from django.core.files.uploadedfile import SimpleUploadedFile

    from backtester.services.marketdata import upload_job_execute

    body = ("[" * DEEP + "]" * DEEP).encode()
    before = _counts()
    response = api.post(
        "/api/v1/market-data/series/upload/",
        {
            "file": SimpleUploadedFile("bomb.json", body, "application/json"),
            "symbol": "BTC/USDT",
            "timeframe": "1h",
        },
    )
    assert response.status_code == 202, response.content[:300]
    upload_job_execute(job_id=response.json()["id"])  # what the worker does
    state = api.get(f"/api/v1/market-data/upload-jobs/{response.json()['id']}/")
    assert state.status_code == 200
    assert state.json()["status"] == "failed"
    assert "nested too deeply" in state.json()["error"]
    assert _counts() == before


# --- 9. huge parameter ranges and periods ----------------------------------------------------


def _strategy_body(**param: object) -> dict[str, object]:
    return {
        "name": "huge",
        "entry_long": "rising(close, n)",
        "exit_long": "falling(close, n)",
        "params": [{"name": "n", "kind": "int", "default": 5, "low": 2, "high": 20, **param}],
    }


@pytest.mark.parametrize(
    "param",
    [
        {"high": 10**30},
        {"low": -(10**30)},
        {"default": 10**30, "high": 10**30},
        {"kind": "float", "low": 0, "high": 1e300, "step": 1e-300, "default": 1.0},
        {"kind": "float", "low": 0, "high": 1e308, "default": 1e308},
    ],
)
def test_huge_parameter_ranges_are_a_400_through_the_api(api, param):
    before = _counts()
    response = _post(api, "/api/v1/strategies/", _strategy_body(**param))
    assert response.status_code == 400, response.content[:300]
    error_of(response)
    assert _counts() == before


def test_huge_float_range_in_an_optimization_is_a_400(api, pro):
    series = make_series(n=300)
    strategy = make_strategy(pro)
    before = _counts()
    response = _post(
        api,
        "/api/v1/research/optimizations/",
        {
            "strategy": strategy.pk,
            "series": series.pk,
            "ranges": {"fast": {"low": 0, "high": 1e300, "step": 1e-300}},
        },
    )
    assert response.status_code == 400, response.content[:300]
    assert "ranges" in " ".join(error_of(response)["fields"]) or error_of(response)["message"]
    response = _post(
        api,
        "/api/v1/research/optimizations/",
        {"strategy": strategy.pk, "series": series.pk, "ranges": {"fast": [10**30, 5]}},
    )
    assert response.status_code == 400, response.content[:300]
    error_of(response)
    assert _counts() == before


@pytest.mark.parametrize("period", ["1e308", "10" + "0" * 40, "9e18"])
def test_a_period_beyond_any_data_is_refused(api, period):
    before = _counts()
    response = _post(
        api,
        "/api/v1/strategies/",
        {"name": "p", "entry_long": f"close > sma(close, {period})", "exit_long": ""},
    )
    assert response.status_code == 400, response.content[:300]
    assert "entry_long" in error_of(response)["fields"]
    assert _counts() == before


def test_huge_parameter_high_is_refused_by_the_web_form(pro):
    client = Client()
    client.force_login(pro)
    before = _counts()
    response = client.post(
        reverse("backtester:strategy_create"),
        {
            "name": "huge",
            "entry_long": "rising(close, n)",
            "exit_long": "falling(close, n)",
            "param-TOTAL_FORMS": "1",
            "param-INITIAL_FORMS": "0",
            "param-0-name": "n",
            "param-0-kind": "int",
            "param-0-default": "5",
            "param-0-low": "2",
            "param-0-high": str(10**29),
        },
    )
    assert response.status_code == 400
    assert "n" in response.content.decode()
    assert _counts() == before


# --- 10. ids beyond 64 bits ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/backtests/?strategy=" + "9" * 30, "strategy"),
        ("/api/v1/scanner/alerts/?watchlist=" + "9" * 30, "watchlist"),
    ],
)
def test_ids_beyond_64_bits_in_filters_are_a_400(api, url, field):
    response = api.get(url)
    assert response.status_code == 400, response.content[:300]
    assert field in error_of(response)["fields"]


def test_ids_beyond_64_bits_in_bodies_are_a_400(api, pro):
    series = make_series(n=300)
    start, end = span(series)
    before = _counts()
    response = _post(
        api,
        "/api/v1/backtests/",
        {"strategy": 10**30, "series": [10**30], "start": start, "end": end},
    )
    assert response.status_code == 400, response.content[:300]
    assert {"strategy", "series.0"} <= set(error_of(response)["fields"])
    assert _counts() == before


def test_compare_with_an_id_beyond_64_bits_is_a_400(pro):
    client = Client()
    client.force_login(pro)
    response = client.get(reverse("backtester:backtest_compare") + "?ids=" + "9" * 30)
    assert response.status_code == 400


# --- 11. a signed webhook that is JSON but not an object -------------------------------------


@pytest.mark.parametrize("payload", [b"[1,2,3]", b'"text"', b"42", b"null", b'{"id": [1]}'])
def test_signed_webhook_whose_body_is_not_an_event_object_is_a_400(client, settings, payload):
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_localstripe_only"
    response = client.post(
        "/accounts/billing/stripe/webhook/",
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(payload),
    )
    assert response.status_code == 400
    assert response.json() == {"result": "rejected"}
    assert not WebhookEvent.objects.exists()


# --- 12. multipart with only the closing boundary --------------------------------------------


def test_multipart_with_only_the_closing_boundary_answers_in_the_error_format(api):
    before = _counts()
    response = api.generic(
        "POST",
        "/api/v1/market-data/series/upload/",
        b"--BOUNDARY--\r\n",
        content_type="multipart/form-data; boundary=BOUNDARY",
    )
    assert response.status_code == 400
    assert error_of(response)["code"] in {"parse_error", "invalid"}
    assert _counts() == before


def test_a_multipart_body_with_no_boundary_answers_in_the_error_format(api):
    response = api.generic(
        "POST", "/api/v1/backtests/", b"garbage", content_type="multipart/form-data"
    )
    assert response.status_code == 400
    error_of(response)


# --- 13. equal trade returns in the histogram -------------------------------------------------


@pytest.mark.parametrize(
    "returns",
    [
        [0.1, 0.1 + 1e-17, 0.1],
        [0.012345678, 0.012345678 * (1 + 2e-16), 0.012345678],
        [-0.05, -0.05 * (1 + 1e-15)],
        [1e-300, 2e-300],
        [1e6, 1e6 + 1e-9],
    ],
)
def test_trade_histogram_of_returns_equal_within_rounding_has_one_bin(returns):
    edges, counts = trade_histogram(returns)
    assert counts.sum() == len(returns)
    assert 1 <= counts.size <= 100
    assert edges.size == counts.size + 1
    assert np.all(np.diff(edges) > 0)
    assert edges[0] <= min(returns)
    assert edges[-1] >= max(returns)


def test_a_period_longer_than_the_data_is_refused_when_the_backtest_is_asked(api, pro):
    series = make_series(n=300)
    start, end = span(series)
    made = _post(
        api,
        "/api/v1/strategies/",
        {"name": "long", "entry_long": "close > sma(close, 1000000)", "exit_long": ""},
    )
    assert made.status_code == 201
    before = _counts()
    response = _post(
        api,
        "/api/v1/backtests/",
        {"strategy": made.json()["id"], "series": [series.pk], "start": start, "end": end},
    )
    assert response.status_code == 400, response.content[:300]
    assert "1000000" in error_of(response)["message"] or "period" in error_of(response)["message"]
    assert _counts() == before
