"""Downloading candles through ccxt from a Binance-compatible fake on loopback: pagination,
incremental runs, dedupe, resume, rate limits, 5xx, gaps, bad symbols, the command, fetch jobs,
the websocket, and the whole path through a real Celery worker process."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import websockets
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import Client
from django.urls import reverse

from backtester.marketdata import store
from backtester.models import FetchJob, MarketSeries
from backtester.services.marketdata import (
    candles_fetch,
    fetch_job_create,
    fetch_job_execute,
)
from config.exceptions import Conflict
from config.runs.consumers import RunConsumer
from exchanges.clients import (
    ExchangeRefused,
    ExchangeUnavailable,
    UnknownSymbol,
    make_client,
)
from tests.backtester.marketdata_fixtures import HOUR, make_user
from tests.conftest import ROOT, arun, clear_run_cache, subprocess_env
from tests.fakes.binance import DEFAULT_NOW_MS, FakeBinance

DAY = 24 * HOUR
JAN_1 = 1_704_067_200_000  # 2024-01-01T00:00Z; the fake's clock says 2024-03-01T00:00Z
DEC_1 = JAN_1 - 31 * DAY


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    server = FakeBinance()
    server.serve()
    try:
        yield server
    finally:
        server.release.set()
        server.stop()


class Sleeps(list):
    """Records the waits the retry policy asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _client(fake: FakeBinance, sleeps: Sleeps | None = None):
    return make_client(
        "binance", url_overrides=fake.base_url, sleep=Sleeps() if sleeps is None else sleeps
    )


def _fetch(fake: FakeBinance, *, since=JAN_1, until=None, symbol="BTC/USDT", tf="1h", **kw):
    client = kw.pop("client", None) or _client(fake)
    return candles_fetch(
        exchange="binance",
        symbol=symbol,
        timeframe=tf,
        since_ts=since,
        until_ts=until,
        client=client,
        **kw,
    )


def _stored(series: MarketSeries) -> np.ndarray:
    return store.load_timestamps(series)


# --- the client ---------------------------------------------------------------------------


def test_ccxt_binance_loads_markets_from_the_fake_with_one_exchange_info_request(fake):
    client = _client(fake)
    market = client.market("ETH/USDT")
    assert market["id"] == "ETHUSDT"
    assert [r.path for r in fake.requests] == ["/api/v3/exchangeInfo"]
    assert client.ohlcv_limit == 1000


def test_an_unknown_symbol_is_a_clear_error_on_the_symbol_field(fake):
    with pytest.raises(UnknownSymbol) as err:
        _client(fake).market("BTC/XYZ")
    assert err.value.message == "Binance has no market BTC/XYZ"
    assert err.value.field == "symbol"


def test_a_429_waits_as_long_as_retry_after_says_then_retries(fake):
    fake.rate_limit_on = {1}
    fake.retry_after = "7"
    sleeps = Sleeps()
    rows = _client(fake, sleeps).fetch_ohlcv_page(
        symbol="BTC/USDT", timeframe="1h", since_ms=JAN_1, limit=10
    )
    assert len(rows) == 10
    assert sleeps == [7.0]
    assert [r.status for r in fake.klines_requests()] == [429, 200]


def test_5xx_answers_are_retried_with_exponential_backoff(fake):
    fake.error_on = {1, 2, 3}
    sleeps = Sleeps()
    rows = _client(fake, sleeps).fetch_ohlcv_page(
        symbol="BTC/USDT", timeframe="1h", since_ms=JAN_1, limit=5
    )
    assert len(rows) == 5
    assert sleeps == [1.0, 2.0, 4.0]


def test_an_exchange_that_keeps_failing_gives_up_after_the_attempt_limit(fake):
    fake.error_on = set(range(1, 100))
    sleeps = Sleeps()
    client = make_client("binance", url_overrides=fake.base_url, sleep=sleeps, max_attempts=4)
    with pytest.raises(ExchangeUnavailable, match="did not answer after 4 attempts"):
        client.fetch_ohlcv_page(symbol="BTC/USDT", timeframe="1h", since_ms=JAN_1)
    assert len(fake.klines_requests()) == 4
    assert sleeps == [1.0, 2.0, 4.0]


def test_a_request_the_exchange_refuses_is_not_retried(fake):
    fake.hard_error_from = 1
    sleeps = Sleeps()
    with pytest.raises(ExchangeRefused, match="Binance refused the request"):
        _client(fake, sleeps).fetch_ohlcv_page(symbol="BTC/USDT", timeframe="1h", since_ms=JAN_1)
    assert sleeps == []
    assert len(fake.klines_requests()) == 1


