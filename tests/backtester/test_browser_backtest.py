"""A real browser runs a preset backtest as the demo user: the form, the live page with its
progress bar and growing equity chart fed by a real worker, the results, the trades CSV."""

from __future__ import annotations

import csv
import io
import os
import socket
from pathlib import Path

import pytest
from django.conf import settings

from accounts.services import demo_user_ensure
from backtester.models import Backtest, BacktestResult
from backtester.services.marketdata import demo_seed
from config.celery import app

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "demo@example.com"
PASSWORD = "demo-pass-browser-4"


def _consume(on: bool) -> None:
    """Hold or release the session worker's queue (see test_backtests_live.py)."""
    worker = f"test-{os.getpid()}@{socket.gethostname()}"
    method = app.control.add_consumer if on else app.control.cancel_consumer
    assert method(settings.CELERY_TASK_DEFAULT_QUEUE, destination=[worker], reply=True, timeout=10)


def test_demo_user_runs_a_preset_and_downloads_the_trades(
    browser, daphne_server, celery_worker_process
):
    demo_user_ensure(email=EMAIL, password=PASSWORD)
    demo_seed()
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if "127.0.0.1" not in r.url else None)
    live_paths: list[int] = []
    page.expose_function("reportLivePaths", lambda count: live_paths.append(int(count)))

    page.goto(daphne_server + "/accounts/login/")
    page.fill("input[name=login]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(daphne_server + "/dashboard/")

    # The quick path: Backtests → Run a preset → the form, pre-filled.
    page.click("nav >> text=Backtests")
    page.select_option("#quick-preset", "rsi_reversion")
    page.click("text=Set up")
    page.wait_for_selector("#backtest-form")
    assert page.input_value("select[name=strategy]") == "preset:rsi_reversion"
    page.select_option("select[name=timeframe]", "1h")
    boxes = page.locator("#series-options input[type=checkbox]:visible")
    labels = page.locator("#series-options .check:visible label").all_inner_texts()
    assert all("1h" in text and "Synthetic" in text for text in labels)
    assert boxes.count() == 3  # BTC, ETH and SOL at 1h; the other timeframes are hidden
    page.check("#series-options .check:visible:has-text('BTC/USDT') input")
    page.fill("input[name=taker_fee]", "0.08")

    _consume(False)  # hold the run until the page listens, so the live part is observable
    try:
        page.click("#run-backtest")
        page.wait_for_url("**/backtests/*/")
        page.wait_for_selector("#live-state[data-state=open]")
        # Count the live equity chart's drawn lines as they appear (survives nothing: the
        # page reloads itself when the run ends, so record them from here).
        page.evaluate(
            """() => {
              const target = document.getElementById('live-equity');
              new MutationObserver(() => {
                const n = target.querySelectorAll('.scatterlayer path').length;
                if (n) { window.reportLivePaths(n); }
              }).observe(target, {childList: true, subtree: true});
            }"""
        )
    finally:
        _consume(True)

    page.wait_for_selector("#results", timeout=60_000)
    assert page.inner_text("#run-percent").strip() == "100 %"
    assert page.get_attribute("#bt-status", "data-status") == "completed"
    assert live_paths, "the live equity chart was never drawn while the backtest ran"
    # The results' equity chart: Plotly's SVG with a line path inside the chart div.
    page.wait_for_selector("#chart-equity svg .scatterlayer path", timeout=30_000)

    backtest = Backtest.objects.get(owner__email=EMAIL)
    assert backtest.status == Backtest.Status.COMPLETED
    assert backtest.settings["taker_fee"] == pytest.approx(0.0008)
    result = BacktestResult.objects.get(backtest=backtest)
    assert result.trade_count > 0

    with page.expect_download() as info:
        page.click("text=Trades CSV")
    download = info.value
    text = Path(download.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:6] == ["seq", "symbol", "side", "qty", "entry_time", "exit_time"]
    assert "pnl" in rows[0]
    assert len(rows) - 1 == result.trade_count
    assert rows[1][1] == "BTC/USDT"

    page.close()
    assert page_errors == []
    assert external == []
