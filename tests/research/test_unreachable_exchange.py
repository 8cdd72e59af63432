"""Issue 10 item 22: a candle download or a watchlist saved against an exchange that cannot be
reached no longer holds the form; the work runs in the background (the shared run lifecycle,
with live progress) and says plainly "cannot reach Binance (network)"; a new watchlist in the
embedded shape looks at the demo data by default.

"Unreachable" here is real: a loopback port nobody listens on refuses the connection, exactly
as a host that is down does; nothing leaves the machine."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from backtester.forms.scanner import WatchlistForm
from backtester.models import FetchJob, ScanRun, Watchlist
from backtester.services.marketdata import fetch_job_execute
from backtester.services.scan_watchlists import watchlist_create
from backtester.services.scanner import scan_execute, scan_start
from exchanges.clients import ExchangeUnreachable, make_client
from tests.backtester.backtest_factories import make_user
from tests.conftest import clear_run_cache, free_port

NETWORK = "cannot reach Binance (network)"
JAN_1 = 1_704_067_200_000


@pytest.fixture
def unreachable(monkeypatch):
    """Binance pointed at a loopback port with nothing behind it."""
    monkeypatch.setenv(
        "EXCHANGE_URL_OVERRIDES", json.dumps({"binance": f"http://127.0.0.1:{free_port()}"})
    )
    clear_run_cache()
    yield
    clear_run_cache()


def test_a_refused_connection_is_named_a_network_problem_after_two_attempts(unreachable):
    client = make_client("binance", sleep=lambda _: None)
    with pytest.raises(ExchangeUnreachable) as err:
        client.load_markets()
    assert str(err.value.message).startswith(NETWORK)
    assert client.requests_made == 2  # not five rounds of backoff for a host that is not there


@pytest.mark.django_db
def test_a_download_against_an_unreachable_exchange_starts_and_fails_plainly(
    unreachable, django_capture_on_commit_callbacks
):
    user = make_user()
    client = Client()
    client.force_login(user)
    form = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", "since": "2024-01-01"}
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = client.post(reverse("backtester:data_fetch"), form)
    # Not held in the request: the page of the background job answers at once.
    assert response.status_code == 302, response.content[:1000]
    job = FetchJob.objects.get(owner=user)
    assert response["Location"] == reverse("backtester:data_fetch_job", kwargs={"pk": job.pk})
    assert len(sent) == 1  # the job's task, sent after the commit
    page = client.get(response["Location"]).text
    assert f'data-socket="/ws/runs/fetch/{job.pk}/"' in page  # live progress
    fetch_job_execute(job_id=job.pk)  # what the worker does
    job.refresh_from_db()
    assert job.status == FetchJob.Status.FAILED
    assert job.error.startswith(NETWORK)
    assert NETWORK in client.get(response["Location"]).text


@pytest.mark.django_db
def test_a_watchlist_saves_while_the_exchange_is_unreachable_and_its_scan_says_why(
    unreachable, django_capture_on_commit_callbacks
):
    user = make_user()
    watchlist = watchlist_create(
        user=user, name="Majors", exchange="binance", timeframe="1h", symbols="BTC/USDT"
    )
    assert Watchlist.objects.filter(pk=watchlist.pk).exists()
    with django_capture_on_commit_callbacks(execute=False):
        run = scan_start(user=user, watchlist=watchlist)
    scan_execute(scan_id=run.pk)
    run = ScanRun.objects.get(pk=run.pk)
    said = " ".join([run.error, *run.warnings])
    assert NETWORK in said, (run.status, said)


def test_a_new_watchlist_looks_at_the_demo_data_in_the_embedded_shape(settings):
    settings.REDIS_URL = ""
    assert WatchlistForm().fields["exchange"].initial() == "demo"
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    assert WatchlistForm().fields["exchange"].initial() == "binance"
