"""Backtest pages: the form (units, defaults, errors on the right field, nothing half-created),
the list, the detail page in each state, cancel, the status JSON and the status panel."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django.urls import reverse

from backtester.forms.backtests import BacktestForm
from backtester.models import Backtest, Strategy
from backtester.services.backtests import backtest_execute
from tests.backtester.backtest_factories import make_series, make_strategy, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return make_user()


@pytest.fixture
def client(user):
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def series():
    return make_series(n=2000)


def _post(client, series, **overrides):
    data = {
        "strategy": "preset:sma_cross",
        "timeframe": "1h",
        "series": [str(series.pk)],
        "start": "",
        "end": "",
        "initial_cash": "10000",
        "taker_fee": "0.1",
        "maker_fee": "0.05",
        "slippage_bps": "2",
        "fill": "next_open",
        "allow_short": "on",
        "sizing": "fraction",
        "size_value": "100",
        "stop_loss": "0",
        "take_profit": "0",
        "trailing_stop": "0",
        "max_position_fraction": "100",
        "max_drawdown_halt": "0",
        "daily_loss_limit": "0",
        "p__preset_sma_cross__fast": "10",
        "p__preset_sma_cross__slow": "30",
    }
    data.update(overrides)
    return client.post(reverse("backtester:backtest_create"), data)


def _errors_of(page: str, field: str) -> str:
    """The text of the field's block in the rendered form."""
    return page.split(f'id="field-{field}"', 1)[1][:1500]


def test_the_form_lists_shared_and_own_markets_labelled_synthetic(client, user, series):
    mine = make_series(owner=user, symbol="MY/COIN", n=300)
    theirs = make_series(owner=make_user(), symbol="THEIR/COIN", n=300)
    page = client.get(reverse("backtester:backtest_create")).text
    assert f'value="{series.pk}"' in page
    assert f'value="{mine.pk}"' in page
    assert f'value="{theirs.pk}"' not in page
    assert "Synthetic" in page
    assert "2024-01-01 → 2024-03-24" in page
    assert 'value="preset:donchian_breakout"' in page


def test_submitting_converts_percent_to_fractions_and_uses_the_whole_range(
    client, user, series, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = _post(client, series, taker_fee="0.2", stop_loss="3", slippage_bps="5")
    backtest = Backtest.objects.get(owner=user)
    assert response.status_code == 302
    assert response["Location"] == reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})
    assert len(callbacks) == 1
    assert backtest.settings["taker_fee"] == pytest.approx(0.002)
    assert backtest.settings["maker_fee"] == pytest.approx(0.0005)
    assert backtest.settings["stop_loss"] == pytest.approx(0.03)
    assert backtest.settings["slippage_bps"] == 5.0
    assert backtest.settings["size_value"] == 1.0
    assert (backtest.start_ts, backtest.end_ts) == (
        series.first_ts,
        series.last_ts + 3_600_000 - 1,
    )
    assert backtest.strategy.preset == "sma_cross"


