"""The research API (/api/v1/research/): optimizations and walk-forwards submitted with a
personal API key run on a real Celery worker and read back through the API; bad input is a 400
naming the field and saves nothing; cancel, the row-to-backtest step, sorting and filters.
Every answer is checked against the published OpenAPI schema."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from django.test import Client

from accounts.models import Plan
from backtester.engine.optimize import (
    plan_combinations,
    search_space,
    walk_forward,
    walk_forward_windows,
)
from backtester.engine.run import run_backtest
from backtester.marketdata.store import load_candles
from backtester.models import OptimizationJob, OptimizationRow, WalkForwardJob
from backtester.services.backtests import sim_config
from backtester.services.strategies import spec_from_dict, spec_to_dict, strategy_spec
from tests.accounts.api_support import bearer, error_of, key_for
from tests.accounts.test_api_schema import Contract
from tests.backtester.backtest_factories import make_series, make_strategy, make_user
from tests.worker_log import wait_for_log

OPT = "/api/v1/research/optimizations/"
WF = "/api/v1/research/walkforwards/"
SETTINGS = {"initial_cash": 10_000.0, "taker_fee": 0.001, "slippage_bps": 1.0}
RANGES = {"fast": {"low": 5, "high": 20, "step": 5}, "slow": [20, 40, 60]}
ACTIVE = ("queued", "running")


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker) -> dict[str, Any]:
    # Fetched once: the schema page is anonymous, and the anonymous rate counts per address.
    with django_db_blocker.unblock():
        response = Client(REMOTE_ADDR="10.250.0.1").get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def contract(schema) -> Contract:
    return Contract(schema)


def _post(api: Client, url: str, body: dict[str, Any] | None = None) -> Any:
    return api.post(url, body or {}, content_type="application/json")


def _body(strategy, series, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "strategy": strategy.pk,
        "series": series.pk,
        "settings": SETTINGS,
        "ranges": RANGES,
        "constraint": "fast < slow",
        "min_trades": 1,
    }
    body.update(overrides)
    return body


def _poll(api: Client, url: str, done, what: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(url).json()
        if done(body):
            return body
        time.sleep(0.25)  # well inside the Pro plan's request rate
    raise AssertionError(f"timed out waiting for {what}: {body}")


def _objective_order(row: OptimizationRow) -> tuple[bool, float, int]:
    # The ranking the API promises: best objective first, unranked rows last, ties by index.
    value = row.objective
    return (value is None, -(value if value is not None else 0.0), row.index)


# --- through the worker ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_optimization_submitted_by_key_runs_on_the_worker_and_reads_back(
    celery_worker_process, contract
):
    user = make_user()
    api = bearer(key_for(user))
    series = make_series(n=2000, seed=5)
    strategy = make_strategy(user)

    created = _post(api, OPT, _body(strategy, series, name="api grid"))
    job = contract.check(created, "/api/v1/research/optimizations/", "post", expect=202)
    assert (job["status"], job["done"], job["best"]) == ("queued", 0, None)
    assert job["combinations"] == 11  # 4 fast x 3 slow, less fast=20 with slow=20
    assert job["ranges"] == {"fast": [5, 10, 15, 20], "slow": [20, 40, 60]}
    assert job["name"] == "api grid"
    assert job["settings"]["taker_fee"] == 0.001

    detail = _poll(api, job["links"]["self"], lambda b: b["status"] not in ACTIVE, "the job")
    assert detail["status"] == "completed", detail["error"]
    body = contract.check(api.get(job["links"]["self"]), "/api/v1/research/optimizations/{id}/")
    assert body["progress"] == 1.0
    assert body["done"] == 11
    assert body["chunks_done"] == body["chunks"]
    wait_for_log(celery_worker_process, f"optimization {job['id']} chunk 0")

    # Every row, best first; the order is the one recomputed from the stored rows.
    rows_url = job["links"]["rows"]
    page = contract.check(api.get(rows_url), "/api/v1/research/optimizations/{id}/rows/")
    assert page["count"] == 11
    stored = sorted(OptimizationRow.objects.filter(job_id=job["id"]), key=_objective_order)
    assert [r["index"] for r in page["results"]] == [r.index for r in stored]
    top = page["results"][0]
    assert body["best"]["index"] == top["index"]
    assert body["best"]["params"] == top["params"]
    assert body["best"]["objective"] == top["objective"] == top["metrics"]["sharpe"]
    assert body["best"]["metrics"] == top["metrics"]

    # The numbers are the engine's: a single backtest of the best parameters agrees.
    candles = load_candles(series, start_ts=int(series.first_ts), end_ts=int(series.last_ts) + 1)
    spec = spec_from_dict(spec_to_dict(strategy_spec(strategy)))
    single = run_backtest(candles, spec, top["params"], sim_config(body["settings"]))
    assert top["metrics"]["sharpe"] == pytest.approx(single.metrics["sharpe"], rel=1e-12)
    assert top["metrics"]["trades"] == single.sim.trades.shape[0]
    assert top["metrics"]["final_equity"] == pytest.approx(single.sim.equity[-1], rel=1e-12)

    # Sorted by a metric, by a parameter; filtered; paged.
    by_dd = api.get(rows_url + "?sort=max_drawdown&dir=asc&page_size=500").json()["results"]
    drawdowns = [r["metrics"]["max_drawdown"] for r in by_dd]
    assert drawdowns == sorted(drawdowns)
    by_fast = api.get(rows_url + "?sort=param:fast&dir=desc").json()["results"]
    assert [r["params"]["fast"] for r in by_fast] == sorted(
        (r.params["fast"] for r in stored), reverse=True
    )
    ranked = api.get(rows_url + "?qualified=true").json()
    assert (
        ranked["count"] == OptimizationRow.objects.filter(job_id=job["id"], qualified=True).count()
    )
    assert all(r["qualified"] for r in ranked["results"])
    small = api.get(rows_url + "?page_size=4").json()
    assert len(small["results"]) == 4
    assert small["next"] is not None

    # A row becomes a backtest; the worker runs it and its metrics are the row's.
    made = _post(api, top["backtest"])
    backtest = contract.check(
        made, "/api/v1/research/optimizations/{id}/rows/{row}/backtest/", "post", expect=202
    )
    assert backtest["param_values"] == top["params"]
    assert backtest["series"] == [series.pk]
    finished = _poll(
        api, backtest["links"]["self"], lambda b: b["status"] not in ACTIVE, "the backtest"
    )
    assert finished["status"] == "completed", finished["error"]
    metrics = api.get(backtest["links"]["result"]).json()["metrics"]
    assert metrics["sharpe"] == pytest.approx(top["metrics"]["sharpe"], rel=1e-9)
    assert metrics["total_return"] == pytest.approx(top["metrics"]["total_return"], rel=1e-9)
    # The same row again: the identical completed run is reused at once.
    again = _post(api, top["backtest"])
    reused = contract.check(
        again, "/api/v1/research/optimizations/{id}/rows/{row}/backtest/", "post", expect=201
    )
    assert reused["cached_from"] == backtest["id"]

    # A finished job cannot be cancelled.
    refused = _post(api, job["links"]["cancel"])
    contract.check(refused, "/api/v1/research/optimizations/{id}/cancel/", "post", expect=409)
    assert error_of(refused)["code"] == "conflict"


@pytest.mark.django_db(transaction=True)
def test_a_walkforward_submitted_by_key_runs_on_the_worker_with_windows_and_oos_equity(
    celery_worker_process, contract
):
    user = make_user()
    api = bearer(key_for(user))
    series = make_series(n=2000, seed=6)
    strategy = make_strategy(user)

    body = _body(strategy, series, objective="sortino", train=600, test=300, unit="bars")
    created = _post(api, WF, body)
    job = contract.check(created, "/api/v1/research/walkforwards/", "post", expect=202)
    assert (job["status"], job["window_count"], job["windows"]) == ("queued", 4, [])
    assert (job["mode"], job["unit"], job["train"], job["test"], job["step"]) == (
        "rolling", "bars", 600, 300, 300,
    )  # fmt: skip

    _poll(api, job["links"]["self"], lambda b: b["status"] not in ACTIVE, "the walk-forward")
    detail = contract.check(api.get(job["links"]["self"]), "/api/v1/research/walkforwards/{id}/")
    assert detail["status"] == "completed", detail["error"]
    assert detail["windows_done"] == 4
    wait_for_log(celery_worker_process, f"walk-forward {job['id']} completed")

    # The oracle: the engine's walk-forward on the same data, combinations and settings.
    candles = load_candles(series, start_ts=int(series.first_ts), end_ts=int(series.last_ts) + 1)
    spec = spec_from_dict(spec_to_dict(strategy_spec(strategy)))
    plan = plan_combinations(spec, search_space(spec, RANGES), constraint="fast < slow")
    windows = walk_forward_windows(candles.timestamp, train=600, test=300)
    expected = walk_forward(
        candles,
        spec,
        plan.combinations,
        sim_config(detail["settings"]),
        windows,
        objective="sortino",
        min_trades=1,
    )
    assert len(detail["windows"]) == len(expected.windows) == 4
    for got, want in zip(detail["windows"], expected.windows, strict=True):
        assert got["params"] == want.params
        assert (got["test_start"], got["test_end"]) == (
            want.window.test_start,
            want.window.test_end,
        )
        assert got["test_from"] == int(candles.timestamp[want.window.test_start])
        assert got["in_sample"]["sortino"] == pytest.approx(want.in_sample["sortino"])
        assert got["in_sample"]["objective"] == pytest.approx(want.in_sample["sortino"])
        assert got["out_of_sample"]["total_return"] == pytest.approx(
            want.out_of_sample["total_return"]
        )
        assert got["end_equity"] == pytest.approx(want.end_equity)
    assert detail["oos_metrics"]["total_return"] == pytest.approx(expected.metrics["total_return"])
    if math.isfinite(expected.efficiency):
        assert detail["efficiency"] == pytest.approx(expected.efficiency)
    else:
        assert detail["efficiency"] is None
    assert detail["stability"]["fast"]["values"] == [w.params["fast"] for w in expected.windows]

    # The stitched out-of-sample curve: every test bar, or fewer points with the same ends.
    equity_url = job["links"]["equity"]
    full = contract.check(
        api.get(equity_url + "?points=5000"), "/api/v1/research/walkforwards/{id}/equity/"
    )
    assert full["bars"] == full["points"] == 1200 == expected.equity.shape[0]
    assert full["timestamp"] == expected.timestamp.tolist()
    assert full["equity"] == pytest.approx(expected.equity.tolist())
    short = api.get(equity_url + "?points=50").json()
    assert short["points"] == 50
    assert short["bars"] == 1200
    assert short["timestamp"][0] == full["timestamp"][0]
    assert short["timestamp"][-1] == full["timestamp"][-1]
    assert short["equity"][-1] == pytest.approx(expected.windows[-1].end_equity)
    assert np.all(np.diff(short["timestamp"]) > 0)
    assert set(short["timestamp"]) <= set(full["timestamp"])

    listed = contract.check(api.get(WF + "?status=completed"), "/api/v1/research/walkforwards/")
    assert [j["id"] for j in listed["results"]] == [job["id"]]
    assert "windows" not in listed["results"][0]
    refused = _post(api, job["links"]["cancel"])
    contract.check(refused, "/api/v1/research/walkforwards/{id}/cancel/", "post", expect=409)


# --- input checks, without a worker ----------------------------------------------------------


@pytest.fixture
def world(db, django_capture_on_commit_callbacks):
    # Jobs are saved but their tasks kept back: nothing runs in these tests.
    with django_capture_on_commit_callbacks(execute=False):
        user = make_user()
        yield {
            "user": user,
            "api": bearer(key_for(user)),
            "series": make_series(n=2000, seed=6),
            "strategy": make_strategy(user),
        }


BAD_COMMON = [
    ({"strategy": None}, "strategy"),
    ({"series": 999_999}, "series"),
    ({"objective": "alpha"}, "objective"),
    ({"method": "random"}, "samples"),
    ({"method": "random", "samples": 0}, "samples"),
    ({"constraint": "fast <"}, "constraint"),
    ({"constraint": "fast > 900"}, "constraint"),
    ({"ranges": {"fast": {"low": 1, "high": 500}}}, "ranges.fast"),
    ({"ranges": {"fast": []}}, "ranges.fast"),
    ({"settings": {"taker_fee": 5}}, "settings.taker_fee"),
    ({"settings": {"bogus": 1}}, "settings.bogus"),
    ({"start": "yesterday"}, "start"),
    ({"start": "2024-02-01", "end": "2024-01-15"}, "end"),
    ({"min_trades": -1}, "min_trades"),
    ({"seed": -3}, "seed"),
]
BAD_WALKFORWARD = [
    ({"train": None}, "train"),
    ({"step": 100}, "step"),
    ({"train": 1900}, "train"),
    ({"test": 0}, "test"),
    ({"mode": "sliding"}, "mode"),
    ({"unit": "weeks"}, "unit"),
]
BAD = [("optimization", *case) for case in BAD_COMMON] + [
    ("walkforward", *case) for case in BAD_COMMON + BAD_WALKFORWARD
]


@pytest.mark.parametrize(("kind", "overrides", "field"), BAD)
def test_bad_input_is_a_400_naming_the_field_and_saves_nothing(world, kind, overrides, field):
    body = _body(world["strategy"], world["series"])
    if kind == "walkforward":
        body.update(train=600, test=300)
    body.update(overrides)
    body = {k: v for k, v in body.items() if v is not None}
    response = _post(world["api"], OPT if kind == "optimization" else WF, body)
    assert response.status_code == 400, response.content[:300]
    error = error_of(response)
    assert error["code"] == "invalid"
    assert field in error["fields"], error
    assert error["message"] in error["fields"][field]
    assert not OptimizationJob.objects.exists()
    assert not WalkForwardJob.objects.exists()


def test_another_users_strategy_is_refused_as_not_found_on_its_field(world):
    foreign = make_strategy(make_user())
    response = _post(world["api"], OPT, _body(foreign, world["series"]))
    assert response.status_code == 400
    assert error_of(response)["fields"] == {"strategy": ["Strategy not found."]}
    assert not OptimizationJob.objects.exists()


def test_plan_limits_and_the_concurrency_limit_refuse_with_their_codes(world, contract):
    api, strategy, series = world["api"], world["strategy"], world["series"]
    Plan.objects.filter(code=Plan.PRO).update(max_optimization_combinations=10)
    too_big = _post(api, OPT, _body(strategy, series))  # 11 combinations
    contract.check(too_big, "/api/v1/research/optimizations/", "post", expect=403)
    error = error_of(too_big)
    assert error["code"] == "plan_required"
    assert list(error["fields"]) == ["ranges"]
    assert "11 combinations" in error["message"]

    Plan.objects.filter(code=Plan.PRO).update(
        max_optimization_combinations=10_000, max_concurrent_backtests=1
    )
    first = _post(api, OPT, _body(strategy, series))
    assert first.status_code == 202
    busy = _post(api, WF, _body(strategy, series, train=600, test=300))
    contract.check(busy, "/api/v1/research/walkforwards/", "post", expect=409)
    assert error_of(busy)["code"] == "conflict"
    assert OptimizationJob.objects.count() == 1
    assert not WalkForwardJob.objects.exists()


def test_dates_default_to_the_whole_series(world):
    response = _post(world["api"], OPT, _body(world["strategy"], world["series"]))
    assert response.status_code == 202
    job = OptimizationJob.objects.get(pk=response.json()["id"])
    assert (job.start_ts, job.end_ts) == (world["series"].first_ts, world["series"].last_ts)
    assert job.candle_count == 2000
    assert response.json()["start"] == "2024-01-01T00:00:00Z"


# --- cancel ----------------------------------------------------------------------------------


def test_cancel_stops_a_queued_job_once_and_then_conflicts(world, contract):
    api = world["api"]
    for url, path, extra in (
        (OPT, "/api/v1/research/optimizations/{id}/cancel/", {}),
        (WF, "/api/v1/research/walkforwards/{id}/cancel/", {"train": 600, "test": 300}),
    ):
        job = _post(api, url, _body(world["strategy"], world["series"], **extra)).json()
        assert job["status"] == "queued"
        done = contract.check(_post(api, job["links"]["cancel"]), path, "post")
        assert done["status"] == "cancelled"
        assert done["finished_at"] is not None
        again = _post(api, job["links"]["cancel"])
        contract.check(again, path, "post", expect=409)
        assert error_of(again)["message"].endswith("already cancelled.")
        outsider = bearer(key_for(make_user()))
        assert _post(outsider, job["links"]["cancel"]).status_code == 404
    assert set(OptimizationJob.objects.values_list("status", flat=True)) == {"cancelled"}
    assert set(WalkForwardJob.objects.values_list("status", flat=True)) == {"cancelled"}


# --- rows, lists and the equity curve on stored jobs -------------------------------------------


def _job(world: dict[str, Any], model=OptimizationJob, **fields: Any):
    series = world["series"]
    base = {
        "owner": world["user"],
        "strategy": world["strategy"],
        "series": series,
        "timeframe": "1h",
        "start_ts": int(series.first_ts),
        "end_ts": int(series.last_ts),
        "spec": spec_to_dict(strategy_spec(world["strategy"])),
        "ranges": {"fast": [5, 10, 15], "slow": [30]},
    }
    if model is WalkForwardJob:
        base.update(train=600, test=300, step=300)
    base.update(fields)
    return model.objects.create(**base)


def _row(job, index: int, fast: int, objective, **metrics: Any) -> OptimizationRow:
    return OptimizationRow.objects.create(
        job=job,
        index=index,
        params={"fast": fast, "slow": 30},
        objective=objective,
        qualified=objective is not None,
        sharpe=objective,
        trades=metrics.pop("trades", 3),
        **metrics,
    )


def test_rows_sort_by_any_metric_keep_infinities_and_refuse_unknown_sorts(world, contract):
    api = world["api"]
    job = _job(world, status="completed", done=4, combinations=4)
    _row(job, 0, 5, 0.5, profit_factor=1.5)
    _row(job, 1, 10, None, profit_factor=None, trades=0)
    _row(job, 2, 15, 1.25, profit_factor=math.inf)
    _row(job, 3, 15, 1.25, profit_factor=0.8)
    url = f"{OPT}{job.pk}/rows/"
    path = "/api/v1/research/optimizations/{id}/rows/"

    page = contract.check(api.get(url), path)
    # Best objective first, ties by combination index, unranked last.
    assert [r["index"] for r in page["results"]] == [2, 3, 0, 1]
    assert page["results"][0]["metrics"]["profit_factor"] == "inf"
    assert page["results"][-1]["objective"] is None
    assert page["results"][-1]["qualified"] is False
    by_pf = contract.check(api.get(url + "?sort=profit_factor&dir=asc"), path)
    assert [r["index"] for r in by_pf["results"]] == [3, 0, 2, 1]
    by_index = api.get(url + "?sort=index&dir=asc").json()["results"]
    assert [r["index"] for r in by_index] == [0, 1, 2, 3]
    by_fast = api.get(url + "?sort=param:fast&dir=asc").json()["results"]
    assert [r["params"]["fast"] for r in by_fast] == [5, 10, 15, 15]
    unranked = api.get(url + "?qualified=false").json()
    assert [r["index"] for r in unranked["results"]] == [1]

    for query, field in (
        ("?sort=alpha", "sort"),
        ("?sort=param:nope", "sort"),
        ("?dir=up", "dir"),
        ("?qualified=maybe", "qualified"),
    ):
        bad = api.get(url + query)
        contract.check(bad, path, expect=400)
        assert list(error_of(bad)["fields"]) == [field], query


def test_a_row_of_another_job_or_a_changed_strategy_is_not_backtested(world):
    api = world["api"]
    job = _job(world, status="completed")
    other = _job(world, status="completed")
    row = _row(job, 0, 5, 1.0)
    assert _post(api, f"{OPT}{other.pk}/rows/{row.pk}/backtest/").status_code == 404
    strategy = world["strategy"]
    strategy.entry_long = "close > open"
    strategy.save()
    refused = _post(api, f"{OPT}{job.pk}/rows/{row.pk}/backtest/")
    assert refused.status_code == 400
    assert "was edited after this optimization ran" in error_of(refused)["message"]


def test_lists_show_only_my_jobs_filtered_by_status(world, contract):
    api = world["api"]
    mine = {s: _job(world, status=s) for s in ("queued", "completed", "cancelled")}
    stranger = make_user()
    _job({**world, "user": stranger}, status="completed")
    listed = contract.check(api.get(OPT), "/api/v1/research/optimizations/")
    assert {j["id"] for j in listed["results"]} == {j.pk for j in mine.values()}
    some = api.get(OPT + "?status=completed,cancelled").json()
    assert {j["id"] for j in some["results"]} == {mine["completed"].pk, mine["cancelled"].pk}
    bad = api.get(OPT + "?status=done")
    contract.check(bad, "/api/v1/research/optimizations/", expect=400)
    assert list(error_of(bad)["fields"]) == ["status"]

    walk = _job(world, WalkForwardJob, status="failed", error="boom")
    theirs = _job({**world, "user": stranger}, WalkForwardJob, status="failed")
    failed = contract.check(api.get(WF + "?status=failed"), "/api/v1/research/walkforwards/")
    assert [j["id"] for j in failed["results"]] == [walk.pk]
    assert failed["results"][0]["error"] == "boom"
    assert api.get(f"{WF}{walk.pk}/").status_code == 200
    assert api.get(f"{WF}{theirs.pk}/").status_code == 404


def test_the_equity_curve_waits_for_completion_and_checks_points(world, contract):
    api = world["api"]
    path = "/api/v1/research/walkforwards/{id}/equity/"
    queued = _job(world, WalkForwardJob)
    waiting = api.get(f"{WF}{queued.pk}/equity/")
    contract.check(waiting, path, expect=409)
    assert error_of(waiting)["code"] == "conflict"

    x = [int(world["series"].first_ts) + i * 3_600_000 for i in range(1500)]
    y = (10_000 + np.cumsum(np.sin(np.arange(1500) / 7.0))).tolist()
    window = {"test_start": 500, "test_end": 2000}
    done = _job(world, WalkForwardJob, status="completed", curve={"x": x, "y": y}, windows=[window])
    url = f"{WF}{done.pk}/equity/"
    small = contract.check(api.get(url + "?points=100"), path)
    assert small["points"] == len(small["timestamp"]) == len(small["equity"]) == 100
    assert small["bars"] == 1500
    assert (small["timestamp"][0], small["timestamp"][-1]) == (x[0], x[-1])
    assert small["equity"][-1] == y[-1]
    assert len(api.get(url).json()["timestamp"]) == 1000  # the default
    for bad in ("?points=2", "?points=5001", "?points=many"):
        refused = api.get(url + bad)
        contract.check(refused, path, expect=400)
        assert list(error_of(refused)["fields"]) == ["points"]


def test_the_schema_documents_every_research_endpoint(contract):
    paths = contract.schema["paths"]
    expected = {
        "/api/v1/research/optimizations/": {"get", "post"},
        "/api/v1/research/optimizations/{id}/": {"get"},
        "/api/v1/research/optimizations/{id}/rows/": {"get"},
        "/api/v1/research/optimizations/{id}/rows/{row}/backtest/": {"post"},
        "/api/v1/research/optimizations/{id}/cancel/": {"post"},
        "/api/v1/research/walkforwards/": {"get", "post"},
        "/api/v1/research/walkforwards/{id}/": {"get"},
        "/api/v1/research/walkforwards/{id}/equity/": {"get"},
        "/api/v1/research/walkforwards/{id}/cancel/": {"post"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) >= methods, path
    rows = {
        p["name"] for p in paths["/api/v1/research/optimizations/{id}/rows/"]["get"]["parameters"]
    }
    assert {"sort", "dir", "qualified", "page", "page_size"} <= rows
    assert "409" in paths["/api/v1/research/walkforwards/{id}/equity/"]["get"]["responses"]
