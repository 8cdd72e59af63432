import pytest

from tests.backtester.test_results_support import make_backtest, make_user


@pytest.mark.django_db(transaction=True)
def test_scratch(live_server, browser, settings, client):
    settings.ROOT_URLCONF = "tests.backtester.scratch_res_urls"
    user = make_user()
    b, run, _ = make_backtest(user, n=100_000, tf_ms=60_000)
    make_backtest(user, n=100_000, tf_ms=60_000)
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.add_cookies([{"name": "sessionid", "value": cookie, "url": live_server.url}])
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(live_server.url + f"/scratch/{b.pk}/")
    page.wait_for_selector("#chart-histogram .main-svg", timeout=30000)
    page.wait_for_timeout(800)
    page.screenshot(path="/tmp/res/results.png", full_page=True)
    page.locator(".card-grid").screenshot(path="/tmp/res/headline.png")
    page.locator("#metrics-title").locator("xpath=../..").screenshot(path="/tmp/res/metrics.png")
    page.locator("#chart-monthly").screenshot(path="/tmp/res/monthly.png")
    page.locator("#chart-candles-0").screenshot(path="/tmp/res/candles.png")
    page.locator("#chart-equity").screenshot(path="/tmp/res/equity.png")
    page.click("th a:has-text('P&L')")
    page.wait_for_timeout(800)
    page.click("th a:has-text('P&L')")
    page.wait_for_timeout(800)
    page.locator("[data-qf-trades]").screenshot(path="/tmp/res/trades.png")
    page.goto(live_server.url + f"/backtests/compare/?ids={b.pk}&ids={b.pk+1}")
    page.wait_for_selector("#chart-compare .main-svg", timeout=30000)
    page.screenshot(path="/tmp/res/compare.png", full_page=True)
    page.goto(live_server.url + f"/backtests/{b.pk}/trades/?sort=-ret&page=2")
    page.screenshot(path="/tmp/res/tradespage.png", full_page=True)
    r = client.get(f"/backtests/{b.pk}/export/html/")
    open("/tmp/res/report.html", "wb").write(r.content)
    print("ERRORS", errors)
