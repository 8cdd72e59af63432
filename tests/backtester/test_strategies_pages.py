"""Strategy pages and the as-you-type rule check."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from backtester.engine.language import PRESETS
from backtester.models import Strategy
from tests.backtester.backtest_factories import make_strategy, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return make_user()


@pytest.fixture
def client(user):
    c = Client()
    c.force_login(user)
    return c


def _form(name="Trend", entry_long="close > sma(close, n)", rows=None, **extra):
    rows = rows if rows is not None else [{"name": "n", "kind": "int", "default": "20"}]
    data = {
        "name": name,
        "description": "",
        "entry_long": entry_long,
        "exit_long": "close < sma(close, n)",
        "entry_short": "",
        "exit_short": "",
        "param-TOTAL_FORMS": str(len(rows)),
        "param-INITIAL_FORMS": "0",
        "param-MIN_NUM_FORMS": "0",
        "param-MAX_NUM_FORMS": "20",
    }
    for i, row in enumerate(rows):
        for key, value in row.items():
            data[f"param-{i}-{key}"] = value
    data.update(extra)
    return data


def test_the_new_strategy_page_offers_every_preset(client):
    page = client.get(reverse("backtester:strategy_create")).text
    for name in PRESETS:
        assert f"?preset={name}" in page
    assert "?blank=1" in page


def test_starting_from_a_preset_prefills_its_rules_and_parameters(client):
    page = client.get(reverse("backtester:strategy_create") + "?preset=macd_cross").text
    assert "cross_above(macd_line(close, fast, slow, signal)" in page
    assert 'value="signal"' in page
    assert 'name="preset" value="macd_cross"' in page


def test_the_editor_lists_the_language_functions(client):
    page = client.get(reverse("backtester:strategy_create") + "?blank=1").text
    assert "<strong>bb_lower</strong>(series, period=20, k=2.0)" in page
    assert "relative strength index" in page
    assert "strategy_editor.js" in page


def test_creating_through_the_form_saves_and_opens_the_editor(client, user):
    response = client.post(
        reverse("backtester:strategy_create"),
        _form(rows=[{"name": "n", "kind": "int", "default": "20", "low": "5", "high": "50",
                     "value": "25"}]),
    )  # fmt: skip
    strategy = Strategy.objects.get(owner=user)
    assert response.status_code == 302
    assert response["Location"] == reverse("backtester:strategy_edit", kwargs={"pk": strategy.pk})
    assert strategy.param_values == {"n": 25}
    assert strategy.params[0]["high"] == 50


def test_a_bad_rule_is_shown_under_its_field_and_nothing_is_saved(client):
    response = client.post(
        reverse("backtester:strategy_create"), _form(entry_long="close > sma(close, m)")
    )
    assert response.status_code == 400
    assert Strategy.objects.count() == 0
    page = response.text
    assert 'id="field-entry_long"' in page
    section = page.split('id="field-entry_long"', 1)[1].split('id="field-exit_long"', 1)[0]
    assert "unknown name" in section
    assert "(column 20)" in section


def test_a_bad_parameter_is_shown_above_the_table(client):
    rows = [{"name": "n", "kind": "int", "default": "20", "low": "30", "high": "10"}]
    response = client.post(reverse("backtester:strategy_create"), _form(rows=rows))
    assert response.status_code == 400
    assert 'id="params-errors"' in response.text
    assert "parameter &#x27;n&#x27;" in response.text
    assert Strategy.objects.count() == 0


def test_editing_and_removing_a_parameter(client, user):
    strategy = make_strategy(user, "rsi_reversion")
    url = reverse("backtester:strategy_edit", kwargs={"pk": strategy.pk})
    assert "rsi(close, period) &lt; lower" in client.get(url).text
    data = _form(
        name="RSI 21",
        entry_long="rsi(close, 21) < lower",
        rows=[
            {"name": "lower", "kind": "int", "default": "30", "value": "25"},
            {"name": "upper", "kind": "int", "default": "70", "DELETE": "on"},
        ],
        exit_long="rsi(close, 21) > 70",
    )
    response = client.post(url, data)
    assert response.status_code == 302
    strategy.refresh_from_db()
    assert strategy.name == "RSI 21"
    assert strategy.param_values == {"lower": 25}
    assert [p["name"] for p in strategy.params] == ["lower"]


def test_delete_asks_then_deletes(client, user):
    strategy = make_strategy(user)
    url = reverse("backtester:strategy_delete", kwargs={"pk": strategy.pk})
    assert "Delete strategy" in client.get(url).text
    assert client.post(url).status_code == 302
    assert not Strategy.objects.filter(pk=strategy.pk).exists()


def _check(client, expression, field="entry_long", params=()):
    response = client.post(
        reverse("backtester:strategy_validate"),
        json.dumps({"expression": expression, "field": field, "params": list(params)}),
        content_type="application/json",
    )
    return response.status_code, response.json()


def test_validate_endpoint_accepts_a_good_rule(client):
    assert _check(client, "cross_above(ema(close, 12), ema(close, 26))") == (
        200,
        {"ok": True, "message": "", "col": None, "field": "entry_long"},
    )


def test_validate_endpoint_points_at_the_offending_column(client):
    status, answer = _check(client, "close > sma(close, 20) and rsi(clos, 14) < 30")
    assert status == 200
    assert answer["ok"] is False
    assert answer["col"] == 31
    assert "clos" in answer["message"]
    assert "(column 32)" in answer["message"]


def test_validate_endpoint_uses_the_declared_parameters(client):
    assert _check(client, "rsi(close, 14) < lower")[1]["ok"] is False
    assert _check(client, "rsi(close, 14) < lower", params=[{"name": "lower", "kind": "int"}])[1][
        "ok"
    ]
    # A float parameter cannot be a period.
    _, answer = _check(client, "sma(close, n) > close", params=[{"name": "n", "kind": "float"}])
    assert answer["ok"] is False
    assert answer["col"] == 11


def test_validate_endpoint_refuses_an_unknown_field(client):
    status, answer = _check(client, "close > 1", field="stop_loss")
    assert status == 400
    assert answer["ok"] is False
