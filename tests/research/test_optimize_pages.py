"""Research pages: the hub, the optimization and walk-forward forms (the backtest form's
settings, ranges per parameter), the results page (sortable table, heatmap with fixed values,
scatter, a row to a backtest), and every research URL and websocket tried by each persona:
the owner, another Pro user (404), an anonymous visitor (login / 4401) and a Free user (403 /
4403)."""

from __future__ import annotations

import json
import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from django.urls import reverse

from backtester.models import Backtest, OptimizationJob, OptimizationRow, WalkForwardJob
from backtester.services.optimization import (
    optimization_create,
    optimization_finalize,
    optimization_run_chunk,
)
from backtester.services.walkforward import walkforward_create
from config.asgi import application
from tests.backtester.backtest_factories import make_series, make_strategy, make_user
from tests.conftest import arun
from tests.forms_support import form_values
from tests.research.optimize_support import chunks_of, request_args

pytestmark = pytest.mark.django_db


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _finish(job: OptimizationJob) -> OptimizationJob:
    for index, first, combos in chunks_of(job):
        optimization_run_chunk(job_id=job.pk, chunk=index, first=first, combinations=combos)
    optimization_finalize(job_id=job.pk, results=[])
    job.refresh_from_db()
    return job


@pytest.fixture
def world(django_capture_on_commit_callbacks):
    owner = make_user()
    series = make_series(n=1200, seed=8)
    strategy = make_strategy(owner)
    with django_capture_on_commit_callbacks(execute=False):
        job = optimization_create(
            **request_args(
                owner,
                strategy,
                series,
                ranges={"fast": {"low": 5, "high": 25, "step": 5}, "slow": [20, 30, 40, 60]},
            )
        )
        walk = walkforward_create(
            **request_args(owner, strategy, series),
            train=400,
            test=200,
            unit="bars",
        )
    job = _finish(job)
    return {
        "owner": owner,
        "other": make_user(),
        "free": make_user(pro=False),
        "series": series,
        "strategy": strategy,
        "job": job,
        "walk": walk,
        "row": OptimizationRow.objects.filter(job=job).order_by("index").first(),
    }


def _form(world, **extra) -> dict[str, object]:
    key = f"s_{world['strategy'].pk}"
    data: dict[str, object] = {
        "strategy": f"s:{world['strategy'].pk}",
        "series": str(world["series"].pk),
        "initial_cash": "10000",
        "taker_fee": "0.1",
        "maker_fee": "0.05",
        "slippage_bps": "2",
        "fill": "next_open",
        "allow_short": "on",
        "sizing": "fraction",
        "size_value": "100",
        "stop_loss": "0",
        "take_profit": "0",
        "trailing_stop": "0",
        "max_position_fraction": "100",
        "max_drawdown_halt": "0",
        "daily_loss_limit": "0",
        "method": "grid",
        "objective": "calmar",
        "constraint": "fast < slow",
        "min_trades": "2",
        f"r__{key}__fast__low": "5",
        f"r__{key}__fast__high": "15",
        f"r__{key}__fast__step": "5",
        f"r__{key}__slow__low": "20",
        f"r__{key}__slow__high": "40",
        f"r__{key}__slow__step": "10",
    }
    data.update(extra)
    return data


# --- hub and forms --------------------------------------------------------------------------


def test_the_hub_lists_my_jobs_and_starts_each_tool(world):
    page = _client(world["owner"]).get(reverse("backtester:research"))
    assert page.status_code == 200
    text = page.text
    assert reverse("backtester:optimization_detail", kwargs={"pk": world["job"].pk}) in text
    assert reverse("backtester:walkforward_detail", kwargs={"pk": world["walk"].pk}) in text
    assert reverse("backtester:optimization_create") in text
    assert reverse("backtester:walkforward_create") in text
    assert "badge-completed" in text
    assert "badge-queued" in text
    # The menu now has a Research entry.
    assert f'href="{reverse("backtester:research")}"' in text
    other = _client(world["other"]).get(reverse("backtester:research")).text
    assert reverse("backtester:optimization_detail", kwargs={"pk": world["job"].pk}) not in other
    assert "No optimizations yet" in other


def test_the_form_offers_each_parameters_declared_range(world):
    page = _client(world["owner"]).get(
        reverse("backtester:optimization_create") + f"?strategy={world['strategy'].pk}"
    )
    assert page.status_code == 200
    key = f"s_{world['strategy'].pk}"
    assert re.search(rf'name="r__{key}__fast__low"[^>]*value="5"', page.text)
    assert re.search(rf'name="r__{key}__slow__high"[^>]*value="200"', page.text)
    assert re.search(rf'name="r__{key}__slow__step"[^>]*value="10"', page.text)
    # Presets get their ranges too, and the backtest form's settings are there.
    assert 'name="r__preset_bollinger_reversion__k__step"' in page.text
    assert 'name="taker_fee"' in page.text
    assert 'name="max_drawdown_halt"' in page.text


