"""Market data pages and API, tried by every persona: the owner, another Pro user (404), an
anonymous visitor (login / 401) and a Free user (403)."""

from __future__ import annotations

import io
import json

import pytest
from django.test import Client
from django.urls import reverse

from backtester.models import FetchJob, MarketSeries, UploadJob
from backtester.services.marketdata import upload_job_execute
from tests.backtester.marketdata_fixtures import decimal_candles, make_series, make_user
from tests.conftest import clear_run_cache
from tests.fakes.binance import FakeBinance

pytestmark = pytest.mark.django_db

CSV = (
    b"timestamp,open,high,low,close,volume\n"
    b"2024-01-01T00:00:00Z,100,101,99,100.5,10\n"
    b"2024-01-01T01:00:00Z,100.5,102,100,101.5,12\n"
    b"2024-01-01T02:00:00Z,101.5,103,101,102,9\n"
)
BAD_CSV = CSV.replace(b"100.5,102,100,101.5", b"100.5,99,100,101.5")  # high below open


@pytest.fixture
def world():
    """Shared data, a synthetic demo series, and uploads of two users."""
    owner, other = make_user(), make_user()
    shared = make_series(candles=decimal_candles(100))
    demo = make_series(
        exchange="demo", symbol="ETH/USDT", source="demo", candles=decimal_candles(50)
    )
    demo.synthetic = True
    demo.save()
    mine = make_series(
        owner=owner, exchange="upload", symbol="MY/COIN", candles=decimal_candles(30)
    )
    theirs = make_series(
        owner=other, exchange="upload", symbol="THEIR/COIN", candles=decimal_candles(20)
    )
    return {
        "owner": owner,
        "other": other,
        "free": make_user(pro=False),
        "shared": shared,
        "demo": demo,
        "mine": mine,
        "theirs": theirs,
    }


def _as(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def fake(monkeypatch):
    server = FakeBinance()
    server.serve()
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": server.base_url}))
    clear_run_cache()
    yield server
    server.stop()
    clear_run_cache()


# --- pages: personas ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["data_list", "data_upload", "data_fetch"], ids=["list", "upload", "fetch"]
)
def test_pages_send_anonymous_visitors_to_login_and_refuse_free_users(world, name):
    url = reverse(f"backtester:{name}")
    anonymous = _as(None).get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("account_login"))
    refused = _as(world["free"]).get(url)
    assert refused.status_code == 403
    assert "Pro plan" in refused.content.decode()
    assert _as(world["owner"]).get(url).status_code == 200


def test_catalog_lists_shared_series_and_my_uploads_but_not_other_peoples(world):
    page = _as(world["owner"]).get(reverse("backtester:data_list")).content.decode()
    assert "MY/COIN" in page
    assert "BTC/USDT" in page
    assert "ETH/USDT" in page
    assert "THEIR/COIN" not in page
    assert "Synthetic" in page
    assert "2024-01-01" in page  # first candle as a UTC date


def test_market_data_sits_after_strategies_in_the_navigation(world):
    from config.context_processors import NAVIGATION

    names = [name for _, name in NAVIGATION]
    assert names.index("backtester:data_list") == names.index("backtester:strategy_list") + 1
    page = _as(world["owner"]).get(reverse("backtester:data_list")).content.decode()
    assert f'href="{reverse("backtester:data_list")}"' in page


def test_detail_shows_a_candle_chart_and_the_gaps(world):
    client = _as(world["owner"])
    gappy = decimal_candles(40)
    series = make_series(exchange="kraken", symbol="ADA/USDT", candles=gappy.slice(0, 10))
    from backtester.marketdata import store

    store.write_candles(series=series, candles=gappy.slice(15, 40))
    page = client.get(reverse("backtester:data_detail", kwargs={"pk": series.pk}))
    assert page.status_code == 200
    html = page.content.decode()
    assert '"type": "candlestick"' in html
    assert "vendor/plotly/plotly.min.js" in html
    assert "2024-01-01 10:00" in html  # the gap starts at the 11th hour
    assert "Missing candles" in html


def test_detail_of_a_synthetic_series_says_so(world):
    page = _as(world["owner"]).get(
        reverse("backtester:data_detail", kwargs={"pk": world["demo"].pk})
    )
    assert "Synthetic" in page.content.decode()


def test_detail_is_404_for_another_users_upload_and_gated_for_the_others(world):
    url = reverse("backtester:data_detail", kwargs={"pk": world["theirs"].pk})
    assert _as(world["owner"]).get(url).status_code == 404
    assert _as(world["other"]).get(url).status_code == 200
    assert _as(world["free"]).get(url).status_code == 403
    assert _as(None).get(url).status_code == 302
    mine = reverse("backtester:data_detail", kwargs={"pk": world["mine"].pk})
    assert _as(world["owner"]).get(mine).status_code == 200


