"""A real browser against the production shape served by daphne: visitor and demo user."""

from __future__ import annotations

import pytest

from accounts.services import demo_user_ensure

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_visitor_sees_home_and_pricing_then_demo_user_signs_in(browser, daphne_server):
    demo_user_ensure(email="demo@example.com", password="demo-pass-for-test-2")
    page = browser.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if "127.0.0.1" not in r.url else None)

    page.goto(daphne_server + "/")
    assert "$39.99" in page.content()
    page.click("text=Sign in")
    page.fill("input[name=login]", "demo@example.com")
    page.fill("input[name=password]", "demo-pass-for-test-2")
    page.click("form button[type=submit]")
    page.wait_for_url(daphne_server + "/dashboard/")
    assert "demo@example.com" in page.content()
    css = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert css  # the stylesheet loaded from our own static files
    page.close()
    assert failed == []
    assert external == []  # no CDN, nothing from the internet