def test_url_overrides_come_from_the_environment_for_worker_processes(fake, monkeypatch):
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": fake.base_url}))
    client = make_client("binance")
    assert client.exchange.urls["api"]["public"] == fake.base_url + "/api/v3"
    assert client.market("SOL/USDT")["id"] == "SOLUSDT"


# --- the fetch service --------------------------------------------------------------------

pytestmark_db = pytest.mark.django_db


@pytest.mark.django_db
def test_download_pages_within_the_limit_and_stores_every_candle_once(fake):
    progress: list[tuple[float, int]] = []
    result = _fetch(fake, since=DEC_1, progress=lambda f, n: progress.append((f, n)))
    expected = fake.history("1h")
    expected = [t for t in expected if t >= DEC_1]
    klines = fake.klines_requests()
    assert all(int(r.params["limit"]) <= 1000 for r in klines)
    assert result.pages == len(klines) == math.ceil(len(expected) / 1000) == 3
    series = result.series
    assert series.count == len(expected)
    assert np.array_equal(_stored(series), np.array(expected))
    assert (series.exchange, series.symbol, series.timeframe) == ("binance", "BTC/USDT", "1h")
    assert series.source == MarketSeries.Source.CCXT
    assert series.owner_id is None
    # Prices are the exchange's, bit for bit (decimal strings parsed as floats).
    last = fake.candle("BTCUSDT", "1h", expected[-1])
    loaded = store.load_candles(series)
    assert loaded.close[-1] == float(last[4])
    assert loaded.volume[-1] == float(last[5])
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert [n for _, n in progress][-1] == len(expected)


@pytest.mark.django_db
def test_a_second_run_fetches_only_new_candles_and_refreshes_the_last_one(fake):
    first = _fetch(fake)
    series = first.series
    forming_before = store.load_candles(series).close[-1]
    fake.now_ms = DEFAULT_NOW_MS + 5 * HOUR + 30 * 60_000  # five hours and a half later
    fake.reset_log()
    second = _fetch(fake)
    klines = fake.klines_requests()
    assert len(klines) == 1
    assert int(klines[0].params["startTime"]) == DEFAULT_NOW_MS  # the last stored candle
    assert second.candles_received == 6  # the refetched one plus five new hours
    assert second.candles_added == 5
    loaded = store.load_candles(second.series)
    # The candle that was forming at the first run now has its final close.
    final = float(fake.candle("BTCUSDT", "1h", DEFAULT_NOW_MS)[4])
    assert loaded.close[loaded.timestamp == DEFAULT_NOW_MS][0] == final
    assert final != forming_before
    assert len(np.unique(loaded.timestamp)) == len(loaded)


@pytest.mark.django_db
def test_running_again_with_nothing_new_changes_nothing(fake):
    first = _fetch(fake)
    h = first.series.data_hash
    second = _fetch(fake)
    assert second.candles_added == 0
    assert second.series.count == first.series.count
    assert second.series.data_hash == h


@pytest.mark.django_db
def test_an_earlier_start_date_backfills_only_the_missing_head(fake):
    _fetch(fake, since=JAN_1)
    fake.reset_log()
    result = _fetch(fake, since=JAN_1 - 10 * DAY)
    starts = [int(r.params["startTime"]) for r in fake.klines_requests()]
    assert starts == [JAN_1 - 10 * DAY, DEFAULT_NOW_MS]
    assert result.candles_added == 240


@pytest.mark.django_db
def test_an_interrupted_download_keeps_its_pages_and_the_rerun_continues(fake):
    fake.hard_error_from = 3  # the third page fails hard, as if the exchange cut us off
    with pytest.raises(ExchangeRefused):
        _fetch(fake, since=DEC_1)
    series = MarketSeries.objects.get(exchange="binance", symbol="BTC/USDT", timeframe="1h")
    assert series.count == 2000  # two whole pages survived
    fake.hard_error_from = None
    fake.reset_log()
    result = _fetch(fake, since=DEC_1)
    klines = fake.klines_requests()
    assert int(klines[0].params["startTime"]) == DEC_1 + 1999 * HOUR
    assert len(klines) == 1
    expected = [t for t in fake.history("1h") if t >= DEC_1]
    assert np.array_equal(_stored(result.series), np.array(expected))


