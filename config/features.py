"""Features the product announces before they ship: one flag each, read from settings.FEATURES.

The home page, the pricing card, the plan table and the dashboard ask here whether a feature
is live ("included") or still being built ("coming"), so nothing is sold before it exists.
When a feature lands, flip its default in config/settings.py (or set FEATURE_<KEY>=1).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Feature:
    key: str
    label: str


ANNOUNCED: dict[str, Feature] = {
    "exchange_accounts": Feature("exchange_accounts", "Linked exchange accounts"),
    "copy_trading": Feature("copy_trading", "Copy trading"),
}


def feature_live(key: str) -> bool:
    """True when announced feature ``key`` is switched on; an unknown key is a bug."""
    if key not in ANNOUNCED:
        raise KeyError(f"unknown feature {key!r}")
    return bool(getattr(settings, "FEATURES", {}).get(key, False))


def feature_states() -> dict[str, str]:
    """Every announced feature by key: "included" when live, else "coming" (for templates)."""
    return {key: "included" if feature_live(key) else "coming" for key in ANNOUNCED}