def test_posting_the_form_starts_an_optimization(world, django_capture_on_commit_callbacks):
    client = _client(world["owner"])
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = client.post(reverse("backtester:optimization_create"), _form(world))
    assert response.status_code == 302, response.text[:3000]
    job = OptimizationJob.objects.exclude(pk=world["job"].pk).get(owner=world["owner"])
    assert response["Location"] == reverse("backtester:optimization_detail", kwargs={"pk": job.pk})
    assert len(sent) == 1
    assert job.ranges == {"fast": [5, 10, 15], "slow": [20, 30, 40]}
    assert job.combinations == 9
    assert job.objective == "calmar"
    assert job.min_trades == 2
    assert job.settings["taker_fee"] == pytest.approx(0.001)  # percent in the form
    assert job.settings["size_value"] == 1.0


def test_random_search_from_a_preset(world, django_capture_on_commit_callbacks):
    data = _form(world, strategy="preset:ema_cross", method="random", samples="15", seed="99")
    with django_capture_on_commit_callbacks(execute=False):
        response = _client(world["owner"]).post(reverse("backtester:optimization_create"), data)
    assert response.status_code == 302, response.text[:3000]
    job = OptimizationJob.objects.get(owner=world["owner"], method="random")
    assert job.samples == 15
    assert job.seed == 99
    assert job.combinations == 15
    assert job.spec["entry_long"] == "cross_above(ema(close, fast), ema(close, slow))"
    assert job.strategy.preset == "ema_cross"


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ({"r__{key}__fast__high": "90"}, "r__{key}__fast__low", "between 5 and 50"),
        ({"constraint": "fast <"}, "constraint", "not a valid expression"),
        ({"constraint": "fast > 99"}, "constraint", "No combination"),
        ({"method": "random", "samples": ""}, "samples", "how many"),
        ({"start": "2020-01-01"}, "start", "before the data"),
        ({"series": "999999"}, "series", "valid choice"),
    ],
)
def test_a_bad_form_shows_the_error_on_its_field(world, extra, field, fragment):
    key = f"s_{world['strategy'].pk}"
    data = _form(world, **{k.format(key=key): v for k, v in extra.items()})
    response = _client(world["owner"]).post(reverse("backtester:optimization_create"), data)
    assert response.status_code == 400
    form = response.context["form"]
    errors = form.errors.get(field.format(key=key)) or []
    assert any(fragment in e for e in errors), form.errors
    assert OptimizationJob.objects.filter(owner=world["owner"]).count() == 1


def test_the_plan_limit_shows_on_the_form(world):
    from accounts.models import Plan

    Plan.objects.filter(code=Plan.PRO).update(max_optimization_combinations=5)
    response = _client(world["owner"]).post(reverse("backtester:optimization_create"), _form(world))
    assert response.status_code == 400
    assert "at most 5" in response.text


def test_the_walkforward_form_starts_a_walkforward(world, django_capture_on_commit_callbacks):
    data = _form(world, train="30", test="10", step="", mode="anchored", unit="days")
    with django_capture_on_commit_callbacks(execute=False):
        response = _client(world["owner"]).post(reverse("backtester:walkforward_create"), data)
    assert response.status_code == 302, response.text[:3000]
    job = WalkForwardJob.objects.exclude(pk=world["walk"].pk).get(owner=world["owner"])
    assert (job.train, job.test, job.step, job.mode, job.unit) == (30, 10, 10, "anchored", "days")
    assert job.window_count == 2  # 50 days of hourly bars: train 30 + two tests of 10
    bad = _form(world, train="30", test="10", step="5", mode="rolling", unit="days")
    response = _client(world["owner"]).post(reverse("backtester:walkforward_create"), bad)
    assert response.status_code == 400
    assert "at least the test length" in " ".join(response.context["form"].errors["step"])


# --- results --------------------------------------------------------------------------------


