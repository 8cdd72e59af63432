"""The upload form after a mistake: dates quoted as the file writes them, and the chosen file
kept on the server so a second try does not mean choosing it again.

Files are parsed in the background (an upload job): a refusal found while reading the candles
is shown on the job's page; the form itself refuses what it can check at once (the symbol, the
size, the format), and then keeps the file for the next try."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from backtester.models import MarketSeries, UploadJob
from backtester.services.marketdata import upload_job_execute
from tests.backtester.test_marketdata_uploads import _csv
from tests.backtester.test_results_support import make_user

pytestmark = pytest.mark.django_db
URL = reverse("backtester:data_upload")


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _kept_token(html: str) -> str:
    match = re.search(r'<input type="hidden" name="kept" value="([0-9a-f]*)"', html)
    assert match, "the form carries the kept file's token"
    return match.group(1)


def _job_page_after_the_worker(client: Client, response) -> str:
    """Follow the form's redirect to its upload job, run the job as the worker does, and
    return the job's page."""
    assert response.status_code == 302, response.content.decode()[:2000]
    job = UploadJob.objects.latest("pk")
    assert response["Location"] == reverse("backtester:data_upload_job", kwargs={"pk": job.pk})
    upload_job_execute(job_id=job.pk)
    page = client.get(response["Location"])
    assert page.status_code == 200
    return page.content.decode()


def test_an_out_of_order_iso_file_is_refused_with_its_own_iso_dates_not_epoch_ms():
    lines = _csv(6).decode().splitlines()
    lines[3], lines[4] = lines[4], lines[3]  # line 5 of the file goes back in time
    body = "\n".join(lines).encode()
    client = _client(make_user())
    response = client.post(URL, {"file": SimpleUploadedFile("btc.csv", body), "symbol": "BTC/USDT"})
    html = _job_page_after_the_worker(client, response)
    later, earlier = lines[3].split(",")[0], lines[4].split(",")[0]
    assert (
        f"line 5: timestamp &#x27;{earlier}&#x27; is not after the previous one &#x27;{later}&#x27;"
        in html
    )
    assert not re.search(r"\b17\d{11}\b", html)  # no epoch milliseconds anywhere on the page
    assert not MarketSeries.objects.filter(symbol="BTC/USDT").exists()


def test_a_refused_upload_keeps_the_file_and_the_second_try_uses_the_same_file():
    user = make_user()
    client = _client(user)
    first = client.post(URL, {"file": SimpleUploadedFile("hourly.csv", _csv(48)), "symbol": ""})
    assert first.status_code == 400
    html = first.content.decode()
    assert 'id="kept-file"' in html
    assert "hourly.csv" in html
    token = _kept_token(html)
    assert token

    # Fix the symbol and send again, choosing no file: the kept one is used.
    second = client.post(URL, {"kept": token, "symbol": "BTC/USDT", "timeframe": ""})
    _job_page_after_the_worker(client, second)
    series = MarketSeries.objects.get(owner=user, symbol="BTC/USDT")
    assert (series.timeframe, series.count) == ("1h", 48)
    # Used up: the same token finds nothing any more.
    again = client.post(URL, {"kept": token, "symbol": "ETH/USDT"})
    assert again.status_code == 400
    assert "no longer kept; choose it again" in again.content.decode()


def test_a_timeframe_that_does_not_match_the_file_is_named_on_the_job_page():
    client = _client(make_user())
    response = client.post(
        URL,
        {
            "file": SimpleUploadedFile("hourly.csv", _csv(48)),
            "symbol": "BTC/USDT",
            "timeframe": "1m",
        },
    )
    assert "The candles are 1h apart, not 1m" in _job_page_after_the_worker(client, response)


def test_a_form_error_before_reading_the_file_keeps_it_too():
    client = _client(make_user())
    response = client.post(URL, {"file": SimpleUploadedFile("eth.csv", _csv(24)), "symbol": ""})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="kept-file"' in html
    assert "eth.csv" in html
    assert _kept_token(html)


def test_a_kept_file_is_its_owners_alone():
    owner, other = make_user(), make_user()
    first = _client(owner).post(
        URL, {"file": SimpleUploadedFile("mine.csv", _csv(24)), "symbol": ""}
    )
    token = _kept_token(first.content.decode())
    stolen = _client(other).post(URL, {"kept": token, "symbol": "BTC/USDT"})
    assert stolen.status_code == 400
    assert "no longer kept; choose it again" in stolen.content.decode()
    assert not MarketSeries.objects.filter(owner=other).exists()


def test_no_file_and_nothing_kept_asks_for_a_file():
    response = _client(make_user()).post(URL, {"symbol": "BTC/USDT"})
    assert response.status_code == 400
    assert "Choose a file to upload." in response.content.decode()
    assert 'id="kept-file"' not in response.content.decode()
