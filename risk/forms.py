"""The Risk page's form: every limit, fractions entered in percent, validated by the rules."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.db import models

from risk import rules
from risk.models import RiskProfile

# Limits that are fractions in the rules and percent on the page.
PERCENT_FIELDS = (
    "risk_per_trade",
    "vol_target",
    "kelly_win_rate",
    "kelly_multiplier",
    "kelly_cap",
    "max_position_fraction",
    "max_heat",
    "drawdown_limit",
    "daily_loss_limit",
    "weekly_loss_limit",
    "monthly_loss_limit",
    "low_profit_min",
    "correlation_threshold",
)
LABELS = {
    "sizing": "Position sizing",
    "risk_per_trade": "Risk per trade (%)",
    "fixed_notional": "Fixed order value",
    "vol_target": "Volatility target (% a year)",
    "kelly_win_rate": "Kelly: win rate (%)",
    "kelly_payoff": "Kelly: average win / average loss",
    "kelly_multiplier": "Kelly: share of full Kelly (%)",
    "kelly_cap": "Kelly: cap (% of equity)",
    "max_position_fraction": "Max position per symbol (% of equity)",
    "max_heat": "Max portfolio heat (%)",
    "max_open_positions": "Max open positions",
    "max_leverage": "Max leverage (gross exposure / equity)",
    "min_order_notional": "Min order value",
    "max_order_notional": "Max order value",
    "max_orders_per_minute": "Max orders per minute",
    "drawdown_limit": "Drawdown breaker (% below the peak)",
    "daily_loss_limit": "Daily loss limit (%)",
    "weekly_loss_limit": "Weekly loss limit (%)",
    "monthly_loss_limit": "Monthly loss limit (%)",
    "cooldown_minutes": "Cooldown after an exit (minutes)",
    "stoploss_guard_count": "Stop-loss guard: stops",
    "stoploss_guard_lookback_minutes": "Stop-loss guard: within (minutes)",
    "stoploss_guard_lock_minutes": "Stop-loss guard: lock for (minutes)",
    "stoploss_guard_all": "Stop-loss guard locks every symbol (not only the one stopped)",
    "low_profit_lookback_minutes": "Low-profit lock: lookback (minutes)",
    "low_profit_min": "Low-profit lock: minimum profit (%)",
    "low_profit_lock_minutes": "Low-profit lock: lock for (minutes)",
    "correlation_threshold": "Correlation filter threshold (%)",
    "correlation_lookback": "Correlation lookback (returns)",
    "correlation_mode": "Above the threshold",
}
HELP = {
    "risk_per_trade": "Risk sizing: equity lost at the stop. Fraction sizing: equity put in.",
    "max_heat": "Sum over open positions of the loss to their stops, over equity. 0 = off.",
    "drawdown_limit": "Halts trading until you reset it. 0 = off.",
    "daily_loss_limit": "Halts new exposure until the next UTC day. 0 = off.",
    "max_order_notional": "0 = no maximum.",
    "correlation_threshold": "Compared with each open position's returns. 0 = off.",
}
GROUPS = (
    ("Sizing", ("sizing", "risk_per_trade", "fixed_notional", "vol_target", "kelly_win_rate",
                "kelly_payoff", "kelly_multiplier", "kelly_cap")),
    ("Limits", ("max_position_fraction", "max_heat", "max_open_positions", "max_leverage",
                "min_order_notional", "max_order_notional", "max_orders_per_minute")),
    ("Breakers", ("drawdown_limit", "daily_loss_limit", "weekly_loss_limit",
                  "monthly_loss_limit")),
    ("Protections", ("cooldown_minutes", "stoploss_guard_count",
                     "stoploss_guard_lookback_minutes", "stoploss_guard_lock_minutes",
                     "stoploss_guard_all", "low_profit_lookback_minutes", "low_profit_min",
                     "low_profit_lock_minutes")),
    ("Correlation", ("correlation_threshold", "correlation_lookback", "correlation_mode")),
)  # fmt: skip


class RiskProfileForm(forms.Form):
    """Fields built from the model's limits; ``limit_values()`` gives the rules' fractions."""

    def __init__(self, *args: Any, profile: RiskProfile, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in RiskProfile.LIMIT_FIELDS:
            # The limits are concrete columns, never relations.
            model_field = cast("models.Field[Any, Any]", RiskProfile._meta.get_field(name))
            value = getattr(profile, name)
            label = LABELS.get(name, name)
            help_text = HELP.get(name, "")
            field: forms.Field
            if model_field.choices:
                field = forms.ChoiceField(choices=model_field.choices, label=label)
            elif isinstance(value, bool):
                field = forms.BooleanField(required=False, label=label)
            elif isinstance(value, int):
                field = forms.IntegerField(label=label, help_text=help_text)
            else:
                field = forms.FloatField(
                    label=label,
                    help_text=help_text,
                    widget=forms.NumberInput(attrs={"step": "any"}),
                )
            if name in PERCENT_FIELDS:
                value = round(float(value) * 100.0, 10)
            field.initial = value
            self.fields[name] = field

    def groups(self) -> list[tuple[str, list[forms.BoundField]]]:
        return [(title, [self[name] for name in names]) for title, names in GROUPS]

    def limit_values(self) -> dict[str, Any]:
        data = self.cleaned_data
        out: dict[str, Any] = {}
        for name in RiskProfile.LIMIT_FIELDS:
            value = data.get(name)
            if name in PERCENT_FIELDS and value is not None:
                value = float(value) / 100.0
            out[name] = value
        return out

    def clean(self) -> dict[str, Any] | None:
        data = super().clean()
        if self.errors:
            return data
        for name, message in rules.validate_limits(self.limit_values()).items():
            if name in PERCENT_FIELDS and message.startswith("Must be"):
                low, high, low_open = rules.RANGES[name]
                above = "above" if low_open else "at least"
                message = f"Enter a percentage {above} {low * 100:g} and at most {high * 100:g}."
            self.add_error(name, message)
        return data
