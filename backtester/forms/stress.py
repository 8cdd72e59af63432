"""The stress-test form: the historical windows and the synthetic shocks (gap, volatility)
to replay a backtest through."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import forms

from backtester.engine.stress import NAMED_WINDOWS
from backtester.services.stress import (
    FACTOR_RANGE,
    GAP_RANGE,
    MAX_SPIKE_BARS,
)

CUSTOM_ROWS = 3


DATETIME_INPUT = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class StressForm(forms.Form):
    """Windows to replay and shocks to apply, in a trader's units (percent, bars, UTC times)."""

    windows = forms.MultipleChoiceField(
        label="Crisis windows",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[(w.key, w.label) for w in NAMED_WINDOWS.values()],
    )
    gap_enabled = forms.BooleanField(label="Add a price gap", required=False)
    gap_change = forms.FloatField(
        label="Gap (%)",
        required=False,
        initial=-20,
        min_value=GAP_RANGE[0] * 100,
        max_value=GAP_RANGE[1] * 100,
        help_text="Every price from that bar on moves by this much (-20 = a 20 % drop).",
        widget=forms.NumberInput(attrs={"step": "any"}),
    )
    gap_at = forms.DateTimeField(
        label="Gap at (UTC)",
        required=False,
        widget=DATETIME_INPUT,
        help_text="The first bar at or after this time opens gapped.",
    )
    vol_enabled = forms.BooleanField(label="Add a volatility spike", required=False)
    vol_factor = forms.FloatField(
        label="Volatility factor",
        required=False,
        initial=3,
        min_value=FACTOR_RANGE[0],
        max_value=FACTOR_RANGE[1],
        help_text="Each bar's moves are multiplied by this in log terms (3 = three times as wild).",
        widget=forms.NumberInput(attrs={"step": "any"}),
    )
    vol_bars = forms.IntegerField(
        label="For (bars)", required=False, initial=24, min_value=1, max_value=MAX_SPIKE_BARS
    )
    vol_at = forms.DateTimeField(label="From (UTC)", required=False, widget=DATETIME_INPUT)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for i in range(1, CUSTOM_ROWS + 1):
            self.fields[f"custom_label_{i}"] = forms.CharField(
                label="Name", required=False, max_length=60
            )
            self.fields[f"custom_start_{i}"] = forms.DateField(
                label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
            )
            self.fields[f"custom_end_{i}"] = forms.DateField(
                label="To (inclusive)",
                required=False,
                widget=forms.DateInput(attrs={"type": "date"}),
            )

    def custom_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "label": self[f"custom_label_{i}"],
                "start": self[f"custom_start_{i}"],
                "end": self[f"custom_end_{i}"],
            }
            for i in range(1, CUSTOM_ROWS + 1)
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for i in range(1, CUSTOM_ROWS + 1):
            start, end = data.get(f"custom_start_{i}"), data.get(f"custom_end_{i}")
            if (start is None) != (end is None):
                self.add_error(
                    f"custom_end_{i}" if end is None else f"custom_start_{i}",
                    "Give both dates of the window.",
                )
            elif start and end and end < start:
                self.add_error(f"custom_end_{i}", "The end must be on or after the start.")
        if data.get("gap_enabled"):
            for name in ("gap_change", "gap_at"):
                if data.get(name) is None and name not in self.errors:
                    self.add_error(name, "Needed for the gap.")
        if data.get("vol_enabled"):
            for name in ("vol_factor", "vol_bars", "vol_at"):
                if data.get(name) is None and name not in self.errors:
                    self.add_error(name, "Needed for the spike.")
        return data

    def service_args(self) -> dict[str, Any]:
        data = self.cleaned_data
        custom = []
        for i in range(1, CUSTOM_ROWS + 1):
            if data.get(f"custom_start_{i}") and data.get(f"custom_end_{i}"):
                custom.append(
                    {
                        "label": data.get(f"custom_label_{i}") or "",
                        "start": data[f"custom_start_{i}"],
                        "end": data[f"custom_end_{i}"],
                    }
                )
        shocks: list[dict[str, Any]] = []
        if data.get("gap_enabled"):
            shocks.append(
                {
                    "kind": "gap",
                    "at": _utc(data["gap_at"]),
                    "change": float(data["gap_change"]) / 100.0,
                }
            )
        if data.get("vol_enabled"):
            shocks.append(
                {
                    "kind": "vol_spike",
                    "at": _utc(data["vol_at"]),
                    "bars": int(data["vol_bars"]),
                    "factor": float(data["vol_factor"]),
                }
            )
        return {
            "windows": list(data.get("windows") or []),
            "custom_windows": custom,
            "shocks": shocks,
        }
