"""The follower's dashboard in a real browser: the charts draw, the audit trail filters, the CSV
link follows the filter, and a copy that changes state on the server shows up without a
reload (Channels socket → the page fetches itself → sections swapped)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from copytrading.models import CopyDecision, CopyOrder
from tests.copytrading.conftest import build_copy_setup
from tests.copytrading.test_browser import _signed_in_page
from tests.copytrading.test_dashboards import decide, make_fill, make_order

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_follower_dashboard_draws_filters_and_updates_live(browser, daphne_server):
    s = build_copy_setup()
    t = timezone.now()
    done_fill = make_fill(s.leader, at=t - timedelta(seconds=30), amount="0.5", price="60000")
    done = make_order(
        s.subscription, done_fill, filled="0.05", avg="60030", slippage_bps="5",
        detected_at=done_fill.exchange_time + timedelta(milliseconds=40),
    )  # fmt: skip
    decide(s.subscription, done_fill, "copied", order=done)
    skipped = decide(
        s.subscription, make_fill(s.leader, at=t), "skipped", "below_min_notional", detail="tiny"
    )
    CopyDecision.objects.filter(pk=skipped.pk).update(created_at=t - timedelta(days=2))
    live_fill = make_fill(s.leader, at=t)
    live = make_order(s.subscription, live_fill, state="submitted", filled="0")

    page, errors = _signed_in_page(browser, daphne_server, s.follower)
    page.goto(f"{daphne_server}/copy/subscriptions/{s.subscription.pk}/")
    for chart in ("latency", "slippage", "decisions", "pnl"):
        page.wait_for_selector(f"#chart-{chart} .main-svg", timeout=15000)
    assert page.inner_text("#count-copied") == "1"
    assert page.inner_text("#count-not-copied") == "1"
    page.click("#pnl-help summary")
    assert "average cost" in page.inner_text("#pnl-help")

    # The audit trail, filtered to the skips: one row, and the CSV link carries the filter.
    page.select_option("#id_outcome", "skipped")
    page.click("#audit-filter button[type=submit]")
    page.wait_for_url("**outcome=skipped**")
    assert page.locator("#decisions tbody tr").count() == 1
    assert page.get_attribute("#decisions tbody tr", "data-outcome") == "skipped"
    assert "outcome=skipped" in page.get_attribute("#export-csv", "href")
    page.fill("#id_since", (t - timedelta(days=1)).date().isoformat())
    page.click("#audit-filter button[type=submit]")
    page.wait_for_selector("#no-decisions")

    # Live: the socket opens, the copy fills on the server, the row changes in place.
    page.goto(f"{daphne_server}/copy/subscriptions/{s.subscription.pk}/")
    page.wait_for_selector("#copy-live[data-socket-state=open]", timeout=15000)
    assert page.get_attribute(f'tr[data-copy="{live.pk}"]', "data-state") == "submitted"
    row = CopyOrder.objects.get(pk=live.pk)
    row.state = "filled"
    row.filled_amount = row.amount
    row.average_price = live_fill.price
    row.save()
    decide(s.subscription, live_fill, "copied", order=row)
    page.wait_for_selector(f'tr[data-copy="{live.pk}"][data-state="filled"]', timeout=15000)
    page.wait_for_function(
        "document.getElementById('count-copied').textContent.trim() === '2'", timeout=15000
    )
    page.wait_for_selector("#chart-latency .main-svg", timeout=15000)  # redrawn after the swap
    assert page.get_attribute("#copy-live", "data-last-message") in ("order", "decision")
    assert errors == []
