"""Issue 9 item 3: one set of defaults for every way to start a run. The web form (as it is
rendered, posted untouched), the API (settings left out), one-click runs from scanner alerts
and the CLI (tests/engine/test_cli.py) all start from ``DEFAULT_CONFIG``: the same request
gives the same result wherever it is made (the form used to default slippage to 2 bps and the
API and alert runs to 0)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from backtester.models import Alert, Backtest
from backtester.services.backtests import DEFAULT_CONFIG, default_settings
from backtester.services.scan_alerts import alert_backtest_create
from tests.backtester.backtest_factories import make_series, make_user
from tests.forms_support import form_values
from tests.research.scanner_support import demo_market, demo_watchlist, run_scan_now

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_web_form_the_api_and_alert_runs_start_from_the_same_settings():
    user = make_user()
    client = Client()
    client.force_login(user)
    series = make_series(n=1500)
    page = client.get(reverse("backtester:backtest_create")).text
    data = form_values(page, "backtest-form")
    data.update(strategy="preset:sma_cross", timeframe="1h", series=[str(series.pk)])
    response = client.post(reverse("backtester:backtest_create"), data)
    assert response.status_code == 302, response.content[:2000]
    by_form = Backtest.objects.get(owner=user)

    body = {
        "strategy": by_form.strategy_id,
        "series": [series.pk],
        "start": by_form.start_ts,
        "end": by_form.end_ts,
    }
    api = client.post(reverse("api_backtest_list"), body, content_type="application/json")
    assert api.status_code in (201, 202), api.json()
    by_api = Backtest.objects.get(pk=api.json()["id"])

    demo_market()
    scan = run_scan_now(demo_watchlist(user))
    alert = Alert.objects.get(scan=scan, symbol="BUY/USDT")
    by_alert = alert_backtest_create(user=user, alert=alert)

    defaults = default_settings()
    assert defaults["slippage_bps"] == DEFAULT_CONFIG.slippage_bps == 2.0
    assert by_form.settings == defaults
    assert by_api.settings == defaults
    assert by_alert.settings == defaults
