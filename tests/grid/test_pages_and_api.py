"""Grid pages and the API through the real URLconf: the backtest page shows what the engine's
simulation computes, bad input is a 400 naming the field, Deploy starts a bot, the bot page
shows its levels, another user's bot is a 404; and the journey in the real browser."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from accounts.services import demo_user_ensure
from backtester.engine.gridbot import GridSettings, simulate_grid
from backtester.marketdata.store import load_candles
from backtester.models import GridBot
from exchanges.paper import default_rules
from tests.backtester.backtest_factories import make_series, make_user
from tests.bots.helpers import paper_account

pytestmark = pytest.mark.django_db(transaction=True)
GRID: dict[str, Any] = {
    "lower": "90",
    "upper": "110",
    "levels": "9",
    "spacing": "arithmetic",
    "investment": "800",
}


def found(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    """The first match of ``pattern`` in the page (the test fails when there is none)."""
    match = re.search(pattern, text, flags)
    assert match is not None, pattern
    return match


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_backtest_page_shows_the_simulation_and_deploys_it() -> None:
    user = make_user(pro=True)
    series = make_series(n=400)
    account = paper_account(user)
    client = client_for(user)
    page = client.get("/bots/grid/backtest/", {"series": series.pk, **GRID})
    assert page.status_code == 200
    html = page.content.decode()

    # The same grid through the engine directly, with the paper market's default rules.
    rules = default_rules("BTC/USDT")
    sim = simulate_grid(
        load_candles(series),
        GridSettings(
            lower=90.0, upper=110.0, levels=9, investment=800.0,
            maker_fee=float(rules.maker_fee), taker_fee=float(rules.taker_fee),
            tick=float(rules.price_tick), min_notional=float(rules.min_notional),
        ),
    )  # fmt: skip
    assert sim.round_trips > 0
    profit = found(r'id="grid-profit">([^<]+)<', html).group(1)
    assert (
        profit == f"{sim.grid_profit:,.2f}".replace(",", "") or profit == f"{sim.grid_profit:.2f}"
    )
    unrealized = found(r'id="grid-unrealized">([^<]+)<', html).group(1)
    assert unrealized == f"{sim.unrealized_pnl:.2f}"
    assert found(r'id="grid-trips">(\d+)<', html).group(1) == str(sim.round_trips)
    figure = json.loads(
        found(
            r'<script id="grid-equity-data" type="application/json">(.*?)</script>', html, re.S
        ).group(1)
    )
    assert figure["data"][0]["y"][-1] == pytest.approx(sim.final_equity, rel=1e-6)
    assert html.count('<tr><td class="num">') == 8  # one row per cell
    assert 'id="grid-deploy-form"' in html

    # Deploy from the page's form (its fields carry the backtest's settings).
    done = client.post("/bots/grid/new/", {"account": account.pk, "symbol": "BTC/USDT", **GRID})
    bot = GridBot.objects.get()
    assert done.status_code == 302
    assert done["Location"] == f"/bots/grid/{bot.pk}/"
    assert bot.grid_levels.count() == 8
    detail = client.get(f"/bots/grid/{bot.pk}/").content.decode()
    assert detail.count('<tr id="level-') == 8
    assert "Idle (no order)" in detail
    assert client.get("/bots/grid/").content.decode().count(f"/bots/grid/{bot.pk}/") == 1
    # Another user: the bot does not exist for them.
    other = client_for(make_user(pro=True))
    assert other.get(f"/bots/grid/{bot.pk}/").status_code == 404
    assert other.post(f"/bots/grid/{bot.pk}/stop/").status_code == 404
    assert GridBot.objects.get(pk=bot.pk).status == "running"


def test_bad_input_on_the_pages_is_a_400_and_saves_nothing() -> None:
    user = make_user(pro=True)
    series = make_series(n=100)
    account = paper_account(user)
    client = client_for(user)
    inverted = client.get("/bots/grid/backtest/", {"series": series.pk, **GRID, "lower": "120"})
    assert inverted.status_code == 400
    assert "must be above the lower" in inverted.content.decode()
    # 800 USDT at the paper default's 1 USDT minimum order (+0.1 % fee): 799 cells (799 x
    # 1.001 = 799.8), so 800 levels.
    many = client.get("/bots/grid/backtest/", {"series": series.pk, **GRID, "levels": "2000"})
    assert many.status_code == 400
    assert "at most 800 fit" in many.content.decode()
    for bad in ({"levels": "0"}, {"investment": "0"}, {"upper": "80"}, {"levels": "5000"}):
        page = client.post("/bots/grid/new/", {"account": account.pk, "symbol": "BTC/USDT",
                                                **GRID, **bad})  # fmt: skip
        assert page.status_code == 400, bad
    assert GridBot.objects.count() == 0


def test_the_api_creates_lists_and_refuses_bad_input_with_the_field() -> None:
    user, other = make_user(pro=True), make_user(pro=True)
    account = paper_account(user)
    api = client_for(user)
    body = {"account": account.pk, "symbol": "BTC/USDT", **GRID, "levels": 9}

    def post(data):
        return api.post("/api/v1/grid-bots/", json.dumps(data), content_type="application/json")

    for bad, field in (
        ({"lower": "120"}, "upper"),
        ({"levels": 0}, "levels"),
        ({"levels": 1}, "levels"),
        ({"investment": "0.5"}, "investment"),
        ({"stop_loss": "95"}, "stop_loss"),
    ):
        answer = post(body | bad)
        assert answer.status_code == 400, (bad, answer.content)
        assert field in answer.json()["error"]["fields"], (bad, answer.json())
    too_many = post(body | {"levels": 5000})
    assert too_many.status_code == 400
    assert re.search(r"at most \d+ fit", too_many.json()["error"]["fields"]["levels"][0])
    theirs = paper_account(other)
    assert post(body | {"account": theirs.pk}).status_code == 404
    assert GridBot.objects.count() == 0

    made = post(body)
    assert made.status_code == 201
    data = made.json()
    assert len(data["grid_levels"]) == 8
    assert [lv["state"] for lv in data["grid_levels"]] == ["idle"] * 8
    assert api.get("/api/v1/grid-bots/").json()["count"] == 1
    assert client_for(other).get(f"/api/v1/grid-bots/{data['id']}/").status_code == 404
    paused = api.post(f"/api/v1/grid-bots/{data['id']}/pause/")
    assert paused.json()["status"] == "paused"
    stopped = api.post(
        f"/api/v1/grid-bots/{data['id']}/stop/", json.dumps({"sell": False}),
        content_type="application/json",
    )  # fmt: skip
    assert stopped.json()["status"] == "stopped"


def test_backtest_deploy_pause_and_stop_in_the_browser(browser, daphne_server) -> None:
    email, password = "gridowner@example.com", "grid-browser-pass-7"
    user, _ = demo_user_ensure(email=email, password=password)
    series = make_series(n=300)
    paper_account(user)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if "127.0.0.1" not in r.url else None)
    page.goto(daphne_server + "/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")
    page.wait_for_url(daphne_server + "/dashboard/")

    page.goto(daphne_server + "/bots/grid/")
    page.click("#grid-backtest-link")
    page.wait_for_selector("#grid-backtest-form")
    page.select_option("#grid-backtest-form select[name=series]", value=str(series.pk))
    for name, value in GRID.items():
        if name == "spacing":
            page.select_option(f"#grid-backtest-form select[name={name}]", value=value)
        else:
            page.fill(f"#grid-backtest-form input[name={name}]", value)
    page.click("#grid-run-button")
    page.wait_for_selector("#grid-result")
    # Plotly drew the equity chart (vendored script, CSP intact).
    page.wait_for_selector("#grid-equity-chart .main-svg", timeout=15000)
    page.select_option("#grid-deploy-form select[name=account]", label="Paper (paper)")
    page.click("#grid-deploy-button")
    page.wait_for_selector("#grid-status")
    assert page.inner_text("#grid-status") == "Running"
    assert page.locator("#grid-levels tbody tr").count() == 8
    page.click("#grid-pause-button")
    page.wait_for_selector("#grid-start-button")
    assert page.inner_text("#grid-status") == "Paused"
    page.once("dialog", lambda d: d.accept())
    page.click("#grid-stop-button")
    page.wait_for_function("document.querySelector('#grid-status').innerText === 'Stopped'")
    assert GridBot.objects.get().status == "stopped"
    assert errors == []
    assert external == []


def test_the_search_ranks_grid_settings_by_the_simulation(
    django_capture_on_commit_callbacks,
) -> None:
    """The search runs in the background now (tests/grid/test_search.py has its lifecycle):
    the backtest page links to it, and its rows rank the engine's own replays."""
    from backtester.models import GridSearch
    from backtester.services.grid_search import grid_search_create, grid_search_execute

    user = make_user(pro=True)
    series = make_series(n=400)
    client = client_for(user)
    page = client.get("/bots/grid/backtest/", {"series": series.pk, **GRID})
    assert 'id="grid-search-link"' in page.content.decode()
    assert 'class="search-row"' not in page.content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        search = grid_search_create(
            user=user, series=series, investment="800", lowers=["85", "90", "120"],
            uppers=["110"], levels=[5, 9, 17], objective="total_return",
        )  # fmt: skip
    assert search.combinations == 6  # 120 is above the upper price: no range
    grid_search_execute(search_id=search.pk)
    search = GridSearch.objects.get(pk=search.pk)
    assert search.status == "completed", search.error
    candles = load_candles(series)
    rules = default_rules("BTC/USDT")
    returns: dict[tuple[float, int], float] = {}
    for lower in (85.0, 90.0):
        for levels in (5, 9, 17):
            sim = simulate_grid(
                candles,
                GridSettings(
                    lower=lower, upper=110.0, levels=levels, investment=800.0,
                    maker_fee=float(rules.maker_fee), taker_fee=float(rules.taker_fee),
                    tick=float(rules.price_tick), min_notional=float(rules.min_notional),
                ),
            )  # fmt: skip
            returns[(lower, levels)] = sim.final_equity / 800.0 - 1
    ranked = [(float(r["lower"]), r["levels"]) for r in search.rows]
    assert ranked == sorted(returns, key=lambda k: -returns[k])
    for row in search.rows:
        assert row["total_return"] == pytest.approx(
            returns[(float(row["lower"]), row["levels"])], rel=1e-12
        )
    html = client.get(f"/bots/grid/search/{search.pk}/").content.decode()
    assert html.count('class="search-row"') == 6