@pytest.mark.django_db
def test_rate_limits_and_server_errors_mid_download_are_recovered(fake):
    fake.rate_limit_on = {1}
    fake.error_on = {3}
    sleeps = Sleeps()
    result = _fetch(fake, since=DEC_1, client=_client(fake, sleeps))
    expected = [t for t in fake.history("1h") if t >= DEC_1]
    assert result.series.count == len(expected)
    assert [kind for kind, _ in result.retries] == ["rate_limit", "unavailable"]
    assert sleeps == [1.0, 1.0]
    assert [r.status for r in fake.klines_requests()] == [429, 200, 503, 200, 200]


@pytest.mark.django_db
def test_a_gap_in_the_exchange_history_is_skipped_reported_and_not_filled(fake):
    short_start, short_end = JAN_1 + 10 * DAY, JAN_1 + 12 * DAY  # two days
    long_start, long_end = DEC_1 - 70 * DAY, DEC_1 - 5 * DAY  # longer than a page (1000 h)
    fake.gaps = [(short_start, short_end), (long_start, long_end)]
    result = _fetch(fake, since=DEC_1 - 80 * DAY)
    gaps = sorted((g.start_ms, g.end_ms, g.missing_bars) for g in result.gaps)
    assert gaps == [(long_start, long_end, 65 * 24), (short_start, short_end, 48)]
    assert result.empty_pages  # the long gap swallowed a whole page window
    stored = _stored(result.series)
    assert not ((stored >= short_start) & (stored < short_end)).any()
    assert not ((stored >= long_start) & (stored < long_end)).any()
    assert np.array_equal(
        stored, np.array([t for t in fake.history("1h") if t >= DEC_1 - 80 * DAY])
    )


@pytest.mark.django_db
def test_a_bad_symbol_is_refused_and_nothing_is_stored(fake):
    with pytest.raises(UnknownSymbol, match="Binance has no market BTC/XYZ"):
        _fetch(fake, symbol="BTC/XYZ")
    assert not MarketSeries.objects.exists()
    assert fake.klines_requests() == []


@pytest.mark.django_db
def test_an_end_date_stops_the_download_there(fake):
    result = _fetch(fake, since=JAN_1, until=JAN_1 + 3 * DAY)
    assert result.series.count == 72
    assert result.series.last_ts == JAN_1 + 3 * DAY - HOUR


# --- the command ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_fetch_candles_command_draws_a_progress_bar_and_resumes(fake):
    out, err = io.StringIO(), io.StringIO()
    fake.hard_error_from = 2
    with pytest.raises(CommandError, match="refused"):
        call_command(
            "fetch_candles", "binance", "BTC/USDT", "1h", "--since", "2023-12-01",
            "--url-override", fake.base_url, stdout=out, stderr=err,
        )  # fmt: skip
    assert MarketSeries.objects.get().count == 1000
    fake.hard_error_from = None
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "fetch_candles", "binance", "BTC/USDT", "1h", "--since", "2023-12-01",
        "--url-override", fake.base_url, stdout=out, stderr=err,
    )  # fmt: skip
    bar = err.getvalue()
    assert "\r[" in bar
    assert "100.0%" in bar
    assert "#" * 30 in bar
    expected = len([t for t in fake.history("1h") if t >= DEC_1])
    assert f"the series holds {expected:,}" in out.getvalue()
    assert MarketSeries.objects.get().count == expected