def test_upload_page_stores_a_good_file_and_shows_the_line_of_a_bad_one(world):
    client = _as(world["owner"])
    url = reverse("backtester:data_upload")
    bad = io.BytesIO(BAD_CSV)
    bad.name = "bad.csv"
    response = client.post(url, {"file": bad, "symbol": "NEW/COIN", "timeframe": ""})
    assert response.status_code == 302
    failed = UploadJob.objects.get(owner=world["owner"])
    upload_job_execute(job_id=failed.pk)
    failed.refresh_from_db()
    assert failed.status == "failed"
    assert failed.error == "bad.csv: line 3: high 99.0 is below open 100.5"
    assert failed.error in client.get(response["Location"]).content.decode()
    assert not MarketSeries.objects.filter(symbol="NEW/COIN").exists()
    failed.delete()
    good = io.BytesIO(CSV)
    good.name = "good.csv"
    response = client.post(url, {"file": good, "symbol": "NEW/COIN", "timeframe": ""})
    # Issue 10 item 3: the file is parsed in the background, not inside the request.
    job = UploadJob.objects.get(owner=world["owner"])
    assert response.status_code == 302
    assert response["Location"] == reverse("backtester:data_upload_job", kwargs={"pk": job.pk})
    assert not MarketSeries.objects.filter(symbol="NEW/COIN").exists()
    page = client.get(response["Location"]).content.decode()
    assert f'data-socket="/ws/runs/upload/{job.pk}/"' in page
    upload_job_execute(job_id=job.pk)  # what the worker does
    series = MarketSeries.objects.get(symbol="NEW/COIN")
    assert (series.owner, series.timeframe, series.count) == (world["owner"], "1h", 3)
    job.refresh_from_db()
    assert (job.status, job.series_id, job.data) == ("completed", series.pk, b"")
    done = client.get(response["Location"]).content.decode()
    assert reverse("backtester:data_detail", kwargs={"pk": series.pk}) in done


def test_delete_removes_only_my_own_uploads(world):
    theirs = reverse("backtester:data_delete", kwargs={"pk": world["theirs"].pk})
    shared = reverse("backtester:data_delete", kwargs={"pk": world["shared"].pk})
    mine = reverse("backtester:data_delete", kwargs={"pk": world["mine"].pk})
    owner = _as(world["owner"])
    assert owner.post(theirs).status_code == 404
    assert owner.post(shared).status_code == 404
    assert owner.get(mine).status_code == 405
    assert _as(world["free"]).post(mine).status_code == 403
    assert _as(None).post(mine).status_code == 302
    assert MarketSeries.objects.filter(pk=world["mine"].pk).exists()
    response = owner.post(mine)
    assert response.status_code == 302
    assert not MarketSeries.objects.filter(pk=world["mine"].pk).exists()
    assert MarketSeries.objects.filter(pk=world["theirs"].pk).exists()


def test_fetch_form_names_a_bad_symbol_and_starts_a_job_for_a_good_one(world, fake):
    client = _as(world["owner"])
    url = reverse("backtester:data_fetch")
    form = {"exchange": "binance", "symbol": "BTC/XYZ", "timeframe": "1h", "since": "2024-01-01"}
    response = client.post(url, form)
    assert response.status_code == 400
    assert "Binance has no market BTC/XYZ" in response.content.decode()
    assert not FetchJob.objects.exists()
    form = {**form, "symbol": "SOL/USDT", "until": "2023-12-01"}
    response = client.post(url, form)
    assert response.status_code == 400
    assert "The end date must be after the start date." in response.content.decode()
    del form["until"]
    response = client.post(url, form)
    job = FetchJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("backtester:data_fetch_job", kwargs={"pk": job.pk})
    assert (job.owner, job.series.symbol, job.status) == (world["owner"], "SOL/USDT", "queued")


def test_fetch_job_page_and_status_belong_to_the_jobs_owner(world):
    job = FetchJob.objects.create(owner=world["owner"], series=world["shared"], since_ts=0)
    page = reverse("backtester:data_fetch_job", kwargs={"pk": job.pk})
    status = reverse("run_state", kwargs={"kind": "fetch", "pk": job.pk})
    owner = _as(world["owner"])
    html = owner.get(page).content.decode()
    assert f'data-socket="/ws/runs/fetch/{job.pk}/"' in html
    assert 'role="progressbar"' in html
    assert owner.get(status).json()["status"] == "queued"
    for url in (page, status):
        assert _as(world["other"]).get(url).status_code == 404
        assert _as(world["free"]).get(url).status_code == 403
        assert _as(None).get(url).status_code == 302


# --- the API ------------------------------------------------------------------------------


def _api(user) -> Client:
    return _as(user)


