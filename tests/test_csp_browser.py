"""Every page carries a Content-Security-Policy that the site's own assets satisfy (issue 10,
item 6): a Pro user with data walks the whole site in the real browser (every link it can
reach from the dashboard) and no page reports a policy violation or a console error."""

from __future__ import annotations

from collections import deque
from urllib.parse import urldefrag, urlsplit

import pytest
from django.test import Client

from tests.accounts.test_permission_matrix import World

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Links that change something, download a file or leave the HTML site.
SKIP = (
    "/accounts/logout/",
    "delete",
    "revoke",
    "cancel",
    "/export",
    "/api/",
    "/admin/",
    "/static/",
    "/media/",
    "/metrics",
    "/accounts/billing/portal/",
    "/accounts/billing/checkout/",
    "/profile/export/",
)
MAX_PAGES = 150
START = [
    "/",
    "/dashboard/",
    "/accounts/profile/",
    "/accounts/2fa/",
    "/accounts/password/change/",
    "/accounts/email/",
    "/accounts/billing/",
]
COLLECT = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") +
                    " at " + (e.sourceFile || "") + ":" + e.lineNumber);
});
"""


def _world_with_data() -> World:
    w = World()
    for name in (
        "strategy",
        "backtest",
        "upload",
        "fetch_job",
        "optimization_row",
        "walkforward_job",
        "completed_walkforward",
        "montecarlo_run",
        "stress_run",
        "watchlist",
        "alert",
    ):
        getattr(w, name)
    return w


def _wanted(url: str, origin: str) -> bool:
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != origin:
        return False
    return not any(s in parts.path for s in SKIP)


def test_every_page_has_a_csp_and_no_violations(browser, daphne_server):
    world = _world_with_data()
    client = Client()
    client.force_login(world.owner)
    session = client.cookies["sessionid"].value

    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": session, "url": daphne_server}])
    context.add_init_script(COLLECT)
    page = context.new_page()
    console: list[str] = []
    page.on(
        "console",
        lambda m: console.append(f"{page.url}: {m.text}") if m.type == "error" else None,
    )

    queue = deque(daphne_server + p for p in START)
    queue.extend(
        daphne_server + p
        for p in (
            f"/backtests/{world.backtest.pk}/",
            f"/montecarlo/{world.montecarlo_run.pk}/",
            f"/stress/{world.stress_run.pk}/",
        )
    )
    seen: set[str] = set()
    problems: list[str] = []
    visited = 0
    while queue and visited < MAX_PAGES:
        url = urldefrag(queue.popleft()).url
        if url in seen or not _wanted(url, daphne_server):
            continue
        seen.add(url)
        response = page.goto(url)
        if response is None or "text/html" not in (response.headers.get("content-type") or ""):
            continue
        visited += 1
        page.wait_for_load_state("networkidle")
        header = response.headers.get("content-security-policy", "")
        if (
            "script-src 'self'" not in header
            or "'unsafe-inline'" in header.split("script-src", 1)[1].split(";", 1)[0]
        ):
            problems.append(f"{url}: no strict script policy ({header or 'no header'})")
        problems.extend(f"{url}: {v}" for v in page.evaluate("window.__csp || []"))
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            if href not in seen:
                queue.append(href)
    context.close()
    assert visited >= 25, f"the walk reached only {visited} pages: {sorted(seen)}"
    assert any("/montecarlo/" in u for u in seen)
    assert any("/stress/" in u for u in seen)
    assert problems == []
    assert [c for c in console if "Content Security Policy" in c or "Refused" in c] == []