def test_the_protections_and_period_limits_reach_the_settings_as_fractions_and_bars(
    client, user, series, django_capture_on_commit_callbacks
):
    fields = {
        "weekly_loss_limit": "10",
        "monthly_loss_limit": "15",
        "max_order_notional": "2500",
        "max_leverage": "1.5",
        "stoploss_guard_count": "2",
        "stoploss_guard_lookback_bars": "24",
        "stoploss_guard_lock_bars": "12",
        "stoploss_guard_all": "on",
        "low_profit_lookback_bars": "48",
        "low_profit_min": "-2",
        "low_profit_lock_bars": "6",
    }
    with django_capture_on_commit_callbacks(execute=False):
        response = _post(client, series, **fields)
    assert response.status_code == 302
    settings = Backtest.objects.get(owner=user).settings
    assert settings["weekly_loss_limit"] == pytest.approx(0.10)
    assert settings["monthly_loss_limit"] == pytest.approx(0.15)
    assert settings["low_profit_min"] == pytest.approx(-0.02)
    assert (settings["max_order_notional"], settings["max_leverage"]) == (2500.0, 1.5)
    assert settings["stoploss_guard_all"] is True
    bars = [settings[name] for name in (
        "stoploss_guard_count", "stoploss_guard_lookback_bars", "stoploss_guard_lock_bars",
        "low_profit_lookback_bars", "low_profit_lock_bars",
    )]  # fmt: skip
    assert bars == [2, 24, 12, 48, 6]
    # The form for another run from these settings shows them again.
    shown = BacktestForm.initial_from_settings(settings)
    assert (shown["weekly_loss_limit"], shown["low_profit_min"]) == (10.0, -2.0)
    assert (shown["stoploss_guard_lock_bars"], shown["stoploss_guard_all"]) == (12, True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("weekly_loss_limit", "150", "less than or equal to 99.99"),
        ("max_leverage", "-1", "greater than or equal to 0"),
        ("max_order_notional", "abc", "Enter a number"),
        ("stoploss_guard_count", "-1", "greater than or equal to 0"),
        ("low_profit_lock_bars", "2.5", "Enter a whole number"),
        ("low_profit_min", "-150", "greater than or equal to -100"),
    ],
)
def test_protection_values_out_of_range_are_refused_on_their_field(
    client, series, field, value, message
):
    response = _post(client, series, **{field: value})
    assert response.status_code == 400
    assert message in _errors_of(response.text, field)
    assert Backtest.objects.count() == 0


def test_a_date_outside_the_data_is_shown_on_the_date_field_and_nothing_is_created(
    client, user, series
):
    response = _post(client, series, start="2023-12-01")
    assert response.status_code == 400
    block = _errors_of(response.text, "start")
    assert "before the data" in block
    assert "covers 2024-01-01 00:00 UTC to 2024-03-24 07:00 UTC" in block
    assert Backtest.objects.count() == 0
    assert Strategy.objects.count() == 0  # the preset copy is not left behind either


def test_an_end_before_the_start_is_refused(client, series):
    response = _post(client, series, start="2024-02-10", end="2024-02-01")
    assert "on or after the start" in _errors_of(response.text, "end")
    assert Backtest.objects.count() == 0


def test_zero_capital_is_refused_on_its_field(client, series):
    response = _post(client, series, initial_cash="0")
    assert "more than 0" in _errors_of(response.text, "initial_cash")
    assert Backtest.objects.count() == 0


def test_risk_sizing_without_a_stop_is_refused_on_the_stop_field(client, series):
    response = _post(client, series, sizing="risk", size_value="1")
    assert "set a stop-loss" in _errors_of(response.text, "stop_loss")


def test_a_fee_out_of_range_is_refused_in_percent(client, series):
    response = _post(client, series, taker_fee="25")
    assert "less than or equal to 10" in _errors_of(response.text, "taker_fee")


def test_a_timeframe_the_market_lacks_is_refused(client, series):
    make_series(symbol="ETH/USDT", timeframe="1d", n=100)
    response = _post(client, series, timeframe="1d")
    assert response.status_code == 400
    assert "is 1h data, not 1d" in _errors_of(response.text, "timeframe")


def test_a_parameter_override_error_is_shown_on_that_parameter(client, series):
    response = _post(client, series, p__preset_sma_cross__slow="3")
    assert response.status_code == 400
    assert "between 20 and 200" in _errors_of(response.text, "p__preset_sma_cross__slow")
    assert Strategy.objects.count() == 0


def test_my_strategy_runs_with_my_values_and_overrides(client, user, series):
    strategy = make_strategy(user, "ema_cross")
    key = f"p__s_{strategy.pk}__"
    response = _post(
        client,
        series,
        strategy=f"s:{strategy.pk}",
        **{key + "fast": "8", key + "slow": ""},
    )
    assert response.status_code == 302
    backtest = Backtest.objects.get(owner=user)
    assert backtest.strategy == strategy
    assert backtest.param_values == {"fast": 8, "slow": 26}


