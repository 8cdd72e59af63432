"""Exchange linking and copy trading are announced from one flag per feature (settings.FEATURES
via config/features.py): both have shipped (on by default); a flag turned off shows its
feature as coming on the pages that sell the product."""

from __future__ import annotations

import re

import pytest
from django.test import override_settings
from django.urls import reverse

from config.features import ANNOUNCED, feature_live, feature_states
from tests.backtester.backtest_factories import make_user

pytestmark = pytest.mark.django_db
ALL_OFF = {"exchange_accounts": False, "copy_trading": False}
ALL_ON = {"exchange_accounts": True, "copy_trading": True}


def _states(html: str) -> dict[str, set[str]]:
    """Every data-feature on the page with the states it is shown in."""
    found: dict[str, set[str]] = {}
    for feature, state in re.findall(r'data-feature="(\w+)" data-state="(\w+)"', html):
        found.setdefault(feature, set()).add(state)
    return found


def _pages(client) -> dict[str, str]:
    pages = {"home": client.get(reverse("home")).content.decode()}
    user = make_user(pro=False)
    client.force_login(user)
    pages["upgrade"] = client.get(reverse("accounts:upgrade")).content.decode()
    pages["dashboard"] = client.get(reverse("dashboard")).content.decode()
    client.logout()
    return pages


def test_by_default_exchange_accounts_and_copy_trading_have_shipped():
    assert feature_states() == {"exchange_accounts": "included", "copy_trading": "included"}
    assert set(ANNOUNCED) == {"exchange_accounts", "copy_trading"}
    with pytest.raises(KeyError):
        feature_live("time_travel")


@override_settings(FEATURES=ALL_OFF)
def test_home_pricing_plan_table_and_dashboard_show_both_features_as_coming(client):
    pages = _pages(client)
    home = pages["home"]
    # The pricing card and the feature grid: listed, each marked coming, never included.
    assert _states(home) == {"exchange_accounts": {"coming"}, "copy_trading": {"coming"}}
    assert "linked exchange accounts and copy trading</li>" not in home
    assert "copies a leader's trades into your own accounts" not in home
    assert "run backtests, research and copy trading" not in home
    assert "Exchange keys are encrypted at rest" not in home
    # The plan table: the two limits say "Coming" instead of a number.
    assert _states(pages["upgrade"]) == {
        "exchange_accounts": {"coming"},
        "copy_trading": {"coming"},
    }
    row = re.search(r'<tr data-feature="exchange_accounts".*?</tr>', pages["upgrade"]).group(0)
    assert "Coming" in row
    assert ">10<" not in row
    dashboard = pages["dashboard"]
    assert _states(dashboard) == {"exchange_accounts": {"coming"}, "copy_trading": {"coming"}}
    assert "before you link an exchange" not in dashboard
    assert 'id="coming-features"' in dashboard


@override_settings(FEATURES=ALL_ON)
def test_once_a_feature_ships_its_flag_turns_the_same_places_to_included(client):
    pages = _pages(client)
    assert _states(pages["home"]) == {
        "exchange_accounts": {"included"},
        "copy_trading": {"included"},
    }
    assert "10 linked exchange accounts" in pages["home"]
    row = re.search(r'<tr data-feature="exchange_accounts".*?</tr>', pages["upgrade"]).group(0)
    assert "Coming" not in row
    assert ">10<" in row
    assert 'id="coming-features"' not in pages["dashboard"]
    assert "Coming</span>" not in pages["dashboard"]


@override_settings(FEATURES={"exchange_accounts": True, "copy_trading": False})
def test_each_feature_has_its_own_flag(client):
    pages = _pages(client)
    assert _states(pages["home"]) == {
        "exchange_accounts": {"included"},
        "copy_trading": {"coming"},
    }
    assert _states(pages["upgrade"]) == {
        "exchange_accounts": {"included"},
        "copy_trading": {"coming"},
    }
