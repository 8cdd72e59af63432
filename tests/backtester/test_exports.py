"""Exports of a result: trades CSV, equity CSV, JSON and the offline HTML report."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime

import numpy as np
import pytest
from django.urls import reverse

from backtester.models import Backtest, BacktestResult, BacktestTrade
from backtester.results.charts import drawdown
from backtester.results.store import result_curves
from tests.backtester.test_results_support import make_backtest, make_user

pytestmark = pytest.mark.django_db
PASSWORD = "pw-Results-1"


def _url(backtest: Backtest, fmt: str) -> str:
    return reverse("backtester:backtest_export", kwargs={"pk": backtest.pk, "fmt": fmt})


def _body(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


@pytest.fixture
def owned(client):
    user = make_user()
    backtest, run, candles = make_backtest(user)
    client.force_login(user)
    return client, backtest, run, candles


def test_trades_csv_parses_back_to_the_stored_trades_exactly(owned):
    client, backtest, run, _ = owned
    response = client.get(_url(backtest, "trades-csv"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f"backtest-{backtest.pk}-trades.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    trades = list(BacktestTrade.objects.filter(backtest=backtest).order_by("seq"))
    assert len(rows) == len(trades) == run.sim.trades.shape[0]
    for row, t in zip(rows, trades, strict=True):
        assert int(row["seq"]) == t.seq
        assert row["symbol"] == t.symbol
        assert row["side"] == ("long" if t.side > 0 else "short")
        assert float(row["qty"]) == t.qty
        assert datetime.fromisoformat(row["entry_time"]) == t.entry_time
        assert datetime.fromisoformat(row["exit_time"]) == t.exit_time
        assert float(row["entry_price"]) == t.entry_price
        assert float(row["exit_price"]) == t.exit_price
        assert float(row["fees"]) == t.fees
        assert float(row["pnl"]) == t.pnl
        assert float(row["return"]) == t.ret
        assert int(row["bars_held"]) == t.bars_held
        assert row["exit_reason"] == t.exit_reason


def test_equity_csv_has_every_bar_and_parses_back_to_the_stored_curves(owned):
    client, backtest, run, _ = owned
    response = client.get(_url(backtest, "equity-csv"))
    assert response.status_code == 200
    reader = csv.reader(io.StringIO(_body(response).decode()))
    header = next(reader)
    assert header == [
        "timestamp",
        "time",
        "equity",
        "cash",
        "benchmark",
        "drawdown",
        "position_BTC/USDT",
    ]
    data = list(reader)
    assert len(data) == run.sim.equity.shape[0]
    cols = list(zip(*data, strict=True))
    curves = result_curves(BacktestResult.objects.get(backtest=backtest))
    assert np.array_equal(np.array(cols[0], np.int64), run.sim.timestamp)
    assert cols[1][0] == "2024-01-01T00:00:00.000Z"
    assert np.array_equal(np.array(cols[2], float), run.sim.equity)
    assert np.array_equal(np.array(cols[3], float), run.sim.cash)
    assert np.array_equal(np.array(cols[4], float), curves["benchmark"])
    expected_dd = drawdown(run.sim.equity, run.sim.initial_cash)
    assert np.array_equal(np.array(cols[5], float), expected_dd)
    assert np.array_equal(np.array(cols[6], float), run.sim.position)


def test_json_export_holds_metrics_settings_spec_trades_and_curves(owned):
    client, backtest, run, _ = owned
    response = client.get(_url(backtest, "json"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"

    def no_nan(value):
        raise AssertionError(f"non-JSON constant {value}")

    doc = json.loads(_body(response), parse_constant=no_nan)
    assert set(doc) == {
        "backtest",
        "spec",
        "param_values",
        "settings",
        "metrics",
        "open_positions",
        "trades",
        "equity",
    }
    assert doc["backtest"]["id"] == backtest.pk
    assert doc["backtest"]["symbols"] == ["BTC/USDT"]
    assert doc["spec"] == backtest.spec
    assert doc["settings"]["taker_fee"] == 0.001
    assert doc["param_values"] == {"fast": 5, "slow": 20}
    assert doc["metrics"]["total_return"] == run.metrics["total_return"]
    assert len(doc["trades"]) == run.sim.trades.shape[0]
    assert doc["trades"][0]["pnl"] == float(run.sim.trades["pnl"][0])
    assert doc["equity"]["timestamp"] == run.sim.timestamp.tolist()
    assert doc["equity"]["equity"] == run.sim.equity.tolist()
    assert set(doc["equity"]) == {
        "timestamp",
        "equity",
        "cash",
        "benchmark",
        "drawdown",
        "position_BTC/USDT",
    }


_LOADING_ATTR = re.compile(
    r"""<(?:script|link|img|iframe|source|video|audio|embed|object)\b[^>]*"""
    r"""(?:src|href|data)\s*=\s*["']?\s*(?:https?:)?//""",
    re.IGNORECASE,
)


