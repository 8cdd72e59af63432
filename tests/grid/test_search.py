"""Searching grid settings in the background (backtester/services/grid_search.py): the run
lifecycle (queued, claimed by a real worker, progress on ``run-gridsearch-<id>``, completed,
cancelled), rows equal to the engine's grid simulation run directly, bad input as 400s naming
the field, and the page's table, heatmap and "Deploy this grid" link.

The lifecycle's generic tests (tests/runs/test_lifecycle.py) cover this kind as well, through
the permission matrix's ``grid_search`` builder."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from channels.layers import get_channel_layer
from django.test import Client
from django.urls import reverse

import backtester.services.grid_search as gs
from backtester.engine.gridbot import GridSettings, grid_metrics, simulate_grid
from backtester.marketdata.store import load_candles
from backtester.models import GridSearch
from exchanges.paper import market_rules
from tests.backtester.backtest_factories import make_user
from tests.bots.helpers import demo_candles, store_series
from tests.conftest import arun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def market() -> Any:
    return store_series(demo_candles(days=12))


def around(series: Any) -> tuple[list[str], list[str]]:
    """Lower and upper prices to try, inside the demo market's range."""
    c = load_candles(series)
    lo, hi = float(np.quantile(c.close, 0.1)), float(np.quantile(c.close, 0.9))
    lowers = [f"{lo * 0.97:.2f}", f"{lo:.2f}"]
    uppers = [f"{hi:.2f}", f"{hi * 1.03:.2f}"]
    return lowers, uppers


def client_of(user: Any) -> Client:
    c = Client()
    c.force_login(user)
    return c


def body(series: Any, **extra: Any) -> dict[str, Any]:
    lowers, uppers = around(series)
    return {
        "series": series.pk, "investment": "1000", "lowers": lowers, "uppers": uppers,
        "levels": [4, 8, 16], "spacings": ["arithmetic", "geometric"],
        "trailing": [False, True], "objective": "grid_profit", **extra,
    }  # fmt: skip


def direct(series: Any, row: dict[str, Any]) -> dict[str, float]:
    """The row's settings run straight through the engine with the market's rules."""
    rules = market_rules(series.symbol)
    return grid_metrics(
        load_candles(series),
        {
            "lower": float(row["lower"]), "upper": float(row["upper"]),
            "levels": int(row["levels"]), "investment": 1000.0, "spacing": row["spacing"],
            "trailing": row["trailing"], "maker_fee": float(rules.maker_fee),
            "taker_fee": float(rules.taker_fee), "tick": float(rules.price_tick),
            "min_notional": float(rules.min_notional),
        },
    )  # fmt: skip


def wait_finished(pk: int, seconds: float = 120) -> GridSearch:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        search = GridSearch.objects.get(pk=pk)
        if not search.is_active:
            return search
        time.sleep(0.3)
    raise AssertionError(f"grid search {pk} still {GridSearch.objects.get(pk=pk).status}")