def test_the_results_page_shows_best_heatmap_scatter_and_table(world):
    job = world["job"]
    page = _client(world["owner"]).get(
        reverse("backtester:optimization_detail", kwargs={"pk": job.pk})
    )
    assert page.status_code == 200
    text = page.text
    assert 'id="backtest-best"' in text
    assert 'id="results-table"' in text
    heat = json.loads(re.search(r'id="chart-heatmap-data"[^>]*>(.*?)</script>', text, re.S)[1])
    trace = heat["data"][0]
    assert trace["type"] == "heatmap"
    assert trace["x"] == ["5", "10", "15", "20", "25"]
    assert trace["y"] == ["20", "30", "40", "60"]
    rows = {
        (r.params["fast"], r.params["slow"]): r for r in OptimizationRow.objects.filter(job=job)
    }
    # The cell (fast 10, slow 30) is that combination's objective; (25, 20) broke the
    # constraint and is empty.
    assert trace["z"][1][1] == pytest.approx(rows[(10, 30)].objective, rel=1e-5)
    assert trace["z"][0][4] is None
    scatter = json.loads(re.search(r'id="chart-scatter-data"[^>]*>(.*?)</script>', text, re.S)[1])
    points = sum(len(t["x"]) for t in scatter["data"])
    assert points == job.combinations


def test_the_heatmap_holds_other_parameters_at_the_chosen_value(
    world, django_capture_on_commit_callbacks
):
    owner = world["owner"]
    poly = make_strategy(owner, preset="polyband_reversion")
    with django_capture_on_commit_callbacks(execute=False):
        job = optimization_create(
            **request_args(
                owner,
                poly,
                world["series"],
                ranges={
                    "window": [30, 60],
                    "degree": [1, 2],
                    "k": [1.5, 2.0],
                    "exit_at_upper": [False, True],
                },
                constraint="",
                min_trades=0,
            )
        )
    job = _finish(job)
    url = reverse("backtester:optimization_detail", kwargs={"pk": job.pk})
    page = _client(owner).get(
        url + "?hx=k&hy=window&hf_degree=2&hf_exit_at_upper=true&hm=total_return"
    )
    text = page.text
    heat = json.loads(re.search(r'id="chart-heatmap-data"[^>]*>(.*?)</script>', text, re.S)[1])
    trace = heat["data"][0]
    assert trace["x"] == ["1.5", "2.0"]
    assert trace["y"] == ["30", "60"]
    want = OptimizationRow.objects.get(
        job=job, params={"window": 60, "degree": 2, "k": 1.5, "exit_at_upper": True}
    )
    assert trace["z"][1][0] == pytest.approx(want.total_return, rel=1e-5, abs=1e-9)
    assert re.search(r'<option value="true" selected>true</option>', text)


def test_the_table_sorts_by_any_metric_or_parameter(world):
    job = world["job"]
    url = reverse("backtester:optimization_detail", kwargs={"pk": job.pk})
    client = _client(world["owner"])

    def order(query: str) -> list[int]:
        text = client.get(url + query).text
        return [int(i) for i in re.findall(r'<tr data-index="(\d+)"', text)]

    rows = list(OptimizationRow.objects.filter(job=job))
    by_return = sorted(rows, key=lambda r: (-r.total_return, r.index))
    assert order("?sort=total_return&dir=desc") == [r.index for r in by_return]
    by_dd = sorted(rows, key=lambda r: (r.max_drawdown, r.index))
    assert order("?sort=max_drawdown&dir=asc") == [r.index for r in by_dd]
    by_slow = sorted(rows, key=lambda r: (-r.params["slow"], r.index))
    assert order("?sort=param:slow&dir=desc") == [r.index for r in by_slow]
    # Unknown columns fall back to the objective, best first.
    by_objective = sorted(rows, key=lambda r: (r.objective is None, -(r.objective or 0), r.index))
    assert order("?sort=drop table") == [r.index for r in by_objective]


def test_one_click_turns_a_row_into_a_backtest(world, django_capture_on_commit_callbacks):
    row = world["row"]
    url = reverse("backtester:optimization_backtest", kwargs={"pk": world["job"].pk, "row": row.pk})
    with django_capture_on_commit_callbacks(execute=False):
        response = _client(world["owner"]).post(url)
    backtest = Backtest.objects.get(owner=world["owner"])
    assert response["Location"] == reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})
    assert backtest.param_values == row.params
    # A row of another job is not reachable through this one.
    other_job = OptimizationJob.objects.create(
        owner=world["owner"], timeframe="1h", start_ts=0, end_ts=1
    )
    stray = reverse("backtester:optimization_backtest", kwargs={"pk": other_job.pk, "row": row.pk})
    assert _client(world["owner"]).post(stray).status_code == 404


