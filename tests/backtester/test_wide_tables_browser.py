"""Wide tables on a 1366 x 768 laptop screen: the key columns stay reachable.

For each key cell (a trade's bars held and exit reason; a walk-forward window's out-of-sample
columns; an optimization row's Backtest button) the real browser measures bounding boxes: the
cell is inside the viewport, or inside a horizontally scrolling table box that is itself fully
on screen, and scrolling that box (not the page) brings the cell fully into view."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from backtester.models import WalkForwardJob
from backtester.services.optimization import optimization_create
from backtester.services.walkforward import walkforward_create, walkforward_execute
from tests.backtester.backtest_factories import make_series, make_strategy, make_user
from tests.backtester.test_results_support import make_backtest
from tests.research.optimize_support import request_args
from tests.research.test_optimize_pages import _finish

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
VIEWPORT = {"width": 1366, "height": 768}

# Runs in the page. A cell counts as shown when its whole box is visible: inside the viewport
# and inside every ancestor that clips overflow. Otherwise it must sit in a horizontally
# scrolling box whose scrollbar is on screen while the cell's row is (a scrollbar below the
# fold hides the columns as well as no scrollbar would), and scrolling that box must show it.
MEASURE = """
(el) => {
  const vw = document.documentElement.clientWidth, vh = window.innerHeight;
  const box = (r) => ({left: r.left, right: r.right, top: r.top, bottom: r.bottom});
  const visible = () => {
    const r = el.getBoundingClientRect();
    let left = Math.max(r.left, 0), right = Math.min(r.right, vw);
    for (let p = el.parentElement; p && p !== document.documentElement; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== "visible") {
        const pr = p.getBoundingClientRect();
        left = Math.max(left, pr.left);
        right = Math.min(right, pr.right);
      }
    }
    return {cell: box(r), shown: r.width > 0 && right - left >= r.width - 0.5};
  };
  const page = {scrollWidth: document.documentElement.scrollWidth, clientWidth: vw};
  // Bring the row to the middle of the screen by scrolling the page down only (scrollIntoView
  // would also scroll the table box sideways, which is what is being measured).
  window.scrollBy(0, el.getBoundingClientRect().top - vh / 2);
  const first = visible();
  if (first.shown) return {how: "viewport", page, ...first};
  let scroller = el.parentElement;
  while (scroller && scroller !== document.body) {
    const style = getComputedStyle(scroller);
    if (/(auto|scroll)/.test(style.overflowX) && scroller.scrollWidth > scroller.clientWidth) break;
    scroller = scroller.parentElement;
  }
  if (!scroller || scroller === document.body) return {how: "hidden", page, ...first};
  const sr = scroller.getBoundingClientRect();
  const scrollbarOnScreen = sr.bottom <= vh && sr.left >= 0 && sr.right <= vw;
  scroller.scrollLeft += first.cell.right - sr.right + 1;
  const after = visible();
  scroller.scrollLeft = 0;
  return {how: "scroller", page, scroller: box(sr), scrollbarOnScreen, ...after};
}
"""


def _reachable(page, selector: str) -> None:
    cells = page.locator(selector)
    assert cells.count() > 0, f"no {selector} on {page.url}"
    where = cells.first.evaluate(MEASURE)
    assert where["page"]["scrollWidth"] <= where["page"]["clientWidth"] + 1, (
        f"the page itself is wider than the screen ({where['page']}) at {selector}"
    )
    if where["how"] == "viewport":
        return
    assert where["how"] == "scroller", f"{selector} is cut off with no scroll box: {where}"
    assert where["scrollbarOnScreen"], (
        f"{selector} is cut off; the scrollbar is off screen: {where}"
    )
    assert where["shown"], f"{selector} cannot be scrolled into view: {where}"


def _signed_in_page(browser, base: str, user):
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport=VIEWPORT)
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base}]
    )
    return context, context.new_page()


def test_key_columns_are_reachable_at_1366_px(browser, daphne_server):
    owner = make_user()
    backtest, _, _ = make_backtest(owner, n=900)
    series = make_series(n=1200, seed=8)
    strategy = make_strategy(owner)
    job = optimization_create(
        **request_args(
            owner,
            strategy,
            series,
            ranges={"fast": {"low": 5, "high": 25, "step": 5}, "slow": [20, 30, 40, 60]},
        )
    )
    job = _finish(job)
    walk = walkforward_create(
        **request_args(owner, strategy, series), train=400, test=200, unit="bars"
    )
    walkforward_execute(job_id=walk.pk)
    walk.refresh_from_db()
    assert walk.status == WalkForwardJob.Status.COMPLETED, walk.error

    context, page = _signed_in_page(browser, daphne_server, owner)
    try:
        page.goto(daphne_server + reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk}))
        page.wait_for_selector("[data-qf-trades] table")
        for column in (12, 13):  # bars held, exit reason
            _reachable(page, f"[data-qf-trades] tbody tr:first-child td:nth-child({column})")

        page.goto(daphne_server + reverse("backtester:walkforward_detail", kwargs={"pk": walk.pk}))
        page.wait_for_selector("#windows-table")
        for column in range(7, 13):  # OOS objective, CAGR, return, max DD, trades, efficiency
            _reachable(page, f"#windows-table tbody tr:first-child td:nth-child({column})")

        page.goto(daphne_server + reverse("backtester:optimization_detail", kwargs={"pk": job.pk}))
        page.wait_for_selector("#results-table")
        _reachable(page, "#results-table tbody tr:first-child button:has-text('Backtest')")
    finally:
        context.close()
