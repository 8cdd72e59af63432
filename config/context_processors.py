"""Template context shared by every page: the site name, the navigation, feature states."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from config.features import feature_states

# (label, url name). A section shows up in the navigation once its URL exists, so the menu
# grows as apps land without placeholder pages.
NAVIGATION = [
    ("Dashboard", "dashboard"),
    ("Strategies", "backtester:strategy_list"),
    ("Market data", "backtester:data_list"),
    ("Backtests", "backtester:backtest_list"),
    ("Research", "backtester:research"),
    ("Scanner", "backtester:scanner"),
    ("Exchanges", "exchanges:list"),
    ("Copy trading", "copytrading:home"),
    ("Bots", "backtester:bot_list"),
    ("Risk", "risk:profile"),
    ("Billing", "accounts:billing"),
]


def _navigation(request: HttpRequest) -> list[dict[str, Any]]:
    items = []
    for label, name in NAVIGATION:
        try:
            url = reverse(name)
        except NoReverseMatch:
            continue
        active = request.path.startswith(url) if url != "/" else request.path == "/"
        items.append({"label": label, "url": url, "active": active})
    return items


def site(request: HttpRequest) -> dict[str, Any]:
    return {
        "SITE_NAME": settings.SITE_NAME,
        "nav_items": _navigation(request) if request.user.is_authenticated else [],
        # {"exchange_accounts": "coming" | "included", ...}: what the pages may sell.
        "features": feature_states(),
    }