def test_html_report_inlines_plotly_and_loads_nothing_from_a_url(owned):
    client, backtest, _, _ = owned
    response = client.get(_url(backtest, "html"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "plotly.js v" in html
    assert "QFCharts" in html
    assert 'id="chart-equity-data"' in html
    assert "<script src" not in html
    assert not _LOADING_ATTR.search(html)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html)
    assert not re.search(r"@import", html)


@pytest.mark.browser
def test_html_report_draws_its_charts_offline_from_a_file(owned, browser, tmp_path):
    client, backtest, _, _ = owned
    report = tmp_path / "report.html"
    report.write_bytes(client.get(_url(backtest, "html")).content)
    context = browser.new_context(offline=True)
    requests: list[str] = []

    def refuse(route):
        if not route.request.url.startswith("file://"):
            requests.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", refuse)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(report.as_uri())
        page.wait_for_selector("#chart-equity .main-svg", timeout=30_000)
        page.wait_for_selector("#chart-candles-0 .main-svg", timeout=30_000)
        # The equity line is drawn: a path with real geometry inside the plot.
        d = page.eval_on_selector(
            "#chart-equity .scatterlayer path.js-line", "el => el.getAttribute('d')"
        )
        assert d
        assert len(d) > 100
        assert (
            page.locator("#chart-candles-0 .point").count() > 0
            or page.locator("#chart-candles-0 .trace.boxes path").count() > 0
        )
        drawn = page.eval_on_selector_all("[data-qf-drawn]", "els => els.length")
        assert drawn == page.eval_on_selector_all("[data-qf-figure]", "els => els.length")
    finally:
        context.close()
    assert errors == []
    assert requests == []


@pytest.mark.parametrize("fmt", ["trades-csv", "equity-csv", "json", "html"])
def test_exports_answer_only_their_owner(client, fmt):
    owner = make_user()
    backtest, _, _ = make_backtest(owner)
    url = _url(backtest, fmt)
    assert client.get(url).status_code == 302  # anonymous: to the login page
    assert "/accounts/login/" in client.get(url)["Location"]
    client.force_login(make_user(pro=False))
    assert client.get(url).status_code == 403
    client.force_login(make_user())
    assert client.get(url).status_code == 404
    client.force_login(owner)
    assert client.get(url).status_code == 200


def test_unknown_export_format_and_unfinished_backtest_are_404(client):
    owner = make_user()
    done, _, _ = make_backtest(owner)
    running, _, _ = make_backtest(owner, status=Backtest.Status.RUNNING, save=False)
    client.force_login(owner)
    assert client.get(_url(done, "xlsx")).status_code == 404
    assert client.get(_url(running, "json")).status_code == 404


def test_portfolio_equity_csv_has_a_position_column_per_symbol(client):
    user = make_user()
    backtest, run, _ = make_backtest(user, symbols=("BTC/USDT", "ETH/USDT"))
    client.force_login(user)
    body = _body(client.get(_url(backtest, "equity-csv"))).decode()
    reader = csv.reader(io.StringIO(body))
    header = next(reader)
    assert header[-2:] == ["position_BTC/USDT", "position_ETH/USDT"]
    cols = list(zip(*reader, strict=True))
    assert np.array_equal(np.array(cols[-2], float), run.sim.position[:, 0])
    assert np.array_equal(np.array(cols[-1], float), run.sim.position[:, 1])


def test_a_backtest_without_trades_still_renders_and_exports(client):
    from django.template.loader import render_to_string

    from backtester.results.views import results_context

    user = make_user()
    # A moving average never crosses itself: no signal, no trade, no open position.
    backtest, run, _ = make_backtest(user, params={"fast": 20, "slow": 20})
    assert run.sim.trades.shape[0] == 0
    ctx = results_context(backtest)["results"]
    assert [f["id"] for f in ctx["figures"]] == ["equity", "drawdown", "candles-0", "monthly"]
    html = render_to_string("backtester/results/_results.html", {"results": ctx})
    assert "No closed trades" in html
    client.force_login(user)
    rows = list(csv.reader(io.StringIO(_body(client.get(_url(backtest, "trades-csv"))).decode())))
    assert len(rows) == 1
    doc = json.loads(_body(client.get(_url(backtest, "json"))))
    assert doc["trades"] == []
    assert doc["open_positions"] == []
    assert client.get(_url(backtest, "html")).status_code == 200