def test_the_walkforward_page_shows_windows_stability_and_efficiency(world):
    from backtester.services.walkforward import walkforward_execute

    walk = world["walk"]
    walkforward_execute(job_id=walk.pk)
    walk.refresh_from_db()
    assert walk.status == WalkForwardJob.Status.COMPLETED, walk.error
    page = _client(world["owner"]).get(
        reverse("backtester:walkforward_detail", kwargs={"pk": walk.pk})
    )
    assert page.status_code == 200
    text = page.text
    assert len(re.findall(r'<tr data-window="\d+"', text)) == walk.window_count
    assert 'data-param="fast"' in text
    assert "annualized out-of-sample return ÷ annualized in-sample return" in text
    for fig in ("wf-equity-data", "wf-compare-data", "wf-params-data"):
        assert f'id="{fig}"' in text


# --- permissions ----------------------------------------------------------------------------

# (url name, object: None | "job" | "walk" | "row", method, owner's expected status)
PAGES = [
    ("backtester:research", None, "get", 200),
    ("backtester:optimization_create", None, "get", 200),
    ("backtester:walkforward_create", None, "get", 200),
    ("backtester:optimization_detail", "job", "get", 200),
    ("backtester:optimization_cancel", "job", "post", 302),
    ("backtester:optimization_backtest", "row", "post", 302),
    ("backtester:walkforward_detail", "walk", "get", 200),
    ("backtester:walkforward_cancel", "walk", "post", 302),
]


def _url(world, name, obj):
    if obj is None:
        return reverse(name)
    if obj == "row":
        return reverse(name, kwargs={"pk": world["job"].pk, "row": world["row"].pk})
    return reverse(name, kwargs={"pk": world[obj].pk})


def _call(client, method, url):
    return client.get(url) if method == "get" else client.post(url)


@pytest.mark.parametrize(("name", "obj", "method", "expected"), PAGES)
def test_every_research_url_by_persona(
    world, django_capture_on_commit_callbacks, name, obj, method, expected
):
    url = _url(world, name, obj)
    anonymous = _call(_client(), method, url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("account_login"))
    assert _call(_client(world["free"]), method, url).status_code == 403
    if obj is not None:
        assert _call(_client(world["other"]), method, url).status_code == 404
    with django_capture_on_commit_callbacks(execute=False):
        assert _call(_client(world["owner"]), method, url).status_code == expected
    # Nobody but the owner changed anything.
    if name == "backtester:walkforward_cancel":
        world["walk"].refresh_from_db()
        assert world["walk"].status == WalkForwardJob.Status.CANCELLED
    if name == "backtester:optimization_backtest":
        assert Backtest.objects.filter(owner=world["owner"]).count() == 1
        assert not Backtest.objects.exclude(owner=world["owner"]).exists()


def test_a_status_url_answers_json_for_the_owner(world):
    state = (
        _client(world["owner"])
        .get(reverse("run_state", kwargs={"kind": "optimization", "pk": world["job"].pk}))
        .json()
    )
    assert state["type"] == "run.status"
    assert state["status"] == "completed"
    assert state["done"] == state["total"] == world["job"].combinations
    assert state["best"]["params"] == world["job"].best_params
    walk = (
        _client(world["owner"])
        .get(reverse("run_state", kwargs={"kind": "walkforward", "pk": world["walk"].pk}))
        .json()
    )
    assert walk["status"] == "queued"
    assert walk["total"] == world["walk"].window_count


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["optimization", "walkforward"])
def test_websockets_by_persona(kind):
    owner, other, free = make_user(), make_user(), make_user(pro=False)
    series = make_series(n=600, seed=2)
    strategy = make_strategy(owner)
    if kind == "optimization":
        job = OptimizationJob.objects.create(
            owner=owner, strategy=strategy, series=series, timeframe="1h", start_ts=0, end_ts=1,
            combinations=5,
        )  # fmt: skip
    else:
        job = WalkForwardJob.objects.create(
            owner=owner, strategy=strategy, series=series, timeframe="1h", start_ts=0, end_ts=1,
            train=10, test=5, step=5, window_count=3,
        )  # fmt: skip
    path = f"/ws/runs/{kind}/{job.pk}/"

    async def attempt(user):
        communicator = WebsocketCommunicator(
            application, path, headers=[(b"origin", b"http://localhost")]
        )
        if user is not None:
            communicator.scope["user"] = user
        connected, code = await communicator.connect(timeout=5)
        first = await communicator.receive_json_from(timeout=5) if connected else None
        await communicator.disconnect()
        return connected, code, first

    async def scenario():
        results = {}
        for label, user in (("owner", owner), ("other", other), ("free", free), ("anon", None)):
            results[label] = await attempt(user)
        await database_sync_to_async(connections.close_all)()
        return results

    results = arun(scenario())
    connected, _, first = results["owner"]
    assert connected
    assert first["status"] == "queued"
    assert (first["type"], first["kind"]) == ("run.status", kind)
    assert results["other"][:2] == (False, 4404)
    assert results["free"][:2] == (False, 4403)
    assert results["anon"][:2] == (False, 4401)


