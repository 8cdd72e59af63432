"""The backtest form: everything a run needs, in the units a trader types (percent, basis
points, dates), with the product's defaults (``services.backtests.default_settings``); the
research forms extend it (``forms.research``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

from django import forms

from backtester.engine.language import PRESETS
from backtester.models import MarketSeries, Strategy
from backtester.services.backtests import default_settings, fmt_day, timeframe_sort_key
from backtester.services.strategies import preset_label, strategy_spec

# Form fields entered in percent; the engine wants fractions.
PERCENT_FIELDS = (
    "taker_fee",
    "maker_fee",
    "stop_loss",
    "take_profit",
    "trailing_stop",
    "max_position_fraction",
    "max_drawdown_halt",
    "daily_loss_limit",
    "max_heat",
    "correlation_threshold",
    "weekly_loss_limit",
    "monthly_loss_limit",
    "low_profit_min",
)
# Whole-number risk settings of the protections (bars, counts); blank = 0 = off.
PROTECTION_INT_FIELDS = (
    "stoploss_guard_count",
    "stoploss_guard_lookback_bars",
    "stoploss_guard_lock_bars",
    "low_profit_lookback_bars",
    "low_profit_lock_bars",
)


def number_field(
    label: str, *, low: float | None = None, high: float | None = None, **options: Any
) -> forms.FloatField:
    """A decimal input (any step) from ``low`` to ``high``; ``options`` as for any field."""
    widget = forms.NumberInput(attrs={"step": "any"})
    return forms.FloatField(label=label, min_value=low, max_value=high, widget=widget, **options)


def whole_field(
    label: str, *, low: int | None = 0, high: int | None = 10_000_000, **options: Any
) -> forms.IntegerField:
    """A whole-number input, by default an optional count from 0 (0 = off)."""
    options = {"required": False, "initial": 0, **options}
    return forms.IntegerField(label=label, min_value=low, max_value=high, **options)


def _pct(label: str, *, high: float, **options: Any) -> forms.FloatField:
    """A percent input from 0 to ``high``."""
    return number_field(label, low=0.0, high=high, **options)


class BacktestForm(forms.Form):
    """Everything a run needs, in the units a trader types (percent, basis points, dates).
    ``settings()`` converts to the engine's fractions; the service checks the rest."""

    name = forms.CharField(required=False, max_length=160, label="Name (optional)")
    strategy = forms.ChoiceField(label="Strategy")
    timeframe = forms.ChoiceField(label="Timeframe")
    series = forms.MultipleChoiceField(
        label="Markets", error_messages={"required": "Choose at least one market."}
    )
    start = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"})
    )
    initial_cash = forms.FloatField(
        label="Starting capital",
        initial=10_000,
        widget=forms.NumberInput(attrs={"step": "any", "min": "0"}),
    )
    taker_fee = _pct("Taker fee (%)", initial=0.1, high=10, help_text="Market and stop orders.")
    maker_fee = _pct("Maker fee (%)", initial=0.05, high=10, help_text="Limit orders, take-profit.")
    slippage_bps = number_field(
        "Slippage (bps)",
        initial=2,
        low=0,
        high=1000,
        help_text="Adverse, on market and stop fills. 1 bp = 0.01 %.",
    )
    fill = forms.ChoiceField(
        label="Fill signals at",
        choices=[("next_open", "the next bar's open"), ("close", "the signal bar's close")],
        initial="next_open",
    )
    allow_short = forms.BooleanField(
        required=False,
        initial=True,
        label="Allow short positions (when the strategy has short rules)",
    )
    sizing = forms.ChoiceField(
        label="Position sizing",
        choices=[
            ("fraction", "Fraction of equity"),
            ("notional", "Fixed amount"),
            ("risk", "Risk per trade (needs a stop-loss)"),
            ("vol_target", "Volatility target"),
        ],
        initial="fraction",
    )
    size_value = forms.FloatField(
        label="Size",
        initial=100,
        help_text="Fraction: % of equity. Fixed amount: money. Risk: % of equity lost at the "
        "stop. Volatility target: annualised %.",
        widget=forms.NumberInput(attrs={"step": "any"}),
    )
    stop_loss = _pct("Stop-loss (%)", initial=0, high=99.99, help_text="0 = off.")
    take_profit = _pct("Take-profit (%)", initial=0, high=10_000, help_text="0 = off.")
    trailing_stop = _pct("Trailing stop (%)", initial=0, high=99.99, help_text="0 = off.")
    max_position_fraction = _pct(
        "Max position (% of equity)", initial=100, high=100, help_text="Caps every sizing mode."
    )
    max_drawdown_halt = _pct(
        "Drawdown breaker (%)",
        initial=0,
        high=99.99,
        help_text="Stop opening positions after this drawdown. 0 = off.",
    )
    daily_loss_limit = _pct(
        "Daily loss limit (%)",
        initial=0,
        high=99.99,
        help_text="No new entries for the rest of a UTC day after losing this much. 0 = off.",
    )
    # The limits of risk/rules.py that the engine applies (the risk app's issue 12).
    max_heat = _pct(
        "Max portfolio heat (%)",
        required=False,
        initial=0,
        high=100,
        help_text="Sum of the losses to the stops over equity (no stop: the whole position). "
        "0 = off.",
    )
    max_open_positions = whole_field("Max open positions", high=1000, help_text="0 = off.")
    cooldown_bars = whole_field(
        "Cooldown after an exit (bars)",
        high=100_000,
        help_text="No new entry on a symbol for this many bars after it exits. 0 = off.",
    )
    correlation_threshold = _pct(
        "Correlation filter (%)",
        required=False,
        initial=0,
        high=100,
        help_text="Portfolios: refuse an entry whose returns correlate above this with an open "
        "position. 0 = off.",
    )
    correlation_lookback = whole_field(
        "Correlation lookback (bars)", initial=20, low=2, high=10_000
    )
    weekly_loss_limit = _pct(
        "Weekly loss limit (%)",
        required=False,
        initial=0,
        high=99.99,
        help_text="No new entries until the next UTC week (from Monday) after losing this much "
        "of the week's opening equity. 0 = off.",
    )
    monthly_loss_limit = _pct(
        "Monthly loss limit (%)",
        required=False,
        initial=0,
        high=99.99,
        help_text="The same for the UTC calendar month. 0 = off.",
    )
    max_order_notional = number_field(
        "Max order value",
        required=False,
        initial=0,
        low=0,
        high=1e12,
        help_text="Caps each entry's value (money). 0 = off.",
    )
    max_leverage = number_field(
        "Max leverage (x equity)",
        required=False,
        initial=0,
        low=0,
        high=100,
        help_text="Gross exposure of all positions over equity, checked at each entry. 0 = off.",
    )
    stoploss_guard_count = whole_field(
        "Stop-loss guard: stops",
        high=1000,
        help_text="Lock after this many losing stop-loss exits within the lookback. 0 = off.",
    )
    stoploss_guard_lookback_bars = whole_field("Stop-loss guard: lookback (bars)")
    stoploss_guard_lock_bars = whole_field(
        "Stop-loss guard: lock (bars)",
        help_text="No entry on the stop's bar and this many bars after it.",
    )
    stoploss_guard_all = forms.BooleanField(
        required=False,
        initial=False,
        label="Stop-loss guard counts and locks every symbol together",
    )
    low_profit_lookback_bars = whole_field(
        "Low-profit lock: lookback (bars)",
        help_text="At each exit, the symbol's trades closed within this many bars. 0 = off.",
    )
    low_profit_min = number_field(
        "Low-profit lock: minimum profit (%)",
        required=False,
        initial=0,
        low=-100,
        high=100,
        help_text="Lock the symbol when their returns sum below this.",
    )
    low_profit_lock_bars = whole_field("Low-profit lock: lock (bars)")

    def __init__(
        self,
        *args: Any,
        strategies: list[Strategy],
        series: list[MarketSeries],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # The same defaults as the API, the CLI and one-click runs (services.backtests).
        for name, value in self.initial_from_settings(default_settings()).items():
            if name in self.fields:
                self.fields[name].initial = value
        self.strategy_objects = {f"s:{s.pk}": s for s in strategies}
        mine = [(key, s.name) for key, s in self.strategy_objects.items()]
        presets = [(f"preset:{name}", preset_label(name)) for name in PRESETS]
        choices: list[Any] = []
        if mine:
            choices.append(("My strategies", mine))
        choices.append(("Presets (saved to your strategies when run)", presets))
        cast(forms.ChoiceField, self.fields["strategy"]).choices = choices
        frames = sorted({s.timeframe for s in series}, key=timeframe_sort_key)
        cast(forms.ChoiceField, self.fields["timeframe"]).choices = [(tf, tf) for tf in frames]
        self.series_rows = series
        cast(forms.ChoiceField, self.fields["series"]).choices = [
            (str(s.pk), str(s)) for s in series
        ]
        # One group of parameter inputs per strategy choice; the page shows the chosen one.
        self.param_groups: list[dict[str, Any]] = []
        for key, label in [*mine, *presets]:
            spec = self.spec_for(key)
            values = (
                self.strategy_objects[key].param_values if key.startswith("s:") else spec.defaults()
            )
            names = []
            for p in spec.params:
                field_name = self.param_field(key, p.name)
                if p.low is not None and p.high is not None:
                    help_text = f"{p.kind}, {p.low} to {p.high}"
                else:
                    help_text = p.kind
                if p.description:
                    help_text = f"{p.description} ({help_text})"
                value = values.get(p.name, p.default)
                self.fields[field_name] = forms.CharField(
                    required=False,
                    label=p.name,
                    initial=("true" if value else "false") if p.kind == "bool" else value,
                    help_text=help_text,
                    max_length=30,
                )
                names.append(field_name)
            self.param_groups.append({"key": key, "label": label, "names": names})

    def spec_for(self, key: str) -> Any:
        """The parameter spec of a strategy choice: a saved strategy's or a preset's."""
        if key.startswith("s:"):
            return strategy_spec(self.strategy_objects[key])
        return PRESETS[key.split(":", 1)[1]]

    @staticmethod
    def param_field(strategy_key: str, param: str) -> str:
        return "p__" + strategy_key.replace(":", "_") + "__" + param

    def clean_initial_cash(self) -> float:
        value = self.cleaned_data["initial_cash"]
        if not math.isfinite(value) or value <= 0:
            raise forms.ValidationError("The starting capital must be more than 0.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        sizing, size = data.get("sizing"), data.get("size_value")
        if size is not None:
            if not math.isfinite(size) or size <= 0:
                self.add_error("size_value", "The size must be more than 0.")
            elif sizing in ("fraction", "risk") and size > 100:
                self.add_error("size_value", "At most 100 % of equity.")
        if sizing == "risk" and not data.get("stop_loss"):
            self.add_error(
                "stop_loss", "Risk sizing sizes from the stop distance: set a stop-loss."
            )
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            self.add_error("end", "The end must be on or after the start.")
        return data

    def settings(self) -> dict[str, Any]:
        data = self.cleaned_data
        out: dict[str, Any] = {
            "initial_cash": float(data["initial_cash"]),
            "slippage_bps": float(data["slippage_bps"]),
            "fill": data["fill"],
            "allow_short": bool(data["allow_short"]),
            "sizing": data["sizing"],
            # Optional risk limits (forms that do not show them leave them off).
            "max_open_positions": int(data.get("max_open_positions") or 0),
            "cooldown_bars": int(data.get("cooldown_bars") or 0),
            "correlation_lookback": int(data.get("correlation_lookback") or 20),
            "max_order_notional": float(data.get("max_order_notional") or 0.0),
            "max_leverage": float(data.get("max_leverage") or 0.0),
            "stoploss_guard_all": bool(data.get("stoploss_guard_all")),
        }
        for name in PROTECTION_INT_FIELDS:
            out[name] = int(data.get(name) or 0)
        for name in PERCENT_FIELDS:
            out[name] = float(data.get(name) or 0.0) / 100.0
        size = float(data["size_value"])
        out["size_value"] = size if data["sizing"] == "notional" else size / 100.0
        return out

    @staticmethod
    def initial_from_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
        """The form's values for a stored settings snapshot (the inverse of ``settings()``), so a
        run started from another keeps its fees, slippage, stops and sizing."""
        out: dict[str, Any] = {
            key: settings[key]
            for key in ("initial_cash", "slippage_bps", "fill", "allow_short", "sizing")
            if key in settings
        }
        for name in PERCENT_FIELDS:
            if name in settings:
                out[name] = round(float(settings[name]) * 100.0, 10)
        for name in (*PROTECTION_INT_FIELDS, "max_order_notional", "max_leverage"):
            if name in settings:
                out[name] = settings[name]
        if "stoploss_guard_all" in settings:
            out["stoploss_guard_all"] = bool(settings["stoploss_guard_all"])
        if "size_value" in settings:
            size = float(settings["size_value"])
            notional = settings.get("sizing") == "notional"
            out["size_value"] = size if notional else round(size * 100.0, 10)
        return out

    def param_values(self) -> dict[str, str]:
        key = self.cleaned_data["strategy"]
        group = next((g for g in self.param_groups if g["key"] == key), None)
        if group is None:
            return {}
        prefix = self.param_field(key, "")
        return {
            name[len(prefix) :]: str(self.cleaned_data.get(name) or "").strip()
            for name in group["names"]
            if str(self.cleaned_data.get(name) or "").strip()
        }


def series_options(form: BacktestForm, chosen: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "id": s.pk,
            "symbol": s.symbol,
            "title": s.name,
            "exchange": s.exchange,
            "timeframe": s.timeframe,
            "synthetic": s.synthetic or s.source == MarketSeries.Source.DEMO,
            "mine": s.owner_id is not None,
            "first": fmt_day(s.first_ts),
            "last": fmt_day(s.last_ts),
            "count": s.count,
            "checked": str(s.pk) in chosen,
        }
        for s in form.series_rows
    ]