def test_api_lists_shared_series_and_mine_only(world):
    body = _api(world["owner"]).get("/api/v1/market-data/series/").json()
    symbols = {row["symbol"] for row in body["results"]}
    assert symbols == {"BTC/USDT", "ETH/USDT", "MY/COIN"}
    demo_row = next(r for r in body["results"] if r["symbol"] == "ETH/USDT")
    assert demo_row["synthetic"] is True
    assert demo_row["first"] == "2024-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/market-data/series/"),
        ("get", "/api/v1/market-data/series/{theirs}/"),
        ("post", "/api/v1/market-data/fetch-jobs/"),
        ("post", "/api/v1/market-data/series/upload/"),
    ],
)
def test_api_answers_anonymous_with_401_and_free_users_with_403(world, method, path):
    url = path.format(theirs=world["theirs"].pk)
    anonymous = getattr(_api(None), method)(url)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    free = getattr(_api(world["free"]), method)(url)
    assert free.status_code == 403
    assert free.json()["error"]["code"] == "plan_required"


def test_api_series_detail_is_404_for_another_users_upload(world):
    url = f"/api/v1/market-data/series/{world['theirs'].pk}/"
    response = _api(world["owner"]).get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    own = _api(world["other"]).get(url).json()
    assert own["symbol"] == "THEIR/COIN"
    assert own["gap_count"] == 0
    assert own["mine"] is True


def test_api_upload_answers_202_and_parses_in_the_background(world):
    client = _api(world["owner"])
    png = io.BytesIO(b"\x89PNG\r\n\x1a\n0000")
    png.name = "x.csv"
    response = client.post("/api/v1/market-data/series/upload/", {"file": png, "symbol": "X/Y"})
    assert response.status_code == 400  # the format is checked at once
    assert "PNG image" in response.json()["error"]["fields"]["file"][0]
    bad = io.BytesIO(BAD_CSV)
    bad.name = "bad.csv"
    response = client.post("/api/v1/market-data/series/upload/", {"file": bad, "symbol": "X/Y"})
    assert response.status_code == 202
    job = response.json()
    assert (job["kind"], job["status"], job["filename"]) == ("upload", "queued", "bad.csv")
    upload_job_execute(job_id=job["id"])  # what the worker does
    state = client.get(f"/api/v1/market-data/upload-jobs/{job['id']}/").json()
    assert state["status"] == "failed"
    assert "line 3: high 99.0 is below open 100.5" in state["error"]
    assert not MarketSeries.objects.filter(symbol="X/Y").exists()
    good = io.BytesIO(CSV)
    good.name = "good.csv"
    response = client.post("/api/v1/market-data/series/upload/", {"file": good, "symbol": "X/Y"})
    assert response.status_code == 202
    upload_job_execute(job_id=response.json()["id"])
    state = client.get(f"/api/v1/market-data/upload-jobs/{response.json()['id']}/").json()
    assert (state["status"], state["candle_count"]) == ("completed", 3)
    series = MarketSeries.objects.get(pk=state["series"])
    assert series.timeframe == "1h"
    other = _api(world["other"]).get(f"/api/v1/market-data/upload-jobs/{job['id']}/")
    assert other.status_code == 404


def test_api_starts_a_fetch_with_202_and_reports_its_status_to_the_owner_only(world, fake):
    client = _api(world["owner"])
    bad = client.post(
        "/api/v1/market-data/fetch-jobs/",
        {"exchange": "binance", "symbol": "BTC/XYZ", "timeframe": "1h", "since": "2024-01-01"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {"symbol": ["Binance has no market BTC/XYZ"]}
    missing = client.post("/api/v1/market-data/fetch-jobs/", {"exchange": "binance"})
    assert missing.status_code == 400
    assert set(missing.json()["error"]["fields"]) == {"symbol", "timeframe", "since"}
    response = client.post(
        "/api/v1/market-data/fetch-jobs/",
        {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "1h", "since": "2024-01-01"},
    )
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued"
    assert job["series"]["symbol"] == "ETH/USDT"
    url = f"/api/v1/market-data/fetch-jobs/{job['id']}/"
    assert client.get(url).json()["id"] == job["id"]
    assert _api(world["other"]).get(url).status_code == 404


def test_api_delete_removes_only_my_own_upload(world):
    client = _api(world["owner"])
    assert client.delete(f"/api/v1/market-data/series/{world['theirs'].pk}/").status_code == 404
    assert client.delete(f"/api/v1/market-data/series/{world['shared'].pk}/").status_code == 404
    assert client.delete(f"/api/v1/market-data/series/{world['mine'].pk}/").status_code == 204
    assert not MarketSeries.objects.filter(pk=world["mine"].pk).exists()
    assert MarketSeries.objects.filter(pk=world["theirs"].pk).exists()