def test_a_search_posted_to_the_api_runs_on_a_worker_and_ranks_like_the_engine(
    celery_worker_process: Any, market: Any
) -> None:
    user = make_user(pro=True)
    response = client_of(user).post(
        "/api/v1/grid-searches/", json.dumps(body(market)), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "queued"
    assert response.json()["combinations"] == 2 * 2 * 3 * 2 * 2
    search = wait_finished(response.json()["id"])
    assert search.status == GridSearch.Status.COMPLETED, search.error
    assert search.evaluated == search.combinations == len(search.rows) == 48
    ok = [r for r in search.rows if not r["error"]]
    assert len(ok) >= 40
    profits = [r["grid_profit"] for r in ok]
    assert profits == sorted(profits, reverse=True)
    assert search.rows[: len(ok)] == ok  # refused ones last
    best = search.rows[0]
    again = direct(market, best)
    for key in ("grid_profit", "total_return", "round_trips", "final_equity", "shifts"):
        assert best[key] == again[key], key
    # The detail API returns the rows.
    got = client_of(user).get(f"/api/v1/grid-searches/{search.pk}/").json()
    assert got["rows"][0] == best
    assert got["status"] == "completed"


def listen(group: str) -> tuple[Any, str]:
    layer = get_channel_layer()

    async def join() -> str:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel

    return layer, arun(join())


def drain(layer: Any, channel: str) -> list[dict[str, Any]]:
    async def take() -> list[dict[str, Any]]:
        import asyncio

        out = []
        while True:
            try:
                out.append(await asyncio.wait_for(layer.receive(channel), timeout=1.0))
            except TimeoutError:
                return out

    return arun(take())


def queued(user: Any, series: Any, **extra: Any) -> GridSearch:
    """A queued search saved without enqueuing it (this test runs it in-process)."""
    b = body(series, **extra)
    space = gs.search_space(
        lowers=b["lowers"], uppers=b["uppers"], levels=b["levels"], spacings=b["spacings"],
        trailing=b["trailing"],
    )  # fmt: skip
    return GridSearch.objects.create(
        owner=user, series=series, investment=Decimal("1000"), space=space,
        objective=b["objective"], combinations=len(gs.combinations(space)), bars=series.count,
    )  # fmt: skip


def test_progress_goes_to_the_runs_group_then_the_completion(
    market: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gs, "PROGRESS_SECONDS", 0.0)
    user = make_user(pro=True)
    search = queued(user, market)
    layer, channel = listen(search.group)
    gs.grid_search_execute(search_id=search.pk)
    messages = drain(layer, channel)
    kinds = [(m["type"], m.get("status")) for m in messages]
    assert kinds[0] == ("run.status", "running")
    assert kinds[-1] == ("run.status", "completed")
    progress = [m for m in messages if m["type"] == "run.progress" and "evaluated" in m]
    assert [m["evaluated"] for m in progress] == list(range(1, 49))
    assert progress[-1]["progress"] == 1.0
    search.refresh_from_db()
    assert search.status == GridSearch.Status.COMPLETED
    # A second delivery of the task does nothing.
    gs.grid_search_execute(search_id=search.pk)
    assert GridSearch.objects.get(pk=search.pk).finished_at == search.finished_at


def test_cancel_stops_a_running_search_and_keeps_no_rows(
    market: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gs, "PROGRESS_SECONDS", 0.0)
    user = make_user(pro=True)
    search = queued(user, market)
    real = gs.evaluate
    calls = {"n": 0}

    def evaluate(*args: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 5:  # the owner presses Cancel while the fifth combination runs
            gs.grid_search_cancel(user=user, search=GridSearch.objects.get(pk=search.pk))
        return real(*args)

    monkeypatch.setattr(gs, "evaluate", evaluate)
    gs.grid_search_execute(search_id=search.pk)
    search.refresh_from_db()
    assert search.status == GridSearch.Status.CANCELLED
    assert calls["n"] == 5  # stopped at its next progress step
    assert (search.rows, search.evaluated) == ([], 4)
    # A queued one cancelled never runs; another user cannot cancel (404), nor a finished one.
    other = queued(user, market)
    response = client_of(make_user(pro=True)).post(f"/api/v1/grid-searches/{other.pk}/cancel/")
    assert response.status_code == 404
    response = client_of(user).post(f"/api/v1/grid-searches/{other.pk}/cancel/")
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    gs.grid_search_execute(search_id=other.pk)
    assert GridSearch.objects.get(pk=other.pk).started_at is None
    response = client_of(user).post(f"/api/v1/grid-searches/{other.pk}/cancel/")
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lowers": ["200"], "uppers": ["100"]}, "uppers"),  # inverted bounds
        ({"levels": [1]}, "levels"),
        ({"levels": []}, "levels"),
        ({"investment": "0"}, "investment"),
        ({"lowers": ["abc"]}, "lowers"),
        ({"lowers": ["-5"]}, "lowers"),
        ({"objective": "luck"}, "objective"),
        ({"spacings": ["spiral"]}, "spacings"),
        ({"trailing": ["maybe"]}, "trailing"),
        ({"levels": list(range(2, 43))}, "levels"),  # 41 values: too many per setting
        ({"series": 999_999}, "series"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_saves_nothing(
    market: Any, change: dict[str, Any], field: str
) -> None:
    response = client_of(make_user(pro=True)).post(
        "/api/v1/grid-searches/", json.dumps(body(market) | change),
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code in (400, 404), response.content
    error = response.json()["error"]
    named = {key.split(".")[0] for key in error.get("fields") or {}}  # "levels.0": an item
    assert field in named, error
    assert GridSearch.objects.count() == 0


def test_too_many_combinations_names_the_limit(market: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(gs, "MAX_COMBINATIONS", 10)
    response = client_of(make_user(pro=True)).post(
        "/api/v1/grid-searches/", json.dumps(body(market)), content_type="application/json"
    )
    assert response.status_code == 400
    assert "48 combinations: at most 10 per search" in response.json()["error"]["message"]


def test_the_page_queues_a_search_then_shows_the_table_heatmap_and_deploy_links(
    market: Any, django_capture_on_commit_callbacks: Any
) -> None:
    user = make_user(pro=True)
    c = client_of(user)
    lowers, uppers = around(market)
    form = {
        "series": market.pk, "investment": "1000", "lowers": ", ".join(lowers),
        "uppers": " ".join(uppers), "levels": "4, 8", "spacings": ["arithmetic"],
        "trailing": "both", "objective": "total_return",
    }  # fmt: skip
    bad = c.post(reverse("backtester:grid_search_new"), form | {"levels": "1"})
    assert bad.status_code == 400
    assert b"levels must be between 2 and" in bad.content
    assert GridSearch.objects.count() == 0
    with django_capture_on_commit_callbacks(execute=False):
        response = c.post(reverse("backtester:grid_search_new"), form)
    assert response.status_code == 302
    search = GridSearch.objects.get()
    assert response["Location"] == reverse("backtester:grid_search_detail", args=[search.pk])
    page = c.get(response["Location"]).content.decode()
    assert "data-run-live" in page
    assert f'data-socket="/ws/runs/gridsearch/{search.pk}/"' in page
    gs.grid_search_execute(search_id=search.pk)
    page = c.get(response["Location"]).content.decode()
    assert page.count('class="search-row"') == 16  # 2 x 2 ranges, 2 counts, trailing both
    assert 'id="grid-search-figure"' in page
    assert "vendor/plotly/plotly.min.js" in page
    search.refresh_from_db()
    best = search.rows[0]
    figure = gs.grid_search_heatmap(search)
    assert figure["data"][0]["type"] == "heatmap"
    assert len(figure["data"][0]["z"]) == 4  # 2 lowers x 2 uppers
    assert len(figure["data"][0]["x"]) == 2  # levels 4, 8
    deploy = page.split('href="/bots/grid/new/?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    form_page = c.get(f"/bots/grid/new/?{deploy}").content.decode()
    assert f'value="{best["lower"]}"' in form_page
    assert f'value="{best["upper"]}"' in form_page
    assert ('name="trailing" id="id_trailing" checked' in form_page) == best["trailing"]
    # The best row's settings backtest to the same numbers.
    assert best["total_return"] == direct(market, best)["total_return"]
    result = simulate_grid(
        load_candles(market),
        GridSettings(
            lower=float(best["lower"]), upper=float(best["upper"]), levels=int(best["levels"]),
            investment=1000.0, trailing=best["trailing"],
            maker_fee=float(market_rules(market.symbol).maker_fee),
            taker_fee=float(market_rules(market.symbol).taker_fee),
            tick=float(market_rules(market.symbol).price_tick),
            min_notional=float(market_rules(market.symbol).min_notional),
        ),
    )  # fmt: skip
    assert best["final_equity"] == result.final_equity


@pytest.mark.browser
def test_the_search_page_draws_the_heatmap_and_deploys_a_row_in_the_browser(
    browser: Any, daphne_server: str, market: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from accounts.services import demo_user_ensure

    password = "grid-search-browser-5"
    user, _ = demo_user_ensure(email="grid-search@example.com", password=password)
    b = body(market)
    with django_capture_on_commit_callbacks(execute=False):
        search = gs.grid_search_create(
            user=user, series=market, investment="1000", lowers=b["lowers"], uppers=b["uppers"],
            levels=[4, 8], spacings=["arithmetic"], trailing=[True], objective="total_return",
        )  # fmt: skip
    gs.grid_search_execute(search_id=search.pk)
    best = GridSearch.objects.get(pk=search.pk).rows[0]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if "127.0.0.1" not in r.url else None)
    page.goto(daphne_server + "/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")
    page.wait_for_url(daphne_server + "/dashboard/")
    page.goto(f"{daphne_server}/bots/grid/search/{search.pk}/")
    page.wait_for_selector("#grid-search-chart[data-qf-drawn='1']")
    kinds = page.evaluate("document.getElementById('grid-search-chart').data.map(t => t.type)")
    assert kinds == ["heatmap"]
    assert page.locator(".search-row").count() == 8
    page.click(".search-row:first-child a:has-text('Deploy this grid')")
    page.wait_for_url("**/bots/grid/new/?**")
    assert page.input_value("#id_lower") == best["lower"]
    assert page.input_value("#id_upper") == best["upper"]
    assert page.input_value("#id_levels") == str(best["levels"])
    assert page.is_checked("#id_trailing")
    assert errors == []
    assert external == []
