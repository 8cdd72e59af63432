"""The Coinbase OAuth redirect round trip in a real browser: our page → the loopback Coinbase
stand-in's authorize endpoint → back to our callback (served by a real daphne process) →
linked; then unlinked with the token revoked at the stand-in."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client

from exchanges.models import AccountSecret, ExchangeAccount
from tests.backtester.backtest_factories import make_user
from tests.conftest import ROOT, _stop, free_port, subprocess_env, wait_for_port
from tests.fakes.coinbase_oauth import CoinbaseOAuthStandIn

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def standin() -> Iterator[CoinbaseOAuthStandIn]:
    server = CoinbaseOAuthStandIn()
    server.serve()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def site(standin, tmp_path) -> Iterator[str]:
    """daphne with the Coinbase settings pointing at the stand-in (the session-wide daphne
    fixture was started without them)."""
    env = subprocess_env()
    env.update(standin.settings())
    port = free_port()
    log = open(tmp_path / "daphne.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "config.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
        log.close()


def test_linking_coinbase_round_trips_through_the_browser_and_unlink_revokes(
    browser, site, standin
):
    user = make_user()
    client = Client()
    client.force_login(user)
    context = browser.new_context()
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": site,
            }
        ]
    )
    page = context.new_page()
    visited: list[str] = []
    page.on("request", lambda r: visited.append(r.url) if r.is_navigation_request() else None)
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))

    page.goto(site + "/exchanges/coinbase/")
    page.fill("#id_label", "Browser Coinbase")
    page.click("#coinbase-link")
    page.wait_for_url(site + "/exchanges/coinbase/")
    assert "Coinbase account “Browser Coinbase” is linked." in page.content()
    assert "1250.75 USDC" in page.inner_text("#coinbase-accounts")

    # The browser itself went to the authorize endpoint and came back to our callback.
    assert any(u.startswith(standin.base_url + "/oauth2/auth?") for u in visited)
    assert any(u.startswith(site + "/exchanges/coinbase/callback/?code=") for u in visited)
    account = ExchangeAccount.objects.get(owner=user, label="Browser Coinbase")
    assert account.status == ExchangeAccount.Status.OK
    assert AccountSecret.objects.filter(account=account).count() == 2
    (token,) = standin.live_tokens()
    assert token.access not in page.content()

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"tr[data-account='{account.pk}'] button.btn-danger")
    page.wait_for_selector("text=revoked at Coinbase")
    assert not ExchangeAccount.objects.filter(pk=account.pk).exists()
    assert standin.live_tokens() == []
    assert failed == []
    context.close()
