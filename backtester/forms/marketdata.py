"""Forms of the market data pages: they parse input; the services decide what is valid."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from django import forms

from exchanges.clients import SUPPORTED_EXCHANGES

TIMEFRAME_CHOICES = [
    ("1m", "1 minute"),
    ("5m", "5 minutes"),
    ("15m", "15 minutes"),
    ("30m", "30 minutes"),
    ("1h", "1 hour"),
    ("4h", "4 hours"),
    ("1d", "1 day"),
    ("1w", "1 week"),
]


def date_to_ms(value: date) -> int:
    """A calendar date as its UTC midnight in epoch milliseconds."""
    return int(datetime.combine(value, time(0, 0), tzinfo=UTC).timestamp() * 1000)


def fetch_job_args(data: dict[str, Any]) -> dict[str, Any]:
    """A download request's checked fields (page form or API) as ``fetch_job_create``'s
    arguments: the market, and the dates as epoch milliseconds."""
    return {
        "exchange": data["exchange"],
        "symbol": data["symbol"],
        "timeframe": data["timeframe"],
        "since_ts": date_to_ms(data["since"]),
        "until_ts": date_to_ms(data["until"]) if data.get("until") else None,
    }


class UploadForm(forms.Form):
    file = forms.FileField(
        required=False,
        help_text="CSV, Parquet or JSON with timestamp, open, high, low, close and volume columns.",
    )
    # The token of the file kept on the server after a refused try (backtester.marketdata.kept).
    kept = forms.CharField(required=False, widget=forms.HiddenInput, max_length=64)
    symbol = forms.CharField(max_length=40, help_text="What the candles are, e.g. BTC/USDT.")
    timeframe = forms.ChoiceField(
        choices=[("", "Detect from the data"), *TIMEFRAME_CHOICES],
        required=False,
        help_text="Leave on detect to use the spacing of the candles.",
    )
    exchange = forms.CharField(
        max_length=40,
        required=False,
        initial="upload",
        help_text="Where the data comes from (shown in the catalog).",
    )
    name = forms.CharField(max_length=120, required=False, help_text="Optional display name.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("file") and not data.get("kept") and "file" not in self.errors:
            self.add_error("file", "Choose a file to upload.")
        return data


class FetchForm(forms.Form):
    exchange = forms.ChoiceField(choices=SUPPORTED_EXCHANGES, initial="binance")
    symbol = forms.CharField(max_length=40, initial="BTC/USDT", help_text="e.g. BTC/USDT")
    timeframe = forms.ChoiceField(choices=TIMEFRAME_CHOICES, initial="1h")
    since = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}), help_text="First day, UTC."
    )
    until = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}),
        required=False,
        help_text="Stop before this day (UTC); empty means up to now.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and until <= since:
            self.add_error("until", "The end date must be after the start date.")
        return data
