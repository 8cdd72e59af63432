"""A real browser on the scanner: the scan button, the live progress fed by a real worker over
the websocket, the polling fallback when no websocket can open, and the results page."""

from __future__ import annotations

import os
import socket

import pytest
from django.conf import settings
from django.test import Client

from backtester.models import ScanRun
from config.celery import app
from tests.research.scanner_support import demo_market, demo_watchlist, make_user

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A WebSocket that never connects: it reports a dropped connection (1006) at once, as a proxy
# that does not pass websockets would.
NO_WEBSOCKETS = """
window.WebSocket = function () {
  var socket = new EventTarget();
  socket.readyState = 3;
  socket.close = function () {};
  socket.send = function () {};
  setTimeout(function () {
    var event = new Event("close");
    event.code = 1006;
    socket.dispatchEvent(event);
  }, 10);
  return socket;
};
window.WebSocket.OPEN = 1;
"""


def _consume(on: bool) -> None:
    """Hold or release the session worker's queue, so the page is open before the scan runs."""
    worker = f"test-{os.getpid()}@{socket.gethostname()}"
    method = app.control.add_consumer if on else app.control.cancel_consumer
    assert method(settings.CELERY_TASK_DEFAULT_QUEUE, destination=[worker], reply=True, timeout=10)


def _signed_in_page(browser, base_url: str, user):
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": base_url,
            }
        ]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def _run_from_the_scanner_page(page, base_url: str) -> None:
    page.goto(base_url + "/scanner/")
    _consume(False)
    try:
        page.click("#watchlists >> text=Scan now")
        page.wait_for_url("**/scanner/scans/*/")
        page.wait_for_selector("#run-live")
    except BaseException:
        _consume(True)
        raise


def test_the_scan_button_shows_live_progress_then_every_symbols_outcome(
    browser, daphne_server, celery_worker_process
):
    demo_market()
    user = make_user()
    demo_watchlist(user)
    page, errors = _signed_in_page(browser, daphne_server, user)
    stages: list[str] = []
    page.expose_function("reportStage", lambda text: stages.append(text))
    _run_from_the_scanner_page(page, daphne_server)
    try:
        page.wait_for_selector("#live-state[data-state=open]")
        page.evaluate(
            """() => {
              const stage = document.getElementById('run-stage');
              new MutationObserver(() => window.reportStage(stage.textContent))
                .observe(stage, {childList: true, characterData: true, subtree: true});
            }"""
        )
    finally:
        _consume(True)
    page.wait_for_selector("#scan-results", timeout=60_000)  # the page reloads when done
    run = ScanRun.objects.get(owner=user)
    assert run.status == ScanRun.Status.COMPLETED
    assert "Scanning" in stages or "Saving results" in stages
    assert page.inner_text("#scan-status") == "Completed"
    assert page.locator("#scan-results tbody tr").count() == 4
    assert page.get_attribute("#scan-results tbody tr >> nth=0", "data-signal") == "BUY"
    assert "BUY 1" in page.inner_text("#scan-counts")
    assert errors == []


def test_without_websockets_the_scan_page_polls_until_the_scan_is_done(
    browser, daphne_server, celery_worker_process
):
    demo_market()
    user = make_user()
    demo_watchlist(user)
    page, errors = _signed_in_page(browser, daphne_server, user)
    page.add_init_script(NO_WEBSOCKETS)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/state/") else None)
    _run_from_the_scanner_page(page, daphne_server)
    try:
        page.wait_for_selector("#live-state[data-state=polling]")
        assert polls  # asked at least once while the scan waited in the queue
    finally:
        _consume(True)
    page.wait_for_selector("#scan-results", timeout=60_000)
    assert page.inner_text("#scan-status") == "Completed"
    assert page.locator("#scan-results tbody tr").count() == 4
    assert errors == []


def test_new_signals_of_a_background_scan_appear_on_the_scanner_page(browser, daphne_server):
    from backtester.services.scanner import _new_scan, scan_execute

    demo_market()
    user = make_user()
    watchlist = demo_watchlist(user, notify=True)
    page, errors = _signed_in_page(browser, daphne_server, user)
    page.goto(daphne_server + "/scanner/")
    page.wait_for_selector("#scanner-notices[data-live='1']", state="attached")
    run = scan_execute(scan_id=_new_scan(watchlist, trigger=ScanRun.Trigger.SCHEDULE).pk)
    notice = page.wait_for_selector("#scanner-notices .alert")
    text = notice.inner_text()
    assert "Demo majors: 2 new signals" in text
    assert "BUY BUY/USDT" in text
    assert "SELL SELL/USDT" in text
    assert notice.query_selector("a").get_attribute("href") == f"/scanner/scans/{run.pk}/"
    assert errors == []