@pytest.mark.django_db
def test_fetch_candles_command_names_an_unknown_market(fake):
    with pytest.raises(CommandError, match="Binance has no market BTC/XYZ"):
        call_command(
            "fetch_candles", "binance", "BTC/XYZ", "1h", "--since", "2024-01-01",
            "--url-override", fake.base_url, stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    assert not MarketSeries.objects.exists()


# --- fetch jobs -----------------------------------------------------------------------------


@pytest.fixture
def fake_env(fake, monkeypatch):
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": fake.base_url}))
    clear_run_cache()
    yield fake
    clear_run_cache()


@pytest.mark.django_db
def test_a_fetch_job_runs_to_completion_and_streams_progress_to_its_group(
    fake_env, django_capture_on_commit_callbacks
):
    user = make_user()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = fetch_job_create(
            owner=user, exchange="binance", symbol="btc/usdt", timeframe="1h", since_ts=DEC_1
        )
    assert len(callbacks) == 1  # the task is enqueued after the commit
    assert job.status == FetchJob.Status.QUEUED
    layer = get_channel_layer()

    async def listen() -> str:
        channel = await layer.new_channel()
        await layer.group_add(job.group, channel)
        return channel

    channel = arun(listen())
    with django_capture_on_commit_callbacks(execute=True):  # as the worker's commits would
        fetch_job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == FetchJob.Status.COMPLETED
    assert job.progress == 1.0
    assert job.candles_fetched == job.series.count > 2000
    assert job.requests_made >= 4

    async def drain() -> list[dict]:
        got = []
        while True:
            message = await asyncio.wait_for(layer.receive(channel), 5)
            got.append(message)
            if message["type"] == "run.status" and message["finished"]:
                return got

    messages = arun(drain())
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "run.status"
    assert kinds.count("run.progress") >= 3
    assert messages[-1]["status"] == "completed"
    progress = [m["progress"] for m in messages]
    assert progress == sorted(progress)
    # Running a finished job again is a no-op.
    fetch_job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == FetchJob.Status.COMPLETED


@pytest.mark.django_db
def test_a_failed_fetch_job_keeps_the_reason(fake_env, django_capture_on_commit_callbacks):
    user = make_user()
    with django_capture_on_commit_callbacks(execute=False):
        job = fetch_job_create(
            owner=user, exchange="binance", symbol="ETH/USDT", timeframe="1h", since_ts=JAN_1
        )
    fake_env.error_on = set(range(1, 100))
    from backtester.services import marketdata as service

    original = service.make_client

    def impatient(exchange_id, **kw):
        return original(exchange_id, sleep=lambda s: None, **kw)

    service.make_client = impatient
    try:
        fetch_job_execute(job_id=job.pk)
    finally:
        service.make_client = original
    job.refresh_from_db()
    assert job.status == FetchJob.Status.FAILED
    assert "did not answer after 5 attempts" in job.error


@pytest.mark.django_db
def test_fetch_job_create_refuses_bad_input_and_saves_nothing(fake_env):
    user = make_user()
    with pytest.raises(UnknownSymbol) as err:
        fetch_job_create(
            owner=user, exchange="binance", symbol="BTC/XYZ", timeframe="1h", since_ts=JAN_1
        )
    assert err.value.field == "symbol"
    from config.exceptions import ApplicationError, PlanRequired

    with pytest.raises(ApplicationError) as err:
        fetch_job_create(
            owner=user, exchange="binance", symbol="BTC/USDT", timeframe="7x", since_ts=JAN_1
        )
    assert err.value.field == "timeframe"
    with pytest.raises(ApplicationError) as err:
        fetch_job_create(
            owner=user, exchange="nosuchexchange", symbol="BTC/USDT", timeframe="1h", since_ts=JAN_1
        )
    assert err.value.field == "exchange"
    with pytest.raises(PlanRequired):
        fetch_job_create(
            owner=make_user(pro=False),
            exchange="binance",
            symbol="BTC/USDT",
            timeframe="1h",
            since_ts=JAN_1,
        )
    assert not FetchJob.objects.exists()
    assert not MarketSeries.objects.exists()


@pytest.mark.django_db
def test_a_second_download_of_a_series_waits_for_the_first(fake_env):
    user = make_user()
    fetch_job_create(
        owner=user, exchange="binance", symbol="BTC/USDT", timeframe="1h", since_ts=JAN_1
    )
    with pytest.raises(Conflict, match="already running"):
        fetch_job_create(
            owner=make_user(), exchange="binance", symbol="BTC/USDT", timeframe="1h", since_ts=JAN_1
        )
    assert FetchJob.objects.count() == 1


# --- the websocket consumer -----------------------------------------------------------------


def _communicate(user, job_id: int) -> tuple[bool, int | None, dict | None]:
    async def scenario():
        comm = WebsocketCommunicator(RunConsumer.as_asgi(), f"/ws/runs/fetch/{job_id}/")
        comm.scope["user"] = user
        comm.scope["url_route"] = {"kwargs": {"kind": "fetch", "pk": job_id}}
        connected, code = await comm.connect()
        first = await comm.receive_json_from(timeout=5) if connected else None
        await comm.disconnect()
        # The consumer's queries ran on asgiref's worker thread: close that thread's connection
        # so the test database can be dropped at the end of the session.
        await database_sync_to_async(connections.close_all)()
        return connected, code, first

    return arun(scenario())


@pytest.mark.django_db(transaction=True)
def test_fetch_socket_admits_only_the_jobs_owner_on_pro():
    from django.contrib.auth.models import AnonymousUser

    from tests.backtester.marketdata_fixtures import make_series

    owner = make_user()
    series = make_series()
    job = FetchJob.objects.create(owner=owner, series=series, since_ts=JAN_1)
    connected, _, first = _communicate(owner, job.pk)
    assert connected
    assert (first["type"], first["kind"]) == ("run.status", "fetch")
    assert first["status"] == "queued"
    assert _communicate(make_user(), job.pk)[:2] == (False, 4404)
    assert _communicate(make_user(pro=False), job.pk)[:2] == (False, 4403)
    assert _communicate(AnonymousUser(), job.pk)[:2] == (False, 4401)


# --- the whole path through a real worker ---------------------------------------------------


@pytest.fixture(scope="module")
def worker_fake() -> Iterator[FakeBinance]:
    server = FakeBinance()
    server.serve()
    try:
        yield server
    finally:
        server.release.set()
        server.stop()


@pytest.fixture(scope="module")
def md_worker(django_db_setup, django_db_blocker, worker_fake, tmp_path_factory):
    """A Celery worker process of this module's own, told where the fake exchange is."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    queue = f"md-fetch-{os.getpid()}"
    env["CELERY_TASK_DEFAULT_QUEUE"] = queue
    env["EXCHANGE_URL_OVERRIDES"] = json.dumps({"binance": worker_fake.base_url})
    log = tmp_path_factory.mktemp("mdworker") / "worker.log"
    cmd = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue,
        "--pool", "threads", "--concurrency", "2", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "-n", f"md-{os.getpid()}@%h",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield queue
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_page_starts_a_download_that_a_real_worker_runs_while_the_socket_shows_progress(
    md_worker, worker_fake, daphne_server, monkeypatch, settings
):
    settings.CELERY_TASK_DEFAULT_QUEUE = md_worker
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": worker_fake.base_url}))
    clear_run_cache()
    worker_fake.hold_from = 2  # the second page waits until the test has seen progress
    worker_fake.release.clear()
    user = make_user()
    client = Client()
    client.force_login(user)
    response = client.post(
        reverse("backtester:data_fetch"),
        {"exchange": "binance", "symbol": "SOL/USDT", "timeframe": "1h", "since": "2023-12-01"},
    )
    assert response.status_code == 302
    job = FetchJob.objects.get(owner=user)
    assert response["Location"] == reverse("backtester:data_fetch_job", kwargs={"pk": job.pk})
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    ws_url = daphne_server.replace("http://", "ws://") + f"/ws/runs/fetch/{job.pk}/"

    async def scenario() -> list[dict]:
        seen: list[dict] = []
        async with websockets.connect(
            ws_url, additional_headers={"Cookie": cookie}, origin=daphne_server
        ) as ws:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                seen.append(message)
                if 0 < message["progress"] < 1 and not worker_fake.release.is_set():
                    worker_fake.release.set()  # mid-way seen: let the download finish
                if message["type"] == "run.status" and message["finished"]:
                    return seen

    seen = arun(scenario())
    assert any(0 < m["progress"] < 1 for m in seen)
    assert seen[-1]["status"] == "completed"
    job.refresh_from_db()
    assert job.status == FetchJob.Status.COMPLETED
    expected = len([t for t in worker_fake.history("1h") if t >= DEC_1])
    assert job.series.count == expected
    status = client.get(reverse("run_state", kwargs={"kind": "fetch", "pk": job.pk})).json()
    assert status["status"] == "completed"
    assert status["series"]["count"] == expected


@pytest.mark.django_db
def test_a_job_whose_worker_died_no_longer_blocks_a_new_download(fake_env):
    from datetime import timedelta

    from django.utils import timezone

    from config.runs import lifecycle

    user = make_user()
    stuck = fetch_job_create(
        owner=user, exchange="binance", symbol="BTC/USDT", timeframe="1h", since_ts=JAN_1
    )
    silent = timezone.now() - lifecycle.stale_after() - timedelta(seconds=1)
    FetchJob.objects.filter(pk=stuck.pk).update(
        status=FetchJob.Status.RUNNING, started_at=silent, heartbeat_at=silent
    )
    assert lifecycle.sweep() == [("fetch", stuck.pk)]
    fresh = fetch_job_create(
        owner=user, exchange="binance", symbol="BTC/USDT", timeframe="1h", since_ts=JAN_1
    )
    assert fresh.pk != stuck.pk
    assert fresh.series_id == stuck.series_id
