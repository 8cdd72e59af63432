"""The scanner's forms: a watchlist (markets, timeframe, bands, schedule) and the alert
list's filter."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from backtester.engine.scanner import BUY, HOLD, SELL
from backtester.forms.marketdata import TIMEFRAME_CHOICES
from backtester.models import Watchlist
from backtester.services.scan_watchlists import EXCHANGE_CHOICES, MAX_SYMBOLS, band_limits
from backtester.services.scanner import default_exchange

SIGNAL_FILTERS = (
    ("alerts", "BUY and SELL"),
    (BUY, "BUY"),
    (SELL, "SELL"),
    (HOLD, "HOLD"),
    ("all", "Every outcome"),
)


class WatchlistForm(forms.Form):
    """Input shape of a watchlist; the service decides what is valid."""

    name = forms.CharField(max_length=80, help_text="e.g. Majors daily")
    exchange = forms.ChoiceField(choices=EXCHANGE_CHOICES, initial=default_exchange)
    timeframe = forms.ChoiceField(choices=TIMEFRAME_CHOICES, initial="1d")
    universe = forms.ChoiceField(
        choices=Watchlist.Universe.choices,
        initial=Watchlist.Universe.SYMBOLS,
        widget=forms.RadioSelect,
        label="Scan",
    )
    symbols = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "BTC/USDT, ETH/USDT, SOL/USDT"}),
        help_text=f"Separated by commas, spaces or new lines; at most {MAX_SYMBOLS}.",
    )
    top_n = forms.IntegerField(
        required=False,
        initial=20,
        label="How many symbols",
        help_text=f"The largest by 24 h volume, 1 to {MAX_SYMBOLS}.",
    )
    quote = forms.CharField(required=False, max_length=10, initial="USDT", label="Quote currency")
    lookback = forms.IntegerField(help_text="Closes the bands are fitted to.")
    degree = forms.TypedChoiceField(coerce=int, label="Polynomial degree")
    k = forms.FloatField(label="Band width k", help_text="Residual standard deviations.")
    schedule_minutes = forms.TypedChoiceField(
        coerce=int, choices=Watchlist.SCHEDULES, initial=0, label="Scan automatically"
    )
    notify = forms.BooleanField(
        required=False,
        label="Notify me of new BUY and SELL signals",
        help_text="A notification when a scan finds a signal the previous scan did not have.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = band_limits()
        low, high = limits.lookback
        cast(forms.IntegerField, self.fields["lookback"]).min_value = low
        self.fields["lookback"].widget.attrs.update(min=low, max=high)
        self.fields["lookback"].help_text = f"Closes the bands are fitted to ({low} to {high})."
        cast(forms.ChoiceField, self.fields["degree"]).choices = [
            (d, str(d)) for d in range(limits.degree[0], limits.degree[1] + 1)
        ]
        self.fields["k"].widget.attrs.update(min=limits.k[0], max=limits.k[1], step="0.25")
        self.fields[
            "k"
        ].help_text = f"Residual standard deviations ({limits.k[0]:g} to {limits.k[1]:g})."
        self.fields["top_n"].widget.attrs.update(min=1, max=MAX_SYMBOLS)

    def service_kwargs(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        if data.get("top_n") is None:
            data["top_n"] = 20
        return data


class AlertFilterForm(forms.Form):
    signal = forms.ChoiceField(choices=SIGNAL_FILTERS, required=False, initial="alerts")
    symbol = forms.CharField(
        required=False,
        max_length=40,
        widget=forms.TextInput(attrs={"placeholder": "BTC/USDT or BTC"}),
    )
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To (included)", widget=forms.DateInput(attrs={"type": "date"})
    )
    watchlist = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)

    def __init__(self, *args: Any, watchlists: list[Watchlist], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["watchlist"]).choices = [("", "Every watchlist")] + [
            (w.pk, w.name) for w in watchlists
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and until < since:
            self.add_error("until", "The end date is before the start date.")
        return data