@pytest.mark.django_db(transaction=True)
def test_detail_page_in_each_state():
    user = make_user()
    client = Client()
    client.force_login(user)
    series = make_series(n=1500)
    _post(client, series)
    backtest = Backtest.objects.get(owner=user)
    url = reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})
    queued = client.get(url).text
    assert 'id="cancel-form"' in queued
    assert 'id="live-equity"' in queued
    assert f'data-socket="/ws/runs/backtest/{backtest.pk}/"' in queued
    assert "plotly.min.js" in queued

    state_url = reverse("run_state", kwargs={"kind": "backtest", "pk": backtest.pk})
    status = client.get(state_url)
    assert status.json()["status"] == "queued"
    assert status.json()["finished"] is False

    backtest_execute(backtest_id=backtest.pk)
    # The form enqueued the task too: if a worker from another test of this session is up, it
    # may have claimed the run first (then backtest_execute above was a no-op). Either way the
    # run ends completed; wait for that rather than race the worker.
    deadline = time.monotonic() + 60
    while Backtest.objects.get(pk=backtest.pk).status != Backtest.Status.COMPLETED:
        assert time.monotonic() < deadline, "the backtest did not complete"
        time.sleep(0.1)
    done = client.get(url).text
    assert 'id="cancel-form"' not in done
    assert 'id="results"' in done  # the results section of the results helper
    assert "100 %" in done
    assert client.get(state_url).json()["progress"] == 1.0

    Backtest.objects.filter(pk=backtest.pk).update(
        status=Backtest.Status.FAILED, error="Something specific went wrong."
    )
    failed = client.get(url).text
    assert "Something specific went wrong." in failed
    assert 'id="results"' not in failed


def test_cancel_from_the_page(client, user, series, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        _post(client, series)
    backtest = Backtest.objects.get(owner=user)
    response = client.post(reverse("backtester:backtest_cancel", kwargs={"pk": backtest.pk}))
    assert response.status_code == 302
    backtest.refresh_from_db()
    assert backtest.status == Backtest.Status.CANCELLED
    again = client.post(
        reverse("backtester:backtest_cancel", kwargs={"pk": backtest.pk}),
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    assert again.status_code == 409
    assert "already cancelled" in again.json()["message"]


def test_list_shows_status_markets_and_compare_boxes_for_completed_only(
    client, user, series, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        _post(client, series)
        _post(client, series, slippage_bps="3")
    first, second = Backtest.objects.filter(owner=user).order_by("pk")
    Backtest.objects.filter(pk=first.pk).update(status=Backtest.Status.COMPLETED)
    page = client.get(reverse("backtester:backtest_list")).text
    assert 'class="badge badge-completed"' in page
    assert 'class="badge badge-queued"' in page
    assert f'name="ids" value="{first.pk}"' in page
    assert f'name="ids" value="{second.pk}"' not in page
    assert reverse("backtester:backtest_compare") in page
    assert "BTC/USDT" in page


def test_status_panel_counts_my_backtests(client, user, series, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        _post(client, series)
        _post(client, series, slippage_bps="3")
    first = Backtest.objects.filter(owner=user).order_by("pk").first()
    Backtest.objects.filter(pk=first.pk).update(status=Backtest.Status.FAILED)
    fragment = client.get(reverse("backtester:backtest_status_panel") + "?fragment=1").text
    assert '<dd class="num" data-status="queued">1</dd>' in fragment
    assert '<dd class="num" data-status="failed">1</dd>' in fragment
    assert '<dd class="num" data-status="completed">0</dd>' in fragment
    assert 'id="workers-state"' in fragment
    assert "<html" not in fragment
    assert "<html" in client.get(reverse("backtester:backtest_status_panel")).text


def test_deleting_the_strategy_keeps_its_backtests_and_their_rules(
    client, user, series, django_capture_on_commit_callbacks
):
    strategy = make_strategy(user, "rsi_reversion")
    with django_capture_on_commit_callbacks(execute=False):
        _post(client, series, strategy=f"s:{strategy.pk}")
    backtest = Backtest.objects.get(owner=user)
    client.post(reverse("backtester:strategy_delete", kwargs={"pk": strategy.pk}))
    backtest.refresh_from_db()
    assert backtest.strategy is None
    page = client.get(reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})).text
    assert "rsi(close, period) &lt; lower" in page
    assert "this run kept a copy" in page
