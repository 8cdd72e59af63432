"""In a real browser against daphne: Swagger UI and Redoc render the API from our own static
files (no request leaves 127.0.0.1), and a new API key is shown once with a working copy button."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import ApiKey
from tests.accounts.api_support import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _signed_in_context(browser, base_url: str, user, **kwargs):
    """A browser context carrying a real session of ``user`` (made by the test client)."""
    client = Client()
    client.force_login(user)
    context = browser.new_context(**kwargs)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": base_url,
            }
        ]
    )
    return context


def _is_local(url: str) -> bool:
    return url.startswith(("data:", "blob:")) or urlsplit(url).hostname == "127.0.0.1"


class Traffic:
    """What a page tried to fetch. ``left`` holds requests for another host that reached the
    network layer (Playwright's router sees only those; they are aborted, and must not exist).
    ``refused`` holds ones the browser refused before sending (the docs pages' CSP)."""

    def __init__(self, page) -> None:
        self.left: list[str] = []
        self.refused: list[str] = []
        self.failed: list[str] = []
        page.route(lambda url: not _is_local(url), self._abort)
        page.on("requestfailed", self._failed)

    def _abort(self, route) -> None:
        self.left.append(route.request.url)
        route.abort()

    def _failed(self, request) -> None:
        reason = (request.failure or "").lower()
        if not _is_local(request.url) and (reason == "csp" or "blocked_by_csp" in reason):
            self.refused.append(request.url)
        else:
            self.failed.append(f"{request.url} {request.failure}")


def test_swagger_ui_and_redoc_render_the_api_without_leaving_the_machine(browser, daphne_server):
    context = _signed_in_context(browser, daphne_server, make_user(pro=False))
    page = context.new_page()
    traffic = Traffic(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(daphne_server + "/api/v1/docs/")
    page.wait_for_selector(".opblock-summary-path >> text=/api/v1/backtests/{id}/cancel/")
    assert page.locator(".opblock").count() >= 20
    page.wait_for_selector("text=Authorize")  # the Bearer key can be entered

    page.goto(daphne_server + "/api/v1/redoc/")
    page.locator("h2", has_text="Submit a backtest").first.wait_for(timeout=30_000)
    assert page.locator("h2", has_text="Cancel a queued or running backtest").count() >= 1
    text = page.inner_text("body")
    assert "Authorization: Bearer qf_<prefix>_<secret>" in text  # how to authenticate
    assert "apiKey" in text  # each operation names the scheme

    context.close()
    assert traffic.left == []  # nothing went out
    assert traffic.failed == []
    # Redoc's bundle asks its maker's CDN for a logo; the page's CSP refuses it in the browser.
    assert set(traffic.refused) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
    assert errors == []


def test_the_docs_are_public(browser, daphne_server):
    page = browser.new_page()
    traffic = Traffic(page)
    response = page.goto(daphne_server + "/api/v1/docs/")
    assert response.status == 200
    page.wait_for_selector(".opblock")
    page.close()
    assert traffic.left == []
    assert traffic.failed == []
    assert traffic.refused == []


def test_a_new_key_is_shown_once_and_the_copy_button_puts_it_on_the_clipboard(
    browser, daphne_server
):
    user = make_user()
    context = _signed_in_context(
        browser,
        daphne_server,
        user,
        permissions=["clipboard-read", "clipboard-write"],
    )
    page = context.new_page()
    traffic = Traffic(page)
    page.goto(daphne_server + "/accounts/profile/#api-keys")
    page.fill("#apikey-name", "browser test")
    page.click("#apikey-create-form button[type=submit]")
    page.wait_for_selector("#api-key-secret")
    key = page.input_value("#api-key-secret")
    row = ApiKey.objects.get(user=user)
    assert key.startswith(f"qf_{row.prefix}_")
    assert len(key) == 55

    page.click("#api-key-copy")
    page.wait_for_selector("#api-key-copy >> text=Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key

    page.click("#api-key-done")
    page.wait_for_selector("#api-key-list")
    assert key not in page.content()
    assert row.masked in page.content()

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"tr[data-key-prefix='{row.prefix}'] button")
    page.wait_for_selector(f"tr[data-key-prefix='{row.prefix}'] >> text=Revoked")
    row.refresh_from_db()
    assert row.revoked_at is not None
    context.close()
    assert traffic.left == []
    assert traffic.failed == []
    assert traffic.refused == []
