"""Scanner pages and API: who may see what (owner, another Pro user, a Free user, an anonymous
visitor, the owner after losing Pro), the forms, the filters, the chart, and the one-click
backtest of the band strategy."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from accounts.gating import UPGRADE_MESSAGE
from accounts.models import Subscription
from backtester.engine.indicators import polyreg_bands
from backtester.marketdata.store import load_candles
from backtester.models import Alert, Backtest, ScanRun, Watchlist
from tests.research.scanner_support import (
    LOOKBACK,
    closes_series,
    demo_market,
    demo_watchlist,
    line_closes,
    make_user,
    run_scan_now,
)


@dataclass
class World:
    owner: object
    other: object
    free: object
    watchlist: Watchlist
    run: ScanRun
    buy: Alert


@pytest.fixture
def world(transactional_db) -> World:
    demo_market()
    closes_series("DEEP/USDT", line_closes(-14.0))  # a second, deeper BUY
    owner = make_user()
    watchlist = demo_watchlist(
        owner, symbols=["BUY/USDT", "SELL/USDT", "HOLD/USDT", "NEW/USDT", "DEEP/USDT"]
    )
    run = run_scan_now(watchlist)
    return World(
        owner=owner,
        other=make_user(),
        free=make_user(pro=False),
        watchlist=watchlist,
        run=run,
        buy=Alert.objects.get(scan=run, symbol="BUY/USDT"),
    )


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


# --- who may see what ----------------------------------------------------------------------


def _object_pages(w: World) -> list[tuple[str, str, dict]]:
    return [
        ("get", "backtester:scanner_watchlist_edit", {"pk": w.watchlist.pk}),
        ("post", "backtester:scanner_watchlist_delete", {"pk": w.watchlist.pk}),
        ("post", "backtester:scanner_scan_start", {"pk": w.watchlist.pk}),
        ("get", "backtester:scanner_scan", {"pk": w.run.pk}),
        ("get", "backtester:scanner_alert", {"pk": w.buy.pk}),
        ("post", "backtester:scanner_alert_backtest", {"pk": w.buy.pk}),
    ]


LIST_PAGES = [
    "backtester:scanner",
    "backtester:scanner_watchlist_create",
    "backtester:scanner_alerts",
]


def test_every_scanner_page_is_pro_only_and_every_object_is_its_owners(world):
    w = world
    owner, other, free, anon = _client(w.owner), _client(w.other), _client(w.free), _client()
    login = reverse("account_login")
    for name in LIST_PAGES:
        url = reverse(name)
        assert owner.get(url).status_code == 200, name
        assert other.get(url).status_code == 200, name
        refused = free.get(url)
        assert refused.status_code == 403, name
        assert UPGRADE_MESSAGE in refused.content.decode()
        assert anon.get(url)["Location"].startswith(login), name
    for method, name, kwargs in _object_pages(w):
        url = reverse(name, kwargs=kwargs)
        assert getattr(other, method)(url).status_code == 404, name
        assert getattr(free, method)(url).status_code == 403, name
        assert getattr(anon, method)(url)["Location"].startswith(login), name
    # Nothing the refused requests asked for happened.
    assert Watchlist.objects.filter(pk=w.watchlist.pk).exists()
    assert ScanRun.objects.count() == 1
    assert not Backtest.objects.exists()
    # The owner's requests succeed.
    for method, name, kwargs in _object_pages(w):
        if name.endswith(("delete", "scan_start", "backtest")):
            continue
        assert getattr(owner, method)(reverse(name, kwargs=kwargs)).status_code == 200, name
    # The owner who lost Pro is refused on their own objects too.
    Subscription.objects.filter(user=w.owner).delete()
    lapsed = _client(w.owner)
    for method, name, kwargs in _object_pages(w):
        assert getattr(lapsed, method)(reverse(name, kwargs=kwargs)).status_code == 403, name


def test_another_users_watchlist_summary_is_a_404_and_their_alerts_never_show(world):
    other = _client(world.other)
    assert (
        other.get(reverse("backtester:scanner"), {"watchlist": world.watchlist.pk}).status_code
        == 404
    )
    page = other.get(reverse("backtester:scanner_alerts"), {"signal": "all"}).content.decode()
    assert "BUY/USDT" not in page
    assert "0 results" in page


API_OBJECTS = [
    ("get", "api_scanner_watchlist_detail", "watchlist"),
    ("patch", "api_scanner_watchlist_detail", "watchlist"),
    ("delete", "api_scanner_watchlist_detail", "watchlist"),
    ("post", "api_scanner_scan_start", "watchlist"),
    ("get", "api_scanner_scan_detail", "run"),
    ("get", "api_scanner_alert_detail", "buy"),
    ("post", "api_scanner_alert_backtest", "buy"),
]
API_LISTS = [
    "api_scanner_watchlists",
    "api_scanner_scans",
    "api_scanner_alerts",
    "api_scanner_alert_summary",
    "api_scanner_top_buy",
    "api_scanner_top_sell",
]


def test_the_scanner_api_answers_401_403_and_404_in_the_error_format(world):
    w = world
    other, free, anon = _client(w.other), _client(w.free), _client()
    for name in API_LISTS:
        url = reverse(name)
        assert anon.get(url).status_code == 401, name
        refused = free.get(url)
        assert refused.status_code == 403, name
        assert refused.json()["error"]["code"] == "plan_required"
        assert other.get(url).status_code == 200, name
    for method, name, attr in API_OBJECTS:
        url = reverse(name, kwargs={"pk": getattr(w, attr).pk})
        answer = getattr(other, method)(url, content_type="application/json")
        assert answer.status_code == 404, name
        assert answer.json()["error"]["code"] == "not_found"
        assert getattr(free, method)(url, content_type="application/json").status_code == 403
        assert getattr(anon, method)(url, content_type="application/json").status_code == 401
    assert Watchlist.objects.filter(pk=w.watchlist.pk).exists()
    assert ScanRun.objects.count() == 1
    assert not Backtest.objects.exists()
    # Another Pro user's lists hold nothing of the owner's.
    assert _client(w.other).get(reverse("api_scanner_watchlists")).json()["count"] == 0
    assert _client(w.other).get(reverse("api_scanner_alerts")).json()["count"] == 0
    assert _client(w.other).get(reverse("api_scanner_alert_summary")).json()["scan"] is None


# --- pages -----------------------------------------------------------------------------------


def test_the_scanner_page_shows_the_last_scans_counts_and_top_signals(world):
    page = _client(world.owner).get(reverse("backtester:scanner")).content.decode()
    assert "BUY 2" in page
    assert "SELL 1" in page
    assert "HOLD 2" in page
    top_buy = page[page.index('id="top-buy"') : page.index('id="top-sell"')]
    assert top_buy.index("DEEP/USDT") < top_buy.index("BUY/USDT")  # larger potential first
    assert "SELL/USDT" in page[page.index('id="top-sell"') :]
    assert "Demo majors" in page


def test_creating_a_watchlist_through_the_form(world):
    client = _client(world.owner)
    url = reverse("backtester:scanner_watchlist_create")
    form = {
        "name": "From the page",
        "exchange": "demo",
        "timeframe": "1d",
        "universe": "symbols",
        "symbols": "buy/usdt, sell/usdt",
        "top_n": "20",
        "quote": "USDT",
        "lookback": "40",
        "degree": "2",
        "k": "2.25",
        "schedule_minutes": "1440",
        "notify": "on",
    }
    bad = client.post(url, {**form, "lookback": "500"})
    assert bad.status_code == 400
    assert "between 30 and 300" in bad.content.decode()
    missing = client.post(url, {**form, "symbols": "doge/usdt"})
    assert missing.status_code == 400
    assert "no 1d candles for DOGE/USDT" in missing.content.decode()
    assert not Watchlist.objects.filter(name="From the page").exists()
    ok = client.post(url, form)
    assert ok.status_code == 302
    saved = Watchlist.objects.get(owner=world.owner, name="From the page")
    assert saved.symbols == ["BUY/USDT", "SELL/USDT"]
    assert (saved.lookback, saved.degree, saved.k) == (40, 2, 2.25)
    assert saved.schedule_minutes == 1440
    assert saved.next_run_at is not None
    assert saved.notify is True


def _running_scan(watchlist: Watchlist) -> ScanRun:
    """An active scan of ``watchlist`` that no task will run (it only blocks new ones)."""
    from django.utils import timezone

    from backtester.services.scanner import _new_scan

    run = _new_scan(watchlist, trigger=ScanRun.Trigger.MANUAL)
    ScanRun.objects.filter(pk=run.pk).update(
        status=ScanRun.Status.RUNNING, started_at=timezone.now()
    )
    return run


def test_the_scan_button_queues_a_scan_and_opens_its_live_page(world):
    client = _client(world.owner)
    url = reverse("backtester:scanner_scan_start", kwargs={"pk": world.watchlist.pk})
    response = client.post(url)
    run = ScanRun.objects.filter(watchlist=world.watchlist).first()
    assert run.pk != world.run.pk
    assert run.trigger == ScanRun.Trigger.MANUAL
    assert response["Location"] == reverse("backtester:scanner_scan", kwargs={"pk": run.pk})
    page = client.get(response["Location"]).content.decode()
    assert f'data-socket="/ws/runs/scan/{run.pk}/"' in page
    assert reverse("run_state", kwargs={"kind": "scan", "pk": run.pk}) in page
    status = client.get(reverse("run_state", kwargs={"kind": "scan", "pk": run.pk})).json()
    assert status["id"] == run.pk
    # (A worker may already be on it when the suite runs one.)
    assert status["status"] in ("queued", "running", "completed")
    blocking = _running_scan(world.watchlist)
    again = client.post(url, follow=True)
    assert again.redirect_chain == [(reverse("backtester:scanner"), 302)]
    assert "already running" in again.content.decode()
    assert ScanRun.objects.filter(watchlist=world.watchlist).latest("pk") == blocking


def test_a_finished_scan_page_lists_every_symbol_buys_first(world):
    page = _client(world.owner).get(reverse("backtester:scanner_scan", kwargs={"pk": world.run.pk}))
    html = page.content.decode()
    table = html[html.index('id="scan-results"') :]
    order = [table.index(f'data-symbol="{s}"') for s in ("DEEP/USDT", "BUY/USDT", "SELL/USDT")]
    assert order == sorted(order)
    assert f"Too little data: 20 candles, the lookback needs {LOOKBACK}" in html


def test_the_alert_list_filters_by_signal_symbol_and_date(world):
    client = _client(world.owner)
    url = reverse("backtester:scanner_alerts")

    def symbols(**query) -> set[str]:
        html = client.get(url, query).content.decode()
        return {
            s for s in ("BUY/", "SELL/", "HOLD/", "NEW/", "DEEP/") if f'data-symbol="{s}' in html
        }

    assert symbols() == {"BUY/", "SELL/", "DEEP/"}  # alerts: BUY and SELL
    assert symbols(signal="SELL") == {"SELL/"}
    assert symbols(signal="HOLD") == {"HOLD/", "NEW/"}
    assert symbols(signal="all") == {"BUY/", "SELL/", "HOLD/", "NEW/", "DEEP/"}
    assert symbols(symbol="deep") == {"DEEP/"}
    assert symbols(symbol="deep/usdt") == {"DEEP/"}
    today = world.run.finished_at.date()
    assert symbols(since=str(today), until=str(today)) == {"BUY/", "SELL/", "DEEP/"}
    assert symbols(since="2999-01-01") == set()
    bad = client.get(url, {"since": "2024-05-02", "until": "2024-05-01"})
    assert bad.status_code == 400
    assert "end date is before the start date" in bad.content.decode()


def test_the_alert_list_is_paginated(world):
    for _ in range(11):
        run_scan_now(world.watchlist)  # 12 scans x 3 alerts = 36, and 24 HOLD rows
    client = _client(world.owner)
    first = client.get(reverse("backtester:scanner_alerts"), {"signal": "all"}).content.decode()
    assert "Page 1 of 2" in first
    assert "60 results" in first
    second = client.get(reverse("backtester:scanner_alerts"), {"signal": "all", "page": 2})
    assert first.count("data-symbol=") == 50
    assert second.content.decode().count("data-symbol=") == 10
    assert "signal=all&amp;page=1" in second.content.decode()


def test_the_alert_chart_draws_the_close_and_the_bands_each_bar_saw(world):
    response = _client(world.owner).get(
        reverse("backtester:scanner_alert", kwargs={"pk": world.buy.pk})
    )
    html = response.content.decode()
    start = html.index('id="alert-chart-data"')
    start = html.index(">", start) + 1
    figure = json.loads(html[start : html.index("</script>", start)])
    traces = {t["name"]: t for t in figure["data"]}
    assert set(traces) == {"Lower band", "Upper band", "Fitted line", "Close", "BUY"}
    closes = load_candles(world.buy.series).close
    _, upper, lower = polyreg_bands(closes, LOOKBACK, 1, 2.0)
    assert traces["Close"]["y"][-1] == pytest.approx(closes[-1])
    assert traces["Upper band"]["y"][-1] == pytest.approx(upper[-1], rel=1e-8)
    assert traces["Lower band"]["y"][-1] == pytest.approx(lower[-1], rel=1e-8)
    assert traces["Lower band"]["y"][0] is None  # no band before a full lookback of closes
    assert traces["BUY"]["x"] == [world.buy.candle_ts]
    assert traces["BUY"]["y"] == [world.buy.price]
    assert np.isclose(world.buy.upper, upper[-1], rtol=1e-9)
    assert "vendor/plotly/plotly.min.js" in html
    assert "Backtest the band strategy" in html


def test_one_click_turns_an_alert_into_a_backtest_of_the_band_strategy(world):
    client = _client(world.owner)
    response = client.post(
        reverse("backtester:scanner_alert_backtest", kwargs={"pk": world.buy.pk})
    )
    backtest = Backtest.objects.get(owner=world.owner)
    assert response["Location"] == reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})
    assert backtest.param_values == {
        "window": LOOKBACK,
        "degree": 1,
        "k": 2.0,
        "exit_at_upper": True,
    }
    assert backtest.series_order == [world.buy.series_id]
    short = Alert.objects.get(scan=world.run, symbol="NEW/USDT")
    refused = client.post(
        reverse("backtester:scanner_alert_backtest", kwargs={"pk": short.pk}), follow=True
    )
    assert "band strategy needs more than" in refused.content.decode()
    assert Backtest.objects.count() == 1


# --- API -------------------------------------------------------------------------------------


def test_the_api_creates_changes_scans_and_deletes_a_watchlist(world):
    client = _client(world.owner)
    url = reverse("api_scanner_watchlists")
    body = {"name": "api", "exchange": "demo", "timeframe": "1d", "symbols": ["BUY/USDT"]}
    bad = client.post(url, {**body, "degree": 7}, content_type="application/json")
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {"degree": ["The degree must be between 1 and 3."]}
    missing = client.post(url, {"exchange": "demo"}, content_type="application/json")
    assert missing.json()["error"]["fields"] == {"name": ["This field is required."]}
    created = client.post(url, body, content_type="application/json")
    assert created.status_code == 201
    data = created.json()
    assert (data["lookback"], data["degree"], data["k"]) == (100, 2, 2.0)
    detail = reverse("api_scanner_watchlist_detail", kwargs={"pk": data["id"]})
    changed = client.patch(detail, {"lookback": 30, "k": 1.5}, content_type="application/json")
    assert (changed.json()["lookback"], changed.json()["k"]) == (30, 1.5)
    scan = client.post(data["scan_url"])
    assert scan.status_code == 202
    assert scan.json()["status"] == "queued"  # as answered, before any worker saw it
    assert scan.json()["websocket"] == f"/ws/runs/scan/{scan.json()['id']}/"
    _running_scan(Watchlist.objects.get(pk=data["id"]))
    conflict = client.post(data["scan_url"])
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "conflict"
    assert client.get(reverse("api_scanner_scans"), {"watchlist": data["id"]}).json()["count"] == 2
    assert client.delete(detail).status_code == 204
    assert not Watchlist.objects.filter(pk=data["id"]).exists()
    assert ScanRun.objects.filter(pk=scan.json()["id"]).exists()  # scans outlive the watchlist


def test_the_api_lists_alerts_with_filters_and_ranks_the_top_signals(world):
    client = _client(world.owner)
    alerts = client.get(reverse("api_scanner_alerts")).json()
    assert {a["symbol"] for a in alerts["results"]} == {"BUY/USDT", "SELL/USDT", "DEEP/USDT"}
    holds = client.get(reverse("api_scanner_alerts"), {"signal": "hold"}).json()["results"]
    assert {a["reason"][:15] for a in holds} == {"Close is inside", "Too little data"}
    wrong = client.get(reverse("api_scanner_alerts"), {"signal": "MAYBE"})
    assert wrong.status_code == 400
    assert "signal" in wrong.json()["error"]["fields"]
    theirs = client.get(reverse("api_scanner_alerts"), {"scan": world.run.pk + 999})
    assert theirs.status_code == 404
    top_buy = client.get(reverse("api_scanner_top_buy")).json()
    assert [a["symbol"] for a in top_buy] == ["DEEP/USDT", "BUY/USDT"]
    assert top_buy[0]["potential_return"] > top_buy[1]["potential_return"] > 0
    assert client.get(reverse("api_scanner_top_buy"), {"n": 1}).json()[0]["symbol"] == "DEEP/USDT"
    assert [a["symbol"] for a in client.get(reverse("api_scanner_top_sell")).json()] == [
        "SELL/USDT"
    ]
    summary = client.get(reverse("api_scanner_alert_summary")).json()
    assert summary["counts"] == {"BUY": 2, "SELL": 1, "HOLD": 2}
    assert summary["scan"]["id"] == world.run.pk
    assert [a["symbol"] for a in summary["top_buy"]] == ["DEEP/USDT", "BUY/USDT"]
    one = client.get(reverse("api_scanner_alert_detail", kwargs={"pk": world.buy.pk})).json()
    assert one["signal"] == "BUY"
    assert one["price"] < one["lower"] < one["mid"] < one["upper"]


def test_the_api_backtests_an_alert_with_the_scans_settings(world):
    client = _client(world.owner)
    response = client.post(reverse("api_scanner_alert_backtest", kwargs={"pk": world.buy.pk}))
    assert response.status_code == 202
    body = response.json()
    assert body["param_values"] == {
        "window": LOOKBACK,
        "degree": 1,
        "k": 2.0,
        "exit_at_upper": True,
    }
    assert body["symbols"] == ["BUY/USDT"]
    assert Backtest.objects.get(pk=body["id"]).owner == world.owner
