"""Monte Carlo pages and API: every URL tried by each persona (owner, another Pro user → 404,
anonymous → login / 401, Free → 403), the form's refusals, what the run page shows, and the
links from the backtest page and the research hub."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import NoReverseMatch, reverse

from backtester.models import Backtest, MonteCarloRun
from backtester.services.backtests import backtest_create
from backtester.services.montecarlo import montecarlo_create, montecarlo_execute
from tests.backtester.backtest_factories import make_series, make_strategy, make_user, span
from tests.research.test_montecarlo_service import finished_backtest

pytestmark = pytest.mark.django_db

FORM = {
    "method": "bootstrap",
    "iterations": "2000",
    "block_length": "",
    "ruin_threshold": "40",
    "seed": "5",
}


@pytest.fixture
def world():
    owner, other, free = make_user(), make_user(), make_user(pro=False)
    series = make_series(n=1500, seed=3)
    backtest = finished_backtest(owner, series)
    run = montecarlo_create(user=owner, backtest=backtest, method="shuffle", seed=3)
    montecarlo_execute(run_id=run.pk)
    run.refresh_from_db()
    return {
        "owner": owner,
        "other": other,
        "free": free,
        "series": series,
        "backtest": backtest,
        "run": run,
    }


def client_for(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


PAGES = [
    ("backtester:montecarlo_list", None, "get", 200),
    ("backtester:montecarlo_create", "backtest", "get", 200),
    ("backtester:montecarlo_create", "backtest", "post", 302),
    ("backtester:montecarlo_detail", "run", "get", 200),
]
API = [
    ("api_backtest_montecarlo", "backtest", "get", 200),
    ("api_backtest_montecarlo", "backtest", "post", 202),
    ("api_montecarlo_detail", "run", "get", 200),
]


def _url(world, name, obj):
    return reverse(name) if obj is None else reverse(name, kwargs={"pk": world[obj].pk})


@pytest.mark.parametrize(("name", "obj", "method", "expected"), PAGES)
def test_pages_by_persona(world, name, obj, method, expected):
    url = _url(world, name, obj)

    def call(user):
        client = client_for(user)
        return client.post(url, FORM) if method == "post" else client.get(url)

    assert call(world["owner"]).status_code == expected
    anonymous = call(None)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("account_login"))
    assert call(world["free"]).status_code == 403
    if obj is not None:
        assert call(world["other"]).status_code == 404
    # Only the owner's post made a run (besides the fixture's).
    assert MonteCarloRun.objects.count() == (2 if method == "post" else 1)


@pytest.mark.parametrize(("name", "obj", "method", "expected"), API)
def test_api_by_persona(world, name, obj, method, expected):
    url = _url(world, name, obj)
    body = {"method": "shuffle", "iterations": 1000}

    def call(user):
        client = client_for(user)
        if method == "post":
            return client.post(url, body, content_type="application/json")
        return client.get(url)

    assert call(world["owner"]).status_code == expected
    assert call(None).status_code == 401
    free = call(world["free"])
    assert free.status_code == 403
    assert free.json()["error"]["code"] == "plan_required"
    if obj is not None:
        assert call(world["other"]).status_code == 404


def test_another_user_never_sees_my_runs_in_lists(world):
    url = reverse("backtester:montecarlo_detail", kwargs={"pk": world["run"].pk})
    assert url in client_for(world["owner"]).get(reverse("backtester:montecarlo_list")).text
    assert url not in client_for(world["other"]).get(reverse("backtester:montecarlo_list")).text


# --- the form -------------------------------------------------------------------------------


def test_the_form_starts_a_run_and_shows_it(world):
    client = client_for(world["owner"])
    url = reverse("backtester:montecarlo_create", kwargs={"pk": world["backtest"].pk})
    response = client.post(url, {**FORM, "method": "block", "block_length": "24"})
    run = MonteCarloRun.objects.exclude(pk=world["run"].pk).get()
    assert response["Location"] == reverse("backtester:montecarlo_detail", kwargs={"pk": run.pk})
    assert (run.method, run.iterations, run.block_length, run.seed) == ("block", 2000, 24, 5)
    assert run.ruin_threshold == pytest.approx(0.4)
    page = client.get(response["Location"]).text
    assert 'id="run-live"' in page
    assert f'data-socket="/ws/runs/montecarlo/{run.pk}/"' in page
    assert reverse("run_state", kwargs={"kind": "montecarlo", "pk": run.pk}) in page


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"iterations": "999"}, "iterations", "greater than or equal to 1000"),
        ({"iterations": "100001"}, "iterations", "less than or equal to 100000"),
        ({"ruin_threshold": "0"}, "ruin_threshold", "greater than or equal to 0.01"),
        ({"method": "block", "block_length": "1501"}, "block_length", "1 to 1,500 bars"),
        ({"method": "magic"}, "method", "Select a valid choice"),
    ],
)
def test_bad_form_input_gets_a_message_on_its_field_and_starts_nothing(world, data, field, words):
    url = reverse("backtester:montecarlo_create", kwargs={"pk": world["backtest"].pk})
    response = client_for(world["owner"]).post(url, {**FORM, **data})
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors, errors
    assert words in " ".join(errors[field])
    assert MonteCarloRun.objects.count() == 1


def test_a_backtest_still_running_offers_no_run(world, django_capture_on_commit_callbacks):
    start, end = span(world["series"])
    with django_capture_on_commit_callbacks(execute=False):
        queued = backtest_create(
            user=world["owner"],
            strategy=make_strategy(world["owner"], "ema_cross"),
            series=[world["series"]],
            start=start,
            end=end,
            settings={},
        )
    client = client_for(world["owner"])
    page = client.get(reverse("backtester:montecarlo_create", kwargs={"pk": queued.pk})).text
    assert 'id="not-completed"' in page
    detail = client.get(reverse("backtester:backtest_detail", kwargs={"pk": queued.pk})).text
    assert 'id="montecarlo-link"' not in detail
    response = client.post(reverse("backtester:montecarlo_create", kwargs={"pk": queued.pk}), FORM)
    assert response.status_code == 400
    assert "queued" in " ".join(response.context["form"].errors["__all__"])


# --- the run page ---------------------------------------------------------------------------


def _json_script(html: str, dom_id: str):
    match = re.search(rf'<script id="{dom_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, dom_id
    return json.loads(match.group(1))


def test_the_run_page_draws_the_fan_the_histograms_and_the_intervals(world):
    run = world["run"]
    html = (
        client_for(world["owner"])
        .get(reverse("backtester:montecarlo_detail", kwargs={"pk": run.pk}))
        .text
    )
    fan = _json_script(html, "mc-fan-data")
    names = [trace["name"] for trace in fan["data"]]
    assert names == [
        "5th percentile",
        "5th-95th percentile",
        "25th percentile",
        "25th-75th percentile",
        "Median",
        "Backtest (original order)",
    ]
    assert fan["data"][4]["y"] == run.results["fan"]["bands"]["p50"]
    final = _json_script(html, "mc-final-data")
    assert sum(final["data"][0]["y"]) == run.iterations
    drawdown = _json_script(html, "mc-drawdown-data")
    assert drawdown["layout"]["shapes"][0]["x0"] == pytest.approx(
        run.results["summaries"]["max_drawdown"]["original"]
    )
    assert 'data-stat="final_return"' in html
    assert 'data-stat="max_drawdown"' in html
    assert 'data-stat="cagr"' in html
    probability = run.results["ruin"]["probability"]
    assert f'id="mc-ruin">{probability * 100:.2f} %<' in html
    assert "plotly.min.js" in html
    assert str(run.seed) in html


def test_a_failed_run_shows_its_reason(world):
    MonteCarloRun.objects.filter(pk=world["run"].pk).update(
        status=MonteCarloRun.Status.FAILED, error="The trades were deleted."
    )
    html = (
        client_for(world["owner"])
        .get(reverse("backtester:montecarlo_detail", kwargs={"pk": world["run"].pk}))
        .text
    )
    assert 'id="run-error"' in html
    assert "The trades were deleted." in html


def test_the_status_json_says_when_the_run_has_finished(world):
    client = client_for(world["owner"])
    url = reverse("run_state", kwargs={"kind": "montecarlo", "pk": world["run"].pk})
    assert client.get(url).json() == {
        "type": "run.status",
        "id": world["run"].pk,
        "kind": "montecarlo",
        "status": "completed",
        "status_display": "Completed",
        "progress": 1.0,
        "stage": world["run"].stage or "completed",
        "error": "",
        "finished": True,
    }


def test_the_backtest_page_and_the_research_hub_link_here(world):
    client = client_for(world["owner"])
    backtest = world["backtest"]
    detail = client.get(reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})).text
    assert reverse("backtester:montecarlo_create", kwargs={"pk": backtest.pk}) in detail
    assert reverse("backtester:stress_create", kwargs={"pk": backtest.pk}) in detail
    try:
        hub_url = reverse("backtester:research")
    except NoReverseMatch:  # pragma: no cover - the hub belongs to the optimization pages
        pytest.fail("the research hub is not routed")
    hub = client.get(hub_url).text
    assert 'id="hub-montecarlo"' in hub
    assert reverse("backtester:montecarlo_detail", kwargs={"pk": world["run"].pk}) in hub
    assert reverse("backtester:montecarlo_list") in hub
    assert reverse("backtester:stress_list") in hub


# --- the API --------------------------------------------------------------------------------


def test_the_api_queues_a_run_and_returns_its_results_once_completed(world):
    client = client_for(world["owner"])
    backtest = world["backtest"]
    url = reverse("api_backtest_montecarlo", kwargs={"pk": backtest.pk})
    response = client.post(
        url,
        {"method": "block", "iterations": 3000, "ruin_threshold": 0.25, "seed": 11},
        content_type="application/json",
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["results"] is None
    assert body["block_length"] == 11  # the cube root of 1,500 bars
    assert body["links"]["self"].endswith(
        reverse("api_montecarlo_detail", kwargs={"pk": body["id"]})
    )
    montecarlo_execute(run_id=body["id"])
    done = client.get(body["links"]["self"]).json()
    assert done["status"] == "completed"
    assert done["results"]["iterations"] == 3000
    assert done["results"]["ruin"]["threshold"] == 0.25
    assert set(done["results"]["fan"]["bands"]) == {"p5", "p25", "p50", "p75", "p95"}
    listed = client.get(url).json()
    assert listed["count"] == 2
    assert listed["results"][0]["id"] == body["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"method": "magic"}, "method"),
        ({"method": "shuffle", "iterations": 10}, "iterations"),
        ({"method": "shuffle", "ruin_threshold": 2}, "ruin_threshold"),
        ({"method": "block", "block_length": 100_000}, "block_length"),
        ({}, "method"),
    ],
)
def test_the_api_refuses_bad_input_with_the_field(world, body, field):
    url = reverse("api_backtest_montecarlo", kwargs={"pk": world["backtest"].pk})
    response = client_for(world["owner"]).post(url, body, content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert MonteCarloRun.objects.count() == 1


def test_the_api_says_conflict_for_a_backtest_without_a_result(world):
    Backtest.objects.filter(pk=world["backtest"].pk).update(status=Backtest.Status.FAILED)
    url = reverse("api_backtest_montecarlo", kwargs={"pk": world["backtest"].pk})
    response = client_for(world["owner"]).post(
        url, {"method": "shuffle"}, content_type="application/json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_the_headline_drawdown_is_the_original_order_rows_number(world):
    """Issue 10 item 25: the headline's "the backtest's" drawdown was the bar-by-bar one while
    the "original order" row (and every path) measures closed trades; they must agree."""
    run = world["run"]
    html = (
        client_for(world["owner"])
        .get(reverse("backtester:montecarlo_detail", kwargs={"pk": run.pk}))
        .text
    )
    headline = re.search(r'id="mc-original-drawdown">([^<]+)<', html).group(1)
    row = re.search(r'data-original="max_drawdown">([^<]+)<', html).group(1)
    assert headline == row
    assert headline.startswith("-")
    assert headline.endswith("%")