def test_operators_can_read_research_jobs_in_the_admin(world):
    from accounts.models import User

    operator = User.objects.create_superuser(email="ops-research@example.com", password="x-1-y")
    client = _client(operator)
    chunk = world["job"].chunks.first()
    objects = [world["job"], chunk, world["row"], world["walk"]]
    for obj in objects:
        info = (obj._meta.app_label, obj._meta.model_name)
        changelist = client.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert changelist.status_code == 200, info
        change = client.get(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
        assert change.status_code == 200, info
    assert client.get(reverse("admin:backtester_optimizationjob_add")).status_code == 403


def test_an_infinite_metric_is_stored_sorted_first_and_shown_as_infinity(world):
    job = world["job"]
    row = OptimizationRow.objects.filter(job=job).order_by("index").last()
    OptimizationRow.objects.filter(pk=row.pk).update(profit_factor=float("inf"))
    row.refresh_from_db()
    assert row.profit_factor == float("inf")
    url = reverse("backtester:optimization_detail", kwargs={"pk": job.pk})
    text = _client(world["owner"]).get(url + "?sort=profit_factor&dir=desc&hm=profit_factor").text
    first = re.search(r'<tr data-index="(\d+)".*?</tr>', text, re.S)
    assert int(first[1]) == row.index
    assert "∞" in first[0]
    heat = json.loads(re.search(r'id="chart-heatmap-data"[^>]*>(.*?)</script>', text, re.S)[1])
    assert "∞" in json.dumps(heat["data"][0]["text"], ensure_ascii=False)


@pytest.mark.parametrize(
    ("value", "tone"), [(0.8, "neg"), (1.0, ""), (1.7, "pos"), (float("inf"), "pos")]
)
def test_a_profit_factor_is_coloured_against_one_not_zero(value, tone):
    """Issue 10 item 25: a profit factor below 1 loses money and must not be green."""
    from backtester.views.research import fmt_metric

    assert fmt_metric("profit_factor", value)[1] == tone
    assert fmt_metric("payoff_ratio", value)[1] == tone
    assert fmt_metric("sharpe", 0.8)[1] == "pos"


def test_a_walkforward_started_from_an_optimization_keeps_its_constraint_and_exits(
    world, django_capture_on_commit_callbacks
):
    """Issue 10 item 24: "Walk-forward…" on an optimization's page dropped its constraint and
    its stop-loss / take-profit settings."""
    owner = world["owner"]
    settings = {"initial_cash": 5_000.0, "taker_fee": 0.002, "stop_loss": 0.03, "take_profit": 0.08}
    with django_capture_on_commit_callbacks(execute=False):
        job = optimization_create(
            **request_args(
                owner, world["strategy"], world["series"], settings=settings,
                constraint="slow > fast * 2", objective="sortino", min_trades=4,
            )
        )  # fmt: skip
    client = _client(owner)
    detail = client.get(reverse("backtester:optimization_detail", kwargs={"pk": job.pk})).text
    link = re.search(r'href="([^"]*walkforwards/new/[^"]*)"', detail).group(1)
    page = client.get(link.replace("&amp;", "&")).text
    form_id = re.search(r'<form[^>]*id="([^"]+)"[^>]*method="post"', page) or re.search(
        r'<form[^>]*method="post"[^>]*id="([^"]+)"', page
    )
    data = form_values(page, form_id.group(1))
    data.update(train="400", test="200", step="", unit="bars", mode="rolling")
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("backtester:walkforward_create"), data)
    assert response.status_code == 302, response.text[:2000]
    walk = WalkForwardJob.objects.filter(owner=owner).order_by("-pk").first()
    assert walk.pk != world["walk"].pk
    assert walk.constraint == "slow > fast * 2"
    assert (walk.objective, walk.min_trades) == ("sortino", 4)
    for key in ("stop_loss", "take_profit", "taker_fee", "initial_cash"):
        assert walk.settings[key] == pytest.approx(job.settings[key]), key
    assert (walk.start_ts, walk.series_id, walk.strategy_id) == (
        job.start_ts, job.series_id, job.strategy_id,
    )  # fmt: skip
