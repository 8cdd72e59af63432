"""Stress-test pages and API: each persona on every URL, the form (windows with and without
data, shocks, refusals) and the table of outcomes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse

from backtester.models import StressRun
from backtester.services.stress import stress_create, stress_execute
from tests.backtester.backtest_factories import make_series, make_user
from tests.research.test_montecarlo_service import finished_backtest

pytestmark = pytest.mark.django_db

MARCH_2020 = int(datetime(2020, 3, 1, tzinfo=UTC).timestamp() * 1000)
FORM = {
    "windows": ["covid", "luna"],
    "gap_enabled": "on",
    "gap_change": "-25",
    "gap_at": "2020-03-12T00:00",
    "vol_factor": "3",
    "vol_bars": "24",
    "vol_at": "2020-03-10T00:00",
}


@pytest.fixture
def world():
    owner, other, free = make_user(), make_user(), make_user(pro=False)
    series = make_series(n=24 * 30, seed=6, start_ms=MARCH_2020)
    backtest = finished_backtest(owner, series)
    run = stress_create(
        user=owner,
        backtest=backtest,
        windows=["covid", "ftx"],
        shocks=[{"kind": "gap", "at": MARCH_2020 + 200 * 3_600_000, "change": -0.2}],
    )
    stress_execute(run_id=run.pk)
    run.refresh_from_db()
    return {"owner": owner, "other": other, "free": free, "backtest": backtest, "run": run}


def client_for(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


PAGES = [
    ("backtester:stress_list", None, "get", 200),
    ("backtester:stress_create", "backtest", "get", 200),
    ("backtester:stress_create", "backtest", "post", 302),
    ("backtester:stress_detail", "run", "get", 200),
]
API = [
    ("api_backtest_stress", "backtest", "get", 200),
    ("api_backtest_stress", "backtest", "post", 202),
    ("api_stress_detail", "run", "get", 200),
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
    assert StressRun.objects.count() == (2 if method == "post" else 1)


@pytest.mark.parametrize(("name", "obj", "method", "expected"), API)
def test_api_by_persona(world, name, obj, method, expected):
    url = _url(world, name, obj)

    def call(user):
        client = client_for(user)
        if method == "post":
            return client.post(url, {"windows": ["svb"]}, content_type="application/json")
        return client.get(url)

    assert call(world["owner"]).status_code == expected
    assert call(None).status_code == 401
    assert call(world["free"]).status_code == 403
    if obj is not None:
        assert call(world["other"]).status_code == 404


def test_the_form_says_which_windows_have_data(world):
    html = (
        client_for(world["owner"])
        .get(reverse("backtester:stress_create", kwargs={"pk": world["backtest"].pk}))
        .text
    )
    covid = html.split('id="window-covid"')[1].split("</label>")[0]
    luna = html.split('id="window-luna"')[1].split("</label>")[0]
    assert "data available" in covid
    assert "no data" in luna
    assert "2020-03-09 → 2020-03-23" in covid


def test_the_form_starts_a_run_with_windows_and_shocks(world):
    client = client_for(world["owner"])
    url = reverse("backtester:stress_create", kwargs={"pk": world["backtest"].pk})
    response = client.post(
        url,
        {
            **FORM,
            "vol_enabled": "on",
            "custom_label_1": "Black Thursday",
            "custom_start_1": "2020-03-12",
            "custom_end_1": "2020-03-13",
        },
    )
    run = StressRun.objects.exclude(pk=world["run"].pk).get()
    assert response["Location"] == reverse("backtester:stress_detail", kwargs={"pk": run.pk})
    assert [w["key"] or w["label"] for w in run.windows] == ["covid", "luna", "Black Thursday"]
    assert run.windows[2]["end_ms"] - run.windows[2]["start_ms"] == 2 * 86_400_000
    assert [s["kind"] for s in run.shocks] == ["gap", "vol_spike"]
    assert run.shocks[0]["change"] == pytest.approx(-0.25)
    assert run.shocks[0]["at_ms"] == int(datetime(2020, 3, 12, tzinfo=UTC).timestamp() * 1000)
    assert run.shocks[1] == {
        "kind": "vol_spike",
        "at_ms": int(datetime(2020, 3, 10, tzinfo=UTC).timestamp() * 1000),
        "bars": 24,
        "factor": 3.0,
    }


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"windows": [], "gap_enabled": ""}, "windows", "at least one window or shock"),
        ({"gap_change": ""}, "gap_change", "Needed for the gap"),
        ({"gap_change": "-99"}, "gap_change", "greater than or equal to -95"),
        ({"gap_at": "2019-01-01T00:00"}, "gap_at", "after the backtest's first bar"),
        ({"vol_enabled": "on", "vol_bars": ""}, "vol_bars", "Needed for the spike"),
        ({"vol_enabled": "on", "vol_factor": "1"}, "vol_factor", "not 1"),
        ({"custom_start_1": "2020-03-12"}, "custom_end_1", "both dates"),
        (
            {"custom_start_1": "2020-03-12", "custom_end_1": "2020-03-01"},
            "custom_end_1",
            "on or after the start",
        ),
    ],
)
def test_bad_form_input_gets_a_message_on_its_field_and_starts_nothing(world, data, field, words):
    url = reverse("backtester:stress_create", kwargs={"pk": world["backtest"].pk})
    response = client_for(world["owner"]).post(url, {**FORM, **data})
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors, errors
    assert words in " ".join(errors[field])
    assert StressRun.objects.count() == 1


def test_the_run_page_tables_windows_and_shocks_against_the_unstressed_run(world):
    run = world["run"]
    html = (
        client_for(world["owner"])
        .get(reverse("backtester:stress_detail", kwargs={"pk": run.pk}))
        .text
    )
    windows = html.split('id="stress-windows"')[1].split("</table>")[0]
    assert 'data-row="covid" data-status="ok"' in windows
    assert 'data-row="ftx" data-status="no_data"' in windows
    assert "covers 2020-03-01 to 2020-03-30" in windows
    assert "COVID crash (March 2020)" in windows
    shocks = html.split('id="stress-shocks"')[1].split("</table>")[0]
    assert 'data-row="baseline"' in shocks
    assert 'data-row="gap"' in shocks
    assert "Gap -20.0 % at 2020-03-09 08:00 UTC" in shocks
    base, gap = [r for r in run.results["rows"] if r["kind"] != "window"]
    delta = gap["delta"]["total_return"]
    assert f"{delta * 100:+.2f} pp" in shocks
    assert f"{base['outcome']['total_return'] * 100:+.2f} %" in shocks


def test_a_failed_or_running_run_page_says_so(world):
    run = world["run"]
    url = reverse("backtester:stress_detail", kwargs={"pk": run.pk})
    StressRun.objects.filter(pk=run.pk).update(status=StressRun.Status.RUNNING)
    html = client_for(world["owner"]).get(url).text
    assert 'id="run-live"' in html
    assert f'data-socket="/ws/runs/stress/{run.pk}/"' in html
    assert reverse("run_state", kwargs={"kind": "stress", "pk": run.pk}) in html
    StressRun.objects.filter(pk=run.pk).update(status=StressRun.Status.FAILED, error="Gone.")
    html = client_for(world["owner"]).get(url).text
    assert 'id="run-error"' in html
    assert "Gone." in html


def test_the_api_queues_a_run_and_returns_the_rows_once_completed(world):
    client = client_for(world["owner"])
    url = reverse("api_backtest_stress", kwargs={"pk": world["backtest"].pk})
    response = client.post(
        url,
        {
            "windows": ["covid"],
            "custom_windows": [{"label": "Mid March", "start": "2020-03-15", "end": "2020-03-16"}],
            "shocks": [
                {"kind": "gap", "at": "2020-03-20T00:00:00Z", "change": -0.15},
                {"kind": "vol_spike", "at": "2020-03-05", "bars": 12, "factor": 2.5},
            ],
        },
        content_type="application/json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["results"] is None
    assert [w["label"] for w in body["windows"]] == ["COVID crash (March 2020)", "Mid March"]
    stress_execute(run_id=body["id"])
    done = client.get(body["links"]["self"]).json()
    assert done["status"] == "completed"
    kinds = [(r["kind"], r["status"]) for r in done["results"]["rows"]]
    assert kinds == [
        ("window", "ok"),
        ("window", "ok"),
        ("baseline", "ok"),
        ("gap", "ok"),
        ("vol_spike", "ok"),
    ]
    assert client.get(url).json()["count"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"windows": ["dotcom"]}, "windows"),
        ({}, "windows"),
        ({"shocks": [{"kind": "gap", "at": "yesterday", "change": -0.1}]}, "shocks"),
        ({"shocks": [{"kind": "gap", "at": "2020-03-05", "change": 0.0}]}, "gap_change"),
        ({"custom_windows": [{"start": "2020-03-05"}]}, "custom_windows"),
    ],
)
def test_the_api_refuses_bad_input_with_the_field(world, body, field):
    url = reverse("api_backtest_stress", kwargs={"pk": world["backtest"].pk})
    response = client_for(world["owner"]).post(url, body, content_type="application/json")
    assert response.status_code == 400, response.json()
    fields = response.json()["error"]["fields"]
    # Nested errors may be keyed by their path ("shocks.0.at").
    assert any(key == field or key.startswith(f"{field}.") for key in fields), fields
    assert StressRun.objects.count() == 1
